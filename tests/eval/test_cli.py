"""The three `jaxtune eval` CLI modules, driven through their own argparse flags."""

import argparse
import json
from pathlib import Path

import pytest

from eval import cli_accuracy, cli_compare, cli_latency
from tests.eval.fake_server import FakeBehaviour, run_fake_server

GSM8K = Path(__file__).resolve().parents[2] / "data/gsm8k/train.jsonl"


def _run(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args([str(a) for a in argv]))


def test_accuracy_compare_and_latency_commands(tmp_path, capsys):
    with run_fake_server(FakeBehaviour(default_answer="so #### 10")) as url:
        common = ["--task", "gsm8k", "--data", GSM8K, "--base-url", url, "--model", "m",
                  "--limit", 4]
        assert _run(cli_accuracy, [*common, "--out", tmp_path / "a", "--concurrency", 2]) == 0
        assert _run(cli_accuracy, [*common, "--out", tmp_path / "b", "--style", "chat",
                                   "--shots", 1, "--cache", tmp_path / "c.sqlite"]) == 0
        assert _run(cli_latency, ["--base-url", url, "--model", "m", "--concurrency", "1,2",
                                  "--num-requests", 3, "--warmup", 1, "--output-tokens", 3,
                                  "--slo-ttft-ms", 500, "--out", tmp_path / "lat"]) == 0
    assert _run(cli_compare, [tmp_path / "a", tmp_path / "b", "--out", tmp_path / "cmp"]) == 0
    out = capsys.readouterr().out
    assert "strict_match: 0.250" in out  # only the first GSM8K answer is 10
    assert "c=2: TTFT p50" in out and "goodput" in out
    for run_dir in ("a", "b", "lat", "cmp"):
        assert (tmp_path / run_dir / "results.json").is_file()
        assert (tmp_path / run_dir / "report.md").is_file()
        assert list((tmp_path / run_dir).glob("*.png"))
    latency = json.loads((tmp_path / "lat" / "results.json").read_text())
    assert latency["config"]["slo"]["ttft_ms"] == 500
    assert latency["config"]["output_tokens"] == 3


def test_bad_flags_fail_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _run(cli_latency, ["--base-url", "http://x", "--model", "m", "--concurrency", "1,0",
                           "--out", tmp_path])
    assert "expected integers >= 1" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        _run(cli_accuracy, ["--task", "gsm8k", "--data", tmp_path / "missing.jsonl",
                            "--base-url", "http://x", "--model", "m", "--out", tmp_path])
