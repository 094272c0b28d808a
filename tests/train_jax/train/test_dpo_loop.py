"""A DPO run end to end on the tiny model: prepared preference data, metrics, plots, and an
exact resume after a crash (every logged value of every step equals the uninterrupted run's)."""

from __future__ import annotations

import json
import logging
from itertools import islice
from pathlib import Path

import pytest

from tests.train_jax.train.runs import REPO, write_config
from train_jax.checkpoint import committed_steps
from train_jax.config.run_config import load_run_config
from train_jax.train.data_feed import BatchFeed
from train_jax.train.loop import train

STEPS = 10
PAIRS = REPO / "data" / "viggo" / "preference_train.jsonl"


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dpo")
    data = root / "pairs.jsonl"
    with open(PAIRS, encoding="utf-8") as handle:
        data.write_text("".join(islice(handle, 48)), encoding="utf-8")
    path = write_config(root / "tiny_dpo.yaml", data,
                        train={"steps": STEPS, "batch_size": 4, "log_every": 1,
                               "progress": False},
                        eval={"every": 4, "batches": 1},
                        objective={"name": "dpo", "dpo": {"beta": 0.1}},
                        checkpoint={"every": 3, "keep": 2, "keep_best": 0})
    raw = path.read_text().replace("task: viggo", "task: preference").replace(
        "max_length: 128", "max_length: 192")
    path.write_text(raw)
    return path


def _rows(run_dir: Path) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        row.pop("tokens_per_s", None)  # wall-clock
        rows.setdefault(row["step"], {}).update(row)
    return rows


def test_crash_and_resume_reproduces_the_uninterrupted_run(config, tmp_path, monkeypatch,
                                                           caplog):
    reference_dir = tmp_path / "reference"
    result = train(load_run_config(config, [f"run_dir={reference_dir}"]))
    assert result.final_step == STEPS
    reference = _rows(reference_dir)
    assert sorted(reference) == list(range(1, STEPS + 1))
    for key in ("loss", "reward_margin", "accuracy", "chosen_logp", "rejected_logp", "lr",
                "grad_norm"):
        assert all(key in reference[s] for s in reference), key
    assert {"val_loss", "val_accuracy", "val_reward_margin"} <= set(reference[4])
    assert reference[STEPS]["reward_margin"] > reference[1]["reward_margin"]
    assert (reference_dir / "loss_curve.png").is_file()
    assert (reference_dir / "dpo_curves.png").is_file()

    # A crash while fetching the 8th batch: checkpoints 3 and 6 are committed, step 7 is
    # logged but not saved, so the resumed run must drop it and compute it again.
    original, calls = BatchFeed.next, {"n": 0}

    def crashing(self):
        calls["n"] += 1
        if calls["n"] == 8:
            raise RuntimeError("simulated crash")
        return original(self)

    run_dir = tmp_path / "crashed"
    monkeypatch.setattr(BatchFeed, "next", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(load_run_config(config, [f"run_dir={run_dir}"]))
    monkeypatch.undo()
    assert max(committed_steps(run_dir / "checkpoints")) == 6
    assert max(_rows(run_dir)) == 7

    with caplog.at_level(logging.INFO, logger="train_jax.train.dpo.loop"):
        result = train(load_run_config(config, [f"run_dir={run_dir}"]))
    assert result.final_step == STEPS
    assert "resumed from checkpoint step 6" in caplog.text
    assert _rows(run_dir) == reference  # bit-identical, every value of every step
