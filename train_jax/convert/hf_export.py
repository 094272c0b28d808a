"""Flax params or a jaxtune checkpoint -> HF folder, with safetensors and numpy only (no torch).

Writes `config.json`, `model.safetensors` (or shards plus `model.safetensors.index.json` above
`max_shard_bytes`), `generation_config.json` and the tokenizer / chat-template files kept in the
checkpoint's `hf_assets/`. LoRA adapters are merged into their kernels (W += alpha/r * A @ B)
and/or written as a PEFT adapter folder. Tensors are converted and written one at a time: an
export from a checkpoint reads each array (or maps it, when stored raw) just before writing
it, so it never holds the whole model in memory (`write_safetensors`).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from train_jax import checkpoint as ckpt
from train_jax.convert import names
from train_jax.convert.dtypes import DTYPE_ALIASES, canonical_dtype, numpy_dtype
from train_jax.convert.errors import ConversionError, ShapeMismatchError
from train_jax.convert.hf_import import SAFETENSORS_FILE, SAFETENSORS_INDEX
from train_jax.convert.safetensors_stream import file_order, write_pieces
from train_jax.model.config import LoraSpec, ModelConfig

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3
WEIGHT_FILE_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", SAFETENSORS_INDEX)
_TRANSPOSE_ROWS = 32


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


@dataclass(frozen=True)
class HFWeight:
    """One base parameter as an HF tensor: its Flax path, HF name and HF shape."""

    path: names.Path
    name: str
    shape: tuple[int, ...]
    transposed: bool  # kernels: Flax (in, out) is HF (out, in)


def hf_weights(shapes: Mapping[names.Path, tuple[int, ...]], cfg: ModelConfig) -> list[HFWeight]:
    """The HF tensors of the base parameters, in model order, checked against the config.

    `shapes` is the flat {path: shape} of the params (LoRA leaves must have been merged).
    """
    if any(path[-1] in names.LORA_LEAVES for path in shapes):
        raise ConversionError("params still hold LoRA adapters: merge them first (merge_lora)")
    expected = names.expected_shapes(cfg.replace(lora=None))
    unknown = sorted(".".join(map(str, p)) for p in shapes if p not in expected)
    missing = sorted(".".join(map(str, p)) for p in expected if p not in shapes)
    if unknown or missing:
        raise ShapeMismatchError(f"params do not match the model config: missing {missing[:3]}, "
                                 f"unexpected {unknown[:3]}")
    weights = []
    for path, spec in expected.items():
        shape = tuple(shapes[path])
        if shape != spec.shape:
            raise ShapeMismatchError(f"parameter {'.'.join(map(str, path))} has shape {shape}, "
                                     f"config implies {spec.shape}")
        name, transposed = names.hf_name(path)
        weights.append(HFWeight(path, name, shape[::-1] if transposed else shape, transposed))
    return weights


def hf_tensors(params: Mapping[str, Any], cfg: ModelConfig, dtype: str) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, new array in `dtype` and HF layout) for every base parameter, in model order."""
    flat = names.flatten(params)
    target = numpy_dtype(dtype)
    for weight in hf_weights({path: np.shape(v) for path, v in flat.items()}, cfg):
        out = np.empty(weight.shape, target)
        _to_hf_layout(np.asarray(flat[weight.path]), weight, out)
        yield weight.name, out


