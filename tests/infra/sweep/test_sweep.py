"""`jaxtune sweep` on the tiny config: trials run, are scored, the best checkpoint is kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BASE = ["--config", str(REPO / "configs/train/tiny.yaml"), "--grid", "lr=1e-4,3e-3",
        "--set", "train.steps=6", "train.log_every=2", "eval.every=3", "eval.batches=1",
        "checkpoint.every=3", "train.progress=false"]


def _sweep(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.cli", "sweep", *BASE, "--out", str(out), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False)


def test_sweep_scores_trials_keeps_best_checkpoint_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result = _sweep(out)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "results.json").read_text())
    assert summary["metric"] == "val_loss" and summary["mode"] == "min"
    values = {row["trial"]: row["value"] for row in summary["trials"]}
    assert len(values) == 2
    best = summary["best"]["trial"]
    assert values[best] == min(values.values())
    for row in summary["trials"]:
        # The score is the best val_loss the trial logged.
        logged = [json.loads(line).get("val_loss") for line in
                  (Path(row["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        assert row["value"] == min(v for v in logged if v is not None)
        steps = Path(row["run_dir"]) / "checkpoints" / "steps"
        assert steps.is_dir() == (row["trial"] == best)
    assert summary["best_checkpoint"].endswith(f"{best}/checkpoints")
    assert f"best trial {best}" in result.stdout
    assert (out / "sweep.png").stat().st_size > 0
    assert "**best**" in (out / "sweep.md").read_text()

    again = _sweep(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("already done") == 2
    assert json.loads((out / "results.json").read_text())["best"] == summary["best"]


def test_unknown_key_fails_before_any_training(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "infra.cli", "sweep", "--config",
                             str(REPO / "configs/train/tiny.yaml"), "--grid", "train.nope=1,2",
                             "--out", str(tmp_path / "s")], cwd=REPO, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode != 0
    assert "train.nope" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s" / "trials").exists()
