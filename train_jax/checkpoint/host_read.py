"""Read the arrays of an orbax pytree item into host memory with tensorstore directly.

Orbax's own restore spends most of its time on per-array Python and asyncio work (handler
dispatch, an event loop per call, a future per array), several times what tensorstore needs to
read the bytes (docs/BENCHMARKS.md#export). This reader opens the same arrays with the tensorstore
specs orbax builds for them (`ocp.type_handlers.get_json_tspec_read`, orbax's tensorstore
context), with the data files memory-mapped, and reads each into a buffer the caller chooses:
all of them into one buffer (`read_all`), or one at a time into reused buffers while earlier
ones are being written out (the HF export). Reads run on tensorstore's threads. Arrays stored
raw (an uncompressed OCDBT item, as `jaxtune model import` writes) are not opened with
tensorstore at all: they are memory-mapped views of the data files (`ocdbt_map`), which the
export reads with no copy.

Only what the item's `_METADATA` file describes plainly is read this way: a tree of dicts whose
leaves are arrays (`np.ndarray` or `jax.Array`, read whole, unsharded). Anything else makes
`open_item` return None, and the caller restores through orbax.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from etils import epath

from train_jax.checkpoint.ocdbt_map import map_raw_arrays

logger = logging.getLogger(__name__)

METADATA_FILE = "_METADATA"  # orbax's pytree metadata, one per item folder
_ARRAY_VALUE_TYPES = ("np.ndarray", "jax.Array")
_DICT_KEY = 2  # orbax KeyType.DICT
_ALIGN = 64  # bytes; every array of the shared buffer starts on a cache line

Path_ = tuple[Any, ...]


class StoredArrays:
    """The arrays of an orbax pytree item, opened for reading: shapes and dtypes, no data yet.

    Key paths are tuples of the item's dict keys, digit strings as ints (the pure-dict params
    tree of an `nnx.List` uses int keys). Each array is either a tensorstore (`stores`) or a
    read-only memory-mapped view of its stored bytes (`views`).
    """

    def __init__(self, stores: dict[Path_, ts.TensorStore], context: ts.Context,
                 views: dict[Path_, np.ndarray] | None = None, order: list[Path_] | None = None):
        self._stores = stores
        self._views = views or {}
        self._context = context
        self._order = order or [*self._views, *self._stores]
        self.shapes = {path: tuple(store.shape) for path, store in stores.items()}
        self.dtypes = {path: np.dtype(store.dtype.numpy_dtype) for path, store in stores.items()}
        self.shapes.update((path, view.shape) for path, view in self._views.items())
        self.dtypes.update((path, view.dtype) for path, view in self._views.items())

    def __iter__(self) -> Iterator[Path_]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def nbytes(self, path: Path_) -> int:
        """Size in bytes of array `path`."""
        return math.prod(self.shapes[path]) * self.dtypes[path].itemsize

    def view(self, path: Path_) -> np.ndarray | None:
        """The stored bytes of array `path` as a read-only array, no copy; None if not stored raw."""
        return self._views.get(path)

    def read_into(self, path: Path_, out: np.ndarray) -> Any:
        """Start reading array `path` into `out` (same shape and dtype); `.result()` waits for it."""
        if out.shape != self.shapes[path] or out.dtype != self.dtypes[path]:
            raise ValueError(f"{'.'.join(map(str, path))} is {self.dtypes[path]}{list(self.shapes[path])}, "
                             f"not {out.dtype}{list(out.shape)}")
        if path in self._views:  # copies of fresh pages fault slowly one thread at a time: a pool
            return _copy_pool().submit(np.copyto, out, self._views[path])
        return ts.array(out, copy=False, write=True, context=self._context).write(self._stores[path])

    def read_all(self) -> dict[Path_, np.ndarray]:
        """Every array, read concurrently into one buffer (the arrays are views of it)."""
        starts = np.cumsum([0] + [-(-self.nbytes(p) // _ALIGN) * _ALIGN for p in self._order]).tolist()
        buffer = np.empty(starts.pop(), np.uint8)
        arrays = {path: buffer[start:start + self.nbytes(path)].view(self.dtypes[path]).reshape(self.shapes[path])
                  for path, start in zip(self._order, starts, strict=True)}
        reads = [self.read_into(path, array) for path, array in arrays.items()]
        for read in reads:
            read.result()
        return arrays


@functools.cache
def _copy_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="jaxtune-host-read")


def open_item(item_dir: str | Path) -> StoredArrays | None:
    """Open every array of the orbax pytree item `item_dir` for reading; None if unsupported.

    `item_dir` is a committed item folder (e.g. `steps/<step>/params`). Returns None when the
    metadata is missing or describes something other than a dict tree of arrays, or when
    tensorstore cannot open one of the arrays; the caller then restores with orbax.
    """
    item_dir = Path(item_dir).absolute()
    described = _describe(item_dir)
    if described is None:
        return None
    leaves, use_ocdbt, use_zarr3 = described
    views = map_raw_arrays(item_dir, leaves) if use_ocdbt and not use_zarr3 else {}
    context = ts.Context(ts.Context.Spec({"file_io_mode": {"mode": "memmap"}}),
                         parent=ocp.type_handlers.get_ts_context(use_ocdbt=use_ocdbt))
    to_open = [path for path in leaves if path not in views]
    stores = {}
    if to_open:
        spec_for = _spec_builder(item_dir, use_ocdbt, use_zarr3, context)
        opening = [ts.open(spec_for(leaves[path]), open=True, read=True, context=context) for path in to_open]
        try:
            stores = {path: future.result() for path, future in zip(to_open, opening, strict=True)}
        except ValueError as exc:  # tensorstore's error for a missing or unreadable array
            logger.debug("cannot read %s with tensorstore directly (%s); using orbax", item_dir, exc)
            return None
    return StoredArrays(stores, context, views, order=list(leaves))


def _spec_builder(item_dir: Path, use_ocdbt: bool, use_zarr3: bool, context: ts.Context):
    # Orbax's read spec of one array, with the array's name swapped into the kvstore path: building
    # every spec through orbax's ParamInfo is mostly protocol isinstance checks
    # (docs/BENCHMARKS.md#export).
    def orbax_spec(name: str) -> dict[str, Any]:
        info = ocp.type_handlers.ParamInfo(name=name, parent_dir=epath.Path(item_dir), use_zarr3=use_zarr3,
                                           is_ocdbt_checkpoint=use_ocdbt, ts_context=context)
        return ocp.type_handlers.get_json_tspec_read(info, use_ocdbt=use_ocdbt)

    placeholder = "jaxtune-array-name"
    template = orbax_spec(placeholder)
    kvstore = template.get("kvstore", {})
    if not str(kvstore.get("path", "")).endswith(placeholder):
        return orbax_spec
    prefix = kvstore["path"].removesuffix(placeholder)
    return lambda name: {**template, "kvstore": {**kvstore, "path": prefix + name}}


def _describe(item_dir: Path) -> tuple[dict[Path_, str], bool, bool] | None:
    # ({key path: orbax array name}, use_ocdbt, use_zarr3) from the item's metadata file.
    try:
        meta = json.loads((item_dir / METADATA_FILE).read_text())
        tree = meta["tree_metadata"]
        use_ocdbt, use_zarr3 = bool(meta["use_ocdbt"]), bool(meta.get("use_zarr3", False))
        leaves = {}
        for entry in tree.values():
            keys = entry["key_metadata"]
            value = entry["value_metadata"]
            if (value["value_type"] not in _ARRAY_VALUE_TYPES or value.get("skip_deserialize")
                    or any(k["key_type"] != _DICT_KEY for k in keys)):
                return None
            names = [str(k["key"]) for k in keys]
            path = tuple(int(n) if n.isdigit() else n for n in names)
            leaves[path] = ".".join(names)  # orbax names an array by its joined key path
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.debug("unreadable pytree metadata in %s (%s)", item_dir, exc)
        return None
    return (leaves, use_ocdbt, use_zarr3) if leaves else None
