"""The demo pipeline: each stage is a jaxtune subcommand (or a served model plus eval commands).

Stages, in order: fetch -> prepare -> baseline -> train -> export -> verify -> tuned -> report.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from infra.pipeline.processes import jaxtune_command, run_logged, served_model
from infra.pipeline.stages import Stage, StageRunner
from train_jax.provenance import add_eval_results

logger = logging.getLogger(__name__)

KNOWN_BASE_MODELS = ("smollm2-135m-instruct",)
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TaskFiles:
    """Train and validation files of a task, as shipped in `data/`."""

    train: Path
    valid: Path


TASK_FILES = {
    "viggo": TaskFiles(REPO_ROOT / "data/viggo/train.csv", REPO_ROOT / "data/viggo/valid.csv"),
    "sql": TaskFiles(REPO_ROOT / "data/sql/train.jsonl", REPO_ROOT / "data/sql/valid.jsonl"),
    "gsm8k": TaskFiles(REPO_ROOT / "data/gsm8k/train.jsonl", REPO_ROOT / "data/gsm8k/valid.jsonl"),
}


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs; the defaults are the README's `make demo`."""

    out_dir: Path = Path("runs/demo")
    task: str = "viggo"
    base_model: str = "smollm2-135m-instruct"
    train_config: Path = REPO_ROOT / "configs/train/viggo.yaml"
    train_overrides: tuple[str, ...] = ()
    budget_minutes: float = 25.0
    eval_limit: int = 200
    baseline_shots: int = 3
    eval_concurrency: int = 8
    latency_concurrency: tuple[int, ...] = (1, 4, 16)
    latency_requests: int = 32
    latency_max_tokens: int = 64
    serve_args: tuple[str, ...] = ("--kv-cache-gib", "2", "--memory-fraction", "0.3")
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASK_FILES:
            raise ValueError(f"demo task must be one of {sorted(TASK_FILES)}, got {self.task!r}")
        if self.budget_minutes <= 0:
            raise ValueError(f"--budget-minutes must be > 0, got {self.budget_minutes}")
        if self.eval_limit <= 0:
            raise ValueError(f"--eval-limit must be > 0, got {self.eval_limit}")
        if not Path(self.train_config).is_file():
            raise FileNotFoundError(f"training config not found: {self.train_config}")


