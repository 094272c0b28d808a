"""The preparation report: `report.json`, `report.md` and `token_lengths.png`.

Rendered examples show the masked context between ⟦ and ⟧; everything outside the
brackets is what the model is trained to produce.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.tasks.records import DataFormatError
from train_jax.data.cleaning import BAD_ROW, CleaningResult, LeakageReport
from train_jax.data.config import DataConfig
from train_jax.data.sources import Sample
from train_jax.data.tokenization import TokenizedExample

MASK_OPEN, MASK_CLOSE = "⟦", "⟧"
EXAMPLES_PER_SPLIT = {"train": 3, "val": 1}


@dataclass
class SplitStats:
    """Counts gathered while preparing one split."""

    split: str
    rows_read: int = 0
    bad_rows: list[str] = field(default_factory=list)
    cleaning: CleaningResult = field(default_factory=lambda: CleaningResult(kept=[]))
    split_from_train: int = 0
    lengths: list[int] = field(default_factory=list)
    examples_out: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    rows: int = 0
    packing_efficiency: float = 0.0

    def record_loaded(self, n_samples: int, bad: Sequence[DataFormatError]) -> None:
        self.rows_read += n_samples + len(bad)
        self.bad_rows.extend(str(e) for e in bad)
        for _ in bad:
            self.cleaning.dropped[BAD_ROW] += 1

    def record_cleaning(self, result: CleaningResult) -> None:
        self.cleaning.dropped.update(result.dropped)
        for reason, sources in result.drop_examples.items():
            self.cleaning.drop_examples.setdefault(reason, []).extend(sources)

    def record_lengths(self, lengths: Sequence[int]) -> None:
        self.lengths = list(lengths)

    def record_packing(self, examples: Sequence[TokenizedExample], rows: int,
                       efficiency: float) -> None:
        self.examples_out = len(examples)
        self.tokens = sum(len(e) for e in examples)
        self.trained_tokens = int(sum(int(e.trained.sum()) for e in examples))
        self.rows, self.packing_efficiency = rows, efficiency

    def to_dict(self) -> dict[str, Any]:
        lengths = np.asarray(self.lengths) if self.lengths else np.zeros(1)
        return {
            "rows_read": self.rows_read,
            "split_from_train": self.split_from_train,
            "dropped": dict(sorted(self.cleaning.dropped.items())),
            "drop_examples": self.cleaning.drop_examples,
            "bad_rows": self.bad_rows[:20],
            "examples_out": self.examples_out,
            "tokens": self.tokens,
            "trained_tokens": self.trained_tokens,
            "sequences": self.rows,
            "packing_efficiency": round(self.packing_efficiency, 4),
            "token_length": {
                "min": int(lengths.min()), "mean": round(float(lengths.mean()), 1),
                "p50": int(np.percentile(lengths, 50)), "p95": int(np.percentile(lengths, 95)),
                "max": int(lengths.max()),
            },
        }


def render_masked(example: TokenizedExample, tokenizer: Any) -> str:
    """Decode `example` with its masked (context) runs wrapped in ⟦ ⟧."""
    parts: list[str] = []
    ids, trained = example.ids, example.trained
    start = 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or trained[end] != trained[start]:
            text = tokenizer.decode(ids[start:end].tolist(), skip_special_tokens=False)
            parts.append(text if trained[start] else f"{MASK_OPEN}{text}{MASK_CLOSE}")
            start = end
    return "".join(parts)


def write_report(out: Path, cfg: DataConfig, stats: Mapping[str, SplitStats],
                 leakage: LeakageReport,
                 examples: Mapping[str, Sequence[tuple[Sample, TokenizedExample]]],
                 tokenizer: Any) -> dict[str, Any]:
    """Write report.json, report.md and token_lengths.png into `out`; return the report."""
    report = {
        "config": cfg.to_dict(),
        "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
        "splits": {name: s.to_dict() for name, s in stats.items() if s.rows_read or s.rows
                   or s.split_from_train},
        "leakage": {"count": leakage.count, "policy": cfg.leakage,
                    "examples": list(leakage.examples)},
        "examples": {
            split: [{"source": sample.source, "rendered": render_masked(tok, tokenizer)}
                    for sample, tok in pairs[: EXAMPLES_PER_SPLIT.get(split, 1)]]
            for split, pairs in examples.items()
        },
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (out / "report.md").write_text(_markdown(report))
    _plot_lengths(out / "token_lengths.png", stats, cfg.max_length)
    return report


def _markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"# Data preparation report: {cfg['task']} ({cfg['style']} style)", "",
        f"- train file: `{cfg['train_file']}`; val file: `{cfg['val_file']}`",
        (f"- tokenizer: `{report['tokenizer']}`; max length {cfg['max_length']}; "
        f"packing {'on' if cfg['packing'] else 'off'}; seed {cfg['seed']}"), "",
        "| | " + " | ".join(report["splits"]) + " |",
        "|---|" + "---|" * len(report["splits"]),
    ]
    splits = list(report["splits"].values())
    reasons = sorted({r for s in splits for r in s["dropped"]})
    table = [("rows read", "rows_read"), ("split off train", "split_from_train")]
    table += [(f"dropped: {r}", ("dropped", r)) for r in reasons]
    table += [("examples kept", "examples_out"), ("tokens", "tokens"),
              ("trained tokens", "trained_tokens"), ("sequences", "sequences"),
              ("packing efficiency", "packing_efficiency")]
    for label, key in table:
        values = [s[key[0]].get(key[1], 0) if isinstance(key, tuple) else s[key] for s in splits]
        lines.append(f"| {label} | " + " | ".join(str(v) for v in values) + " |")
    leak = report["leakage"]
    lines += ["", (f"**Leakage**: {leak['count']} training examples have a (normalised) input "
              f"that also occurs in validation (policy: {leak['policy']})."),
              *(f"- `{src}`" for src in leak["examples"]), "",
              ("Token length per example (before dropping over-length ones): see "
              "`token_lengths.png`."), "",
              "## Rendered examples", "",
              (f"Text inside {MASK_OPEN} {MASK_CLOSE} is context (masked, not trained on); "
              "the rest is the completion the model learns, ending with the EOS token."), ""]
    for split, items in report["examples"].items():
        for item in items:
            lines += [f"### {split}: `{item['source']}`", "", "```text", item["rendered"],
                      "```", ""]
    for split, s in report["splits"].items():
        if s["bad_rows"]:
            lines += [f"## Skipped bad rows ({split})", "", *(f"- {e}" for e in s["bad_rows"]),
                      ""]
    return "\n".join(lines)


def _plot_lengths(path: Path, stats: Mapping[str, SplitStats], max_length: int) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    # Pre-binned stairs draw one artist per split instead of one patch per bar.
    all_lengths = [n for s in stats.values() for n in s.lengths]
    edges = np.histogram_bin_edges(all_lengths or [0, 1], bins=60)
    for name, s in stats.items():
        if s.lengths:
            counts, _ = np.histogram(s.lengths, bins=edges)
            ax.stairs(counts, edges, fill=True, alpha=0.6,
                      label=f"{name} ({len(s.lengths)} examples)")
    ax.axvline(max_length, color="red", linestyle="--", label=f"max length {max_length}")
    ax.set_xlabel("tokens per example (prompt + completion + EOS)")
    ax.set_ylabel("examples")
    ax.set_title("Token length per example")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
