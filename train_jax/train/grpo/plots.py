"""The reward curve of a GRPO run: mean reward (+- one std over the batch's completions), and
the KL to the reference and the mean response length below it, as a PNG in the run dir."""

from __future__ import annotations

from pathlib import Path

from train_jax.train.metrics import read_metrics

REWARD_PLOT_FILE = "reward_curve.png"


def plot_reward_curve(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Write the reward curve of `metrics_path` (a metrics.jsonl) to `out_path`; None if the
    file has no reward rows yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = read_metrics(metrics_path) if Path(metrics_path).is_file() else []
    rows = [r for r in rows if r.get("reward_mean") is not None]
    if not rows:
        return None
    steps = np.asarray([r["step"] for r in rows])
    mean = np.asarray([r["reward_mean"] for r in rows])
    std = np.asarray([r.get("reward_std") or 0.0 for r in rows])
    fig, (ax_r, ax_kl, ax_len) = plt.subplots(3, 1, figsize=(8, 7), sharex=True,
                                              gridspec_kw={"height_ratios": [3, 1, 1]})
    ax_r.plot(steps, mean, lw=1.2, label="mean reward")
    ax_r.fill_between(steps, mean - std, mean + std, alpha=0.2, label="+- std (completions)")
    ax_r.set_ylabel("reward")
    ax_r.legend()
    ax_r.grid(alpha=0.3)
    for axis, key, label, color in ((ax_kl, "kl", "KL to reference (k3)", "tab:red"),
                                    (ax_len, "response_length", "response tokens",
                                     "tab:green")):
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            axis.plot(*zip(*points), color=color, lw=1)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    ax_len.set_xlabel("step")
    fig.suptitle(f"{Path(metrics_path).parent.name}: GRPO reward")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return Path(out_path)
