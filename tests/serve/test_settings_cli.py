"""ServeSettings validation and the `jaxtune serve` flags."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from infra.cli import main as jaxtune_main
from serve.cli import HAND_WRITTEN_FIELDS, add_arguments, settings_from_args
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


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    return serve_parser().parse_args(argv)


DOCS = Path(__file__).resolve().parents[2] / "docs" / "SERVING.md"
# Flags that docs, the demo, the launchers and the benchmarks pass: their names must not change.
KNOWN_FLAGS = ("--model", "--name", "--extra-model", "--lora", "--host", "--port", "--api-key",
               "--max-in-flight", "--max-n", "--max-model-len", "--max-num-seqs", "--dtype",
               "--kv-cache-gib", "--memory-fraction", "--enforce-eager", "--max-lora-rank",
               "--drain-timeout", "--log-prompts")


def test_every_settings_field_is_a_documented_flag():
    actions = {a.dest: a for a in serve_parser()._actions}
    for f in dataclasses.fields(ServeSettings):
        if f.name in HAND_WRITTEN_FIELDS:
            continue
        assert f.name in actions, f"ServeSettings.{f.name} has no `jaxtune serve` flag"
        assert actions[f.name].option_strings and actions[f.name].help, f.name


def test_generated_flags_default_to_the_settings_defaults(tmp_path):
    args = parse(["--model", str(tmp_path)])
    for f in dataclasses.fields(ServeSettings):
        if f.name not in HAND_WRITTEN_FIELDS:
            assert getattr(args, f.name) == f.default, f.name


def test_flag_names_are_stable_and_listed_in_the_docs():
    names = {s for a in serve_parser()._actions for s in a.option_strings} - {"-h", "--help"}
    assert set(KNOWN_FLAGS) <= names
    docs = DOCS.read_text()
    assert [n for n in sorted(names) if f"`{n}" not in docs] == []


def test_flags_build_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    base = make_model_dir(tmp_path / "smollm2")
    merged = make_model_dir(tmp_path / "sql-merged")
    lora = make_lora_dir(tmp_path / "viggo-lora")
    args = parse(["--model", str(base), "--extra-model", f"sql={merged}",
                  "--lora", f"viggo={lora}", "--port", "9001", "--max-in-flight", "7",
                  "--kv-cache-gib", "0.5", "--dtype", "bfloat16", "--log-prompts",
                  "--drain-timeout", "5", "--max-model-len", "64"])
    s = settings_from_args(args)
    assert s.models == (ModelSource("smollm2", base), ModelSource("sql", merged))
    assert s.loras == (LoraSource("viggo", lora, base="smollm2"),)
    assert (s.port, s.max_in_flight, s.kv_cache_gib, s.dtype) == (9001, 7, 0.5, "bfloat16")
    assert (s.drain_timeout_s, s.max_model_len, s.max_num_seqs) == (5.0, 64, None)
    assert s.log_prompts and not s.enforce_eager and s.api_key is None


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
