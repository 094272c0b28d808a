"""Batch iterators over prepared datasets, with exact save/restore of their position.

Every epoch visits the rows in a fresh permutation seeded by ``(seed, epoch)``; batches
may straddle an epoch boundary, so no row is skipped. With several hosts, each computes the
same global batch of ``batch_size * shard_count`` rows and takes its own slice.
`get_state()` returns a small JSON-able dict (the trainer stores it in its checkpoints);
`set_state()` on a fresh iterator continues with exactly the batches that would have come.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from train_jax.data.packing import ARRAY_NAMES
from train_jax.data.prepare import PreparedDataset

Batch = dict[str, np.ndarray]
Source = PreparedDataset | Mapping[str, np.ndarray]


class RowCursor:
    """Walks seeded per-epoch permutations of ``num_rows`` rows, across epochs."""

    def __init__(self, num_rows: int, seed: Sequence[int], *, shuffle: bool = True):
        if num_rows < 1:
            raise ValueError("a dataset split needs at least one row")
        self.num_rows, self.seed, self.shuffle = num_rows, tuple(seed), shuffle
        self.epoch, self.position = 0, 0
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            if self.shuffle:
                rng = np.random.default_rng([*self.seed, self.epoch])
                self._perm = rng.permutation(self.num_rows)
            else:
                self._perm = np.arange(self.num_rows)
            self._perm_epoch = self.epoch
        return self._perm

    def remaining_in(self, num_epochs: int) -> int:
        """Rows left before `num_epochs` epochs are complete."""
        return (num_epochs - self.epoch) * self.num_rows - self.position

    def take(self, n: int) -> np.ndarray:
        """The next `n` row indices, moving into the next epoch(s) as needed."""
        out = []
        while n > 0:
            chunk = self._permutation()[self.position:self.position + n]
            out.append(chunk)
            n -= len(chunk)
            self.position += len(chunk)
            if self.position == self.num_rows:
                self.epoch, self.position = self.epoch + 1, 0
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def get_state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def set_state(self, state: Mapping[str, Any]) -> None:
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.num_rows:
            raise ValueError(f"iterator state {dict(state)} does not fit {self.num_rows} rows")
        self.epoch, self.position = epoch, position


def _arrays(source: Source, split: str) -> Mapping[str, np.ndarray]:
    if isinstance(source, PreparedDataset):
        return source.arrays(split)
    missing = [name for name in ARRAY_NAMES if name not in source]
    if missing:
        raise ValueError(f"batch source lacks arrays {missing}")
    return source


def _check_shard(batch_size: int, shard_index: int, shard_count: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")


def _gather(arrays: Mapping[str, np.ndarray], rows: np.ndarray) -> Batch:
    return {name: np.asarray(arrays[name][rows]) for name in ARRAY_NAMES}


class BatchIterator(Iterator[Batch]):
    """Batches of `batch_size` rows (this host's share) from one prepared split.

    `num_epochs=None` repeats forever; otherwise iteration stops when fewer than a global
    batch of rows remain in the last epoch (shapes stay static for jit). `shuffle=False`
    visits rows in stored order every epoch.
    """

    def __init__(self, source: Source, batch_size: int, *, split: str = "train", seed: int = 0,
                 shard_index: int = 0, shard_count: int = 1, num_epochs: int | None = None,
                 shuffle: bool = True):
        _check_shard(batch_size, shard_index, shard_count)
        self.arrays = _arrays(source, split)
        num_rows = int(self.arrays["input_ids"].shape[0])
        self.batch_size, self.shard_index, self.shard_count = batch_size, shard_index, shard_count
        self.global_batch = batch_size * shard_count
        self.num_epochs, self.seed = num_epochs, seed
        self.cursor = RowCursor(num_rows, (seed,), shuffle=shuffle)

    @property
    def epoch(self) -> float:
        """Fractional epochs consumed so far."""
        return self.cursor.epoch + self.cursor.position / self.cursor.num_rows

    def __next__(self) -> Batch:
        if self.num_epochs is not None and self.cursor.remaining_in(self.num_epochs) < \
                self.global_batch:
            raise StopIteration
        rows = self.cursor.take(self.global_batch)
        mine = rows[self.shard_index * self.batch_size:(self.shard_index + 1) * self.batch_size]
        return _gather(self.arrays, mine)

    def get_state(self) -> dict[str, Any]:
        """JSON-able position: epoch and row position within it, plus identity checks."""
        return {"kind": "batch", **self.cursor.get_state(), "seed": self.seed,
                "num_rows": self.cursor.num_rows}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from `state` (from `get_state` of an iterator over the same data)."""
        _expect(state, kind="batch", seed=self.seed, num_rows=self.cursor.num_rows)
        self.cursor.set_state(state)


class MixtureIterator(Iterator[Batch]):
    """Batches mixing several prepared datasets: each row's source is drawn by `weights`.

    Draws are seeded by ``(seed, step)``; each source walks its own epochs. All sources must
    share the row length (max_length).
    """

    def __init__(self, sources: Sequence[Source], weights: Sequence[float], batch_size: int, *,
                 split: str = "train", seed: int = 0, shard_index: int = 0,
                 shard_count: int = 1):
        _check_shard(batch_size, shard_index, shard_count)
        if not sources or len(sources) != len(weights):
            raise ValueError("need one weight per source and at least one source")
        w = np.asarray(weights, dtype=np.float64)
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {weights}")
        self.weights = w / w.sum()
        self.arrays = [_arrays(s, split) for s in sources]
        lengths = {int(a["input_ids"].shape[1]) for a in self.arrays}
        if len(lengths) != 1:
            raise ValueError(f"mixture sources have different row lengths {sorted(lengths)}")
        self.cursors = [RowCursor(int(a["input_ids"].shape[0]), (seed, k))
                        for k, a in enumerate(self.arrays)]
        self.batch_size, self.shard_index, self.shard_count = batch_size, shard_index, shard_count
        self.global_batch = batch_size * shard_count
        self.seed, self.step = seed, 0

    def __next__(self) -> Batch:
        rng = np.random.default_rng([self.seed, self.step])
        choice = rng.choice(len(self.arrays), size=self.global_batch, p=self.weights)
        self.step += 1
        lo, hi = self.shard_index * self.batch_size, (self.shard_index + 1) * self.batch_size
        parts: dict[str, np.ndarray] = {
            name: np.empty((self.batch_size, *self.arrays[0][name].shape[1:]),
                           dtype=self.arrays[0][name].dtype) for name in ARRAY_NAMES}
        for k, (arrays, cursor) in enumerate(zip(self.arrays, self.cursors, strict=True)):
            slots = np.flatnonzero(choice == k)
            rows = cursor.take(len(slots))  # every host advances every cursor identically
            mine = (slots >= lo) & (slots < hi)
            if mine.any():
                for name, value in _gather(arrays, rows[mine]).items():
                    parts[name][slots[mine] - lo] = value
        return parts

    def get_state(self) -> dict[str, Any]:
        """JSON-able position: step and each source's epoch/position."""
        return {"kind": "mixture", "step": self.step, "seed": self.seed,
                "sources": [c.get_state() for c in self.cursors],
                "num_rows": [c.num_rows for c in self.cursors]}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from `state` (from `get_state` of a mixture over the same data)."""
        _expect(state, kind="mixture", seed=self.seed,
                num_rows=[c.num_rows for c in self.cursors])
        for cursor, sub in zip(self.cursors, state["sources"], strict=True):
            cursor.set_state(sub)
        self.step = int(state["step"])


def eval_batches(source: Source, batch_size: int, *, split: str = "val", shard_index: int = 0,
                 shard_count: int = 1) -> Iterator[Batch]:
    """Every row of `split` exactly once, in order, as fixed-shape batches for evaluation.

    The last global batch is filled up with all-padding rows (segment 0, loss mask 0), which
    add nothing to a masked loss, so every batch has the same shape under jit.
    """
    _check_shard(batch_size, shard_index, shard_count)
    arrays = _arrays(source, split)
    num_rows = int(arrays["input_ids"].shape[0])
    global_batch = batch_size * shard_count
    for start in range(0, num_rows, global_batch):
        lo = start + shard_index * batch_size
        rows = np.arange(lo, min(lo + batch_size, num_rows))
        batch = _gather(arrays, rows)
        if len(rows) < batch_size:
            batch = {name: np.concatenate([value, np.zeros((batch_size - len(rows),
                                                             *value.shape[1:]), value.dtype)])
                     for name, value in batch.items()}
        yield batch


def _expect(state: Mapping[str, Any], **expected: Any) -> None:
    for key, value in expected.items():
        if state.get(key) != value:
            raise ValueError(f"iterator state has {key}={state.get(key)!r} but this iterator "
                             f"has {value!r}; was it saved for other data or settings?")
