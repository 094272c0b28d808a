"""The accuracy suite: prompt a served model on a task file, score every answer, summarise.

Prompts come from the `Task` objects of `eval.tasks` (the same rendering training uses):
``structured`` prompts go to /v1/completions as raw text; ``chat`` messages (zero- or
few-shot, for untuned chat baselines) go to /v1/chat/completions where the server applies the
model's chat template.
Requests run at a chosen concurrency and their latency is recorded too (accuracy under load).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval.accuracy_records import ExampleResult
from eval.cache import GenerationCache
from eval.client import ClientConfig, Endpoint, OpenAIClient, Prompt, RequestOutcome, SamplingParams
from eval.constrained_check import check_constraint_accepted
from eval.failures import count_failures
from eval.latency_stats import summarise as summarise_latency
from eval.preflight import check_server
from eval.report_accuracy import write_accuracy_report
from eval.stats import estimate
from eval.tasks import get_task, prompting
from eval.tasks.records import PROMPT_STYLES, PromptStyle, TaskExample
from eval.tasks.scoring import ExampleScore, MetricKind, group_metric_name
from eval.tasks.sql_databases import check_db_dir, shipped_db_dir
from eval.tasks.task import Task

logger = logging.getLogger(__name__)


class AccuracyConfigError(ValueError):
    """The accuracy settings are inconsistent; the message says which option to change."""


@dataclass(frozen=True)
class AccuracyConfig:
    """What to evaluate and how to prompt.

    `endpoint` defaults from `style` (structured -> completions, chat -> chat). With
    `shots` > 0 the shots come from `shot_data`, or else from the first `shots` examples of
    `data`, which are then not evaluated. `db_dir` (task ``sql`` only) is the directory of real
    databases rows are executed on by ``db_id``; None: the task's default (the shipped Spider
    databases when this install has them).
    """

    task: str
    data: Path
    style: PromptStyle = "structured"
    endpoint: Endpoint | None = None
    shots: int = 0
    shot_data: Path | None = None
    limit: int | None = None
    max_tokens: int | None = None
    skip_bad_rows: bool = False
    db_dir: Path | None = None
    constrained: bool = False  # decode under the task's output grammar (structured outputs)

    def __post_init__(self) -> None:
        get_task(self.task)  # raises on an unknown task name
        if self.constrained and get_task(self.task).output_grammar() is None:
            raise AccuracyConfigError(f"task {self.task!r} has no output grammar to constrain "
                                      "decoding with; drop --constrained")
        if self.db_dir is not None and self.task != "sql":
            raise AccuracyConfigError(f"--db-dir applies to --task sql only, not {self.task!r}")
        if self.db_dir is not None:
            check_db_dir(self.db_dir)  # DatabaseDirError naming the path
        if self.style not in PROMPT_STYLES:
            raise AccuracyConfigError(f"style must be one of {PROMPT_STYLES}, got {self.style!r}")
        if self.style == "chat" and self.endpoint == "completions":
            raise AccuracyConfigError("the chat style needs the chat endpoint (the server applies "
                                      "the model's chat template); use --endpoint chat")
        if self.shots and self.style != "chat":
            raise AccuracyConfigError("few-shot prompting needs --style chat (structured prompts "
                                      "are for tuned models and take no shots)")
        if self.limit is not None and self.limit < 1:
            raise AccuracyConfigError(f"limit must be >= 1, got {self.limit}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise AccuracyConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def resolved_endpoint(self) -> Endpoint:
        if self.endpoint is not None:
            return self.endpoint
        return "chat" if self.style == "chat" else "completions"

    @property
    def resolved_db_dir(self) -> Path | None:
        """The real databases the SQL task runs on: `db_dir`, else the shipped ones if any."""
        if self.task != "sql":
            return None
        return self.db_dir if self.db_dir is not None else shipped_db_dir()


def task_for(config: AccuracyConfig) -> Task:
    """The task object `config` evaluates with (the SQL task on `config.db_dir` if given).

    Raises `DatabaseDirError` when `db_dir` holds no databases.
    """
    if config.db_dir is None:
        return get_task(config.task)
    from eval.tasks.sql import SqlTask  # the only task with a database directory

    return SqlTask(config.db_dir)


def group_scores(task: Task, scored: ExampleScore) -> dict[str, float | None]:
    """The example's value of each metric, then of each group metric (`group_metric_name`):
    its value in its own group, None in the others (an example counts in one group only)."""
    scores = dict(scored.values)
    for metric in task.metrics:
        for group in metric.groups:
            own = scored.groups.get(metric.name) == group
            scores[group_metric_name(metric.name, group)] = (
                scored.values.get(metric.name) if own else None)
    return scores


def load_task_examples(config: AccuracyConfig) -> tuple[list[TaskExample], list[TaskExample]]:
    """(examples to evaluate, few-shot examples) per `config`."""
    task = task_for(config)
    examples, skipped = task.load_examples(config.data, skip_bad_rows=config.skip_bad_rows)
    for error in skipped:
        logger.warning("skipped bad row: %s", error)
    shots: list[TaskExample] = []
    if config.shots:
        if config.shot_data is not None:
            pool, _ = task.load_examples(config.shot_data, skip_bad_rows=config.skip_bad_rows)
            shots = prompting.pick_shots(pool, config.shots)
        else:
            shots = prompting.pick_shots(examples, config.shots)
            examples = examples[config.shots:]
    if config.limit is not None:
        examples = examples[:config.limit]
    if not examples:
        raise AccuracyConfigError(f"{config.data}: no examples left to evaluate")
    return examples, shots


def build_prompt(task: Task, example: TaskExample, style: PromptStyle,
                 shots: list[TaskExample]) -> Prompt:
    """The request prompt: structured text or chat messages."""
    if style == "structured":
        return task.structured_prompt(example)
    return task.chat_messages(example, shots)


def sampling_for(task: Task, config: AccuracyConfig) -> SamplingParams:
    """Greedy decoding with the task's answer budget; structured prompts stop at a new question."""
    stop = (prompting.QUESTION_START,) if config.style == "structured" else ()
    grammar = task.output_grammar() if config.constrained else None
    return SamplingParams(max_tokens=config.max_tokens or task.max_new_tokens, stop=stop,
                          structured_outputs=grammar)


