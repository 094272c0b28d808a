"""The latency suite: sweep load levels against an endpoint and summarise each one.

Settings can come from a YAML file (``configs/eval/latency.yaml``) whose keys are the fields
of `LatencyConfig` (``slo`` holds the fields of `Slo`); unknown keys are errors.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from eval.client import ClientConfig, SamplingParams
from eval.failures import count_failures
from eval.latency_stats import Slo, summarise
from eval.loadgen import LoadConfigError, LoadLevel, prompts_from_file, run_level, synthetic_prompts
from eval.preflight import check_server

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyConfig:
    """The load sweep: closed-loop `concurrency` levels, then open-loop Poisson `rates`
    (capped at `max_concurrency` in flight if set), `num_requests` each after `warmup`."""

    concurrency: tuple[int, ...] = (1, 4, 16)
    rates: tuple[float, ...] = ()
    max_concurrency: int | None = None
    num_requests: int = 32
    warmup: int = 2
    prompts_file: str | None = None
    input_words: int = 64
    output_tokens: int = 64
    ignore_eos: bool = True
    seed: int = 0
    slo: Slo = field(default_factory=Slo)

    def __post_init__(self) -> None:
        if not self.concurrency and not self.rates:
            raise LoadConfigError("give at least one concurrency level or rate")
        if self.output_tokens < 1:
            raise LoadConfigError(f"output_tokens must be >= 1, got {self.output_tokens}")
        self.levels()  # validates every level

    def levels(self) -> list[LoadLevel]:
        """The load levels in the order they run."""
        return ([LoadLevel(concurrency=c) for c in self.concurrency]
                + [LoadLevel(concurrency=self.max_concurrency, rate=r) for r in self.rates])


def load_latency_config(path: str | Path | None = None, **overrides: Any) -> LatencyConfig:
    """A `LatencyConfig` from YAML (optional) with keyword overrides (None values ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise LoadConfigError(f"{path}: expected a mapping of settings")
        data = dict(loaded)
    valid = {f.name for f in fields(LatencyConfig)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise LoadConfigError(f"{path}: unknown key(s) {unknown}; valid keys: {sorted(valid)}")
    slo_data = data.pop("slo", None) or {}
    slo_valid = {f.name for f in fields(Slo)}
    if not isinstance(slo_data, dict) or set(slo_data) - slo_valid:
        raise LoadConfigError(f"{path}: 'slo' takes {sorted(slo_valid)}, got {slo_data!r}")
    slo = Slo(**slo_data)
    slo_overrides = {k: overrides.pop(k) for k in list(overrides) if k in slo_valid}
    slo = replace(slo, **{k: v for k, v in slo_overrides.items() if v is not None})
    data.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("concurrency", "rates"):
        if key in data:
            data[key] = tuple(data[key])
    return LatencyConfig(**data, slo=slo)


def _prompts(config: LatencyConfig) -> list[str]:
    if config.prompts_file:
        return prompts_from_file(config.prompts_file)
    return synthetic_prompts(max(config.num_requests, 1), config.input_words, config.seed)


def run_latency(config: LatencyConfig, client_config: ClientConfig, out_dir: str | Path | None,
                *, progress: bool = True) -> dict[str, Any]:
    """Run every load level; write results.json, report.md and PNGs if `out_dir`; return the summary.

    Raises `ServerCheckError` (one line saying what to fix) before any request if the server
    cannot be reached or does not serve the model. Failed requests are counted (per level and
    in `n_failed` / `failed_by_error`) and left out of every latency figure.
    """
    prompts = _prompts(config)
    check_server(client_config)
    params = SamplingParams(max_tokens=config.output_tokens, ignore_eos=config.ignore_eos)
    levels, runs = [], []
    for level in config.levels():
        logger.info("load level %s: %d requests after %d warm-up", level.label,
                    config.num_requests, config.warmup)
        run = asyncio.run(run_level(client_config, prompts, params, level,
                                    num_requests=config.num_requests, warmup=config.warmup,
                                    seed=config.seed, progress=progress))
        runs.append(run)
        summary = summarise(run.outcomes, run.duration_s, config.slo)
        levels.append({"label": level.label, "concurrency": level.concurrency,
                       "rate": level.rate, "warmup_requests": run.warmup_requests,
                       **summary, "requests_detail": [o.to_dict() for o in run.outcomes]})
        logger.info("%s: TTFT p50 %s ms, TPOT p50 %s ms, %.2f req/s, %d errors", level.label,
                    _fmt(summary["ttft_ms"]["p50"]), _fmt(summary["tpot_ms"]["p50"]),
                    summary["request_throughput"] or 0.0, summary["errors"])
    client_dict = asdict(client_config)
    client_dict.pop("api_key")
    config_dict = asdict(config)
    failed = count_failures(o for run in runs for o in run.outcomes)
    result = {"kind": "latency", "model": client_config.model, "client": client_dict,
              "config": config_dict, "n_requests": sum(len(run.outcomes) for run in runs),
              "n_failed": sum(failed.values()), "failed_by_error": failed, "levels": levels}
    if out_dir is not None:
        from eval.report_latency import write_latency_report

        write_latency_report(Path(out_dir), result)
    return result


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
