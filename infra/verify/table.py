"""The verify table (markdown, also what stdout shows) and its JSON form."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from infra.verify.metrics import PairResult
from infra.verify.run import VerifyReport

HEADER = ("| pair | what | n | max abs dlogprob | mean KL | KL over | greedy agreement | "
          "decisive | result |")


def _num(value: float | None, bound: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2e}" + (f" (<= {bound:g})" if bound is not None else "")


def _row(row: PairResult) -> str:
    tol = row.tolerance
    what = "prompt logprobs" if row.kind == "prompt" else "greedy continuations"
    dlp = _num(row.max_dlogprob, tol.max_dlogprob if row.max_dlogprob is not None else None)
    kl = _num(row.mean_kl, tol.mean_kl if row.mean_kl is not None else None)
    unit = "positions" if row.kind == "prompt" else "prompts"
    return (f"| {row.name} | {what} | {row.count} {unit} | {dlp} | {kl} | {row.kl_scope or '-'} | "
            f"{row.agreement:.1%} | {row.decisive} | {'PASS' if row.passed else 'FAIL'} |")


def render_markdown(report: VerifyReport) -> str:
    """The table with a header naming what was compared."""
    lines = [f"{report.num_prompts} prompts, {report.num_tokens} tokens; weights {report.dtype}",
             "", *(f"- {name}: `{source}`" for name, source in report.sources.items()), "",
             HEADER, "|" + "---|" * 9, *(_row(row) for row in report.rows), "",
             "PASS" if report.passed else f"FAIL: {report.failure_line()}"]
    return "\n".join(lines) + "\n"


def report_json(report: VerifyReport) -> dict[str, Any]:
    """A JSON-ready dict of the report (`passed` included)."""
    data = dataclasses.asdict(report)
    for row, raw in zip(data["rows"], report.rows, strict=True):
        row["name"], row["passed"] = raw.name, raw.passed
    return {**data, "passed": report.passed}


def write_outputs(report: VerifyReport, out_dir: Path) -> tuple[Path, Path]:
    """Write `verify.json` and `verify.md` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "verify.json", out_dir / "verify.md"
    json_path.write_text(json.dumps(report_json(report), indent=2) + "\n")
    md_path.write_text(render_markdown(report))
    return json_path, md_path
