"""`verify(settings)`: score the prompts with every runtime and compare each pair."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.verify.metrics import PairResult, compare_full, compare_greedy, compare_server
from infra.verify.targets import VerifyTargets, resolve_targets
from infra.verify.tolerances import tolerances_for

logger = logging.getLogger(__name__)

DEFAULT_SERVE_ARGS = ("--kv-cache-gib", "1")


@dataclass(frozen=True)
class VerifySettings:
    """What to verify and how (the `jaxtune verify` flags)."""

    prompts: tuple[str, ...]
    work_dir: Path
    checkpoint: Path | None = None
    export: Path | None = None
    step: int | None = None
    dtype: str | None = None  # of the export written when only a checkpoint is given
    serve: bool = True
    serve_args: tuple[str, ...] = DEFAULT_SERVE_ARGS
    top_k: int = 20
    max_new_tokens: int = 16
    # A running server to check instead of starting one (the deployment, or the demo's).
    server_url: str | None = None
    served_model: str | None = None  # with server_url; None: the server's only model

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("verify needs at least one prompt")
        if not 1 <= self.top_k <= 20:
            raise ValueError(f"--top-k must be in 1..20 (the API's limit), got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class VerifyReport:
    """Every pair's result, with what was compared."""

    dtype: str
    num_prompts: int
    num_tokens: int
    sources: dict[str, str]
    rows: tuple[PairResult, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """True when every pair is within its tolerances."""
        return all(row.passed for row in self.rows)

    def failure_line(self) -> str:
        """One line naming each failing pair and why."""
        return "; ".join(f"{row.name}: {', '.join(row.failures)}" for row in self.rows
                         if not row.passed)


def verify(settings: VerifySettings) -> VerifyReport:
    """Run the comparison; the server part only with `settings.serve`."""
    from infra.verify.flax_side import flax_logprobs
    from infra.verify.transformers_side import TransformersReference

    if settings.serve and settings.server_url is not None:
        from infra.verify.server_side import served_model_name

        # Asked first: a server that is not there (or does not serve the model) fails before
        # minutes of scoring.
        settings = dataclasses.replace(settings, served_model=served_model_name(
            settings.server_url, settings.served_model))
    targets = resolve_targets(settings.checkpoint, settings.export, settings.work_dir,
                              step=settings.step, dtype=settings.dtype,
                              lora_serving=settings.serve and settings.server_url is None)
    tol = tolerances_for(targets.dtype)
    reference = TransformersReference(targets.export_dir)
    ids = [reference.encode(prompt) for prompt in settings.prompts]
    ref_lp = [reference.logprobs(row) for row in ids]
    logger.info("scoring %d prompts with Flax (%s)", len(ids), targets.flax_source)
    ours = flax_logprobs(targets.flax_source, ids, step=targets.step, weight_dtype=targets.dtype)
    rows = [compare_full("flax", "transformers", ours, ref_lp, ids, tol["local"])]
    if settings.serve:
        rows += _server_rows(settings, targets, reference, ids, ref_lp)
    rounded = f", weights rounded to {targets.dtype}" if targets.dtype != "float32" else ""
    step = f" (step {targets.step}{rounded})" if targets.step is not None else ""
    served = (f"{targets.export_dir} ({targets.dtype})" if settings.server_url is None
              else f"{settings.server_url} (model {settings.served_model})")
    sources = {"flax": str(targets.flax_source) + step,
               "transformers": f"{targets.export_dir} (float32)",
               **({"vllm": served} if settings.serve else {}),
               **({"vllm-lora": f"{targets.lora.base_dir} + {targets.lora.adapter_dir}"}
                  if settings.serve and targets.lora else {})}
    return VerifyReport(targets.dtype, len(ids), sum(len(row) for row in ids), sources, tuple(rows))


def _server_rows(settings: VerifySettings, targets: VerifyTargets, reference,
                 ids: Sequence[Sequence[int]], ref_lp) -> list[PairResult]:
    from infra.verify.server_side import ADAPTER, MERGED, ServedModel, verify_server

    tol = tolerances_for(targets.dtype)["server"]
    hf_text = [reference.greedy(row, settings.max_new_tokens) for row in ids]
    if settings.server_url is not None:
        server = contextlib.nullcontext(settings.server_url)
        served = [("vllm", settings.served_model)]
    else:
        log_path = settings.work_dir / "server.log"
        logger.info("starting jaxtune serve (log: %s)", log_path)
        server = verify_server(targets.export_dir, targets.lora, log_path, settings.serve_args)
        served = [("vllm", MERGED)] + ([("vllm-lora", ADAPTER)] if targets.lora else [])
    rows: list[PairResult] = []
    with server as url:
        for label, model in served:
            client = ServedModel(url, model)
            try:
                scored = [client.prompt_logprobs(row, settings.top_k) for row in ids]
                one = client.greedy(ids, settings.max_new_tokens, batched=False)
                batch = client.greedy(ids, settings.max_new_tokens, batched=True)
            finally:
                client.close()
            rows.append(compare_server("transformers", label, ref_lp, scored, ids, tol,
                                       settings.top_k))
            rows.append(compare_greedy("transformers", f"{label} b1", [
                reference.divergence_gap(row, a, b) for row, a, b in zip(ids, hf_text, one, strict=True)], tol))
            rows.append(compare_greedy(f"{label} b1", f"{label} b{len(ids)}", [
                reference.divergence_gap(row, a, b) for row, a, b in zip(ids, one, batch, strict=True)], tol))
    return rows
