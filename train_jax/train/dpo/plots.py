"""`dpo_curves.png`: reward margin, preference accuracy and the chosen / rejected log-probs
against step, beside `loss_curve.png` (which plots the DPO loss and the learning rate)."""

from __future__ import annotations

from pathlib import Path

from train_jax.train.metrics import read_metrics


def plot_dpo_curves(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Three panels from metrics.jsonl (training lines, validation points); None without data."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    rows = read_metrics(metrics_path) if Path(metrics_path).is_file() else []
    if not any(r.get("reward_margin") is not None for r in rows):
        return None

    def series(key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in rows if r.get(key) is not None]

    fig = Figure(figsize=(8, 8))
    panels = fig.subplots(3, 1, sharex=True)
    for ax, keys, label in (
            (panels[0], ("reward_margin",), "reward margin (beta x log-ratio, chosen - rejected)"),
            (panels[1], ("accuracy",), "preference accuracy"),
            (panels[2], ("chosen_logp", "rejected_logp"), "completion log-prob (policy)")):
        for key in keys:
            if train := series(key):
                ax.plot(*zip(*train), lw=1, label=key)
            if val := series(f"val_{key}"):
                ax.plot(*zip(*val), "o-", label=f"val_{key}")
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    panels[-1].set_xlabel("step")
    fig.suptitle(f"{Path(metrics_path).parent.name}: DPO")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    return Path(out_path)
