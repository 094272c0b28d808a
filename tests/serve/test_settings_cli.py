"""ServeSettings validation and the `jaxtune serve` flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from infra.cli import main as jaxtune_main
from serve.cli import add_arguments, settings_from_args
from serve.settings import API_KEY_ENV, LoraSource, ModelSource, ServeConfigError, ServeSettings


def make_model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def make_lora_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_build_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    base = make_model_dir(tmp_path / "smollm2")
    merged = make_model_dir(tmp_path / "sql-merged")
    lora = make_lora_dir(tmp_path / "viggo-lora")
    args = parse(["--model", str(base), "--extra-model", f"sql={merged}",
                  "--lora", f"viggo={lora}", "--port", "9001", "--max-in-flight", "7",
                  "--kv-cache-gib", "0.5", "--dtype", "bfloat16", "--log-prompts"])
    s = settings_from_args(args)
    assert s.models == (ModelSource("smollm2", base), ModelSource("sql", merged))
    assert s.loras == (LoraSource("viggo", lora, base="smollm2"),)
    assert (s.port, s.max_in_flight, s.kv_cache_gib, s.dtype) == (9001, 7, 0.5, "bfloat16")
    assert s.log_prompts and s.api_key is None


def test_api_key_flag_and_env(tmp_path, monkeypatch):
    base = make_model_dir(tmp_path / "m")
    monkeypatch.setenv(API_KEY_ENV, "env-key")
    assert settings_from_args(parse(["--model", str(base)])).api_key == "env-key"
    assert settings_from_args(parse(["--model", str(base), "--api-key", "k"])).api_key == "k"
    # The key never shows up in the settings' repr (logs, tracebacks).
    assert "env-key" not in repr(settings_from_args(parse(["--model", str(base)])))


@pytest.mark.parametrize(("extra", "message"), [
    (["--lora", "noequals"], "NAME=DIR"),
    (["--extra-model", "x=/no/such/dir"], "not found"),
    (["--lora", "x=/no/such/dir"], "not found"),
    (["--name", "bad name!"], "invalid model name"),
    (["--max-in-flight", "0"], "max_in_flight"),
    (["--port", "70000"], "port"),
    (["--memory-fraction", "1.5"], "memory_fraction"),
])
def test_bad_flags_raise_clear_errors(tmp_path, extra, message):
    base = make_model_dir(tmp_path / "m")
    with pytest.raises(ServeConfigError, match=message):
        settings_from_args(parse(["--model", str(base), *extra]))


def test_model_folder_must_be_an_hf_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ServeConfigError, match="no config.json"):
        settings_from_args(parse(["--model", str(tmp_path / "empty")]))
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text("{}")
    base = make_model_dir(tmp_path / "m")
    with pytest.raises(ServeConfigError, match="adapter_model"):
        settings_from_args(parse(["--model", str(base), "--lora", f"a={lora}"]))


def test_settings_reject_duplicates_and_dangling_adapters(tmp_path):
    m = ModelSource("a", tmp_path)
    with pytest.raises(ServeConfigError, match="unique"):
        ServeSettings(models=(m, ModelSource("a", tmp_path)))
    with pytest.raises(ServeConfigError, match="not served"):
        ServeSettings(models=(m,), loras=(LoraSource("l", tmp_path, base="zzz"),))
    with pytest.raises(ServeConfigError, match="at least one model"):
        ServeSettings(models=())


def test_jaxtune_serve_reports_a_missing_folder_in_one_line(tmp_path, capsys):
    code = jaxtune_main(["serve", "--model", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.count("\n") == 0 and "model folder not found" in err