def _score(task: Task, example: TaskExample, outcome: RequestOutcome) -> ExampleScore:
    if outcome.ok:
        return task.score(outcome.text, example)
    # A failed request is not a wrong answer: the model never answered. The example is
    # unscored (no value for any metric) and left out of every metric by `summarise`.
    return ExampleScore(values={m.name: None for m in task.metrics}, parsed=None)


async def evaluate(config: AccuracyConfig, client: OpenAIClient, *,
                   progress: bool = True) -> tuple[list[ExampleResult], float]:
    """Send every example, score the answers; returns (results in input order, wall seconds).

    Once the data has loaded, and before any request, raises `ServerCheckError` (one line
    saying what to fix) if the server cannot be reached or does not serve the model.
    """
    task = task_for(config)
    examples, shots = load_task_examples(config)
    await asyncio.to_thread(check_server, client.config)
    params = sampling_for(task, config)
    prompts = [build_prompt(task, ex, config.style, shots) for ex in examples]
    if config.constrained:  # a server that refuses the grammar fails the run here, not per row
        await check_constraint_accepted(client, config.task, prompts[0], params)
    bar = tqdm(total=len(examples), desc=f"eval {config.task}", unit="ex", disable=not progress)

    async def one(index: int) -> ExampleResult:
        outcome = await client.generate(prompts[index], params)
        example = examples[index]
        # SQL execution runs SQLite: keep it off the event loop so timing stays honest.
        scored = await asyncio.to_thread(_score, task, example, outcome)
        bar.update(1)
        return ExampleResult(index=index, source=example.source, prompt=prompts[index],
                             prediction=outcome.text, gold=example.target, parsed=scored.parsed,
                             scores=group_scores(task, scored), errors=dict(scored.errors),
                             outcome=outcome, primary_metric=task.primary_metric,
                             groups=dict(scored.groups))

    start = time.perf_counter()
    try:
        results = await asyncio.gather(*(one(i) for i in range(len(examples))))
    finally:
        bar.close()
    return list(results), time.perf_counter() - start


def summarise(config: AccuracyConfig, client_config: ClientConfig,
              results: list[ExampleResult], duration_s: float) -> dict[str, Any]:
    """The results.json content: metric estimates over the scored examples (and, for a metric
    with groups, over each group's examples apart), the unscored ones (failed requests) by error
    kind, answer failures by kind, latency of the same requests."""
    task = get_task(config.task)
    scored = [r for r in results if r.scored]
    unscored = count_failures(r.outcome for r in results)
    metrics: dict[str, dict[str, Any]] = {}
    errors: dict[str, dict[str, int]] = {}
    for metric in task.metrics:
        slices = [(metric.name, scored, metric.description, None)]
        slices += [(group_metric_name(metric.name, group),
                    [r for r in scored if r.groups.get(metric.name) == group],
                    f"{metric.name} on the examples of group {group!r} only", group)
                   for group in metric.groups]
        for name, members, description, group in slices:
            metrics[name] = {**_estimate([r.scores[metric.name] for r in members], metric.kind),
                             "kind": metric.kind, "description": description,
                             **({"metric": metric.name, "group": group} if group else {})}
            counts = Counter(r.errors[metric.name] for r in members if r.errors.get(metric.name))
            errors[name] = dict(sorted(counts.items()))
    config_dict = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    db_dir = None if config.resolved_db_dir is None else str(config.resolved_db_dir)
    client_dict = asdict(replace(client_config, api_key=None))
    client_dict.pop("api_key")
    return {
        "kind": "accuracy",
        "task": config.task,
        "model": client_config.model,
        "config": {**config_dict, "endpoint": config.resolved_endpoint, "db_dir": db_dir},
        "client": client_dict,
        "n_examples": len(results),
        "n_scored": len(scored),
        "n_unscored": len(results) - len(scored),
        "unscored_by_error": unscored,
        "metrics": metrics,
        "errors_by_kind": errors,
        "latency": summarise_latency([r.outcome for r in results], duration_s),
    }


def _estimate(values: list[float | None], kind: MetricKind) -> dict[str, Any]:
    """The metric's estimate; with nothing scored, no value and no interval (not 0 in [0, 1])."""
    out = estimate(values, kind).to_dict()
    if out["n"] == 0:
        out.update(value=None, low=None, high=None)
    return out


def run_accuracy(config: AccuracyConfig, client_config: ClientConfig, out_dir: str | Path | None,
                 *, cache_path: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the accuracy suite and (if `out_dir`) write results.json, examples.jsonl, report.md, PNG.

    Raises `ServerCheckError` (see `evaluate`). Returns the summary dict that results.json
    holds.
    """
    if client_config.endpoint != config.resolved_endpoint:
        client_config = replace(client_config, endpoint=config.resolved_endpoint)
    cache = GenerationCache(cache_path) if cache_path else None

    async def main() -> tuple[list[ExampleResult], float]:
        async with OpenAIClient(client_config, cache) as client:
            return await evaluate(config, client, progress=progress)

    try:
        results, duration = asyncio.run(main())
    finally:
        if cache is not None:
            cache.close()
    summary = summarise(config, client_config, results, duration)
    if out_dir is not None:
        write_accuracy_report(Path(out_dir), summary, results)
    return summary
