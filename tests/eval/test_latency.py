"""Load generator and latency suite against the fake server with injected delays."""

import json
import statistics

import pytest

from eval.client import ClientConfig
from eval.latency import load_latency_config, run_latency
from eval.latency_stats import Slo
from eval.loadgen import LoadConfigError, LoadLevel, arrival_gaps, prompts_from_file
from tests.eval.fake_server import FakeBehaviour, run_fake_server


def test_poisson_gaps_are_seeded_and_have_the_right_mean():
    gaps = arrival_gaps(4000, rate=8.0, seed=1)
    assert gaps == arrival_gaps(4000, rate=8.0, seed=1)
    assert gaps != arrival_gaps(4000, rate=8.0, seed=2)
    assert statistics.mean(gaps) == pytest.approx(1 / 8, rel=0.05)
    assert arrival_gaps(3, rate=None, seed=0) == [0.0, 0.0, 0.0]


def test_levels_and_config_validation(tmp_path):
    assert LoadLevel(concurrency=4, rate=2.0).label == "c=4 rate=2/s"
    with pytest.raises(LoadConfigError):
        LoadLevel()
    config_file = tmp_path / "lat.yaml"
    config_file.write_text("concurrency: [2]\nslo: {ttft_ms: 100}\n")
    config = load_latency_config(config_file, num_requests=5, tpot_ms=20.0, rates=None)
    assert config.concurrency == (2,) and config.num_requests == 5
    assert config.slo == Slo(ttft_ms=100, tpot_ms=20.0)
    config_file.write_text("concurency: [2]\n")
    with pytest.raises(LoadConfigError, match="concurency"):
        load_latency_config(config_file)
    bad_prompts = tmp_path / "p.jsonl"
    bad_prompts.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(LoadConfigError, match="p.jsonl:2"):
        prompts_from_file(bad_prompts)


def test_sweep_measures_injected_latency_excludes_warmup_and_writes_report(tmp_path):
    ttft, itl, tokens = 0.15, 0.03, 8
    behaviour = FakeBehaviour(ttft_s=ttft, itl_s=itl, default_answer=" ".join(["w"] * tokens))
    config = load_latency_config(concurrency=(1, 3), rates=(20.0,), num_requests=6, warmup=2,
                                 output_tokens=tokens, ttft_ms=1000.0, tpot_ms=1.0)
    with run_fake_server(behaviour) as url:
        result = run_latency(config, ClientConfig(base_url=url, model="fake"), tmp_path,
                             progress=False)
    assert behaviour.requests_seen == 3 * (6 + 2)
    for level in result["levels"]:
        assert level["completed"] == 6 and level["errors"] == 0
        assert level["output_tokens"] == 6 * tokens
        assert ttft * 1000 * 0.95 <= level["ttft_ms"]["p50"] <= ttft * 1000 + 100
        assert itl * 1000 * 0.95 <= level["itl_ms"]["p50"] <= itl * 1000 + 30
        assert itl * 1000 * 0.95 <= level["tpot_ms"]["p50"] <= itl * 1000 + 30
        assert level["itl_ms"]["n"] == 6 * (tokens - 1)
        # The TPOT SLO of 1 ms cannot be met by a 30 ms/token server: goodput is zero.
        assert level["good_requests"] == 0 and level["goodput"] == 0.0
    for name in ("results.json", "report.md", "latency.png", "throughput.png", "requests.jsonl"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [lv["label"] for lv in saved["levels"]] == ["c=1", "c=3", "rate=20/s"]
    assert len((tmp_path / "requests.jsonl").read_text().splitlines()) == 18


def test_failures_under_load_are_counted_without_stopping_the_run(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in
                                 ["ok one", "bad [[500]]", "slow [[hang]]", "ok two"]))
    behaviour = FakeBehaviour(ttft_s=0.01, itl_s=0.0)
    config = load_latency_config(concurrency=(4,), num_requests=8, warmup=0,
                                 prompts_file=str(prompts), output_tokens=4)
    with run_fake_server(behaviour) as url:
        result = run_latency(config, ClientConfig(base_url=url, model="fake", timeout_s=0.5),
                             None, progress=False)
    (level,) = result["levels"]
    assert level["completed"] == 4
    assert level["errors_by_kind"] == {"http_500": 2, "timeout": 2}
