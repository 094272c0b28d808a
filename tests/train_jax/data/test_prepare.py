"""prepare_dataset: cache re-use by input hash, output layout, report, hub inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.train_jax.data.conftest import head_of_task_file, write_jsonl
from train_jax.data import prepare as prepare_module
from train_jax.data.config import DataConfig
from train_jax.data.packing import ARRAY_NAMES
from train_jax.data.prepare import PreparedDataset, prepare_dataset


def test_layout_meta_and_report(tmp_path, bytelevel_tokenizer):
    data = head_of_task_file("sql", tmp_path, 50)
    cfg = DataConfig(task="sql", train_file=str(data), style="chat", max_length=512,
                     val_fraction=0.2, seed=4)
    dataset = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out", progress=False)
    assert dataset.splits == ("train", "val")
    for split in dataset.splits:
        arrays = dataset.arrays(split)
        assert set(arrays) == set(ARRAY_NAMES)
        assert all(a.shape == (dataset.num_rows(split), 512) for a in arrays.values())
    report = json.loads((dataset.path / "report.json").read_text())
    assert report["splits"]["val"]["split_from_train"] == 10
    assert report["splits"]["train"]["examples_out"] + 10 == 50
    assert 0 < report["splits"]["train"]["packing_efficiency"] <= 1
    md = (dataset.path / "report.md").read_text()
    assert "⟦<|im_start|>system" in md and "<|im_start|>assistant\n⟧SELECT" in md
    assert (dataset.path / "token_lengths.png").read_bytes()[:4] == b"\x89PNG"
    reloaded = PreparedDataset.load(dataset.path)
    assert reloaded.meta == dataset.meta


def test_same_inputs_reuse_the_directory_and_changes_rebuild(tmp_path, bytelevel_tokenizer,
                                                            monkeypatch):
    data = head_of_task_file("viggo", tmp_path, 20)
    cfg = DataConfig(task="viggo", train_file=str(data), max_length=512, val_fraction=0.0)
    first = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out", progress=False)
    builds = []
    real_build = prepare_module._build
    monkeypatch.setattr(prepare_module, "_build", lambda *a, **k: builds.append(1) or
                        real_build(*a, **k))
    again = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out", progress=False)
    assert builds == [] and again.meta["cache_key"] == first.meta["cache_key"]

    prepare_dataset(DataConfig(**{**cfg.to_dict(), "max_length": 384}), bytelevel_tokenizer,
                    tmp_path / "out", progress=False)
    assert builds == [1]
    # Edited prompt text in eval.tasks (shared with evaluation) invalidates the cache too.
    from eval.tasks import get_task

    viggo = get_task("viggo")
    monkeypatch.setattr(viggo, "instruction", viggo.instruction + " Be exact.")
    prepare_dataset(DataConfig(**{**cfg.to_dict(), "max_length": 384}), bytelevel_tokenizer,
                    tmp_path / "out", progress=False)
    assert builds == [1, 1]
    with open(data, "a", encoding="utf-8") as handle:  # same path, new content
        handle.write('"inform(name[X])","X is a game."\n')
    changed = prepare_dataset(DataConfig(**{**cfg.to_dict(), "max_length": 384}),
                              bytelevel_tokenizer, tmp_path / "out", progress=False)
    assert builds == [1, 1, 1] and changed.meta["splits"]["train"]["examples"] == 21


def test_refuses_to_overwrite_a_foreign_directory(tmp_path, bytelevel_tokenizer):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    data = head_of_task_file("viggo", tmp_path, 5)
    with pytest.raises(ValueError, match="not a prepared dataset"):
        prepare_dataset(DataConfig(task="viggo", train_file=str(data)), bytelevel_tokenizer, out,
                        progress=False)
    assert (out / "notes.txt").read_text() == "keep me"


def test_hub_dataset_spec_is_materialised(tmp_path, bytelevel_tokenizer, monkeypatch):
    import datasets

    rows = [{"question": f"q{i}?", "context": "CREATE TABLE t (a INT)",
             "answer": f"SELECT a FROM t WHERE a = {i}"} for i in range(8)]
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = DataConfig(task="sql", train_file="hf://b-mc2/sql-create-context", val_fraction=0.0)
    dataset = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out", progress=False)
    assert calls == [("b-mc2/sql-create-context", "train")]
    assert dataset.meta["splits"]["train"]["examples"] == 8
    targets = dataset.arrays("train")["targets"]
    assert np.count_nonzero(dataset.arrays("train")["loss_mask"]) > 0 and targets.shape[0] >= 1


def test_loads_tokenizer_from_model_folder_and_jaxtune_checkpoint(tmp_path):
    import shutil

    from tests.fixtures.tiny_model import TINYSTORIES_DIR, TOKENIZER_FILES
    from train_jax.data.tokenization import load_tokenizer

    ckpt = tmp_path / "ckpt"
    (ckpt / "hf_assets").mkdir(parents=True)
    (ckpt / "jaxtune_checkpoint.json").write_text('{"format": 1}')
    for name in TOKENIZER_FILES:
        shutil.copy(TINYSTORIES_DIR / name, ckpt / "hf_assets" / name)
    assert load_tokenizer(ckpt).eos_token == load_tokenizer(TINYSTORIES_DIR).eos_token


def test_data_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown key.*'max_len'"):
        DataConfig.from_dict({"task": "viggo", "train_file": "x.csv", "max_len": 3})
    with pytest.raises(ValueError, match="style must be one of"):
        DataConfig(task="viggo", train_file="x.csv", style="prose")
    with pytest.raises(ValueError, match="needs style 'chat'"):
        DataConfig(task="chat", train_file="x.jsonl")


def test_generic_jsonl_with_custom_fields(tmp_path, bytelevel_tokenizer):
    rows = [{"instruction": f"Say {i}", "output": f"{i}!"} for i in range(5)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(task="jsonl", train_file=str(data), prompt_field="instruction",
                     completion_field="output", style="chat", system_prompt="Count.",
                     val_fraction=0.0, max_length=64)
    dataset = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out", progress=False)
    md = (dataset.path / "report.md").read_text()
    assert "⟦<|im_start|>system\nCount.<|im_end|>\n<|im_start|>user\nSay" in md
