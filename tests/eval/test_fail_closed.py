"""The eval harness fails closed: no server, a model it does not serve, or requests that fail
stop the command with one line and a non-zero exit, and never count as wrong answers."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest

from infra.cli import main as jaxtune
from infra.demo.pipeline import DemoPipeline, DemoSettings
from infra.pipeline.processes import StageFailed
from infra.pipeline.server_process import free_port
from tests.eval.fake_server import FakeBehaviour, run_fake_server

REPO = Path(__file__).resolve().parents[2]
GSM8K = REPO / "data/gsm8k/train.jsonl"


def _accuracy(url: str, out: Path, *extra) -> list[str]:
    return ["eval", "accuracy", "--task", "gsm8k", "--data", str(GSM8K), "--base-url", url,
            "--model", "m", "--limit", "4", "--out", str(out), *map(str, extra)]


def _latency(url: str, out: Path) -> list[str]:
    return ["eval", "latency", "--base-url", url, "--model", "m", "--concurrency", "2",
            "--num-requests", "4", "--warmup", "0", "--output-tokens", "3", "--out", str(out)]


@pytest.mark.parametrize("command", [_accuracy, _latency], ids=["accuracy", "latency"])
def test_a_dead_port_is_one_line_and_a_non_zero_exit(tmp_path, capsys, command):
    url = f"http://127.0.0.1:{free_port()}"
    assert jaxtune(command(url, tmp_path / "out")) != 0
    err = capsys.readouterr().err.strip()
    assert err == (f"jaxtune: error: no server at {url}/v1 (connection refused); start one "
                   "with `jaxtune serve` or check --base-url")
    assert not (tmp_path / "out").exists()


def test_a_model_the_server_does_not_serve_is_named(tmp_path, capsys):
    with run_fake_server(FakeBehaviour(models=("tuned",))) as url:
        assert jaxtune(_accuracy(url, tmp_path / "out")) != 0
    err = capsys.readouterr().err.strip()
    assert "does not serve model 'm' (it serves: tuned); check --model" in err
    assert err.count("\n") == 0


def test_failed_requests_are_reported_unscored_and_fail_the_command(tmp_path, capsys):
    with run_fake_server(FakeBehaviour(fail_status=503)) as url:
        assert jaxtune(_accuracy(url, tmp_path / "a")) == 1
        out, err = capsys.readouterr()
        assert jaxtune(_accuracy(url, tmp_path / "b", "--max-error-rate", 1)) == 0
        assert jaxtune(_latency(url, tmp_path / "lat")) == 1
        lat_err = capsys.readouterr().err
    assert "UNSCORED: 4 of 4 requests failed (http_503 4)" in out
    assert "strict_match: n/a n/a (n=0)" in out
    last_line = err.strip().splitlines()[-1]  # after the progress bar
    assert last_line.startswith("jaxtune: error: 4 of 4 requests failed (http_503 4) and were "
                                "not scored; none allowed by --max-error-rate")
    summary = json.loads((tmp_path / "a" / "results.json").read_text())
    assert (summary["n_unscored"], summary["unscored_by_error"]) == (4, {"http_503": 4})
    assert summary["metrics"]["strict_match"]["n"] == 0
    assert "Warning: 4 of 4 requests failed" in (tmp_path / "a" / "report.md").read_text()
    assert "requests failed (http_503 4) and were left out of every figure" in lat_err
    latency = json.loads((tmp_path / "lat" / "results.json").read_text())
    assert (latency["n_failed"], latency["failed_by_error"]) == (4, {"http_503": 4})


def test_the_demo_stops_without_a_report_when_the_tuned_eval_fails(tmp_path, monkeypatch):
    with run_fake_server(FakeBehaviour(fail_status=500)) as url:

        @contextmanager
        def served(*_args, **_kwargs):
            yield url

        monkeypatch.setattr("infra.demo.pipeline.served_model", served)
        monkeypatch.setattr(DemoPipeline, "tuned_style", lambda self: "structured")
        pipeline = DemoPipeline(DemoSettings(out_dir=tmp_path / "demo", eval_limit=3))
        last = [s for s in pipeline.stages() if s.name in ("tuned", "report")]
        with pytest.raises(StageFailed, match="eval accuracy"):
            pipeline.runner.run_all(last)
    root = tmp_path / "demo"
    assert pipeline.runner.record("tuned") is None and pipeline.runner.record("report") is None
    assert not (root / "REPORT.md").exists() and not (root / "eval" / "compare").exists()
    # The eval itself still wrote what happened, unscored.
    assert json.loads((root / "eval/tuned/results.json").read_text())["n_unscored"] == 3
