"""Which local inputs of a run config get shipped to remote workers."""

import pytest

from infra.launch.run_inputs import RunInputError, collect_run_inputs


def _raw(model_path: str, train_file: str, val_file: str | None = None) -> dict:
    dataset = {"task": "viggo", "train_file": train_file}
    if val_file:
        dataset["val_file"] = val_file
    return {"model": {"path": model_path}, "data": {"sources": [{"dataset": dataset}]}}


def test_relative_files_and_folders_are_shipped_hub_and_gcs_are_not(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("x")
    (tmp_path / "models" / "tuned").mkdir(parents=True)
    raw = _raw("models/tuned", "data/train.csv", "gs://bucket/valid.csv")
    inputs = collect_run_inputs(raw, tmp_path)
    assert inputs.files == ("data/train.csv",)
    assert inputs.folders == ("models/tuned",)
    hub = collect_run_inputs(_raw("HuggingFaceTB/SmolLM2-135M-Instruct", "hf://o/n"), tmp_path)
    assert hub.files == () and hub.folders == ()


def test_absolute_and_escaping_paths_are_refused(tmp_path):
    existing = tmp_path / "train.csv"
    existing.write_text("x")
    with pytest.raises(RunInputError, match="absolute local path"):
        collect_run_inputs(_raw("org/model", str(existing)), tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(RunInputError, match="leaves the current directory"):
        collect_run_inputs(_raw("org/model", "../train.csv"), tmp_path / "sub")
