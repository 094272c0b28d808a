"""Provenance of an exported model: `jaxtune.json` and a README model card.

Records where the weights came from (base model, resolved training config, the kernel backend
the run trained with, hashes of the data files, git commit, final metrics) so a served model
can be traced back to its run;
eval results are added when they become known (`add_eval_results`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "jaxtune.json"
MODEL_CARD_FILE = "README.md"
REPO_ROOT = Path(__file__).resolve().parents[1]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def git_commit(repo: Path = REPO_ROOT) -> str | None:
    """The commit of the jaxtune checkout (with `-dirty` when modified), or None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def _data_files(config: Mapping[str, Any]) -> list[str]:
    files = []
    for source in (config.get("data") or {}).get("sources") or []:
        dataset = source.get("dataset") or {}
        files += [dataset[k] for k in ("train_file", "val_file") if dataset.get(k)]
    return files


def _final_metrics(metrics_path: Path) -> dict[str, Any]:
    # The last value of every numeric key: loss, val_loss, task metrics, throughput.
    final: dict[str, Any] = {}
    if not metrics_path.is_file():
        return final
    for line in metrics_path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            final.update({k: v for k, v in row.items() if isinstance(v, (int, float))})
    return final


def build_provenance(checkpoint_dir: Path, *, step: int | None = None,
                     export_dtype: str | None = None) -> dict[str, Any]:
    """Provenance of an export from `checkpoint_dir` (a `model import` output or a run's checkpoints)."""
    checkpoint_dir = Path(checkpoint_dir)
    info_path = checkpoint_dir / "jaxtune_checkpoint.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    # Training records its resolved kernel backend with the source (train/model_init.py).
    source = info.get("source")
    kernels = source.get("kernels") if isinstance(source, dict) else None
    if kernels is not None:
        source = {k: v for k, v in source.items() if k != "kernels"}
    run_dir = checkpoint_dir.parent
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    datasets = {}
    for name in _data_files(config or {}):
        path = Path(name) if Path(name).is_absolute() else (Path.cwd() / name)
        datasets[name] = {"sha256": file_sha256(path)} if path.is_file() else {"sha256": None,
                                                                              "missing": True}
    return {
        "format": 1,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "jaxtune_commit": git_commit(),
        "checkpoint": str(checkpoint_dir.resolve()),
        "step": step,
        "export_dtype": export_dtype,
        "source_model": source,
        "lora": info.get("lora"),
        "kernels": kernels,
        "training_config": config,
        "datasets": datasets,
        "metrics": _final_metrics(run_dir / "metrics.jsonl") if config else {},
        "eval": {},
    }


def write_provenance(model_dir: Path, provenance: Mapping[str, Any]) -> None:
    """Write `jaxtune.json` and the README model card into an exported HF folder."""
    model_dir = Path(model_dir)
    (model_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, default=str) + "\n")
    (model_dir / MODEL_CARD_FILE).write_text(render_model_card(provenance))


def add_eval_results(model_dir: Path, name: str, results: Mapping[str, Any]) -> None:
    """Record eval `results` (an eval results.json) under `name` and refresh the model card."""
    path = Path(model_dir) / PROVENANCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a jaxtune export (no {PROVENANCE_FILE})")
    provenance = json.loads(path.read_text())
    provenance.setdefault("eval", {})[name] = {
        "task": results.get("task"), "n_examples": results.get("n_examples"),
        "metrics": {k: {m: v.get(m) for m in ("value", "low", "high")}
                    for k, v in (results.get("metrics") or {}).items()},
    }
    write_provenance(Path(model_dir), provenance)


def _training_lines(config: Mapping[str, Any] | None, metrics: Mapping[str, Any],
                    kernels: Mapping[str, Any] | None = None) -> list[str]:
    if not config:
        return ["Converted from the source model; not fine-tuned by jaxtune."]
    method = (config.get("method") or {}).get("name", "full")
    train, opt = config.get("train") or {}, config.get("optimizer") or {}
    lines = [f"- method: {method}", f"- steps: {train.get('steps')}, global batch {train.get('batch_size')}",
             f"- optimizer: AdamW, lr {opt.get('learning_rate')} ({opt.get('schedule')})"]
    if kernels:
        lines.append(f"- kernels: {kernels.get('backend')} (setting {kernels.get('setting')}, "
                     f"platform {kernels.get('platform')})")
    for source in (config.get("data") or {}).get("sources") or []:
        dataset = source.get("dataset") or {}
        lines.append(f"- data: task `{dataset.get('task')}`, `{dataset.get('train_file')}`, "
                     f"prompt style `{dataset.get('style')}`, weight {source.get('weight')}")
    for key in ("loss", "val_loss"):
        if key in metrics:
            lines.append(f"- final {key}: {metrics[key]:.4f}")
    return lines


def render_model_card(provenance: Mapping[str, Any]) -> str:
    """A README model card for the export, from its provenance."""
    source = provenance.get("source_model") or {}
    lines = ["---", "library_name: transformers", "tags: [jaxtune, fine-tuned]", "---", "",
             "# Model exported by jaxtune", "",
             f"Base model: `{source.get('model') or source.get('path') or source or 'unknown'}`  ",
             f"Checkpoint: `{provenance.get('checkpoint')}` (step {provenance.get('step')})  ",
             f"jaxtune commit: `{provenance.get('jaxtune_commit')}`", "", "## Training", "",
             *_training_lines(provenance.get("training_config"), provenance.get("metrics") or {},
                              provenance.get("kernels")), ""]
    if provenance.get("eval"):
        lines += ["## Evaluation", "", "| run | task | metric | score | 95% CI |", "|---|---|---|---|---|"]
        for run, result in provenance["eval"].items():
            for metric, value in (result.get("metrics") or {}).items():
                est, lo, hi = value.get("value"), value.get("low"), value.get("high")
                score = f"{est:.3f}" if isinstance(est, (int, float)) else "n/a"
                ci = f"[{lo:.3f}, {hi:.3f}]" if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else "n/a"
                lines.append(f"| {run} | {result.get('task')} | {metric} | {score} | {ci} |")
        lines.append("")
    if provenance.get("datasets"):
        lines += ["## Data files (SHA-256)", ""]
        lines += [f"- `{name}`: `{meta.get('sha256')}`" for name, meta in provenance["datasets"].items()]
        lines.append("")
    lines += ["Full provenance: `jaxtune.json` in this folder.", ""]
    return "\n".join(lines)
