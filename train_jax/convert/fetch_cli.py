"""`jaxtune model fetch NAME --out DIR`: a known base model (or HF folder / hub id) -> HF folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from train_jax.convert.fetch import KNOWN_MODELS, fetch_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `jaxtune model fetch`."""
    parser.add_argument("name", metavar="NAME",
                        help=f"known model ({', '.join(sorted(KNOWN_MODELS))}), local HF folder or hub id")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="HF folder to write")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default=None,
                        help="weight dtype for GGUF models (default: the original release's, bf16)")


def run(args: argparse.Namespace) -> int:
    """Fetch unless `--out` already holds a complete model."""
    start = time.perf_counter()
    result = fetch_model(args.name, args.out, dtype=args.dtype)
    if result.cached:
        print(f"{result.path} already holds a complete model; nothing to do")
    else:
        print(f"fetched {args.name} -> {result.path} in {time.perf_counter() - start:.1f}s")
    return 0
