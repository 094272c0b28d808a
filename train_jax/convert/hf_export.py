"""Flax params or a jaxtune checkpoint -> HF folder, with safetensors and numpy only (no torch).

Writes `config.json`, `model.safetensors` (or shards plus `model.safetensors.index.json` above
`max_shard_bytes`), `generation_config.json` and the tokenizer / chat-template files kept in the
checkpoint's `hf_assets/`. LoRA adapters are merged into their kernels (W += alpha/r * A @ B)
and/or written as a PEFT adapter folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from train_jax import checkpoint as ckpt
from train_jax.convert import names
from train_jax.convert.dtypes import DTYPE_ALIASES, canonical_dtype, numpy_dtype
from train_jax.convert.errors import ConversionError, ShapeMismatchError
from train_jax.convert.hf_import import SAFETENSORS_FILE, SAFETENSORS_INDEX
from train_jax.model.config import LoraSpec, ModelConfig

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3
WEIGHT_FILE_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", SAFETENSORS_INDEX)


def default_export_dtype(base_dtype: str) -> str:
    """The base model's dtype, except that fp16 is only written when asked for explicitly."""
    base = DTYPE_ALIASES.get(str(base_dtype).removeprefix("torch."), "float32")
    if base == "float16":
        logger.info("base model is float16; exporting float32 (pass --dtype fp16 to get float16)")
        return "float32"
    return base


def has_lora(params: Mapping[str, Any]) -> bool:
    """True when the params tree holds LoRA adapter leaves."""
    return any(path[-1] in names.LORA_LEAVES for path in names.flatten(params))


def merge_lora(params: Mapping[str, Any], lora: LoraSpec) -> dict[str, Any]:
    """Params with every adapter merged into its kernel (in float32) and adapter leaves dropped.

    Kernels are (in, out), A is (in, r) and B is (r, out): W' = W + (alpha / r) * A @ B. The
    merged kernel is float32; the export casts it to the output dtype.
    """
    flat = names.flatten(params)
    merged = {path: value for path, value in flat.items() if path[-1] not in names.LORA_LEAVES}
    for path in flat:
        if path[-1] != "lora_a":
            continue
        parent = path[:-1]
        a = np.asarray(flat[path], np.float32)
        b = np.asarray(flat[(*parent, "lora_b")], np.float32)
        kernel = np.asarray(merged[(*parent, "kernel")], np.float32)
        merged[(*parent, "kernel")] = kernel + np.float32(lora.scale) * (a @ b)
    return names.unflatten(merged)


