"""Training data for a run: prepare each source once, then resumable host-local batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from train_jax.config.run_config import DataSection
from train_jax.data.iterator import BatchIterator, MixtureIterator
from train_jax.data.prepare import PreparedDataset, prepare_dataset

logger = logging.getLogger(__name__)


def prepare_sources(data: DataSection, tokenizer_dir: Path, root: Path, *,
                    progress: bool) -> list[PreparedDataset]:
    """Prepare (or reuse) every source; process 0 builds, the others reuse its cache."""
    def prepare_all() -> list[PreparedDataset]:
        return [prepare_dataset(src.dataset, tokenizer_dir, root / f"{i}-{src.dataset.task}",
                                progress=progress and jax.process_index() == 0)
                for i, src in enumerate(data.sources)]

    if jax.process_count() == 1:
        return prepare_all()
    from jax.experimental import multihost_utils

    built = prepare_all() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("jaxtune: datasets prepared")
    return built if built is not None else prepare_all()


@dataclass
class BatchFeed:
    """Host-local training batches shaped (micro_batches, rows, length), with resumable state."""

    iterator: BatchIterator | MixtureIterator
    micro_batches: int
    local_rows: int

    @classmethod
    def create(cls, datasets: list[PreparedDataset], weights: list[float], batch_size: int,
               micro_batches: int, seed: int) -> BatchFeed:
        count, index = jax.process_count(), jax.process_index()
        if batch_size % (count * micro_batches):
            raise ValueError(f"train.batch_size ({batch_size}) must be a multiple of processes "
                             f"({count}) x train.micro_batches ({micro_batches})")
        local = batch_size // count
        if len(datasets) == 1:
            it: Any = BatchIterator(datasets[0], local, seed=seed, shard_index=index,
                                    shard_count=count)
        else:
            it = MixtureIterator(datasets, weights, local, seed=seed, shard_index=index,
                                 shard_count=count)
        return cls(it, micro_batches, local)

    def next(self) -> dict[str, np.ndarray]:
        """The next batch, split into micro-batches along a new leading axis."""
        batch = next(self.iterator)
        rows = self.local_rows // self.micro_batches
        return {k: v.reshape(self.micro_batches, rows, *v.shape[1:]) for k, v in batch.items()}

    def get_state(self) -> dict[str, Any]:
        return self.iterator.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.iterator.set_state(state)


def validation_batches(dataset: PreparedDataset, num_batches: int, local_rows: int
                       ) -> dict[str, np.ndarray] | None:
    """A fixed set of (num_batches, local_rows, length) validation rows (None without a split)."""
    if "val" not in dataset.splits or num_batches == 0:
        return None
    it = BatchIterator(dataset, local_rows, split="val", seed=0, shard_index=jax.process_index(),
                       shard_count=jax.process_count())
    batches = [next(it) for _ in range(num_batches)]
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}
