"""Write a safetensors file a tensor, or a piece of one, at a time, byte-identical to `save_file`.

`safetensors.numpy.save_file` takes every tensor at once, so an export must hold the whole
model in HF layout before writing a byte. A safetensors header depends only on names, dtypes
and shapes, so it can be written first and the data placed after it as it comes:
`write_pieces` takes pieces of tensors in any order and writes each at its place before taking
the next, so that a caller can write whatever is ready while the rest is still being produced
into reused buffers. safetensors has no streaming writer; it does validate each dtype here
(`safetensors.TensorSpec`), and tests check the output against `save_file` byte for byte.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import math
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
from safetensors import TensorSpec

from train_jax.libc import libc

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]


def file_order(specs: Mapping[str, tuple[Shape, np.dtype]]) -> list[str]:
    """Names in the order `save_file` writes their data (this writer supports one dtype per file).

    safetensors orders tensors by dtype, then by name; with a single dtype that is by name.
    """
    dtypes = {np.dtype(dtype) for _, dtype in specs.values()}
    if len(dtypes) > 1:
        raise ValueError(f"write_pieces writes files of a single dtype, got {sorted(map(str, dtypes))}")
    return sorted(specs)


def _data_layout(specs: Mapping[str, tuple[Shape, np.dtype]]) -> dict[str, tuple[int, int]]:
    # {name: (offset in the data section, size in bytes)}, in `file_order`.
    layout, offset = {}, 0
    for name in file_order(specs):
        shape, dtype = specs[name]
        size = math.prod(shape) * np.dtype(dtype).itemsize
        layout[name] = (offset, size)
        offset += size
    return layout


def header(specs: Mapping[str, tuple[Shape, np.dtype]], metadata: Mapping[str, str] | None = None) -> bytes:
    """The 8-byte length and JSON header `save_file` writes for tensors of these shapes and dtypes."""
    doc: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    for name, (offset, size) in _data_layout(specs).items():
        shape, dtype = specs[name]
        code = TensorSpec(dtype=np.dtype(dtype).name, shape=list(shape), data_ptr=0, data_len=size).dtype
        doc[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to a multiple of 8 bytes
    return struct.pack("<Q", len(text)) + text


def write_pieces(path: str | Path, specs: Mapping[str, tuple[Shape, np.dtype]],
                 pieces: Iterable[tuple[str, int, np.ndarray]], metadata: Mapping[str, str] | None = None) -> None:
    """Write `path` as `save_file` would, from pieces of the tensors taken in any order.

    `pieces` yields `(name, byte offset in the tensor, array)`: the array's bytes (C-contiguous,
    the tensor's dtype, any shape) are the tensor's bytes from that offset on. Each piece is
    written before the next is taken. Together the pieces must cover every tensor exactly once.
    """
    head = header(specs, metadata)
    layout = _data_layout(specs)
    starts = {name: len(head) + offset for name, (offset, _) in layout.items()}
    sizes = {name: size for name, (_, size) in layout.items()}
    written: dict[str, list[tuple[int, int]]] = {name: [] for name in specs}
    with open(path, "wb", buffering=0) as out:
        _preallocate(out.fileno(), len(head) + sum(sizes.values()))
        _write_at(out.fileno(), memoryview(head), 0)
        for name, offset, piece in pieces:
            if name not in specs:
                raise ValueError(f"tensor {name} is not in this file")
            if piece.dtype != np.dtype(specs[name][1]):
                raise ValueError(f"tensor {name}: got {piece.dtype}, header says {np.dtype(specs[name][1])}")
            if not piece.flags.c_contiguous:
                raise ValueError(f"tensor {name} is not C-contiguous")
            if offset < 0 or offset + piece.nbytes > sizes[name]:
                raise ValueError(f"tensor {name}: bytes {offset}..{offset + piece.nbytes} are outside its "
                                 f"{sizes[name]} bytes")
            _write_at(out.fileno(), piece.reshape(-1).view(np.uint8).data, starts[name] + offset)
            written[name].append((offset, offset + piece.nbytes))
    for name, spans in written.items():
        end = 0
        for start, stop in sorted(spans):
            if start != end:
                raise ValueError(f"tensor {name}: bytes {min(start, end)}..{max(start, end)} were "
                                 f"{'written twice' if start < end else 'not written'}")
            end = stop
        if end != sizes[name]:
            raise ValueError(f"tensor {name}: bytes {end}..{sizes[name]} were not written")


def _write_at(fd: int, data: memoryview, position: int) -> None:
    while data.nbytes:
        count = os.pwrite(fd, data, position)
        data, position = data[count:], position + count


def _preallocate(fd: int, size: int) -> None:
    # Allocating the whole file up front makes the writes ~30% faster on ext4 (no delayed block
    # allocation page by page) and the file less fragmented. fallocate(2) itself, not
    # posix_fallocate: glibc emulates that by writing every block where the filesystem has no
    # fallocate. Where it fails or is missing, the writes simply allocate as they go.
    fallocate = _fallocate()
    if fallocate is not None and size > 0 and fallocate(fd, 0, 0, size) != 0:
        logger.debug("fallocate failed (errno %d); writing without preallocation", ctypes.get_errno())


@functools.cache
def _fallocate() -> Callable[[int, int, int, int], int] | None:
    # libc's fallocate(fd, mode, offset, length), or None where libc has none (macOS).
    function = getattr(libc(), "fallocate64", None) or getattr(libc(), "fallocate", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        function.restype = ctypes.c_int
    return function
