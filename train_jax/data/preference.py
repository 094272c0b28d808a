"""Preparing preference data (`task: preference`) for DPO: pairs -> (pairs, 2, max_length) arrays.

The same pipeline as the supervised tasks (`prepare.py`), pair by pair: rows are read with
`file:line` errors (`preference_rows.py`), cleaned (blank prompt, duplicates), split into
train/val (a pair never straddles the split), checked for leakage, rendered in the prompt
style with the chat template where asked, tokenised with completion-only loss masks, and
reported (`report.json`, `report.md`, `token_lengths.png`) with the cleaning counts.

Pairs are never packed together: row i of every array holds pair i, its chosen sequence at
``[i, 0]`` and its rejected one at ``[i, 1]``, each padded to max_length (segment 1, positions
from 0, `packing.py`'s layout). A pair whose prompt alone fills max_length is a bad row
(`prompt_too_long`); a pair with a sequence over max_length is dropped and counted
(`too_long`), as for supervised examples.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from train_jax.data import cleaning
from train_jax.data.config import DataConfig
from train_jax.data.packing import build_arrays, packing_efficiency
from train_jax.data.preference_rows import (
    PROMPT_TOO_LONG,
    PreferencePair,
    PreferenceRowError,
    load_pairs,
)
from train_jax.data.rendering import render_pieces
from train_jax.data.report import SplitStats, write_report
from train_jax.data.sources import Sample
from train_jax.data.tokenization import TokenizedExample, tokenize_pieces

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val")
LAYOUT = "pairs"  # meta.json "layout": arrays are (pairs, 2, max_length)


def build_preference(cfg: DataConfig, tokenizer: Any, key: str, files: dict[str, Path | None],
                     build: Path, meta_base: dict[str, Any], *, progress: bool) -> None:
    """Write the prepared preference dataset of `cfg` into `build` (what `prepare_dataset`
    calls for `task: preference`); `files` maps each split to its local file (or None)."""
    stats = {split: SplitStats(split) for split in SPLITS}
    pairs: dict[str, list[PreferencePair]] = {}
    for split in SPLITS:
        path = files.get(split)
        pairs[split] = [] if path is None else _load_clean(path, cfg, stats[split])
    if files.get("val") is None and cfg.val_fraction > 0:
        pairs["train"], pairs["val"] = _split(pairs["train"], cfg)
        stats["val"].split_from_train = len(pairs["val"])
    leakage = cleaning.find_leakage([p.chosen for p in pairs["train"]],
                                    [p.chosen for p in pairs["val"]])
    if cfg.leakage == "drop" and leakage.count:
        leaked = set(leakage.leaked_indices)
        for i in sorted(leaked):
            stats["train"].cleaning.drop(cleaning.LEAKED, pairs["train"][i].source)
        pairs["train"] = [p for i, p in enumerate(pairs["train"]) if i not in leaked]
    if not pairs["train"]:
        raise ValueError(f"{cfg.train_file}: no training pairs left after cleaning")

    meta_splits: dict[str, Any] = {}
    shown: dict[str, list[tuple[Sample, TokenizedExample]]] = {}
    for split in SPLITS:
        if not pairs[split]:
            continue
        kept, tokenized = tokenize_pairs(pairs[split], cfg, tokenizer, stats[split],
                                         progress=progress)
        if not kept:
            raise ValueError(f"{split}: every pair is longer than max_length {cfg.max_length}; "
                             "raise --max-length")
        arrays = pair_arrays(tokenized, cfg.max_length, meta_base["tokenizer"]["pad_token_id"])
        flat = [t for pair in tokenized for t in pair]
        stats[split].record_packing(flat, len(kept), packing_efficiency(arrays))
        stats[split].examples_out = len(kept)  # pairs, each of two sequences
        logger.info("%s: %d pairs -> %d rows of 2 x %d tokens (padding efficiency %.1f%%)",
                    split, len(kept), len(kept), cfg.max_length,
                    100 * stats[split].packing_efficiency)
        (build / split).mkdir()
        for name, array in arrays.items():
            np.save(build / split / f"{name}.npy", array)
        meta_splits[split] = {"rows": len(kept), "examples": len(kept)}
        shown[split] = [(replace_source(sample, label), tokens)
                        for pair, toks in zip(kept, tokenized, strict=True)
                        for sample, tokens, label in ((pair.chosen, toks[0], "chosen"),
                                                      (pair.rejected, toks[1], "rejected"))]
    meta = {**meta_base, "cache_key": key, "config": cfg.to_dict(), "layout": LAYOUT,
            "max_length": cfg.max_length, "splits": meta_splits}
    write_report(build, cfg, stats, leakage, shown, tokenizer)
    (build / "meta.json").write_text(json.dumps(meta, indent=2))


def _load_clean(path: Path, cfg: DataConfig, stats: SplitStats) -> list[PreferencePair]:
    loaded, bad = load_pairs(path, cfg)
    logger.info("%s: read %d rows from %s (%d bad)", stats.split, len(loaded) + len(bad), path,
                len(bad))
    generic = [e for e in bad if not isinstance(e, PreferenceRowError)]
    stats.record_loaded(len(loaded), generic)
    for error in bad:
        if isinstance(error, PreferenceRowError):
            stats.rows_read += 1
            record_bad_pair(stats, error)
    by_id = {id(p.chosen): p for p in loaded}
    result = cleaning.clean_samples([p.chosen for p in loaded], dedup=cfg.dedup)
    stats.record_cleaning(result)
    return [by_id[id(s)] for s in result.kept]


def record_bad_pair(stats: SplitStats, error: PreferenceRowError) -> None:
    """Count a skipped pair under its own reason (and list it with the bad rows)."""
    stats.bad_rows.append(str(error))
    stats.cleaning.drop(error.reason, f"{error.path}:{error.line}")


def _split(pairs: list[PreferencePair], cfg: DataConfig
           ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    by_id = {id(p.chosen): p for p in pairs}
    train, val = cleaning.split_validation([p.chosen for p in pairs], cfg.val_fraction, cfg.seed)
    return [by_id[id(s)] for s in train], [by_id[id(s)] for s in val]


def tokenize_pairs(pairs: Sequence[PreferencePair], cfg: DataConfig, tokenizer: Any,
                   stats: SplitStats, *, progress: bool
                   ) -> tuple[list[PreferencePair], list[tuple[TokenizedExample, TokenizedExample]]]:
    """Render and tokenise both sequences of every pair; drop (and count) the ones that do not
    fit max_length. Raises `PreferenceRowError` for a prompt that fills max_length by itself
    unless `cfg.skip_bad_rows`."""
    pieces = [render_pieces(s, cfg.style, tokenizer)
              for pair in pairs for s in (pair.chosen, pair.rejected)]
    flat = tokenize_pieces(pieces, tokenizer, cfg.style, progress=progress,
                           desc=f"tokenise {stats.split}")
    stats.record_lengths([len(t) for t in flat])
    kept: list[PreferencePair] = []
    kept_tokens: list[tuple[TokenizedExample, TokenizedExample]] = []
    for i, pair in enumerate(pairs):
        chosen, rejected = flat[2 * i], flat[2 * i + 1]
        prompt_tokens = int(np.argmax(chosen.trained))  # context before the first trained token
        if prompt_tokens >= cfg.max_length:
            error = PreferenceRowError(pair.source, PROMPT_TOO_LONG,
                                       f"the prompt has {prompt_tokens} tokens, max_length is "
                                       f"{cfg.max_length}: no room for a completion",
                                       cfg.prompt_field)
            if not cfg.skip_bad_rows:
                raise error
            record_bad_pair(stats, error)
            continue
        if max(len(chosen), len(rejected)) > cfg.max_length:
            stats.cleaning.drop(cleaning.TOO_LONG, pair.source)
            continue
        kept.append(pair)
        kept_tokens.append((chosen, rejected))
    return kept, kept_tokens


def pair_arrays(tokenized: Sequence[tuple[TokenizedExample, TokenizedExample]],
                max_length: int, pad_id: int) -> dict[str, np.ndarray]:
    """(pairs, 2, max_length) arrays: one sequence per padded row, never packed together."""
    flat = [t for pair in tokenized for t in pair]
    arrays = build_arrays(flat, [[i] for i in range(len(flat))], max_length, pad_id)
    return {name: a.reshape(len(tokenized), 2, max_length) for name, a in arrays.items()}


def replace_source(sample: Sample, label: str) -> Sample:
    """`sample` with its source marked as the chosen or rejected side (for the report)."""
    return replace(sample, source=f"{sample.source} ({label})")
