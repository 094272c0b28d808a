"""Cleaning counts (empty fields, exact/normalised duplicates, too long) and leakage."""

from __future__ import annotations

import json

from tests.train_jax.data.conftest import write_jsonl
from train_jax.data import cleaning
from train_jax.data.config import DataConfig
from train_jax.data.prepare import prepare_dataset
from train_jax.data.sources import load_samples


def row(q: str, a: str) -> dict:
    return {"question": q, "answer": a}


def test_drop_counts_per_reason(tmp_path, bytelevel_tokenizer):
    rows = [
        row("What is 2+2?", "4\n#### 4"),
        row("What is 2+2?", "4\n#### 4"),          # exact duplicate
        row("what is 2 + 2 ", "4 \n####  4"),        # normalised duplicate
        row("What is 3+3?", "   "),                  # whitespace-only field
        row("", "1\n#### 1"),                        # empty field
        row("What is 5+5?", "10\n#### 10"),
        row("What is 2+2?", "four\n#### 4"),         # same input, other target: kept
        row("Long " * 300, "1\n#### 1"),             # over max_length
    ]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = DataConfig(task="gsm8k", train_file=str(data), max_length=128, val_fraction=0.0)
    dataset = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out", progress=False)
    report = json.loads((dataset.path / "report.json").read_text())
    train = report["splits"]["train"]
    assert train["rows_read"] == 8
    assert train["dropped"] == {"duplicate_exact": 1, "duplicate_normalized": 1,
                                "empty_field": 2, "too_long": 1}
    assert train["examples_out"] == 3
    assert dataset.meta["splits"]["train"]["examples"] == 3
    assert train["drop_examples"]["duplicate_exact"] == [f"{data}:2"]


def test_normalize_text_ignores_case_punctuation_and_spacing():
    assert cleaning.normalize_text("  Hello,   WORLD!\n") == cleaning.normalize_text("hello world")
    assert cleaning.normalize_text("hello world") != cleaning.normalize_text("hello words")


def test_leakage_counts_normalised_input_overlap(tmp_path, bytelevel_tokenizer):
    train = write_jsonl(tmp_path / "train.jsonl", [
        row("How many apples?", "3\n#### 3"),
        row("HOW many apples", "4\n#### 4"),       # leaks (normalised match with val)
        row("How many pears?", "2\n#### 2"),
        row("Who is tall?", "Bo\n#### 0"),          # leaks (exact match)
    ])
    val = write_jsonl(tmp_path / "val.jsonl", [
        row("how many apples?!", "5\n#### 5"),
        row("Who is tall?", "Al\n#### 1"),
        row("Unrelated question", "0\n#### 0"),
    ])
    cfg = DataConfig(task="gsm8k", train_file=str(train), val_file=str(val), max_length=64)
    dataset = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "report", progress=False)
    report = json.loads((dataset.path / "report.json").read_text())
    assert report["leakage"]["count"] == 3
    assert report["splits"]["train"]["examples_out"] == 4  # policy "report" keeps them

    dropped = prepare_dataset(DataConfig(**{**cfg.to_dict(), "leakage": "drop"}),
                              bytelevel_tokenizer, tmp_path / "drop", progress=False)
    report = json.loads((dropped.path / "report.json").read_text())
    assert report["splits"]["train"]["dropped"] == {"leaked_into_val": 3}
    assert report["splits"]["train"]["examples_out"] == 1


def test_validation_split_keeps_same_inputs_together(tmp_path):
    rows = [row(f"question {i % 10}", f"{i}\n#### {i}") for i in range(40)]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    samples, _ = load_samples(data, DataConfig(task="gsm8k", train_file=str(data)))
    train, val = cleaning.split_validation(samples, 0.25, seed=3)
    assert len(train) + len(val) == 40 and len(val) == 12  # whole groups of 4 cover 10 rows
    assert cleaning.find_leakage(train, val).count == 0
    again = cleaning.split_validation(samples, 0.25, seed=3)
    assert [s.source for s in again[1]] == [s.source for s in val]
