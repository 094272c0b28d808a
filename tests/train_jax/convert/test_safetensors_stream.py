"""The streaming safetensors writer writes exactly what `safetensors.numpy.save_file` writes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from train_jax.convert.safetensors_stream import file_order, write_streaming


def _tensors(dtype) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    # Layer numbers sort as strings (10 before 2), as safetensors lays them out.
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((i + 1, 3)).astype(dtype)
               for i in range(12)}
    tensors["scalar"] = np.array(1.5, dtype)
    tensors["empty"] = np.zeros((0, 4), dtype)
    tensors["modèle.norm.weight"] = rng.standard_normal(5).astype(dtype)  # non-ASCII name
    return tensors


def _specs(tensors: dict[str, np.ndarray]) -> dict:
    return {name: (a.shape, a.dtype) for name, a in tensors.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("metadata", [{"format": "pt"}, None])
def test_byte_identical_to_save_file_and_loadable(tmp_path, dtype, metadata):
    tensors = _tensors(dtype)
    save_file(tensors, tmp_path / "reference.safetensors", metadata=metadata)
    arrays = iter([tensors[name] for name in file_order(_specs(tensors))])
    write_streaming(tmp_path / "streamed.safetensors", _specs(tensors), arrays, metadata)
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()
    loaded = load_file(tmp_path / "streamed.safetensors")
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype and loaded[name].tobytes() == array.tobytes()


def test_takes_exactly_its_tensors_from_a_shared_iterator(tmp_path):
    first, second = _tensors(np.float32), {"lm_head.weight": np.ones((2, 2), np.float32)}
    arrays = iter([first[n] for n in file_order(_specs(first))] + [second["lm_head.weight"]])
    write_streaming(tmp_path / "a.safetensors", _specs(first), arrays)
    write_streaming(tmp_path / "b.safetensors", _specs(second), arrays)
    assert next(arrays, None) is None
    assert load_file(tmp_path / "b.safetensors")["lm_head.weight"].tolist() == [[1, 1], [1, 1]]


def test_errors(tmp_path):
    a, b = np.zeros((2, 3), np.float32), np.zeros(4, np.float16)
    with pytest.raises(ValueError, match="single dtype"):
        write_streaming(tmp_path / "x", {"a": (a.shape, a.dtype), "b": (b.shape, b.dtype)}, iter([a, b]))
    with pytest.raises(ValueError, match=r"tensor a: got float32\[3, 2\], header says float32\[2, 3\]"):
        write_streaming(tmp_path / "x", {"a": (a.shape, a.dtype)}, iter([a.T.copy()]))
    with pytest.raises(ValueError, match="not C-contiguous"):
        write_streaming(tmp_path / "x", {"a": ((3, 2), a.dtype)}, iter([a.T]))
    with pytest.raises(ValueError, match="no array for tensor b"):
        write_streaming(tmp_path / "x", {"a": (a.shape, a.dtype), "b": (a.shape, a.dtype)}, iter([a]))
