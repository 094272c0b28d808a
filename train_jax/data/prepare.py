"""`prepare_dataset`: data files + tokenizer -> a prepared dataset directory (cached by hash).

Layout of a prepared dataset directory::

    OUT/meta.json                      format, cache key, config, tokenizer facts, split sizes
    OUT/<split>/<array>.npy            (rows, max_length) arrays, see `packing.ARRAY_NAMES`
    OUT/report.json, report.md, token_lengths.png

Splits are ``train`` and (when there is validation data) ``val``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.tasks import TASK_NAMES, get_task, prompting
from eval.tasks.records import TaskExample
from train_jax.data import cleaning, hub
from train_jax.data.config import DataConfig
from train_jax.data.packing import ARRAY_NAMES, assign_rows, build_arrays, packing_efficiency
from train_jax.data.rendering import render_pieces
from train_jax.data.report import SplitStats, write_report
from train_jax.data.sources import Sample, load_samples
from train_jax.data.tokenization import TokenizedExample, load_tokenizer, tokenize_pieces

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val")


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset directory: metadata plus memory-mapped arrays per split."""

    path: Path
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> PreparedDataset:
        """Open a prepared dataset directory written by `prepare_dataset`."""
        meta_file = Path(path) / "meta.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{path}: not a prepared dataset (no meta.json)")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: dataset format {meta.get('format')} is not "
                             f"{FORMAT_VERSION}; prepare it again")
        return cls(Path(path), meta)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.meta["splits"])

    @property
    def max_length(self) -> int:
        return int(self.meta["max_length"])

    def num_rows(self, split: str) -> int:
        """Number of (packed) rows of `split`."""
        return int(self.meta["splits"][split]["rows"])

    def arrays(self, split: str) -> dict[str, np.ndarray]:
        """The row arrays of `split`, memory-mapped read-only."""
        if split not in self.meta["splits"]:
            raise KeyError(f"{self.path}: no split {split!r}; have {', '.join(self.splits)}")
        return {name: np.load(self.path / split / f"{name}.npy", mmap_mode="r")
                for name in ARRAY_NAMES}


def prepare_dataset(cfg: DataConfig, tokenizer_or_model: Any, out_dir: str | Path, *,
                    progress: bool = True, force: bool = False) -> PreparedDataset:
    """Prepare `cfg`'s data with the model's tokenizer into `out_dir` and return it.

    `tokenizer_or_model` is a loaded HF fast tokenizer, a local HF model folder, a jaxtune
    checkpoint directory or a hub id. If `out_dir` already holds a dataset prepared from
    the same config, file contents and tokenizer, it is reused without work (`force`
    rebuilds). Raises `DataFormatError` for bad rows unless `cfg.skip_bad_rows`.
    """
    out = Path(out_dir)
    tokenizer = (load_tokenizer(tokenizer_or_model)
                 if isinstance(tokenizer_or_model, (str, os.PathLike)) else tokenizer_or_model)
    key = cache_key(cfg, tokenizer)
    if not force and (out / "meta.json").is_file():
        try:
            existing = PreparedDataset.load(out)
        except ValueError:
            existing = None
        if existing is not None and existing.meta.get("cache_key") == key:
            logger.info("reusing prepared dataset %s (same inputs)", out)
            return existing
    if out.exists() and any(out.iterdir()) and not (out / "meta.json").is_file():
        raise ValueError(f"{out} exists and is not a prepared dataset; choose another --out")
    build = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    try:
        if cfg.task == "preference":  # (chosen, rejected) pairs for DPO: their own layout
            from train_jax.data.preference import build_preference

            files = {split: None if spec is None else _local_file(spec, build, split)
                     for split, spec in (("train", cfg.train_file), ("val", cfg.val_file))}
            build_preference(cfg, tokenizer, key, files, build, base_meta(tokenizer),
                             progress=progress)
        else:
            _build(cfg, tokenizer, key, build, progress=progress)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(build, out)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return PreparedDataset.load(out)


