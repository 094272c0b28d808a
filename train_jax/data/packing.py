"""Packing tokenised examples into fixed-length rows (or one example per padded row).

Row layout (all arrays (rows, max_length)): an example of n tokens fills n - 1 positions,
`input_ids` = tokens[:-1], `targets` = tokens[1:] (next-token labels), `loss_mask` = 1 where
the target is a trained token, `segment_ids` = 1..k for the k examples of a row (0 =
padding), `positions` restarting at 0 for each example.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from train_jax.data.tokenization import TokenizedExample

ARRAY_NAMES: tuple[str, ...] = ("input_ids", "targets", "loss_mask", "segment_ids", "positions")
ARRAY_DTYPES: dict[str, type] = {
    "input_ids": np.int32, "targets": np.int32, "loss_mask": np.uint8,
    "segment_ids": np.int32, "positions": np.int32,
}


def assign_rows(lengths: Sequence[int], max_length: int, *, packing: bool, seed: int
                ) -> list[list[int]]:
    """Group example indices into rows; each example needs ``length - 1`` positions.

    Packing is best-fit decreasing (ties broken by a seeded shuffle), so it is deterministic
    for a seed and leaves little padding. Without packing every example gets its own row.
    """
    spans = np.asarray(lengths, dtype=np.int64) - 1
    if np.any(spans > max_length) or np.any(spans < 1):
        raise ValueError("every example needs 2..max_length+1 tokens before packing")
    order = np.random.default_rng(seed).permutation(len(spans))
    if not packing:
        return [[int(i)] for i in order]
    order = order[np.argsort(-spans[order], kind="stable")]
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (remaining positions, row index)
    for i in order:
        span = int(spans[i])
        slot = bisect.bisect_left(free, (span, -1))
        if slot == len(free):
            rows.append([int(i)])
            remaining, row = max_length - span, len(rows) - 1
        else:
            remaining, row = free.pop(slot)
            rows[row].append(int(i))
            remaining -= span
        if remaining > 0:
            bisect.insort(free, (remaining, row))
    shuffle = np.random.default_rng(seed + 1).permutation(len(rows))
    return [rows[r] for r in shuffle]


def build_arrays(examples: Sequence[TokenizedExample], rows: Sequence[Sequence[int]],
                 max_length: int, pad_id: int) -> dict[str, np.ndarray]:
    """Fill the fixed-length row arrays for `rows` of example indices."""
    shape = (len(rows), max_length)
    arrays = {name: np.zeros(shape, dtype=ARRAY_DTYPES[name]) for name in ARRAY_NAMES}
    arrays["input_ids"].fill(pad_id)
    for r, members in enumerate(rows):
        offset = 0
        for segment, index in enumerate(members, start=1):
            ex = examples[index]
            n = len(ex) - 1
            window = slice(offset, offset + n)
            arrays["input_ids"][r, window] = ex.ids[:-1]
            arrays["targets"][r, window] = ex.ids[1:]
            arrays["loss_mask"][r, window] = ex.trained[1:]
            arrays["segment_ids"][r, window] = segment
            arrays["positions"][r, window] = np.arange(n)
            offset += n
        if offset > max_length:
            raise AssertionError(f"row {r} overflows: {offset} > {max_length}")
    return arrays


def packing_efficiency(arrays: dict[str, np.ndarray]) -> float:
    """Fraction of row positions holding a real token (not padding)."""
    seg = arrays["segment_ids"]
    return float((seg > 0).sum() / seg.size) if seg.size else 0.0
