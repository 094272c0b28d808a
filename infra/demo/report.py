"""The demo's single report: REPORT.md beside the PNGs of every stage."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DemoRecord:
    """What the report needs of a finished demo: plain values and paths, no pipeline object."""

    root: Path
    out_dir: Path
    task: str
    base_model_dir: Path
    tuned_dir: Path
    run_dir: Path
    logs: Path
    tuned_style: str
    baseline_shots: int
    budget_minutes: float
    stage_seconds: dict[str, float | None]
    eval_dirs: dict[str, Path]  # base, tuned, compare, latency -> where that eval wrote
    verify_dir: Path | None = None  # where `jaxtune verify` wrote verify.md
    exported_step: str | None = None  # which checkpoint step was exported, and why


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _copy_pngs(src: Path, dest: Path, prefix: str) -> list[Path]:
    copied = []
    for png in sorted(src.glob("*.png")) if src.is_dir() else []:
        target = dest / f"{prefix}_{png.name}"
        shutil.copyfile(png, target)
        copied.append(target)
    return copied


def _accuracy_rows(base: dict | None, tuned: dict | None) -> list[str]:
    if not base or not tuned:
        return ["(accuracy results missing)"]
    rows = ["| metric | base (prompted) | 95% CI | tuned | 95% CI |", "|---|---|---|---|---|"]
    for name, b in base["metrics"].items():
        t = tuned["metrics"].get(name, {})
        rows.append(
            f"| {name} | {_fmt(b.get('value'))} | [{_fmt(b.get('low'))}, {_fmt(b.get('high'))}]"
            f" | {_fmt(t.get('value'))} | [{_fmt(t.get('low'))}, {_fmt(t.get('high'))}] |")
    return rows


def _training_summary(metrics_path: Path) -> list[str]:
    if not metrics_path.is_file():
        return ["(no training metrics)"]
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return ["(no training metrics)"]
    losses = [r for r in rows if "loss" in r]
    vals = [r for r in rows if r.get("val_loss") is not None]
    lines = [f"- steps logged: {len(losses)}; last step {rows[-1].get('step')}"]
    if losses:
        lines.append(f"- training loss: first {_fmt(losses[0]['loss'])}, last {_fmt(losses[-1]['loss'])}")
    if vals:
        lines.append(f"- validation loss: first {_fmt(vals[0]['val_loss'])}, last {_fmt(vals[-1]['val_loss'])}")
    rates = [r["tokens_per_s"] for r in rows if isinstance(r.get("tokens_per_s"), (int, float))]
    if rates:
        lines.append(f"- throughput: {sum(rates) / len(rates):.0f} tokens/s on average")
    return lines


def _verify_section(verify_dir: Path | None) -> list[str]:
    table = verify_dir / "verify.md" if verify_dir is not None else None
    if table is None or not table.is_file():
        return []
    return ["## Verify (test before deploy)", "",
            ("`jaxtune verify`: the training checkpoint in Flax, the export in transformers and "
             "the export served by vLLM, on the same prompts (see docs/SERVING.md, "
             "\"Verifying an export\")."), "",
            table.read_text().rstrip(), ""]


def write_report(demo: DemoRecord) -> Path:
    """Write `REPORT.md` (+ PNGs copied beside it) for a finished demo; return its path."""
    root = demo.root
    assets = root / "report_assets"
    assets.mkdir(exist_ok=True)
    base = _read(demo.eval_dirs["base"] / "results.json")
    tuned = _read(demo.eval_dirs["tuned"] / "results.json")
    compare = _read(demo.eval_dirs["compare"] / "results.json")
    seconds = demo.stage_seconds
    pngs = (_copy_pngs(demo.run_dir, assets, "train")
            + _copy_pngs(demo.eval_dirs["compare"], assets, "compare")
            + _copy_pngs(demo.eval_dirs["latency"], assets, "latency")
            + _copy_pngs(root / "data", assets, "data"))
    lines = [
        f"# jaxtune demo: {demo.task} on {demo.base_model_dir.name}", "",
        "Command: `" + shlex.join(["jaxtune", *sys.argv[1:]] if sys.argv[1:2] == ["demo"]
                                  else ["jaxtune", "demo", "--out", str(demo.out_dir)]) + "`", "",
        "## Accuracy on the validation split", "",
        (f"{base['n_examples'] if base else '?'} validation examples; the base model is prompted "
         f"with the task instruction and {demo.baseline_shots} shots (chat template), the tuned "
         f"model with the `{demo.tuned_style}` prompt it was trained on."), "",
        *_accuracy_rows(base, tuned), "",
    ]
    if compare:
        lines += [("Paired comparison (McNemar): see "
                   f"[{demo.eval_dirs['compare'] / 'report.md'}]({demo.eval_dirs['compare'] / 'report.md'})."), ""]
    lines += _verify_section(demo.verify_dir)
    lines += ["## Training", "", *_training_summary(demo.run_dir / "metrics.jsonl"),
              *([f"- exported: {demo.exported_step}"] if demo.exported_step else []),
              (f"- training wall time: {_fmt(seconds.get('train'), 0)} s "
               f"(budget {demo.budget_minutes:g} min)"), "",
              "## Stages", "", "| stage | seconds |", "|---|---|",
              *[f"| {name} | {_fmt(sec, 0)} |" for name, sec in seconds.items() if name != "report"], "",
              "## Outputs", "",
              f"- tuned model (HF folder): `{demo.tuned_dir}`",
              f"- training run: `{demo.run_dir}`",
              f"- data report: `{root / 'data' / 'report.md'}`",
              f"- latency report: `{demo.eval_dirs['latency'] / 'report.md'}`",
              f"- logs of every command: `{demo.logs}`", "",
              "## Plots", ""]
    lines += [f"![{png.stem}](report_assets/{png.name})" for png in pngs]
    report = root / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    return report
