"""Arrays an OCDBT item stores raw are read as zero-copy views of the data files; others are not."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.fixtures.tiny_model import TINY_CONFIG
from train_jax import checkpoint as ckpt
from train_jax.checkpoint import host_read, ocdbt_map
from train_jax.model.config import ModelConfig

INLINE_LIMIT = 1024  # orbax's OCDBT config: values up to this many bytes live in the B+tree node


def _params() -> dict:
    rng = np.random.default_rng(1)
    return {
        "embed_tokens": {"embedding": rng.standard_normal((64, 32)).astype(ml_dtypes.bfloat16)},  # 4 KiB
        "layers": {i: {"mlp": {"up_proj": {"kernel": rng.standard_normal((32, 48)).astype(np.float32)}},
                       "input_layernorm": {"scale": rng.standard_normal(32).astype(np.float32)}}  # inline
                   for i in range(2)},
        "norm": {"scale": rng.standard_normal(300).astype(np.float32)},  # 1200 bytes: just not inline
        "counts": {"table": np.arange(24, dtype=np.int32).reshape(2, 3, 4)},
    }


def _flat(params: dict) -> dict:
    from train_jax.convert import names

    return names.flatten(params)


def _count_tensorstore_opens(monkeypatch) -> list:
    opened = []
    real_open = host_read.ts.open

    def counting_open(spec, *args, **kwargs):
        opened.append(spec)
        return real_open(spec, *args, **kwargs)

    monkeypatch.setattr(host_read.ts, "open", counting_open)
    return opened


def test_raw_arrays_are_views_of_the_data_files_and_the_rest_tensorstore_reads(tmp_path, monkeypatch):
    params = _params()
    ckpt.write_model_checkpoint(tmp_path, params, ModelConfig.from_hf_config(TINY_CONFIG))  # uncompressed
    opened = _count_tensorstore_opens(monkeypatch)
    stored = ckpt.open_params(tmp_path)
    flat = _flat(params)
    assert set(stored) == set(flat) and len(stored) == len(flat)
    for path, array in flat.items():
        view = stored.view(path)
        if array.nbytes > INLINE_LIMIT:
            assert view is not None, path
            assert not view.flags.writeable and not view.flags.owndata  # the file's bytes, no copy
            assert view.dtype == array.dtype and view.shape == array.shape
            assert view.tobytes() == array.tobytes()
        else:
            assert view is None, path  # stored inline in the tree: read through tensorstore
        out = np.empty(stored.shapes[path], stored.dtypes[path])
        stored.read_into(path, out).result()
        assert out.tobytes() == array.tobytes()
    inline = [p for p, a in flat.items() if a.nbytes <= INLINE_LIMIT]
    assert len(opened) == len(inline)  # only the arrays that are not mapped were opened
    restored = stored.read_all()
    assert all(restored[p].tobytes() == a.tobytes() and restored[p].dtype == a.dtype for p, a in flat.items())


def test_compressed_arrays_are_not_mapped_and_read_exactly(tmp_path):
    params = _params()
    ckpt.write_checkpoint_info(tmp_path, ModelConfig.from_hf_config(TINY_CONFIG))
    with ckpt.checkpoint_manager(tmp_path) as manager:  # orbax defaults, as the trainer saves
        manager.save(3, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
        manager.wait_until_finished()
    stored = ckpt.open_params(tmp_path)
    assert all(stored.view(path) is None for path in stored)
    restored = stored.read_all()
    assert all(restored[p].tobytes() == a.tobytes() for p, a in _flat(params).items())


def test_data_files_that_cannot_be_mapped_are_read_through_tensorstore(tmp_path, monkeypatch):
    params = _params()
    ckpt.write_model_checkpoint(tmp_path, params, ModelConfig.from_hf_config(TINY_CONFIG))

    def no_mmap(*args, **kwargs):
        raise OSError("mmap not supported here")

    monkeypatch.setattr(ocdbt_map.np, "memmap", no_mmap)
    stored = ckpt.open_params(tmp_path)
    assert all(stored.view(path) is None for path in stored)
    restored = stored.read_all()
    assert all(restored[p].tobytes() == a.tobytes() for p, a in _flat(params).items())


def test_a_folder_that_is_not_ocdbt_maps_nothing(tmp_path):
    assert ocdbt_map.map_raw_arrays(tmp_path, {("a",): "a"}) == {}


@pytest.mark.parametrize(("reference", "expected"), [
    ("value:ocdbt.process_0/:d/7d9a:3538944:56623104", ("ocdbt.process_0/:d/7d9a", 3538944, 56623104)),
    ("value::d/abc:0:8", (":d/abc", 0, 8)),
    ("btreenode::d/abc:0:8", None),  # not a value
    ("value:d/abc:0:8", None),  # no base path / relative path separator
    ("value::d/abc:x:8", None),
    ("value::d/abc:8", None),
])
def test_value_references(reference, expected):
    assert ocdbt_map._locate(reference) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("bfloat16", np.dtype(ml_dtypes.bfloat16)), ("<f4", np.dtype(np.float32)), ("|u1", np.dtype(np.uint8)),
    (">f4", None),  # big endian: the bytes are not the array
    ("<x9", None), ([["a", "<f4"]], None),
])
def test_dtypes(name, expected):
    assert ocdbt_map._little_endian_dtype(name) == expected
