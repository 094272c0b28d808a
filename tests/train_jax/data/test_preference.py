"""`jaxtune data prepare --task preference`: pair layout, completion-only masks, bad rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.tasks.records import DataFormatError
from infra.cli import main
from tests.fixtures.tiny_model import TINYSTORIES_DIR
from tests.train_jax.data.conftest import write_jsonl
from train_jax.data.config import DataConfig
from train_jax.data.prepare import prepare_dataset

ROWS = [
    {"prompt": "Name a colour.", "chosen": "blue", "rejected": "a chair"},
    {"prompt": "Two plus two?", "chosen": "4", "rejected": "five"},
    {"prompt": "Say hi.", "chosen": "hi", "rejected": "no"},
]


def _trained_text(tokenizer, arrays, row: int, side: int) -> str:
    mask = arrays["loss_mask"][row, side].astype(bool)
    return tokenizer.decode(arrays["targets"][row, side][mask].tolist())


def test_pairs_are_padded_rows_with_completion_only_masks(tmp_path, bytelevel_tokenizer):
    data = write_jsonl(tmp_path / "p.jsonl", ROWS)
    cfg = DataConfig(task="preference", train_file=str(data), max_length=64, val_fraction=0)
    dataset = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out", progress=False)
    arrays = dataset.arrays("train")
    assert dataset.meta["layout"] == "pairs" and dataset.num_rows("train") == 3
    assert arrays["input_ids"].shape == (3, 2, 64)
    eos = bytelevel_tokenizer.eos_token
    for i, row in enumerate(ROWS):  # rows keep file order; the iterator shuffles
        assert _trained_text(bytelevel_tokenizer, arrays, i, 0) == row["chosen"] + eos
        assert _trained_text(bytelevel_tokenizer, arrays, i, 1) == row["rejected"] + eos
        for side in (0, 1):
            segments = arrays["segment_ids"][i, side]
            n = int((segments > 0).sum())
            assert set(segments[:n]) == {1} and not segments[n:].any()  # one sequence, padded
            assert (arrays["positions"][i, side, :n] == np.arange(n)).all()
        # Both sequences start with the same (masked) prompt.
        start = int(np.argmax(arrays["loss_mask"][i, 0]))
        assert start > 0 and (arrays["input_ids"][i, 0, :start]
                              == arrays["input_ids"][i, 1, :start]).all()
    report = json.loads((dataset.path / "report.json").read_text())
    assert report["splits"]["train"]["examples_out"] == 3
    assert report["splits"]["train"]["dropped"] == {}
    assert "(chosen)" in report["examples"]["train"][0]["source"]


def test_chat_rows_mask_everything_but_the_assistant_answer(tmp_path, bytelevel_tokenizer):
    rows = [{"prompt": [{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Name a colour."}],
             "chosen": [{"role": "assistant", "content": "blue"}], "rejected": "a chair"}]
    data = write_jsonl(tmp_path / "c.jsonl", rows)
    cfg = DataConfig(task="preference", train_file=str(data), style="chat", max_length=48,
                     val_fraction=0)
    arrays = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out",
                             progress=False).arrays("train")
    eos = bytelevel_tokenizer.eos_token
    assert _trained_text(bytelevel_tokenizer, arrays, 0, 0) == "blue" + eos
    assert _trained_text(bytelevel_tokenizer, arrays, 0, 1) == "a chair" + eos
    context = arrays["input_ids"][0, 0][arrays["segment_ids"][0, 0] > 0]
    assert "Be brief." in bytelevel_tokenizer.decode(context.tolist())


@pytest.mark.parametrize(("bad", "field", "message"), [
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "rejected", "identical"),
    ({"prompt": "q", "chosen": "  ", "rejected": "b"}, "chosen", "empty completion"),
    ({"prompt": "q", "chosen": "a"}, "rejected", "missing field"),
    ({"prompt": "word " * 100, "chosen": "a", "rejected": "b"}, "prompt", "no room"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, bytelevel_tokenizer, bad, field, message):
    data = write_jsonl(tmp_path / "b.jsonl", [ROWS[0], ROWS[1], bad])
    cfg = DataConfig(task="preference", train_file=str(data), max_length=64, val_fraction=0)
    with pytest.raises(DataFormatError, match=message) as info:
        prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out", progress=False)
    assert str(info.value).startswith(f"{data}:3: ")
    assert info.value.field_name == field


def test_skip_bad_rows_counts_each_reason_in_the_report(tmp_path, capsys):
    rows = [*ROWS,
            {"prompt": "q", "chosen": "same", "rejected": "same"},
            {"prompt": "q", "chosen": "", "rejected": "b"},
            {"prompt": "story " * 200, "chosen": "a", "rejected": "b"},
            "not json",
            {"prompt": "Say hi.", "chosen": "hi", "rejected": "no"}]  # a duplicate pair
    data = write_jsonl(tmp_path / "b.jsonl", rows)
    argv = ["data", "prepare", "--task", "preference", "--data", str(data), "--model",
            str(TINYSTORIES_DIR), "--out", str(tmp_path / "out"), "--no-progress",
            "--max-length", "64", "--val-fraction", "0"]
    assert main(argv) == 1  # without the flag: the first bad row, as one line
    err = capsys.readouterr().err.strip()
    assert err == f"jaxtune: error: {data}:4: field 'rejected': chosen and rejected are identical"
    assert main([*argv, "--skip-bad-rows"]) == 0
    train = json.loads((tmp_path / "out" / "report.json").read_text())["splits"]["train"]
    assert train["rows_read"] == 8
    assert train["dropped"] == {"bad_row": 1, "duplicate_exact": 1, "empty_completion": 1,
                                "identical_pair": 1, "prompt_too_long": 1}
    assert train["examples_out"] == 3
    assert any(e.startswith(f"{data}:6: ") for e in train["bad_rows"])