class DemoPipeline:
    """Builds the stage list for `settings` and runs it with a `StageRunner`."""

    def __init__(self, settings: DemoSettings):
        self.s = settings
        self.root = settings.out_dir.resolve()
        self.runner = StageRunner(self.root)
        self.logs = self.root / "logs"
        self.files = TASK_FILES[settings.task]
        self._servers = contextlib.ExitStack()  # the served tuned model, while it is needed
        self._tuned_url: str | None = None

    # paths -------------------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        """The base model's HF folder (fetched, or the user's local folder)."""
        if self.s.base_model in KNOWN_BASE_MODELS:
            return self.root / "base_model"
        return Path(self.s.base_model).resolve()

    @property
    def run_dir(self) -> Path:
        """The training run directory."""
        return self.root / "train_run"

    @property
    def tuned_dir(self) -> Path:
        """The exported tuned model (HF folder)."""
        return self.root / "tuned_model"

    @property
    def verify_dir(self) -> Path:
        """Where `jaxtune verify` writes verify.json and verify.md."""
        return self.root / "verify"

    def eval_dir(self, name: str) -> Path:
        """Where the eval outputs of `name` go."""
        return self.root / "eval" / name

    # stages ------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        """The ordered demo stages."""
        return [
            Stage("fetch", "obtain the base model offline", self._fetch),
            Stage("prepare", "clean, tokenise and pack the task data (report)", self._prepare),
            Stage("baseline", "serve the untuned model and evaluate it (prompted)", self._baseline),
            Stage("train", f"fine-tune for about {self.s.budget_minutes:g} minutes", self._train),
            Stage("export", "export the tuned checkpoint to a HF folder", self._export),
            Stage("verify", "serve the export; test before deploy: checkpoint vs export vs served",
                  self._verify),
            Stage("tuned", "evaluate the served tuned model: accuracy and latency", self._tuned),
            Stage("report", "write the report", self._report),
        ]

    def run(self) -> Path:
        """Run all unfinished stages; return the report path."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            outputs = self.runner.run_all(self.stages())
        finally:
            self._stop_tuned_server()
        return Path(outputs["report"]["report"])

    def tuned_server(self) -> str:
        """The base URL of the served tuned model, started on first use and kept until the run
        ends: verify and the tuned evals check the same server, and a vLLM start is paid once."""
        if self._tuned_url is None:
            self._tuned_url = self._servers.enter_context(served_model(
                self.tuned_dir, "tuned", self.logs / "serve_tuned.log",
                extra_args=self.s.serve_args))
        return self._tuned_url

    def _stop_tuned_server(self) -> None:
        self._servers.close()
        self._tuned_url = None

    def _fetch(self) -> dict:
        if self.s.base_model in KNOWN_BASE_MODELS:
            run_logged(jaxtune_command("model", "fetch", self.s.base_model, "--out", str(self.base_dir)),
                       self.logs / "fetch.log")
        elif not (self.base_dir / "config.json").is_file():
            raise FileNotFoundError(f"base model folder has no config.json: {self.base_dir}")
        return {"base_model": str(self.base_dir)}

    def _prepare(self) -> dict:
        out = self.root / "data"
        run_logged(jaxtune_command(
            "data", "prepare", "--task", self.s.task, "--data", str(self.files.train),
            "--val", str(self.files.valid), "--model", str(self.base_dir), "--out", str(out),
            "--style", self.tuned_style(), "--max-length", str(self.train_config().data.max_length)),
            self.logs / "prepare.log")
        return {"data_dir": str(out), "report": str(out / "report.md")}

    def _accuracy(self, base_url: str, model: str, out: Path, style: str, shots: int) -> None:
        run_logged(jaxtune_command(
            "eval", "accuracy", "--task", self.s.task, "--data", str(self.files.valid),
            "--base-url", base_url, "--model", model, "--out", str(out),
            "--limit", str(self.s.eval_limit), "--concurrency", str(self.s.eval_concurrency),
            "--shots", str(shots), "--style", style,
            # Shots come from the train file so base and tuned score the same validation rows.
            *(["--shot-data", str(self.files.train)] if shots else [])),
            self.logs / f"eval_{out.name}.log")

    def _baseline(self) -> dict:
        out = self.eval_dir("base")
        with served_model(self.base_dir, "base", self.logs / "serve_base.log",
                          extra_args=self.s.serve_args) as url:
            # Untuned chat models are prompted with the instruction and a few shots, as in the study.
            self._accuracy(url, "base", out, "chat", self.s.baseline_shots)
        return {"eval_dir": str(out)}

    def _train(self) -> dict:
        overrides = [f"model={self.base_dir}", f"run_dir={self.run_dir}",
                     f"train.time_budget_minutes={self.s.budget_minutes:g}", *self.s.train_overrides]
        # Shipped configs name data files relative to the repository root.
        run_logged(jaxtune_command("train", "--config", str(self.s.train_config), *overrides),
                   self.logs / "train.log", env=self.s.extra_env, cwd=REPO_ROOT)
        return {"run_dir": str(self.run_dir), "metrics": str(self.run_dir / "metrics.jsonl")}

    def _export(self) -> dict:
        ckpt_dir = self.run_dir / "checkpoints"
        cfg = self.train_config()
        chosen: dict = {}
        if cfg.eval.every and cfg.checkpoint.keep_best:
            # The step the run ranked best (the task configs rank by the task's own metric).
            from train_jax.checkpoint.best import best_step

            best = best_step(ckpt_dir)
            chosen = {"step": best.step, "chosen_by": best.describe()}
        step = ["--step", str(chosen["step"])] if chosen else []
        run_logged(jaxtune_command("export", "--checkpoint", str(ckpt_dir), *step,
                                   "--out", str(self.tuned_dir)), self.logs / "export.log")
        return {"tuned_model": str(self.tuned_dir), **chosen}

    def _verify(self) -> dict:
        # The task's own prompts, on the server the tuned evals then use; a failing pair stops
        # the demo before the tuned model is scored.
        run_logged(jaxtune_command(
            "verify", "--checkpoint", str(self.run_dir / "checkpoints"), "--export",
            str(self.tuned_dir), "--task", self.s.task, "--data", str(self.files.valid),
            "--out", str(self.verify_dir), "--base-url", self.tuned_server(),
            "--served-model", "tuned"), self.logs / "verify.log")
        return {"verify_dir": str(self.verify_dir),
                "passed": load_json(self.verify_dir / "verify.json")["passed"]}

    def _tuned(self) -> dict:
        acc_out, lat_out = self.eval_dir("tuned"), self.eval_dir("latency")
        url = self.tuned_server()
        self._accuracy(url, "tuned", acc_out, self.tuned_style(), 0)
        run_logged(jaxtune_command(
            "eval", "latency", "--base-url", url, "--model", "tuned", "--out", str(lat_out),
            "--concurrency", ",".join(str(c) for c in self.s.latency_concurrency),
            "--num-requests", str(self.s.latency_requests),
            "--output-tokens", str(self.s.latency_max_tokens)), self.logs / "eval_latency.log")
        self._stop_tuned_server()  # its memory is not needed for the report
        # The export's provenance carries the scores it was shipped with.
        add_eval_results(self.tuned_dir, "tuned", load_json(acc_out / "results.json"))
        add_eval_results(self.tuned_dir, "base_prompted",
                         load_json(self.eval_dir("base") / "results.json"))
        return {"accuracy_dir": str(acc_out), "latency_dir": str(lat_out)}

    def _report(self) -> dict:
        from infra.demo.report import DemoRecord, write_report

        compare_out = self.eval_dir("compare")
        run_logged(jaxtune_command("eval", "compare", str(self.eval_dir("base")),
                                   str(self.eval_dir("tuned")), "--out", str(compare_out)),
                   self.logs / "eval_compare.log")
        report = write_report(DemoRecord(
            root=self.root, out_dir=self.s.out_dir, task=self.s.task,
            base_model_dir=Path(str(self.base_dir)), tuned_dir=self.tuned_dir,
            run_dir=self.run_dir, logs=self.logs, tuned_style=self.tuned_style(),
            baseline_shots=self.s.baseline_shots, budget_minutes=self.s.budget_minutes,
            stage_seconds=self.stage_seconds(), verify_dir=self.verify_dir,
            exported_step=(self.runner.record("export") or {}).get("chosen_by"),
            eval_dirs={name: self.eval_dir(name) for name in ("base", "tuned", "compare", "latency")}))
        return {"report": str(report), "compare_dir": str(compare_out)}

    def train_config(self):
        """The validated training config with the demo's overrides."""
        from train_jax.config.run_config import load_run_config

        return load_run_config(self.s.train_config, [f"model={self.base_dir}", *self.s.train_overrides])

    def tuned_style(self) -> str:
        """The prompt style the training config uses (the tuned model is evaluated in it)."""
        return self.train_config().data.sources[0].dataset.style

    def stage_seconds(self) -> dict[str, float | None]:
        """Seconds each finished stage took."""
        return {stage.name: self.runner.seconds(stage.name) for stage in self.stages()}


def load_json(path: Path) -> dict:
    """Read a JSON file written by a stage."""
    return json.loads(Path(path).read_text())
