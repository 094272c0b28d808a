"""The demo pipeline end to end on a tiny model and budget, including resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.tiny_model import build_tiny_hf_model

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.vllm


def _demo_argv(out: Path, base: Path) -> list[str]:
    return [sys.executable, "-m", "infra.cli", "demo", "--out", str(out), "--base-model", str(base),
            "--config", str(REPO / "configs/train/tiny.yaml"), "--budget-minutes", "5",
            "--eval-limit", "6", "--shots", "1", "--latency-concurrency", "1,2",
            "--latency-requests", "4",
            "--serve-arg=--kv-cache-gib", "--serve-arg=0.25", "--serve-arg=--enforce-eager",
            "--serve-arg=--max-model-len", "--serve-arg=2048",
            "train.steps=12", "train.log_every=2", "eval.every=6", "checkpoint.every=6"]


def _stage_record(out: Path, name: str) -> dict | None:
    path = out / "stages" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def test_demo_runs_end_to_end_and_resumes_after_a_kill(tmp_path: Path) -> None:
    # The prompted baseline (instruction + a shot, in the tiny tokenizer's many short tokens)
    # needs more than 512 tokens of context; a request that does not fit is now unscored and
    # fails the eval, as it should, instead of counting as a wrong answer.
    base = build_tiny_hf_model(tmp_path / "base", max_position_embeddings=2048)
    out = tmp_path / "demo"
    argv = _demo_argv(out, base)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}

    # First run: kill the whole demo as soon as the baseline is recorded (training starts next).
    proc = subprocess.Popen(argv, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while _stage_record(out, "baseline") is None:
        assert proc.poll() is None, "demo exited before finishing the baseline stage"
        assert time.monotonic() < deadline, "baseline stage did not finish in 10 minutes"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {name: _stage_record(out, name) for name in ("fetch", "prepare", "baseline")}
    assert _stage_record(out, "report") is None

    # Second run continues from the first unfinished stage.
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, record in done_before.items():
        assert _stage_record(out, name) == record, f"stage {name} ran again after resume"
    assert "baseline: already done" in result.stderr

    report = out / "REPORT.md"
    assert f"report at {report}" in result.stdout
    text = report.read_text()
    assert "| metric | base (prompted)" in text and "| exact_match | 0." in text
    assert "n/a" not in text.split("## Training")[0]
    pngs = sorted(p.name for p in (out / "report_assets").glob("*.png"))
    assert any(name.startswith("train_") for name in pngs), pngs
    assert any(name.startswith("compare_") for name in pngs), pngs
    assert any(name.startswith("latency_") for name in pngs), pngs
    tuned = json.loads((out / "eval/tuned/results.json").read_text())
    base_results = json.loads((out / "eval/base/results.json").read_text())
    assert tuned["n_examples"] == base_results["n_examples"] == 6
    provenance = json.loads((out / "tuned_model/jaxtune.json").read_text())
    assert provenance["training_config"]["train"]["steps"] == 12
    assert provenance["eval"]["tuned"]["metrics"]["exact_match"]["value"] == tuned["metrics"]["exact_match"]["value"]
    metrics = [json.loads(line) for line in (out / "train_run/metrics.jsonl").read_text().splitlines()]
    assert metrics and metrics[-1]["step"] == 12
    # The export is the step the run ranked best (tiny.yaml: lowest val_loss), and the report
    # says which; the verify table sits in the report.
    export = _stage_record(out, "export")["outputs"]
    ranked = {row["step"]: row["val_loss"] for row in metrics if "val_loss" in row}
    assert export["step"] == min(ranked, key=lambda step: (ranked[step], -step))
    assert provenance["step"] == export["step"]
    assert f"- exported: step {export['step']}: lowest val_loss" in text
    assert "## Verify (test before deploy)" in text and "| flax vs transformers |" in text
