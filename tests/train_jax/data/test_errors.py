"""Bad input: `file:line` errors naming the field, CLI exit codes, --skip-bad-rows counts."""

from __future__ import annotations

import json

import pytest

from eval.tasks.records import DataFormatError
from infra.cli import main
from tests.fixtures.tiny_model import TINYSTORIES_DIR
from tests.train_jax.data.conftest import write_jsonl
from train_jax.data.config import DataConfig
from train_jax.data.sources import load_samples

GOOD = {"question": "q", "answer": "a\n#### 1"}


@pytest.mark.parametrize(("bad_line", "field", "message"), [
    ('{"question": "q", "answer": ', None, "malformed JSON"),
    ('{"question": "q"}', "answer", "missing field"),
    ('{"question": 3, "answer": "a"}', "question", "expected a string, got int"),
])
def test_task_rows_name_file_line_and_field(tmp_path, bad_line, field, message):
    data = write_jsonl(tmp_path / "t.jsonl", [GOOD, GOOD, bad_line, GOOD])
    cfg = DataConfig(task="gsm8k", train_file=str(data))
    with pytest.raises(DataFormatError, match=message) as info:
        load_samples(data, cfg)
    assert str(info.value).startswith(f"{data}:3: ")
    assert info.value.field_name == field


@pytest.mark.parametrize(("row", "field"), [
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]},
     "messages[1].role"),
    ({"messages": [{"role": "user", "content": "a"}]}, "messages"),  # no assistant turn
    ({"text": "a"}, "messages"),
])
def test_chat_rows_name_the_field(tmp_path, row, field):
    data = write_jsonl(tmp_path / "c.jsonl", [row])
    with pytest.raises(DataFormatError) as info:
        load_samples(data, DataConfig(task="chat", train_file=str(data), style="chat"))
    assert info.value.field_name == field and info.value.line == 1


def test_jsonl_uses_configured_fields_and_csv(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("in,out\nhello,world\n\"multi\nline\",x\nonly\n", encoding="utf-8")
    cfg = DataConfig(task="jsonl", train_file=str(data), prompt_field="in",
                     completion_field="out", skip_bad_rows=True)
    samples, errors = load_samples(data, cfg)
    assert [(s.input_text, s.target) for s in samples] == [("hello", "world"), ("multi\nline", "x")]
    assert samples[1].source == f"{data}:3"
    assert len(errors) == 1 and str(errors[0]).startswith(f"{data}:5: field 'out'")


def prepare_argv(data, out, *extra):
    return ["data", "prepare", "--task", "gsm8k", "--data", str(data), "--model",
            str(TINYSTORIES_DIR), "--out", str(out), "--no-progress", *extra]


def test_cli_exits_nonzero_with_one_line_error(tmp_path, capsys):
    data = write_jsonl(tmp_path / "t.jsonl", [GOOD, {"question": "q", "answer": 7}])
    assert main(prepare_argv(data, tmp_path / "out")) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"jaxtune: error: {data}:2: field 'answer': expected a string, got int"
    assert not (tmp_path / "out").exists()


def test_cli_skip_bad_rows_counts_them(tmp_path, capsys):
    rows = [GOOD, "not json", {"question": "q2", "answer": "b\n#### 2"}, {"question": "q3"}]
    data = write_jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "out"
    assert main(prepare_argv(data, out, "--skip-bad-rows", "--val-fraction", "0")) == 0
    report = json.loads((out / "report.json").read_text())
    train = report["splits"]["train"]
    assert train["rows_read"] == 4 and train["dropped"] == {"bad_row": 2}
    assert train["examples_out"] == 2
    assert train["bad_rows"][0].startswith(f"{data}:2: malformed JSON")
    assert "Skipped bad rows" in (out / "report.md").read_text()
    assert "2 examples" in capsys.readouterr().out


def test_cli_model_without_tokenizer_is_a_one_line_error(tmp_path, capsys):
    data = write_jsonl(tmp_path / "t.jsonl", [GOOD])
    (tmp_path / "empty").mkdir()
    for model, message in ((tmp_path / "missing", "model folder not found"),
                           (tmp_path / "empty", "no tokenizer files")):
        argv = prepare_argv(data, tmp_path / "out")
        argv[argv.index("--model") + 1] = str(model)
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("jaxtune: error: ") and message in err and "\n" not in err
