"""Multi-task mixtures and sequential stages expressed in config."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.train_jax.train.runs import REPO, losses, viggo_slice, write_config
from train_jax.checkpoint import committed_steps, read_checkpoint_info
from train_jax.config.run_config import load_run_config
from train_jax.train.stages import run_stages, stage_configs


def _sql_slice(tmp_path, rows):
    lines = (REPO / "data" / "sql" / "train.jsonl").read_text().splitlines()[:rows]
    path = tmp_path / "sql_slice.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(tmp_path):
    viggo, sql = viggo_slice(tmp_path, 60), _sql_slice(tmp_path, 60)
    sources = [{"weight": 0.7, "dataset": {"task": "viggo", "train_file": str(viggo),
                                           "max_length": 256, "val_fraction": 0.1}},
               {"weight": 0.3, "dataset": {"task": "sql", "train_file": str(sql),
                                           "max_length": 256, "val_fraction": 0.1}}]
    stage2 = {"train": {"steps": 2}, "method": {"name": "lora", "lora": {"rank": 2}},
              "data": {"sources": sources[:1]}}
    return write_config(tmp_path / "staged.yaml", viggo,
                        data={"sources": sources, "prepared_dir": str(tmp_path / "prepared")},
                        train={"steps": 3, "batch_size": 4, "log_every": 1, "progress": False},
                        eval={"every": 3, "batches": 1},
                        stages=[{"train": {"steps": 3}}, stage2])


def test_stage_configs_chain_checkpoints(tmp_path):
    cfg = load_run_config(_config(tmp_path), [f"run_dir={tmp_path / 'run'}"])
    first, second = stage_configs(cfg)
    assert first.run_dir == str(tmp_path / "run" / "stage-1")
    assert second.model.path == str(tmp_path / "run" / "stage-1" / "checkpoints")
    assert second.model.architecture is None
    assert len(second.data.sources) == 1 and len(first.data.sources) == 2


@pytest.mark.slow  # two small training runs (~1-2 min on the shared CPU)
def test_mixture_stage_then_lora_stage(tmp_path):
    cfg = load_run_config(_config(tmp_path), [f"run_dir={tmp_path / 'run'}"])
    result = run_stages(cfg)
    assert result.final_step == 2 and result.interrupted_by is None
    stage1, stage2 = tmp_path / "run" / "stage-1", tmp_path / "run" / "stage-2"
    rows = [json.loads(x) for x in (stage1 / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    assert evals and {"val_loss/viggo", "val_loss/sql"} <= set(evals[-1])
    assert sorted(losses(stage1)) == [1, 2, 3] and sorted(losses(stage2)) == [1, 2]
    assert committed_steps(stage2 / "checkpoints")[-1] == 2
    assert read_checkpoint_info(stage2 / "checkpoints").lora is not None
    resolved = yaml.safe_load((stage2 / "config.yaml").read_text())
    assert resolved["model"]["path"] == str(stage1 / "checkpoints")
