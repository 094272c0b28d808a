"""Zero-copy numpy views of the arrays an orbax OCDBT item stores uncompressed.

An orbax pytree item saved with OCDBT and zarr (v2) keeps each array as one zarr chunk, a value
of the item's OCDBT B+tree. When that chunk is raw (no compressor, no filters, C order, little
endian) and held in a data file (not inline in the tree), its bytes in the file *are* the
array: memory-mapping the data file gives the array with no copy, where tensorstore copies it
into a buffer of ours first. The HF export then transposes straight from the page cache.

The tree is read with `tensorstore.ocdbt.dump`, tensorstore's public dump of the manifest and
of B+tree nodes, whose value references are `value:<file id>:<offset>:<length>` (file id =
base path and relative path of the data file). Everything not matching that plain case is
left out of the result and read through tensorstore by the caller: compressed or multi-chunk
arrays, zarr v3, a tree deeper than one node, a value the dump does not place in a file.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import tensorstore as ts

logger = logging.getLogger(__name__)

_ZARR2_METADATA = ".zarray"
_EXTENSION_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16)}  # tensorstore's names outside numpy's


def map_raw_arrays(item_dir: str | Path, names: Mapping[Any, str]) -> dict[Any, np.ndarray]:
    """Read-only views, memory-mapped, of the arrays named `names` ({key: orbax array name}).

    Only arrays stored raw in a single chunk are in the result (see the module docstring); the
    others, or all of them when the item is not a one-node OCDBT tree, are missing from it.
    """
    item_dir = Path(item_dir).absolute()
    if sys.byteorder != "little":  # the stored bytes are little endian (and so is bfloat16's view)
        return {}
    try:
        entries = _leaf_entries(item_dir)
    except (ValueError, KeyError, TypeError, OSError) as exc:  # not OCDBT, or a layout not handled here
        logger.debug("cannot map %s directly (%s); reading through tensorstore", item_dir, exc)
        return {}
    files: dict[str, np.ndarray | None] = {}  # file id -> the whole data file, mapped
    views = {}
    for key, name in names.items():
        view = _raw_view(item_dir, name, entries, files)
        if view is not None:
            views[key] = view
    return views


def _leaf_entries(item_dir: Path) -> dict[bytes, dict[str, Any]]:
    # {key: entry} of the latest version's B+tree, when that tree is a single leaf node.
    kvstore = ts.KvStore.open(item_dir.as_uri() + "/").result()
    manifest = ts.ocdbt.dump(kvstore).result()
    latest = max(manifest["versions"], key=lambda version: version["generation_number"])
    if latest.get("root_height", 0) != 0 or "location" not in latest["root"]:
        raise ValueError("the B+tree is not a single leaf node")
    node = ts.ocdbt.dump(kvstore, latest["root"]["location"]).result()
    if node.get("height", 0) != 0:
        raise ValueError("the B+tree root is not a leaf")
    return {entry["key"]: entry for entry in node["entries"]}


def _raw_view(item_dir: Path, name: str, entries: Mapping[bytes, dict[str, Any]],
              files: dict[str, np.ndarray | None]) -> np.ndarray | None:
    metadata_entry = entries.get(f"{name}/{_ZARR2_METADATA}".encode())
    if metadata_entry is None or "inline_value" not in metadata_entry:
        return None
    meta = json.loads(metadata_entry["inline_value"])
    shape = tuple(meta.get("shape", ()))
    dtype = _little_endian_dtype(meta.get("dtype"))
    if (dtype is None or meta.get("zarr_format") != 2 or meta.get("compressor") is not None
            or meta.get("filters") is not None or meta.get("order") != "C"
            or tuple(meta.get("chunks", ())) != shape):
        return None
    separator = meta.get("dimension_separator", ".")
    chunk_key = f"{name}/{separator.join('0' * max(len(shape), 1))}".encode()
    reference = entries.get(chunk_key, {}).get("indirect_value")
    nbytes = math.prod(shape) * dtype.itemsize
    located = _locate(reference) if isinstance(reference, str) else None
    if located is None or located[2] != nbytes:
        return None
    file_id, offset, _ = located
    if file_id not in files:
        files[file_id] = _map_file(item_dir, file_id)
    data = files[file_id]
    if data is None or offset + nbytes > data.size:
        return None
    return data[offset:offset + nbytes].view(dtype).reshape(shape)


def _map_file(item_dir: Path, file_id: str) -> np.ndarray | None:
    # The data file `file_id` ("<base path>:<relative path>") of the item, mapped read-only.
    base, _, relative = file_id.partition(":")
    path = (item_dir / (base + relative)).resolve()
    if not path.is_relative_to(item_dir.resolve()) or not path.is_file():
        return None
    try:
        return np.asarray(np.memmap(path, np.uint8, mode="r"))  # a plain ndarray: slicing a memmap is slow
    except (OSError, ValueError) as exc:  # a filesystem without mmap, an empty file
        logger.debug("cannot map %s (%s); reading through tensorstore", path, exc)
        return None


def _little_endian_dtype(name: Any) -> np.dtype | None:
    # zarr v2 dtype strings carry their byte order ("<f4", "|u1"); tensorstore adds "bfloat16".
    if not isinstance(name, str):
        return None
    if name in _EXTENSION_DTYPES:
        return _EXTENSION_DTYPES[name]
    if name[:1] not in ("<", "|"):
        return None
    try:
        return np.dtype(name)
    except TypeError:
        return None


def _locate(reference: str) -> tuple[str, int, int] | None:
    # "value:<base path>:<relative path>:<offset>:<length>" -> (file id, offset, length).
    kind, _, rest = reference.partition(":")
    file_id, offset, length = (rest.rsplit(":", 2) + ["", ""])[:3]
    if kind != "value" or ":" not in file_id or not offset.isdigit() or not length.isdigit():
        return None
    return file_id, int(offset), int(length)
