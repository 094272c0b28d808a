"""Batch and mixture iterators: exact resume mid-epoch, host sharding, epoch coverage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train_jax.data.iterator import BatchIterator, MixtureIterator
from train_jax.data.packing import ARRAY_NAMES


def fake_split(num_rows: int, length: int = 8, offset: int = 0) -> dict[str, np.ndarray]:
    """Arrays whose input_ids[:, 0] is a unique row id (offset + row)."""
    ids = np.zeros((num_rows, length), dtype=np.int32)
    ids[:, 0] = offset + np.arange(num_rows)
    arrays = {name: np.zeros((num_rows, length), dtype=np.int32) for name in ARRAY_NAMES}
    arrays["input_ids"] = ids
    return arrays


def row_ids(batch) -> list[int]:
    return batch["input_ids"][:, 0].tolist()


def take(iterator, n):
    return [row_ids(next(iterator)) for _ in range(n)]


def flat(batches) -> list[int]:
    return [x for batch in batches for x in batch]


def test_resume_mid_epoch_yields_exactly_the_remaining_sequence():
    data = fake_split(23)
    reference = BatchIterator(data, 4, seed=7)
    expected = take(reference, 20)  # ~3.5 epochs, batches straddle epoch ends
    first = BatchIterator(data, 4, seed=7)
    head = take(first, 9)
    state = json.loads(json.dumps(first.get_state()))  # as stored in a checkpoint
    assert state["epoch"] == 1 and state["position"] == 13
    resumed = BatchIterator(data, 4, seed=7)
    resumed.set_state(state)
    assert head + take(resumed, 11) == expected


def test_every_epoch_is_a_permutation_and_epochs_differ():
    it = BatchIterator(fake_split(12), 3, seed=1)
    epochs = [flat(take(it, 4)) for _ in range(3)]
    assert all(sorted(e) == list(range(12)) for e in epochs)
    assert epochs[0] != epochs[1]
    assert flat(take(BatchIterator(fake_split(12), 3, seed=1), 4)) == epochs[0]


def test_num_epochs_stops_with_full_batches_only():
    it = BatchIterator(fake_split(10), 4, num_epochs=2)
    batches = list(it)
    assert len(batches) == 5 and all(b["input_ids"].shape == (4, 8) for b in batches)


def test_hosts_take_disjoint_slices_of_the_same_global_batch():
    data = fake_split(30)
    hosts = [BatchIterator(data, 2, seed=3, shard_index=i, shard_count=3) for i in range(3)]
    single = BatchIterator(data, 6, seed=3)
    for _ in range(7):
        assert flat(row_ids(next(h)) for h in hosts) == row_ids(next(single))


def test_state_from_other_data_is_rejected():
    state = BatchIterator(fake_split(10), 2).get_state()
    with pytest.raises(ValueError, match="num_rows"):
        BatchIterator(fake_split(11), 2).set_state(state)


def test_mixture_follows_weights_and_resumes_exactly():
    sources = [fake_split(50, offset=0), fake_split(20, offset=1000)]
    reference = MixtureIterator(sources, [3, 1], 8, seed=5)
    expected = take(reference, 30)
    drawn = np.array(flat(expected))
    share = float(np.mean(drawn < 1000))
    assert 0.65 < share < 0.85  # 240 seeded draws at p = 0.75
    first = MixtureIterator(sources, [3, 1], 8, seed=5)
    head = take(first, 13)
    resumed = MixtureIterator(sources, [3, 1], 8, seed=5)
    resumed.set_state(json.loads(json.dumps(first.get_state())))
    assert head + take(resumed, 17) == expected
    # Each source still walks whole epochs: the first 50 rows of source 0 are a permutation.
    assert sorted([int(x) for x in drawn if x < 1000][:50]) == list(range(50))


def test_mixture_hosts_partition_the_global_batch():
    sources = [fake_split(9, offset=0), fake_split(7, offset=100)]
    hosts = [MixtureIterator(sources, [1, 1], 3, seed=2, shard_index=i, shard_count=2)
             for i in range(2)]
    single = MixtureIterator(sources, [1, 1], 6, seed=2)
    for _ in range(10):
        assert flat(row_ids(next(h)) for h in hosts) == row_ids(next(single))


def test_mixture_rejects_mismatched_row_lengths():
    with pytest.raises(ValueError, match="row lengths"):
        MixtureIterator([fake_split(4, length=8), fake_split(4, length=16)], [1, 1], 2)


def test_unshuffled_iterator_keeps_stored_order():
    it = BatchIterator(fake_split(6), 4, shuffle=False)
    assert take(it, 3) == [[0, 1, 2, 3], [4, 5, 0, 1], [2, 3, 4, 5]]


def test_eval_batches_cover_every_row_once_with_padding_rows():
    from train_jax.data.iterator import eval_batches

    data = fake_split(11)
    data["segment_ids"][:] = 1
    data["loss_mask"][:] = 1
    hosts = [list(eval_batches(data, 2, split="val", shard_index=i, shard_count=3))
             for i in range(3)]
    assert all(len(h) == 2 for h in hosts)  # ceil(11 / 6) global batches
    seen = [r for h in hosts for b in h for r, seg in zip(row_ids(b), b["segment_ids"][:, 0],
                                                           strict=True) if seg]
    assert sorted(seen) == list(range(11))
    padding = [b for h in hosts for b in h if (b["segment_ids"][:, 0] == 0).any()]
    assert all(b["input_ids"].shape == (2, 8) for h in hosts for b in h)
    assert sum(int((b["loss_mask"][:, 0] == 0).sum()) for b in padding) == 1
