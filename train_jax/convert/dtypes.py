"""Weight dtype names accepted on the command line and their numpy dtypes."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from train_jax.convert.errors import ConversionError

# CLI spellings -> canonical (HF `torch_dtype`) names.
DTYPE_ALIASES: dict[str, str] = {
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp32": "float32", "float32": "float32",
    "fp16": "float16", "float16": "float16",
}
_NUMPY = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float32": np.dtype(np.float32),
          "float16": np.dtype(np.float16)}


def canonical_dtype(name: str) -> str:
    """`bf16` -> `bfloat16` etc.; a clear error for anything else."""
    try:
        return DTYPE_ALIASES[str(name).lower()]
    except KeyError:
        raise ConversionError(f"unknown dtype {name!r}; choose from bf16, fp32, fp16") from None


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype (bf16 from ml_dtypes) of a dtype name."""
    return _NUMPY[canonical_dtype(name)]