def hf_tensors(params: Mapping[str, Any], cfg: ModelConfig, dtype: str) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, array in `dtype`) for every base parameter, checked against the config.

    The casts and transposes (a copy of every kernel) run on a thread pool: numpy releases
    the GIL in both, and on a 135M model they are a third of the export's time on one core.
    """
    if has_lora(params):
        raise ConversionError("params still hold LoRA adapters: merge them first (merge_lora)")
    expected = names.expected_shapes(cfg.replace(lora=None))
    flat = names.flatten(params)
    unknown = sorted(".".join(map(str, p)) for p in flat if p not in expected)
    missing = sorted(".".join(map(str, p)) for p in expected if p not in flat)
    if unknown or missing:
        raise ShapeMismatchError(f"params do not match the model config: missing {missing[:3]}, "
                                 f"unexpected {unknown[:3]}")
    for path, spec in expected.items():
        shape = np.shape(flat[path])
        if shape != spec.shape:
            raise ShapeMismatchError(f"parameter {'.'.join(map(str, path))} has shape {shape}, "
                                     f"config implies {spec.shape}")
    target = numpy_dtype(dtype)

    def convert(path: names.Path) -> tuple[str, np.ndarray]:
        name, transposed = names.hf_name(path)
        array = np.asarray(flat[path]).astype(target, copy=False)
        return name, _transposed(array) if transposed else array

    with ThreadPoolExecutor(max_workers=_conversion_threads()) as pool:
        yield from pool.map(convert, expected)


def _conversion_threads() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _transposed(array: np.ndarray) -> np.ndarray:
    # numpy copies ml_dtypes' bfloat16 element by element; an unsigned view of the same width
    # takes the fast native path and yields the same bytes.
    native = array.view(f"u{array.itemsize}")
    return np.ascontiguousarray(native.T).view(array.dtype)


def write_safetensors(tensors: Iterator[tuple[str, np.ndarray]], out_dir: Path,
                      max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[str]:
    """Write `model.safetensors`, or shards and an index when the total exceeds `max_shard_bytes`."""
    shards: list[dict[str, np.ndarray]] = [{}]
    sizes = [0]
    for name, array in tensors:
        if sizes[-1] and sizes[-1] + array.nbytes > max_shard_bytes:
            shards.append({})
            sizes.append(0)
        shards[-1][name] = array
        sizes[-1] += array.nbytes
    metadata = {"format": "pt"}  # transformers refuses safetensors without it
    if len(shards) == 1:
        save_file(shards[0], out_dir / SAFETENSORS_FILE, metadata=metadata)
        return [SAFETENSORS_FILE]
    files, weight_map = [], {}
    for i, shard in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, out_dir / file, metadata=metadata)
        files.append(file)
        weight_map.update(dict.fromkeys(shard, file))
    index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
    (out_dir / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return files


def to_hf(params: Mapping[str, Any], cfg: ModelConfig, out_dir: str | Path, *,
          dtype: str | None = None, assets_from: str | Path | None = None,
          max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Write an HF folder from the pure-dict params tree; LoRA adapters are merged.

    `dtype` is `bf16|fp32|fp16` (default: the base model's dtype, fp16 only when asked).
    `assets_from` is a folder with tokenizer files, generation_config.json and chat template.
    """
    out_dir = Path(out_dir)
    dtype = canonical_dtype(dtype) if dtype else default_export_dtype(cfg.torch_dtype)
    if has_lora(params):
        if cfg.lora is None:
            raise ConversionError("params hold LoRA adapters but the config has no LoRA spec")
        params = merge_lora(params, cfg.lora)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in WEIGHT_FILE_PATTERNS:  # never mix shards of two exports
        for path in out_dir.glob(stale):
            path.unlink()
    files = write_safetensors(hf_tensors(params, cfg, dtype), out_dir, max_shard_bytes)
    hf_config = cfg.to_hf_config(torch_dtype=dtype)
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    copied = ckpt.copy_hf_assets(assets_from, out_dir) if assets_from else []
    if "generation_config.json" not in copied:
        generation = {k: hf_config[k] for k in ("bos_token_id", "eos_token_id") if hf_config.get(k) is not None}
        (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    logger.info("exported %s (%s, %d weight file(s))", out_dir, dtype, len(files))
    return out_dir


def write_peft_adapter(params: Mapping[str, Any], lora: LoraSpec, out_dir: str | Path, *,
                       base_model: str = "", dtype: str = "float32") -> Path:
    """Write the LoRA adapters as a PEFT folder (`adapter_config.json`, `adapter_model.safetensors`)."""
    flat = names.flatten(params)
    target = numpy_dtype(dtype)
    tensors = {names.peft_name(path): np.ascontiguousarray(np.asarray(value).astype(target).T)
               for path, value in flat.items() if path[-1] in names.LORA_LEAVES}
    if not tensors:
        raise ConversionError("params hold no LoRA adapters: nothing to write as a PEFT adapter")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out_dir / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": lora.rank, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
        "target_modules": sorted(lora.targets), "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "use_rslora": False, "use_dora": False, "modules_to_save": None,
    }
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    logger.info("wrote PEFT adapter %s (%d tensors)", out_dir, len(tensors))
    return out_dir


def export_checkpoint(ckpt_dir: str | Path, out_dir: str | Path | None, *, dtype: str | None = None,
                      step: int | None = None, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                      peft_adapter_dir: str | Path | None = None) -> ckpt.CheckpointInfo:
    """Export a step (latest by default) of a jaxtune checkpoint to an HF folder.

    With `peft_adapter_dir` the adapters are also written as a PEFT folder; `out_dir=None`
    then skips the merged export.
    """
    info = ckpt.read_checkpoint_info(ckpt_dir)
    cfg = info.to_model_config()
    params = ckpt.restore_params(ckpt_dir, step=step)
    if peft_adapter_dir is not None:
        if info.lora is None:
            raise ConversionError(f"{ckpt_dir} has no LoRA adapters; drop --peft-adapter")
        write_peft_adapter(params, info.lora, peft_adapter_dir,
                           base_model=str(info.source.get("hf_dir", "")),
                           dtype=canonical_dtype(dtype) if dtype else default_export_dtype(cfg.torch_dtype))
    if out_dir is not None:
        assets = ckpt.assets_dir(ckpt_dir)
        to_hf(params, cfg, out_dir, dtype=dtype, assets_from=assets if assets.is_dir() else None,
              max_shard_bytes=max_shard_bytes)
    return info
