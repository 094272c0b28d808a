"""`jaxtune model import HF_DIR --out CKPT_DIR`: an HF folder (or hub id) -> jaxtune checkpoint."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from train_jax import checkpoint as ckpt
from train_jax.convert.dtypes import DTYPE_ALIASES, canonical_dtype
from train_jax.convert.errors import ConversionError
from train_jax.convert.hf_import import from_hf, resolve_model_dir

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `jaxtune model import`."""
    parser.add_argument("model", metavar="HF_DIR", help="HF model folder (or a hub id when online)")
    parser.add_argument("--out", required=True, type=Path, metavar="CKPT_DIR",
                        help="new jaxtune checkpoint directory")
    parser.add_argument("--dtype", choices=sorted(DTYPE_ALIASES), default=None,
                        help="cast the weights (default: keep the stored dtype, bit-exact)")


def run(args: argparse.Namespace) -> int:
    """Import the model; prints where the checkpoint went."""
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        raise ConversionError(f"--out {out} already exists and is not empty; choose a new directory")
    start = time.perf_counter()
    model_dir = resolve_model_dir(args.model)
    cfg, params = from_hf(model_dir, weight_dtype=canonical_dtype(args.dtype) if args.dtype else None)
    ckpt.write_model_checkpoint(out, params, cfg, assets_from=model_dir,
                                source={"hf_dir": str(args.model), "resolved_dir": str(model_dir)})
    print(f"imported {args.model} ({cfg.model_type}, {cfg.num_hidden_layers} layers) -> {out} "
          f"in {time.perf_counter() - start:.1f}s")
    return 0
