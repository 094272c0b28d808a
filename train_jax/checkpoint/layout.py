"""The jaxtune checkpoint directory: paths, the `jaxtune_checkpoint.json` info file, HF assets.

```
CKPT_DIR/jaxtune_checkpoint.json   {"format": 1, "model_config": <HF config.json dict>,
                                    "lora": {"rank", "alpha", "dropout", "targets"} | null,
                                    "source": {...}}
CKPT_DIR/hf_assets/                tokenizer files, generation_config.json, chat template
CKPT_DIR/steps/<step>/<item>/      orbax CheckpointManager root (see `train_jax.checkpoint.store`)
```
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train_jax.model.config import LoraSpec, ModelConfig

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
INFO_FILE = "jaxtune_checkpoint.json"
ASSETS_DIR = "hf_assets"
STEPS_DIR = "steps"

# Files of an HF model folder that are not weights nor config.json: copied into hf_assets/
# on import and back into the exported folder.
HF_ASSET_FILES: tuple[str, ...] = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "vocab.json", "merges.txt", "generation_config.json",
    "chat_template.jinja", "chat_template.json",
)


class CheckpointError(ValueError):
    """A checkpoint directory cannot be used as asked (the message says why)."""


class NotACheckpointError(CheckpointError):
    """The directory is not a jaxtune checkpoint (no readable `jaxtune_checkpoint.json`)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """Contents of `jaxtune_checkpoint.json`."""

    model_config: Mapping[str, Any]
    lora: LoraSpec | None = None
    source: Mapping[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_model_config(self, **options: Any) -> ModelConfig:
        """The `ModelConfig` (with this checkpoint's LoRA spec unless `lora=` is given)."""
        options.setdefault("lora", self.lora)
        return ModelConfig.from_hf_config(self.model_config, **options)

    def to_json(self) -> dict[str, Any]:
        """The JSON document written to `jaxtune_checkpoint.json`."""
        return {
            "format": self.format,
            "model_config": dict(self.model_config),
            "lora": None if self.lora is None else {**dataclasses.asdict(self.lora),
                                                    "targets": list(self.lora.targets)},
            "source": dict(self.source),
        }


def info_path(ckpt_dir: str | Path) -> Path:
    """Path of the info file of `ckpt_dir`."""
    return Path(ckpt_dir) / INFO_FILE


def assets_dir(ckpt_dir: str | Path) -> Path:
    """Folder holding the tokenizer / generation config / chat template of the base model."""
    return Path(ckpt_dir) / ASSETS_DIR


def steps_dir(ckpt_dir: str | Path) -> Path:
    """Root of the orbax `CheckpointManager` of `ckpt_dir`."""
    return Path(ckpt_dir) / STEPS_DIR


def is_jaxtune_checkpoint(path: str | Path) -> bool:
    """True when `path` is a folder holding a `jaxtune_checkpoint.json`."""
    return info_path(path).is_file()


def write_checkpoint_info(ckpt_dir: str | Path, model_config: ModelConfig | Mapping[str, Any], *,
                          lora: LoraSpec | None = None, source: Mapping[str, Any] | None = None,
                          assets_from: str | Path | None = None) -> CheckpointInfo:
    """Create `ckpt_dir` with its info file and (optionally) the HF assets of `assets_from`.

    `model_config` is a `ModelConfig` (its HF dict is stored; its `lora` is used when `lora`
    is not given) or an HF config dict. Call this once before saving steps with
    `train_jax.checkpoint.store.checkpoint_manager`.
    """
    if isinstance(model_config, ModelConfig):
        lora = lora if lora is not None else model_config.lora
        hf_config = model_config.to_hf_config()
    else:
        hf_config = dict(model_config)
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    info = CheckpointInfo(model_config=hf_config, lora=lora, source=dict(source or {}))
    tmp = info_path(ckpt_dir).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info.to_json(), indent=2) + "\n")
    tmp.replace(info_path(ckpt_dir))  # atomic: a reader never sees half a file
    if assets_from is not None:
        copy_hf_assets(assets_from, assets_dir(ckpt_dir))
    return info


def read_checkpoint_info(ckpt_dir: str | Path) -> CheckpointInfo:
    """Read and validate `CKPT_DIR/jaxtune_checkpoint.json`."""
    path = info_path(ckpt_dir)
    if not Path(ckpt_dir).is_dir():
        raise NotACheckpointError(f"checkpoint directory {ckpt_dir} does not exist")
    if not path.is_file():
        hint = " (it looks like an HF model folder: run `jaxtune model import` first)" if (
            Path(ckpt_dir) / "config.json").is_file() else ""
        raise NotACheckpointError(f"{ckpt_dir} is not a jaxtune checkpoint: no {INFO_FILE}{hint}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NotACheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model_config"), dict):
        raise NotACheckpointError(f"{path} has no `model_config` object")
    version = doc.get("format")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format {version!r}; this jaxtune reads format {FORMAT_VERSION}")
    lora = doc.get("lora")
    if lora is not None:
        try:
            lora = LoraSpec(rank=int(lora["rank"]), alpha=float(lora["alpha"]),
                            dropout=float(lora.get("dropout", 0.0)), targets=tuple(lora["targets"]))
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: invalid `lora` entry ({exc})") from None
    return CheckpointInfo(model_config=doc["model_config"], lora=lora, source=doc.get("source") or {},
                          format=version)


def copy_hf_assets(src_dir: str | Path, dst_dir: str | Path) -> list[str]:
    """Copy the tokenizer / generation-config / chat-template files found in `src_dir`."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in HF_ASSET_FILES:
        if (src_dir / name).is_file():
            shutil.copy2(src_dir / name, dst_dir / name)
            copied.append(name)
    if not any(name.startswith("tokenizer") or name in ("vocab.json",) for name in copied):
        logger.warning("no tokenizer files found in %s; the exported model will lack a tokenizer", src_dir)
    return copied
