"""Cleaning with a count per reason, validation splitting, and the train/eval leakage check."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from train_jax.data.sources import Sample

# Drop reasons, in the order they are applied (report keys).
EMPTY_FIELD = "empty_field"
DUPLICATE_EXACT = "duplicate_exact"
DUPLICATE_NORMALIZED = "duplicate_normalized"
TOO_LONG = "too_long"
BAD_ROW = "bad_row"
LEAKED = "leaked_into_val"

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


@functools.lru_cache(maxsize=1 << 16)  # dedup, split and leakage ask for the same inputs
def normalize_text(text: str) -> str:
    """Case-, width-, punctuation- and whitespace-insensitive form used for near-duplicates."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", text).strip()


@dataclass
class CleaningResult:
    """Kept samples and how many were dropped for each reason (with a few example sources)."""

    kept: list[Sample]
    dropped: Counter = field(default_factory=Counter)
    drop_examples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, sample_source: str) -> None:
        self.dropped[reason] += 1
        examples = self.drop_examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(sample_source)


def clean_samples(samples: Sequence[Sample], *, dedup: bool = True) -> CleaningResult:
    """Drop samples with an empty/whitespace-only field, then exact and normalised duplicates.

    A duplicate is a sample whose text fields (all inputs and the target; every message of
    chat data) repeat an earlier one; the first occurrence is kept. "Normalised" compares `normalize_text` forms.
    """
    result = CleaningResult(kept=[])
    seen_exact: set[tuple[str, ...]] = set()
    seen_norm: set[tuple[str, ...]] = set()
    for sample in samples:
        if any(not value.strip() for _, value in sample.fields):
            result.drop(EMPTY_FIELD, sample.source)
            continue
        if dedup:
            exact = tuple(value for _, value in sample.fields)
            norm = tuple(normalize_text(value) for value in exact)
            if exact in seen_exact:
                result.drop(DUPLICATE_EXACT, sample.source)
                continue
            if norm in seen_norm:
                result.drop(DUPLICATE_NORMALIZED, sample.source)
                continue
            seen_exact.add(exact)
            seen_norm.add(norm)
        result.kept.append(sample)
    return result


def split_validation(samples: Sequence[Sample], fraction: float, seed: int
                     ) -> tuple[list[Sample], list[Sample]]:
    """Seeded random split into (train, val) with `round(fraction * n)` validation samples.

    Samples sharing a normalised input always land on the same side, so the split itself
    creates no leakage.
    """
    if fraction <= 0 or not samples:
        return list(samples), []
    groups: dict[str, list[int]] = {}
    for i, sample in enumerate(samples):
        groups.setdefault(normalize_text(sample.input_text), []).append(i)
    keys = list(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    want = round(fraction * len(samples))
    val_idx: set[int] = set()
    for k in order:
        if len(val_idx) >= want:
            break
        val_idx.update(groups[keys[k]])
    train = [s for i, s in enumerate(samples) if i not in val_idx]
    val = [s for i, s in enumerate(samples) if i in val_idx]
    return train, val


@dataclass(frozen=True)
class LeakageReport:
    """Training samples whose normalised input also occurs in the validation split."""

    count: int
    examples: tuple[str, ...]
    leaked_indices: tuple[int, ...]


def find_leakage(train: Sequence[Sample], val: Sequence[Sample]) -> LeakageReport:
    """Count training samples whose normalised input text appears in `val`."""
    val_inputs = {normalize_text(s.input_text) for s in val}
    leaked = [i for i, s in enumerate(train) if normalize_text(s.input_text) in val_inputs]
    return LeakageReport(
        count=len(leaked),
        examples=tuple(train[i].source for i in leaked[:5]),
        leaked_indices=tuple(leaked),
    )
