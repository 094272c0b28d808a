"""Benchmark: the GRPO update with and without the separate old-log-prob pass, same model,
same rollout rows, back to back.

With one update per rollout and no dropout, `build_grpo_steps` skips the pass that computed
the sampling policy's log-probs (the update's own forward pass, gradient stopped, gives the
same update: tests/train_jax/train/test_grpo_step.py). The peer is the two-pass path
(`separate_old_logp=True`, what every run did before). Each variant is jitted once (compile
reported apart), then the two are timed alternately: log-prob step + update step per rollout
batch, on random completions of random lengths in the loop's left-padded layout.

    .venv/bin/python bench/grpo_update.py --model <HF dir> [--rows 32] [--prompt 97]
        [--new 96] [--micro 1] [--repeats 4] [--dtype bfloat16] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=32, help="prompts_per_step x group_size")
    parser.add_argument("--prompt", type=int, default=97, help="left-padded prompt width")
    parser.add_argument("--new", type=int, default=96, help="max_new_tokens")
    parser.add_argument("--micro", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import jax
    import numpy as np

    from train_jax.config.run_config import (
        GrpoConfig,
        MeshConfig,
        MethodConfig,
        ModelSpec,
        OptimizerConfig,
    )
    from train_jax.sharding.mesh import build_mesh
    from train_jax.train.grpo.rollout import update_rows
    from train_jax.train.grpo.step import build_grpo_steps
    from train_jax.train.model_init import load_initial_model
    from train_jax.train.partition import ModelParts
    from train_jax.train.step import init_state, place

    method = MethodConfig()
    spec = ModelSpec(path=str(args.model), dtype=args.dtype, param_dtype="float32")
    parts, trainable, frozen = ModelParts.split(load_initial_model(spec, method, 0).model, method)
    mesh = build_mesh(MeshConfig())
    grpo = GrpoConfig(max_new_tokens=args.new)
    optimizer = OptimizerConfig(learning_rate=1e-6, schedule="constant", warmup_steps=0)
    shape = (args.micro, args.rows // args.micro, args.prompt + args.new)

    rng = np.random.default_rng(0)
    pad = rng.integers(0, args.prompt // 2, args.rows)
    prompts = rng.integers(3, 1000, (args.rows, args.prompt)).astype(np.int32)
    tokens = rng.integers(3, 1000, (args.rows, args.new)).astype(np.int32)
    counts = rng.integers(args.new // 4, args.new + 1, args.rows)
    rows = update_rows(prompts, pad, tokens, counts, args.micro)
    advantages = rng.normal(size=args.rows).astype(np.float32).reshape(args.micro, -1)

    variants = {}
    for name, separate in (("two passes (peer)", True), ("one pass", False)):
        steps = build_grpo_steps(grpo, optimizer, parts, mesh, trainable, 100, shape,
                                 lora_reference=False, separate_old_logp=separate)
        state = init_state(parts, steps.tx, trainable, frozen, steps.state_shardings)
        reference = place(trainable, steps.reference_shardings)
        placed = {k: place(v, steps.batch_shardings[k]) for k, v in rows.items()}
        adv = place(advantages, steps.batch_shardings["advantages"])

        def one_step(state, steps=steps, reference=reference, placed=placed, adv=adv):
            logps = steps.logprob_step(state, reference, placed)
            state, metrics = steps.update_step(state, {**placed, **logps, "advantages": adv})
            jax.block_until_ready(metrics)
            return state

        started = time.perf_counter()
        state = one_step(state)
        compile_s = time.perf_counter() - started
        _progress(f"{name}: first step (compile included) {compile_s:.1f} s")
        variants[name] = {"step": one_step, "state": state, "times": [],
                          "first_step_s": compile_s}

    for repeat in range(args.repeats):
        for name, v in variants.items():
            started = time.perf_counter()
            v["state"] = v["step"](v["state"])
            v["times"].append(time.perf_counter() - started)
            _progress(f"{name}: repeat {repeat + 1}: {v['times'][-1]:.2f} s")

    report = {"model": str(args.model), "dtype": args.dtype, "rows": args.rows,
              "length": shape[2], "micro_batches": args.micro,
              "variants": {n: {"seconds": v["times"], "median_s": statistics.median(v["times"]),
                               "first_step_s": v["first_step_s"]}
                           for n, v in variants.items()}}
    peer = report["variants"]["two passes (peer)"]["median_s"]
    ours = report["variants"]["one pass"]["median_s"]
    report["speedup"] = peer / ours
    print(f"| variant | median s per step ({args.repeats} repeats) | all |")
    print("|---|---|---|")
    for name, v in report["variants"].items():
        print(f"| {name} | {v['median_s']:.2f} | {', '.join(f'{t:.2f}' for t in v['seconds'])} |")
    print(f"\none pass / two passes: {report['speedup']:.2f}x faster")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
