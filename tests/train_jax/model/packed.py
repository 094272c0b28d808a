"""Packed rows for kernel tests: several segments, then padding (segment 0)."""

from __future__ import annotations

import numpy as np


def packed_segments(length: int) -> np.ndarray:
    """(2, T): three segments then padding in row 0, one segment then padding in row 1."""
    a, b, pad = length * 3 // 7, length // 4, length // 16
    row0 = [1] * a + [2] * b + [3] * (length - a - b - pad) + [0] * pad
    row1 = [1] * (length - 2 * pad) + [0] * (2 * pad)
    return np.array([row0, row1], np.int32)


def segment_positions(segments: np.ndarray) -> np.ndarray:
    """Positions restarting at 0 with each segment (padding counts on)."""
    starts = np.concatenate([np.ones_like(segments[:, :1], bool),
                             segments[:, 1:] != segments[:, :-1]], axis=1)
    index = np.arange(segments.shape[1])
    start_of = np.maximum.accumulate(np.where(starts, index, 0), axis=1)
    return (index - start_of).astype(np.int32)
