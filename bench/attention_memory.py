"""Attention memory of the train step at growing sequence length: reference vs splash, by AOT.

For each sequence length T and each attention kernel (`model.kernels=reference`: plain
`jax.numpy` softmax attention, which materialises the (T x T) scores and probabilities;
`model.kernels=tpu`: Pallas splash attention, which works in blocks and keeps only q, k, v,
the output and the log-sum-exp), the run's train step is compiled for a TPU slice on this
host through libtpu (`aot_plan.plan_for_target`, the same step `jaxtune train` runs) and XLA's
memory analysis gives the bytes per chip. Rows per step stay fixed, so everything that is not
attention (weights, optimizer state, per-token activations) is constant or linear in T; only
the attention scores can grow as T^2.

The first table shows per kernel and T: temporaries (activations, residuals kept for the
backward pass, gradients, scratch), the total per chip, the growth of the temporaries per
doubling of T (2.0 = linear, 4.0 = quadratic, less while the constant part weighs in) and the
marginal bytes per added token between successive lengths: flat for bytes linear in T (the
per-token-linear expectation), growing with T for T^2. The second table separates attention
from the rest: reference minus splash temporaries at the same T (the same step but for the
attention kernel), its growth per doubling and its bytes per score element of one head of one
row on a chip (flat across T when it grows as T^2). A least-squares fit temp ~ a + b T + c T^2
per kernel closes the output.

    flock /tmp/jaxtune_cpu.lock .venv/bin/python bench/attention_memory.py --cache /tmp/attn.json
    flock /tmp/jaxtune_cpu.lock .venv/bin/python bench/attention_memory.py --remat none --json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a clone: the repo's packages come first

DEFAULT_CONFIG = "configs/train/tpu/llama-3.2-1b-v5p-8.yaml"
KERNELS = ("reference", "tpu")
GIB = 2**30
logger = logging.getLogger("attention_memory")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML run config")
    parser.add_argument("--target", default="v5p-8", help="TPU slice to compile for")
    parser.add_argument("--seqs", default="1024,2048,4096,8192",
                        help="sequence lengths, comma-separated (multiples of 128 for splash)")
    parser.add_argument("--rows", type=int, default=4,
                        help="rows per step (default 4: one per chip of a v5p-8)")
    parser.add_argument("--remat", default="full", help="model.remat for every compile")
    parser.add_argument("--kernels", default=",".join(KERNELS),
                        help="kernel backends to compare, comma-separated")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--cache", type=Path, default=None,
                        help="JSON file of compiled points: read, and each new point added, so "
                             "a long sweep can be split into several shorter runs")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="further config overrides, applied to every compile")
    return parser.parse_args(argv)


def _cache_key(args: argparse.Namespace, kernels: str, length: int) -> str:
    return json.dumps([args.config, args.target, args.rows, args.remat, list(args.overrides),
                       kernels, length])


def cached_point(args: argparse.Namespace, kernels: str, length: int) -> dict[str, Any]:
    """`plan_point`, or the same point from `--cache` when an earlier run compiled it."""
    cache = (json.loads(args.cache.read_text())
             if args.cache is not None and args.cache.exists() else {})
    key = _cache_key(args, kernels, length)
    if key not in cache:
        cache[key] = plan_point(args, kernels, length)
        if args.cache is not None:
            args.cache.write_text(json.dumps(cache, indent=1))
    return dict(cache[key])


def plan_point(args: argparse.Namespace, kernels: str, length: int) -> dict[str, Any]:
    """Compile the step with `kernels` at sequence `length` and return its bytes per chip."""
    from train_jax.config.run_config import load_run_config
    from train_jax.sharding.tpu_slices import parse_tpu_type
    from train_jax.train.aot_plan import plan_for_target

    overrides = (f"model.kernels={kernels}", f"model.remat={args.remat}",
                 f"data.sources.0.dataset.max_length={length}",
                 f"train.batch_size={args.rows}", "train.micro_batches=1", *args.overrides)
    cfg = load_run_config(REPO / args.config, overrides)
    started = time.perf_counter()
    plan = plan_for_target(cfg, parse_tpu_type(args.target))
    logger.info("%s T=%d: temp %.2f GiB, total %.2f GiB (%s, %.0f s)", kernels, length,
                 plan.temp_bytes / GIB, plan.peak_bytes_per_chip / GIB,
                 "compiled" if plan.compiled else "refused by XLA",
                 time.perf_counter() - started)
    return {"kernels": kernels, "length": length, "compiled": plan.compiled,
            "argument_bytes": plan.argument_bytes, "temp_bytes": plan.temp_bytes,
            "peak_bytes_per_chip": plan.peak_bytes_per_chip,
            "hbm_bytes_per_chip": plan.hbm_bytes_per_chip, "fits": plan.fits,
            "chips": plan.chips, "mesh": plan.mesh, "notes": list(plan.notes)}


def quadratic_fit(lengths: list[int], values: list[float]) -> tuple[float, float, float]:
    """(a, b, c) of the least-squares fit values = a + b T + c T^2 (exact with three lengths)."""
    t = np.asarray(lengths, dtype=np.float64)
    design = np.stack([np.ones_like(t), t, t * t], axis=1)
    coeffs, *_ = np.linalg.lstsq(design, np.asarray(values, dtype=np.float64), rcond=None)
    return float(coeffs[0]), float(coeffs[1]), float(coeffs[2])


def _growth(now: float, before: float, doublings: float) -> float | None:
    return None if before <= 0 or now <= 0 else float((now / before) ** (1.0 / doublings))


def analyse(points: list[dict[str, Any]]) -> dict[str, Any]:
    """One kernel's points with their growth per doubling of T and marginal bytes per token.

    Growth per doubling is 2.0 for bytes linear in T, 4.0 for T^2 (lower while a constant part,
    the gradients and optimizer scratch, weighs in). The marginal bytes per token, (temp(T) -
    temp(T_prev)) / (T - T_prev), stay flat for bytes linear in T and grow with T for T^2.
    """
    points = sorted(points, key=lambda p: p["length"])
    for prev, point in zip([None, *points[:-1]], points, strict=True):
        point["growth_per_doubling"] = point["marginal_bytes_per_token"] = None
        if prev is not None:
            doublings = float(np.log2(point["length"] / prev["length"]))
            point["growth_per_doubling"] = _growth(point["temp_bytes"], prev["temp_bytes"],
                                                   doublings)
            point["marginal_bytes_per_token"] = ((point["temp_bytes"] - prev["temp_bytes"])
                                                 / (point["length"] - prev["length"]))
    out: dict[str, Any] = {"points": points}
    if len(points) >= 3:
        a, b, c = quadratic_fit([p["length"] for p in points],
                                [float(p["temp_bytes"]) for p in points])
        out["fit"] = {"constant_bytes": a, "bytes_per_token_position": b, "bytes_per_t_squared": c}
    return out


def attention_part(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per length, reference temporaries minus splash temporaries: the same step but for the
    attention kernel, so the difference is what the (T x T) scores cost, per score element of
    one head of one row on a chip too (flat across T when the difference grows as T^2)."""
    kernels = result["kernels"]
    if not {"reference", "tpu"} <= kernels.keys():
        return []
    splash = {p["length"]: p for p in kernels["tpu"]["points"]}
    rows = []
    for ref in kernels["reference"]["points"]:
        t = ref["length"]
        if t not in splash:
            continue
        diff = ref["temp_bytes"] - splash[t]["temp_bytes"]
        rows.append({"length": t, "difference_bytes": diff, "bytes_per_score_element":
                     diff / (result["rows_per_chip"] * result["heads"] * t * t)})
    for prev, row in zip([None, *rows[:-1]], rows, strict=True):
        row["growth_per_doubling"] = None if prev is None else _growth(
            row["difference_bytes"], prev["difference_bytes"],
            float(np.log2(row["length"] / prev["length"])))
    return rows