def cache_key(cfg: DataConfig, tokenizer: Any) -> str:
    """Hash of everything the prepared arrays depend on (not of the file paths themselves)."""
    config = cfg.to_dict()
    files = {name: config.pop(name) for name in ("train_file", "val_file")}
    parts = {
        "format": FORMAT_VERSION,
        "config": config,
        "files": {name: _file_fingerprint(spec) for name, spec in files.items()},
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "prompts": prompt_fingerprint(cfg.task),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of the tokenizer's vocabulary/pipeline, special tokens and chat template."""
    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    for extra in (tokenizer.chat_template or "", tokenizer.eos_token or "",
                  tokenizer.bos_token or "", tokenizer.pad_token or ""):
        digest.update(b"\x00" + str(extra).encode())
    return digest.hexdigest()


def prompt_fingerprint(task: str) -> str:
    """Hash of how `task` renders a probe example, so edited prompt text invalidates caches."""
    if task not in TASK_NAMES:
        probe = prompting.structured_prompt("\x00probe")
        return hashlib.sha256(probe.encode()).hexdigest()
    spec = get_task(task)
    example = TaskExample(inputs={name: f"\x00{name}" for name in spec.input_fields},
                          target="\x00target")
    rendered = [spec.structured_prompt(example), spec.chat_messages(example, [example])]
    return hashlib.sha256(json.dumps(rendered, sort_keys=True).encode()).hexdigest()


def _file_fingerprint(spec: str | None) -> str | None:
    if spec is None or hub.is_hub_spec(spec):
        return spec  # a hub dataset is keyed by its name: re-use works offline
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {spec}")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _local_file(spec: str, build: Path, split: str) -> Path:
    if hub.is_hub_spec(spec):
        return hub.materialize_hub_dataset(spec, build / "source" / f"{split}.jsonl")
    return Path(spec)


def _build(cfg: DataConfig, tokenizer: Any, key: str, build: Path, *, progress: bool) -> None:
    stats = {split: SplitStats(split) for split in SPLITS}
    samples: dict[str, list[Sample]] = {}
    for split, spec in (("train", cfg.train_file), ("val", cfg.val_file)):
        if spec is None:
            samples[split] = []
            continue
        loaded, bad = load_samples(_local_file(spec, build, split), cfg)
        logger.info("%s: read %d rows from %s (%d bad)", split, len(loaded) + len(bad), spec,
                    len(bad))
        stats[split].record_loaded(len(loaded), bad)
        result = cleaning.clean_samples(loaded, dedup=cfg.dedup)
        stats[split].record_cleaning(result)
        samples[split] = result.kept
    if cfg.val_file is None and cfg.val_fraction > 0:
        samples["train"], samples["val"] = cleaning.split_validation(
            samples["train"], cfg.val_fraction, cfg.seed)
        stats["val"].split_from_train = len(samples["val"])
    leakage = cleaning.find_leakage(samples["train"], samples["val"])
    if cfg.leakage == "drop" and leakage.count:
        leaked = set(leakage.leaked_indices)
        for i in sorted(leaked):
            stats["train"].cleaning.drop(cleaning.LEAKED, samples["train"][i].source)
        samples["train"] = [s for i, s in enumerate(samples["train"]) if i not in leaked]
    if not samples["train"]:
        raise ValueError(f"{cfg.train_file}: no training examples left after cleaning")

    meta_splits: dict[str, Any] = {}
    rendered_examples: dict[str, list[tuple[Sample, TokenizedExample]]] = {}
    for split in SPLITS:
        if not samples[split]:
            continue
        kept, tokenized = _tokenize_split(samples[split], cfg, tokenizer, stats[split],
                                          progress=progress)
        if not kept:
            raise ValueError(f"{split}: every example is longer than max_length "
                             f"{cfg.max_length}; raise --max-length")
        rows = assign_rows([len(t) for t in tokenized], cfg.max_length, packing=cfg.packing,
                           seed=cfg.seed)
        arrays = build_arrays(tokenized, rows, cfg.max_length, _pad_id(tokenizer))
        stats[split].record_packing(tokenized, len(rows), packing_efficiency(arrays))
        logger.info("%s: %d examples -> %d rows of %d tokens (packing efficiency %.1f%%)",
                    split, len(kept), len(rows), cfg.max_length,
                    100 * stats[split].packing_efficiency)
        (build / split).mkdir()
        for name, array in arrays.items():
            np.save(build / split / f"{name}.npy", array)
        meta_splits[split] = {"rows": len(rows), "examples": len(kept)}
        rendered_examples[split] = list(zip(kept, tokenized, strict=True))

    meta = {**base_meta(tokenizer), "cache_key": key, "config": cfg.to_dict(),
            "max_length": cfg.max_length, "splits": meta_splits}
    write_report(build, cfg, stats, leakage, rendered_examples, tokenizer)
    (build / "meta.json").write_text(json.dumps(meta, indent=2))


def base_meta(tokenizer: Any) -> dict[str, Any]:
    """The meta.json entries every prepared dataset has: format and tokenizer facts."""
    return {
        "format": FORMAT_VERSION,
        "tokenizer": {
            "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
            "eos_token_id": int(tokenizer.eos_token_id),
            "pad_token_id": _pad_id(tokenizer),
            "vocab_size": len(tokenizer),
        },
    }


def _tokenize_split(samples: Sequence[Sample], cfg: DataConfig, tokenizer: Any,
                    stats: SplitStats, *, progress: bool
                    ) -> tuple[list[Sample], list[TokenizedExample]]:
    pieces = [render_pieces(s, cfg.style, tokenizer) for s in samples]
    tokenized = tokenize_pieces(pieces, tokenizer, cfg.style, progress=progress,
                                desc=f"tokenise {stats.split}")
    stats.record_lengths([len(t) for t in tokenized])
    kept_samples, kept_tokens = [], []
    for sample, tokens in zip(samples, tokenized, strict=True):
        if len(tokens) > cfg.max_length:
            stats.cleaning.drop(cleaning.TOO_LONG, sample.source)
            continue
        kept_samples.append(sample)
        kept_tokens.append(tokens)
    return kept_samples, kept_tokens


def _pad_id(tokenizer: Any) -> int:
    # Padding positions are masked out everywhere; the id only has to be a valid token.
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else tokenizer.eos_token_id)