def write_safetensors(weights: Sequence[HFWeight], arrays: Mapping[names.Path, Any] | ckpt.StoredArrays,
                      dtype: str, out_dir: Path, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[str]:
    """Write `model.safetensors`, or shards and an index when the total exceeds `max_shard_bytes`.

    `arrays` maps each weight's path to its Flax-layout array, or is a checkpoint's
    `StoredArrays` (each array is then read just before it is written). Tensors are converted
    to `dtype` and HF layout one at a time and written as they are ready
    (`safetensors_stream.write_pieces`); the files are byte-identical to
    `safetensors.numpy.save_file` of the converted tensors.
    """
    target = numpy_dtype(dtype)
    shards: list[dict[str, HFWeight]] = [{}]
    sizes = [0]
    for weight in weights:  # shards fill up in model order, as HF's own sharding does
        nbytes = math.prod(weight.shape) * target.itemsize
        if sizes[-1] and sizes[-1] + nbytes > max_shard_bytes:
            shards.append({})
            sizes.append(0)
        shards[-1][weight.name] = weight
        sizes[-1] += nbytes
    specs = [{name: (w.shape, target) for name, w in shard.items()} for shard in shards]
    metadata = {"format": "pt"}  # transformers refuses safetensors without it
    files = ([SAFETENSORS_FILE] if len(shards) == 1 else
             [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)])
    for file, shard, spec in zip(files, shards, specs, strict=True):
        order = [shard[name] for name in file_order(spec)]
        with closing(_hf_pieces(order, arrays, target)) as pieces:
            write_pieces(out_dir / file, spec, pieces, metadata)
    if len(shards) == 1:
        return files
    weight_map = {name: file for file, spec in zip(files, specs, strict=True) for name in spec}
    index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
    (out_dir / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return files


def _hf_pieces(order: Sequence[HFWeight], arrays: Mapping[names.Path, Any] | ckpt.StoredArrays,
               target: np.dtype, depth: int = 2) -> Iterator[tuple[str, int, np.ndarray]]:
    # (HF name, byte offset, bytes) pieces of every weight of `order` in HF layout and `target`
    # dtype, for `write_pieces`; each valid until the next is requested.
    #
    # A worker thread reads (`_read_ahead`), casts and transposes up to `depth` weights ahead
    # into reused buffers while the caller writes: numpy's copies and the write() calls release
    # the GIL, so on two cores the conversion overlaps the writes. (Two converting threads are
    # slower here: the transposes then compete with each other and with the write for the same
    # memory bandwidth.) Reused buffers also stay mapped: fresh arrays would pay first-touch
    # page faults (docs/BENCHMARKS.md#export). A weight already in HF layout and dtype whose
    # source outlives the export (an array in memory, a memory-mapped stored array) needs no
    # conversion: it is written from its source, a slice at a time whenever no converted weight
    # is ready, so the writer never idles while the worker transposes.
    stored = isinstance(arrays, ckpt.StoredArrays)
    sources = (_read_ahead(order, arrays) if stored else
               ((np.ascontiguousarray(arrays[weight.path]), True) for weight in order))
    largest = max((math.prod(w.shape) * target.itemsize for w in order if w.transposed), default=0)
    ring = [np.empty(largest, np.uint8) for _ in range(depth + 1)]
    free: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    ready: queue.SimpleQueue[tuple[int | None, str, np.ndarray] | Exception | None] = queue.SimpleQueue()
    for slot in range(len(ring)):
        free.put(slot)

    def convert() -> None:
        try:
            for weight, (source, lasting) in zip(order, sources, strict=True):
                if lasting and not weight.transposed and source.dtype == target:
                    ready.put((None, weight.name, source))
                    continue
                slot = free.get()
                if slot is None:  # the caller stopped early
                    return
                nbytes = math.prod(weight.shape) * target.itemsize
                if nbytes > ring[slot].nbytes:  # an untransposed cast: rare, and larger than the ring
                    ring[slot] = np.empty(nbytes, np.uint8)
                out = ring[slot][:nbytes].view(target).reshape(weight.shape)
                _to_hf_layout(source, weight, out)
                ready.put((slot, weight.name, out))
            ready.put(None)
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread
            ready.put(exc)
        finally:
            if stored:
                sources.close()  # waits for reads still running into its buffers

    worker = threading.Thread(target=convert, name="hf-export-convert", daemon=True)
    worker.start()
    unconverted: deque[tuple[str, np.ndarray, int]] = deque()  # (name, flat array, next element)
    try:
        while True:
            try:
                item = ready.get_nowait()
            except queue.Empty:
                if unconverted:
                    yield _next_slice(unconverted)
                    continue
                item = ready.get()
            if isinstance(item, Exception):
                raise item
            if item is None:
                break
            slot, name, out = item
            if slot is None:
                unconverted.append((name, out.reshape(-1), 0))
                continue
            yield name, 0, out
            free.put(slot)  # the caller has written it
        while unconverted:
            yield _next_slice(unconverted)
    finally:
        free.put(None)
        worker.join()


# A short write, so that the writer looks for converted weights often (docs/BENCHMARKS.md#export).
_SLICE_BYTES = 1 << 20


def _next_slice(unconverted: deque[tuple[str, np.ndarray, int]]) -> tuple[str, int, np.ndarray]:
    # The next slice (name, byte offset, elements) of the first weight in `unconverted`, a flat
    # array and the index of its first element not handed out yet; dropped once all are.
    name, flat, start = unconverted.popleft()
    stop = start + max(1, _SLICE_BYTES // flat.itemsize)
    if stop < flat.size:
        unconverted.appendleft((name, flat, stop))
    return name, start * flat.itemsize, flat[start:stop]


def _read_ahead(order: Sequence[HFWeight], stored: ckpt.StoredArrays,
                depth: int = 2) -> Iterator[tuple[np.ndarray, bool]]:
    # (array, lasting) for the stored arrays in `order`. A memory-mapped one is its view, which
    # lasts; the others are read into one of depth + 1 reused buffers while up to `depth` later
    # ones are being read on tensorstore's threads, valid until the next is requested.
    sizes = [stored.nbytes(weight.path) for weight in order]
    slots = [np.empty(max(sizes, default=0), np.uint8) for _ in range(depth + 1)]

    def start(i: int) -> tuple[np.ndarray, Any]:
        path = order[i].path
        view = stored.view(path)
        if view is not None:
            return view, None
        out = slots[i % len(slots)][:sizes[i]].view(stored.dtypes[path]).reshape(stored.shapes[path])
        return out, stored.read_into(path, out)

    pending = deque(start(i) for i in range(min(depth, len(order))))
    try:
        for i in range(len(order)):
            out, read = pending.popleft()
            if i + depth < len(order):  # into the slot of array i - 1, which the caller is done with
                pending.append(start(i + depth))
            if read is not None:
                read.result()
            yield out, read is None
    finally:  # never leave a read running into a buffer about to be freed
        for _, read in pending:
            if read is not None:
                read.exception()


def _to_hf_layout(array: np.ndarray, weight: HFWeight, out: np.ndarray) -> None:
    # Cast to out.dtype and, for kernels, transpose (in, out) -> (out, in), into `out`.
    if array.dtype == out.dtype:
        # numpy copies ml_dtypes' bfloat16 element by element; an unsigned view of the same
        # width takes the fast native path and yields the same bytes.
        array, out = array.view(f"u{array.itemsize}"), out.view(f"u{out.itemsize}")
    if not weight.transposed:
        out[...] = array
        return
    # Blocks of source rows: each block's transpose writes 32 contiguous elements per output
    # row, which numpy does faster than one whole-array strided copy or other block shapes
    # (docs/BENCHMARKS.md#export, "Transposes by other means").
    for start in range(0, array.shape[0], _TRANSPOSE_ROWS):
        out[:, start:start + _TRANSPOSE_ROWS] = array[start:start + _TRANSPOSE_ROWS].T


def to_hf(params: Mapping[str, Any], cfg: ModelConfig, out_dir: str | Path, *,
          dtype: str | None = None, assets_from: str | Path | None = None,
          max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Write an HF folder from the pure-dict params tree; LoRA adapters are merged.

    `dtype` is `bf16|fp32|fp16` (default: the base model's dtype, fp16 only when asked).
    `assets_from` is a folder with tokenizer files, generation_config.json and chat template.
    """
    if has_lora(params):
        if cfg.lora is None:
            raise ConversionError("params hold LoRA adapters but the config has no LoRA spec")
        params = merge_lora(params, cfg.lora)
    flat = names.flatten(params)
    return _write_hf_folder(flat, {path: np.shape(v) for path, v in flat.items()}, cfg, out_dir,
                            dtype=dtype, assets_from=assets_from, max_shard_bytes=max_shard_bytes)


def _write_hf_folder(arrays: Mapping[names.Path, Any] | ckpt.StoredArrays, shapes: Mapping[names.Path, tuple[int, ...]],
                     cfg: ModelConfig, out_dir: str | Path, *, dtype: str | None,
                     assets_from: str | Path | None, max_shard_bytes: int) -> Path:
    out_dir = Path(out_dir)
    dtype = canonical_dtype(dtype) if dtype else default_export_dtype(cfg.torch_dtype)
    weights = hf_weights(shapes, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in WEIGHT_FILE_PATTERNS:  # never mix shards of two exports
        for path in out_dir.glob(stale):
            path.unlink()
    files = write_safetensors(weights, arrays, dtype, out_dir, max_shard_bytes)
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
    if peft_adapter_dir is not None and info.lora is None:
        raise ConversionError(f"{ckpt_dir} has no LoRA adapters; drop --peft-adapter")
    # A plain export reads each array just before writing it; LoRA merges and PEFT adapters
    # need the whole tree first (and a step the tensorstore reader does not handle is restored
    # by orbax).
    stored = ckpt.open_params(ckpt_dir, step=step)
    assets = ckpt.assets_dir(ckpt_dir)
    assets_from = assets if assets.is_dir() else None
    if stored is not None and peft_adapter_dir is None and not any(p[-1] in names.LORA_LEAVES for p in stored):
        if out_dir is not None:
            _write_hf_folder(stored, stored.shapes, cfg, out_dir, dtype=dtype, assets_from=assets_from,
                             max_shard_bytes=max_shard_bytes)
        return info
    params = names.unflatten(stored.read_all()) if stored is not None else ckpt.restore_params(ckpt_dir, step)
    if peft_adapter_dir is not None:
        write_peft_adapter(params, info.lora, peft_adapter_dir,
                           base_model=str(info.source.get("hf_dir", "")),
                           dtype=canonical_dtype(dtype) if dtype else default_export_dtype(cfg.torch_dtype))
    if out_dir is not None:
        to_hf(params, cfg, out_dir, dtype=dtype, assets_from=assets_from, max_shard_bytes=max_shard_bytes)
    return info