def _gib(n: float | None, sign: bool = False) -> str:
    return "-" if n is None else (f"{n / GIB:+.2f} GiB" if sign else f"{n / GIB:.2f} GiB")


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def render(result: dict[str, Any]) -> str:
    """The results as markdown tables: per kernel, then the attention part, then the fits."""
    title = (f"{result['model']} on {result['target']} (mesh {result['mesh']}), "
             f"{result['rows']} rows per step ({result['rows_per_chip']:g} per chip), "
             f"remat {result['remat']}, bf16 compute on fp32 weights; bytes per chip")
    header = ("| kernels | T | temporaries | total (of HBM) | growth / doubling "
              "| marginal bytes per token |")
    lines = [title, "", header, "|---|---|---|---|---|---|"]
    for name, per_kernel in result["kernels"].items():
        for p in per_kernel["points"]:
            refused = "" if p["compiled"] else " (refused: XLA's need)"
            marginal = p["marginal_bytes_per_token"]
            share = p["peak_bytes_per_chip"] / p["hbm_bytes_per_chip"]
            lines.append(
                f"| {name} | {p['length']} | {_gib(p['temp_bytes'])}{refused} | "
                f"{_gib(p['peak_bytes_per_chip'])} ({share:.0%}) | "
                f"{_ratio(p['growth_per_doubling'])} | "
                f"{'-' if marginal is None else f'{marginal / 2**10:.0f} KiB'} |")
    diff = attention_part(result)
    if diff:
        header = ("| T | reference - tpu temporaries | growth / doubling "
                  "| per score element (head, row) |")
        lines += ["", header, "|---|---|---|---|"]
        lines += [f"| {d['length']} | {_gib(d['difference_bytes'])} | "
                  f"{_ratio(d['growth_per_doubling'])} | {d['bytes_per_score_element']:.2f} B |"
                  for d in diff]
    lines.append("")
    for name, per_kernel in result["kernels"].items():
        fit = per_kernel.get("fit")
        if fit:
            lines.append(f"{name}: temp ~ {fit['constant_bytes'] / GIB:.2f} GiB + "
                         f"{fit['bytes_per_token_position'] / 2**10:.1f} KiB x T + "
                         f"{fit['bytes_per_t_squared']:.2f} B x T^2 (least squares)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Compile every (kernel, length) point and analyse each kernel's growth."""
    from train_jax.config.run_config import load_run_config
    from train_jax.train.plan import model_config_for_plan
    from train_jax.train.tpu_compile import use_host_cpu

    use_host_cpu()
    lengths = [int(s) for s in args.seqs.split(",")]
    kernels = [k.strip() for k in args.kernels.split(",")]
    points = {k: [cached_point(args, k, t) for t in lengths] for k in kernels}
    cfg = load_run_config(REPO / args.config, args.overrides)
    model = model_config_for_plan(cfg)
    first = points[kernels[0]][0]
    rows_per_chip = args.rows / (first["mesh"]["data"] * first["mesh"]["fsdp"])
    return {"config": args.config, "model": Path(cfg.model.path or args.config).name,
            "target": args.target, "mesh": first["mesh"], "rows": args.rows,
            "rows_per_chip": rows_per_chip, "remat": args.remat, "lengths": lengths,
            "heads": model.num_attention_heads, "layers": model.num_hidden_layers,
            "kernels": {k: analyse(points[k]) for k in kernels}}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps({**result, "attention_part": attention_part(result)}, indent=2))
    else:
        print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
