"""Write a safetensors file one tensor at a time, byte-identical to `safetensors.numpy.save_file`.

`save_file` takes every tensor at once, so an export must hold the whole model in HF layout
before writing a byte. A safetensors header depends only on names, dtypes and shapes, so
`write_streaming` writes it first and then takes each tensor in the order `save_file` lays
them out, writing it before taking the next: the caller can produce tensors into reused
buffers and overlap reading a checkpoint with writing. safetensors has no streaming writer;
it does validate each dtype here (`safetensors.TensorSpec`), and tests check the output
against `save_file` byte for byte.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from safetensors import TensorSpec

Shape = tuple[int, ...]


def file_order(specs: Mapping[str, tuple[Shape, np.dtype]]) -> list[str]:
    """Names in the order `save_file` writes their data (this writer supports one dtype per file).

    safetensors orders tensors by dtype, then by name; with a single dtype that is by name.
    """
    dtypes = {np.dtype(dtype) for _, dtype in specs.values()}
    if len(dtypes) > 1:
        raise ValueError(f"write_streaming writes files of a single dtype, got {sorted(map(str, dtypes))}")
    return sorted(specs)


def header(specs: Mapping[str, tuple[Shape, np.dtype]], metadata: Mapping[str, str] | None = None) -> bytes:
    """The 8-byte length and JSON header `save_file` writes for tensors of these shapes and dtypes."""
    doc: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in file_order(specs):
        shape, dtype = specs[name]
        size = math.prod(shape) * np.dtype(dtype).itemsize
        code = TensorSpec(dtype=np.dtype(dtype).name, shape=list(shape), data_ptr=0, data_len=size).dtype
        doc[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to a multiple of 8 bytes
    return struct.pack("<Q", len(text)) + text


def write_streaming(path: str | Path, specs: Mapping[str, tuple[Shape, np.dtype]],
                    arrays: Iterator[np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Write `path` as `save_file(tensors, path, metadata)` would, taking the tensors one at a time.

    `specs` maps each tensor name to its (shape, dtype). `arrays` yields the tensors in
    `file_order(specs)`, each C-contiguous with that shape and dtype; exactly that many are
    taken from it (it may go on with another file's tensors). Each is written before the next
    is taken, so a tensor may live in a buffer that producing a later one reuses.
    """
    with open(path, "wb") as out:
        out.write(header(specs, metadata))
        for name in file_order(specs):
            array = next(arrays, None)
            if array is None:
                raise ValueError(f"no array for tensor {name}: `arrays` ended early")
            shape, dtype = specs[name]
            if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
                raise ValueError(f"tensor {name}: got {array.dtype}{list(array.shape)}, "
                                 f"header says {np.dtype(dtype)}{list(shape)}")
            if not array.flags.c_contiguous:
                raise ValueError(f"tensor {name} is not C-contiguous")
            out.write(array.reshape(-1).view(np.uint8).data)
