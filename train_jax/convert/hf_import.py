"""HF model folder -> (ModelConfig, Flax params), with safetensors and numpy only (no torch).

Reads `config.json` and `model.safetensors` or the shards listed in
`model.safetensors.index.json`; weights keep their stored dtype (bf16, fp16 or fp32) unless
`weight_dtype` asks for a cast, so HF -> Flax -> HF is bit-exact.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from train_jax.convert import names
from train_jax.convert.dtypes import numpy_dtype
from train_jax.convert.errors import ConversionError, MissingFileError, ShapeMismatchError
from train_jax.model.config import ModelConfig

logger = logging.getLogger(__name__)

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
FLOAT_DTYPES = ("float32", "bfloat16", "float16")
# Tensors HF checkpoints may carry that are not parameters (recomputed buffers).
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
HUB_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja")


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """A local HF folder as is; otherwise a hub id downloaded with `snapshot_download`."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise MissingFileError(f"{path} is not a folder (expected an HF model folder)")
        return path
    repo_id = str(name_or_path)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        raise MissingFileError(f"model folder {name_or_path} does not exist (and it is not a hub id "
                               "such as HuggingFaceTB/SmolLM2-135M-Instruct)")
    from huggingface_hub import snapshot_download  # only when a hub id is named

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_PATTERNS)))
    except Exception as exc:  # noqa: BLE001 - offline / unknown repo / auth all end here
        raise MissingFileError(
            f"{repo_id} is not a local folder and could not be downloaded from the Hugging Face "
            f"hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'}); "
            "without network access pass a local HF folder") from None


def load_hf_config(model_dir: str | Path) -> dict[str, Any]:
    """The `config.json` dict of an HF folder."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise MissingFileError(f"{model_dir} has no config.json (is it an HF model folder?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{path} is not valid JSON: {exc}") from None


def safetensors_files(model_dir: str | Path) -> dict[str, Path]:
    """{tensor name: file holding it} from the index or the single `model.safetensors`."""
    model_dir = Path(model_dir)
    index = model_dir / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map") or {}
        files = {name: model_dir / file for name, file in weight_map.items()}
        missing = sorted({str(f.name) for f in files.values() if not f.is_file()})
        if missing:
            raise MissingFileError(f"{index} lists shards that are missing: {missing}")
        return files
    single = model_dir / SAFETENSORS_FILE
    if single.is_file():
        with safe_open(single, framework="flax") as handle:
            return {name: single for name in handle.keys()}  # noqa: SIM118
    others = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(p.name for p in model_dir.glob("*.gguf"))
    hint = f" (found {others}: re-save with safetensors, or use `jaxtune model fetch`)" if others else ""
    raise MissingFileError(f"{model_dir} has neither {SAFETENSORS_FILE} nor {SAFETENSORS_INDEX}{hint}")


def read_tensors(files: dict[str, Path], wanted: list[str]) -> dict[str, np.ndarray]:
    """Read the named tensors as numpy arrays (bf16 via ml_dtypes), one file open at a time."""
    by_file: dict[Path, list[str]] = {}
    for name in wanted:
        by_file.setdefault(files[name], []).append(name)
    out: dict[str, np.ndarray] = {}
    for file, file_names in by_file.items():
        # The numpy backend of safetensors cannot read bf16; the flax one returns CPU jax arrays.
        with safe_open(file, framework="flax") as handle:
            for name in file_names:
                out[name] = np.asarray(handle.get_tensor(name))
    return out


def from_hf(model_dir: str | Path, *, weight_dtype: str | None = None,
            **config_options: Any) -> tuple[ModelConfig, dict[str, Any]]:
    """Read an HF folder (or hub id) into a `ModelConfig` and the pure-dict params tree.

    `weight_dtype` (`float32`/`bfloat16`/`float16`) casts every weight; by default weights keep
    their stored dtype. `config_options` are jaxtune options passed to
    `ModelConfig.from_hf_config` (e.g. compute `dtype=`, `param_dtype=`, `lora=`); they do not
    change the returned arrays. LoRA adapters are not created here.
    """
    model_dir = resolve_model_dir(model_dir)
    cfg = ModelConfig.from_hf_config(load_hf_config(model_dir), **config_options)
    files = safetensors_files(model_dir)
    expected = {path: spec for path, spec in names.expected_shapes(cfg.replace(lora=None)).items()}
    hf_names = {path: names.hf_name(path) for path in expected}
    missing = sorted(n for n, _ in hf_names.values() if n not in files)
    if missing:
        raise MissingFileError(f"{model_dir} lacks {len(missing)} tensor(s) the config needs, e.g. {missing[:3]}")
    used = {n for n, _ in hf_names.values()}
    extra = sorted(n for n in files if n not in used and not n.endswith(_IGNORED_SUFFIXES))
    if cfg.tie_word_embeddings and "lm_head.weight" in extra:
        extra.remove("lm_head.weight")  # some tied checkpoints also store the shared matrix
    if extra:
        raise ShapeMismatchError(f"{model_dir} has tensors the {cfg.model_type} config does not use, "
                                 f"e.g. {extra[:3]} (does config.json match the weights?)")
    tensors = read_tensors(files, sorted(used))
    flat = {}
    for path, spec in expected.items():
        name, transposed = hf_names[path]
        array = tensors.pop(name)
        if array.dtype.name not in FLOAT_DTYPES:
            raise ShapeMismatchError(f"tensor {name} has dtype {array.dtype.name}; jaxtune imports "
                                     f"{'/'.join(FLOAT_DTYPES)} weights (dequantize first)")
        if transposed:
            array = np.ascontiguousarray(array.T)
        if array.shape != spec.shape:
            stored = array.shape[::-1] if transposed else array.shape
            want = spec.shape[::-1] if transposed else spec.shape
            raise ShapeMismatchError(f"tensor {name} has shape {list(stored)}, but config.json implies "
                                     f"{list(want)}")
        flat[path] = array.astype(numpy_dtype(weight_dtype)) if weight_dtype else array
    logger.info("imported %d tensors from %s (%s)", len(flat), model_dir,
                ", ".join(sorted({a.dtype.name for a in flat.values()})))
    return cfg, names.unflatten(flat)
