"""`jaxtune model check HF_DIR`: Flax vs transformers fp32 logit parity on a prompt."""

from __future__ import annotations

import argparse

from train_jax.convert.hf_import import resolve_model_dir
from train_jax.convert.parity import DEFAULT_PROMPT, compare_with_transformers

DEFAULT_TOLERANCE = 1e-3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `jaxtune model check`."""
    parser.add_argument("model", metavar="HF_DIR", help="HF model folder (or a hub id when online)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="text to run both models on")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"max abs logit difference allowed (default {DEFAULT_TOLERANCE:g})")


def run(args: argparse.Namespace) -> int:
    """Print the comparison; exit 1 when the models disagree beyond the tolerance."""
    report = compare_with_transformers(resolve_model_dir(args.model), args.prompt)
    ok = report.passed(args.tolerance)
    print(f"tokens: {report.num_tokens}")
    print(f"max abs logit diff: {report.max_abs_diff:.3e} (tolerance {args.tolerance:g}; "
          f"largest |logit| {report.reference_abs_max:.2f})")
    print(f"greedy-token agreement: {report.greedy_agreement}/{report.num_tokens}"
          + (f" ({report.decisive_disagreements} not near-ties)" if report.decisive_disagreements else ""))
    print("PASS" if ok else "FAIL: Flax and transformers disagree beyond the tolerance")
    return 0 if ok else 1
