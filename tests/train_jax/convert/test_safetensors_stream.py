"""The piecewise safetensors writer writes exactly what `safetensors.numpy.save_file` writes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from train_jax.convert.safetensors_stream import file_order, write_pieces


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


def _whole(tensors: dict[str, np.ndarray]) -> list[tuple[str, int, np.ndarray]]:
    return [(name, 0, tensors[name]) for name in file_order(_specs(tensors))]


def _sliced(tensors: dict[str, np.ndarray], elements: int) -> list[tuple[str, int, np.ndarray]]:
    # Every tensor cut into flat slices, handed out last tensor first and each back to front.
    pieces = []
    for name in reversed(file_order(_specs(tensors))):
        flat = tensors[name].reshape(-1)
        starts = range(0, max(flat.size, 1), elements)
        pieces += [(name, start * flat.itemsize, flat[start:start + elements]) for start in reversed(starts)]
    return pieces


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("metadata", [{"format": "pt"}, None])
@pytest.mark.parametrize("cut", ["whole tensors in file order", "slices in reverse order"])
def test_byte_identical_to_save_file_and_loadable(tmp_path, dtype, metadata, cut):
    tensors = _tensors(dtype)
    save_file(tensors, tmp_path / "reference.safetensors", metadata=metadata)
    pieces = _whole(tensors) if cut.startswith("whole") else _sliced(tensors, elements=2)
    write_pieces(tmp_path / "streamed.safetensors", _specs(tensors), iter(pieces), metadata)
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()
    loaded = load_file(tmp_path / "streamed.safetensors")
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype and loaded[name].tobytes() == array.tobytes()


def test_each_piece_is_written_before_the_next_is_taken(tmp_path):
    # The caller may reuse a piece's buffer as soon as it asks for the next piece.
    a = np.arange(6, dtype=np.float32)
    buffer = np.empty(3, np.float32)

    def pieces():
        for start in (0, 3):
            buffer[:] = a[start:start + 3]
            yield "a", start * 4, buffer

    write_pieces(tmp_path / "x.safetensors", {"a": (a.shape, a.dtype)}, pieces())
    assert load_file(tmp_path / "x.safetensors")["a"].tolist() == a.tolist()


def test_errors(tmp_path):
    a, b = np.zeros((2, 3), np.float32), np.zeros(4, np.float16)
    spec = {"a": (a.shape, a.dtype)}
    with pytest.raises(ValueError, match="single dtype"):
        write_pieces(tmp_path / "x", {"a": (a.shape, a.dtype), "b": (b.shape, b.dtype)}, [])
    with pytest.raises(ValueError, match="tensor b is not in this file"):
        write_pieces(tmp_path / "x", spec, [("b", 0, a)])
    with pytest.raises(ValueError, match="tensor a: got float16, header says float32"):
        write_pieces(tmp_path / "x", spec, [("a", 0, b)])
    with pytest.raises(ValueError, match="not C-contiguous"):
        write_pieces(tmp_path / "x", spec, [("a", 0, a.T)])
    with pytest.raises(ValueError, match=r"tensor a: bytes 8\.\.32 are outside its 24 bytes"):
        write_pieces(tmp_path / "x", spec, [("a", 8, a)])
    with pytest.raises(ValueError, match=r"tensor a: bytes 12\.\.24 were not written"):
        write_pieces(tmp_path / "x", spec, [("a", 0, a.reshape(-1)[:3])])
    with pytest.raises(ValueError, match=r"tensor a: bytes 4\.\.12 were not written"):
        write_pieces(tmp_path / "x", spec, [("a", 0, a.reshape(-1)[:1]), ("a", 12, a.reshape(-1)[3:])])
    with pytest.raises(ValueError, match=r"tensor a: bytes 8\.\.12 were written twice"):
        write_pieces(tmp_path / "x", spec, [("a", 0, a.reshape(-1)[:3]), ("a", 8, a.reshape(-1)[2:])])


@pytest.mark.parametrize("fallocate", ["fails", "missing"])
def test_same_bytes_where_the_file_cannot_be_preallocated(tmp_path, monkeypatch, fallocate):
    from train_jax.convert import safetensors_stream

    tensors = _tensors(np.float32)
    save_file(tensors, tmp_path / "reference.safetensors")
    failing = lambda fd, mode, offset, length: -1  # fallocate(2)'s failure return
    monkeypatch.setattr(safetensors_stream, "_fallocate", lambda: failing if fallocate == "fails" else None)
    write_pieces(tmp_path / "streamed.safetensors", _specs(tensors), _whole(tensors))
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()


def test_preallocates_exactly_the_file_size(tmp_path, monkeypatch):
    from train_jax.convert import safetensors_stream

    real, calls = safetensors_stream._fallocate(), []
    if real is None:
        pytest.skip("this libc has no fallocate")

    def recording(fd, mode, offset, length):
        calls.append((mode, offset, length))
        return real(fd, mode, offset, length)

    monkeypatch.setattr(safetensors_stream, "_fallocate", lambda: recording)
    tensors = _tensors(ml_dtypes.bfloat16)
    write_pieces(tmp_path / "s.safetensors", _specs(tensors), _whole(tensors))
    assert calls == [(0, 0, (tmp_path / "s.safetensors").stat().st_size)]
