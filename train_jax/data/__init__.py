"""Dataset preparation: load, clean, tokenise, mask, pack and iterate training data.

Entry points: `train_jax.data.prepare.prepare_dataset` (Python API, cached by input hash),
`train_jax.data.iterator` (resumable batch iterators) and `jaxtune data prepare` (`cli.py`).
"""

from train_jax.data.config import DataConfig

__all__ = ["DataConfig"]
