"""`jaxtune export --checkpoint CKPT_DIR --out HF_DIR`: jaxtune checkpoint -> HF folder."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from train_jax.convert.dtypes import DTYPE_ALIASES
from train_jax.convert.errors import ConversionError
from train_jax.convert.hf_export import DEFAULT_MAX_SHARD_BYTES, export_checkpoint

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """`2GB`, `500MB`, `1.5GiB`, `4096` -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}; use e.g. 2GB, 500MB, 1GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _step_arg(text: str) -> int | str | None:
    if text in ("best", "latest"):
        return None if text == "latest" else text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a step number, 'latest' or 'best', got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `jaxtune export`."""
    parser.add_argument("--checkpoint", required=True, type=Path, metavar="CKPT_DIR",
                        help="jaxtune checkpoint (from `jaxtune model import` or training)")
    parser.add_argument("--out", type=Path, metavar="HF_DIR", help="HF folder to write (LoRA merged)")
    parser.add_argument("--dtype", choices=sorted(DTYPE_ALIASES), default=None,
                        help="weight dtype (default: the base model's; fp16 only when asked)")
    parser.add_argument("--step", type=_step_arg, default=None,
                        help="step to export: a number, 'latest' (default) or 'best' (the step "
                             "the run ranked best by its checkpoint.best_metric)")
    parser.add_argument("--max-shard-size", type=parse_size, default=DEFAULT_MAX_SHARD_BYTES,
                        help="shard safetensors above this size (default 2GiB)")
    parser.add_argument("--peft-adapter", type=Path, default=None, metavar="DIR",
                        help="also (or, without --out, only) write LoRA adapters as a PEFT folder")


def run(args: argparse.Namespace) -> int:
    """Export; prints what was written."""
    if args.out is None and args.peft_adapter is None:
        raise ConversionError("give --out HF_DIR and/or --peft-adapter DIR")
    from train_jax.checkpoint.store import resolve_step
    from train_jax.provenance import build_provenance, write_provenance

    start = time.perf_counter()
    if args.step == "best":
        from train_jax.checkpoint.best import best_step

        best = best_step(args.checkpoint)
        print(f"exporting {best.describe()}")
        step = best.step
    else:
        step = resolve_step(args.checkpoint, args.step)
    export_checkpoint(args.checkpoint, args.out, dtype=args.dtype, step=step,
                      max_shard_bytes=args.max_shard_size, peft_adapter_dir=args.peft_adapter)
    if args.out is not None:
        # Every export says where it came from: jaxtune.json and a README model card.
        write_provenance(args.out, build_provenance(args.checkpoint, step=step, export_dtype=args.dtype))
    written = " and ".join(str(p) for p in (args.out, args.peft_adapter) if p is not None)
    print(f"exported {args.checkpoint} -> {written} in {time.perf_counter() - start:.1f}s")
    return 0
