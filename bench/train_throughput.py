"""Training throughput: the jaxtune train step vs a PyTorch + transformers AdamW loop.

Same model (an HF folder, e.g. SmolLM2-135M-Instruct), same batch (rows x length), full
fine-tuning with AdamW, fp32 and bf16 compute (JAX: bf16 matmuls on fp32 master weights;
PyTorch: `torch.autocast(bfloat16)`), on random-token batches and on packed ViGGO batches.
Reports tokens/s, the ratio jaxtune / PyTorch, and MFU = model FLOPs / measured matmul peak
of the dtype (the better of JAX's and PyTorch's 2048^3 matmul, measured in a separate process
right before and right after each framework's timed phase, the higher of the two; a timed phase
imports only its own framework). jaxtune runs under the glibc tunables of its default
`train.host_allocator`, as `jaxtune train` does; PyTorch runs without them (as a plain loop
would) and with them, and the ratio is also given against the faster of the two.

    .venv/bin/python bench/train_throughput.py --model runs/models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HF model folder")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compile, caches)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batches", default="random,viggo", help="random and/or viggo")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--allocators", default=None,
                        help="jaxtune's train.host_allocator policies to run, comma-separated "
                             "(default: the default policy); PyTorch's tuned run uses the first")
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)  # internal: one phase
    parser.add_argument("--batches-file", default=None, help=argparse.SUPPRESS)  # internal: .npz
    return parser.parse_args()


# name: (timing function, run under jaxtune's host allocator tunables). jaxtune runs as
# `jaxtune train` does by default (it re-executes itself under `train.host_allocator`'s
# glibc tunables); PyTorch runs as a user's loop would, and again under the same tunables, so
# that no side is credited with the allocator (train_jax/train/host_memory.py).
CONTENDERS = {"jaxtune": ("time_jaxtune", True), "pytorch": ("time_torch", False),
              "pytorch_tuned": ("time_torch", True)}


def run_phase(args: argparse.Namespace) -> None:
    """One phase in this process; prints a JSON line for the parent.

    `peak:<dtype>` measures JAX's and PyTorch's matmul peaks; `<contender>:<dtype>` times one
    framework's steps and imports nothing of the other one.
    """
    name, dtype = args.phase.split(":")
    if name == "peak":
        from train_jax.train.flops import measure_matmul_peak

        # Best of 10: a fresh process's first matmuls can run well below the machine's peak.
        peaks = {"jax_peak": measure_matmul_peak(dtype, repeats=10),
                 "torch_peak": torch_matmul_peak(dtype, repeats=10)}
        print("PHASE " + json.dumps(peaks), flush=True)
        return
    # Batches come from the parent: preparing ViGGO here would import transformers, and with
    # it torch, into the JAX process.
    with np.load(args.batches_file) as stored:
        batches: dict[str, dict[str, np.ndarray]] = {}
        for key in stored.files:
            kind, field = key.split("/")
            batches.setdefault(kind, {})[field] = stored[key]
    times = globals()[CONTENDERS[name.split("@")[0]][0]](args.model, batches, dtype, args.steps,
                                                         args.warmup)
    # The phase's own process: this is the framework's peak (import, model, optimizer, steps).
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("PHASE " + json.dumps({"times": times, "peak_rss_bytes": peak_rss}), flush=True)


def load_batches(args: argparse.Namespace) -> dict[str, dict[str, np.ndarray]]:
    from train_jax.convert.hf_import import load_hf_config

    vocab = int(load_hf_config(args.model)["vocab_size"])
    return {kind: (random_batch(args.rows, args.length, vocab) if kind == "random"
                   else viggo_batch(args.model, args.rows, args.length))
            for kind in args.batches.split(",") if kind}


# --- batches ---------------------------------------------------------------------------------

def random_batch(rows: int, length: int, vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, size=(rows, length + 1), dtype=np.int32)
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:],
            "loss_mask": np.ones((rows, length), np.uint8),
            "segment_ids": np.ones((rows, length), np.int32),
            "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)).copy()}


def viggo_batch(model_dir: str, rows: int, length: int) -> dict[str, np.ndarray]:
    from train_jax.data.config import DataConfig
    from train_jax.data.iterator import BatchIterator
    from train_jax.data.prepare import prepare_dataset

    cfg = DataConfig(task="viggo", train_file=str(REPO / "data/viggo/train.csv"),
                     max_length=length, val_fraction=0.0)
    out = Path(tempfile.gettempdir()) / f"jaxtune_bench_viggo_{length}"
    dataset = prepare_dataset(cfg, model_dir, out, progress=False)
    return next(BatchIterator(dataset, rows, seed=0))


# --- jaxtune ---------------------------------------------------------------------------------

def time_jaxtune(model_dir: str, batches: dict[str, dict[str, np.ndarray]], dtype: str,
                 steps: int, warmup: int) -> dict[str, list[float]]:
    """Step times per batch kind; one compiled step serves every batch of the same shape."""
    import jax

    from train_jax.config.run_config import MeshConfig, MethodConfig, ModelSpec, OptimizerConfig
    from train_jax.sharding.mesh import build_mesh
    from train_jax.train.model_init import load_initial_model
    from train_jax.train.optimizer import build_optimizer, learning_rate_schedule
    from train_jax.train.partition import ModelParts
    from train_jax.train.step import build_steps, init_state, put_batch

    spec = ModelSpec(path=model_dir, dtype=dtype, param_dtype="float32")
    method = MethodConfig()
    initial = load_initial_model(spec, method, seed=0)
    parts, trainable, frozen = ModelParts.split(initial.model, method)
    opt = OptimizerConfig(learning_rate=1e-5, schedule="constant", weight_decay=0.01)
    schedule = learning_rate_schedule(opt, 100)
    tx = build_optimizer(opt, schedule)
    mesh = build_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    shape = (1, *next(iter(batches.values()))["input_ids"].shape)
    fns = build_steps(parts, tx, schedule, mesh, trainable, shape)
    state = init_state(parts, tx, trainable, frozen, fns.state_shardings)
    out: dict[str, list[float]] = {}
    for kind, batch in batches.items():
        placed = put_batch({k: v[None] for k, v in batch.items()}, fns.batch_shardings(shape),
                           shape)
        out[kind] = []
        for i in range(warmup + steps):
            start = time.perf_counter()
            state, metrics = fns.train_step(state, placed)
            jax.block_until_ready(metrics["loss"])
            if i >= warmup:
                out[kind].append(time.perf_counter() - start)
    del state, initial
    gc.collect()
    return out


# --- PyTorch + transformers ------------------------------------------------------------------

def time_torch(model_dir: str, batches: dict[str, dict[str, np.ndarray]], dtype: str,
               steps: int, warmup: int) -> dict[str, list[float]]:
    """Step times per batch kind of the PyTorch + transformers AdamW loop."""
    import contextlib

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16"
                else contextlib.nullcontext())
    out: dict[str, list[float]] = {}
    for kind, batch in batches.items():
        input_ids = torch.from_numpy(batch["input_ids"].astype(np.int64))
        labels = torch.from_numpy(np.where(batch["loss_mask"] > 0, batch["targets"], -100)
                                  .astype(np.int64))
        # Packed rows: positions restart per example. (No block-diagonal mask: transformers'
        # SDPA path takes none; at 128 tokens attention is ~3% of the FLOPs either way.)
        positions = torch.from_numpy(batch["positions"].astype(np.int64))
        out[kind] = []
        for i in range(warmup + steps):
            start = time.perf_counter()
            with autocast:
                logits = model(input_ids=input_ids, position_ids=positions).logits
            # Labels are already next-token targets: plain token cross-entropy, no shift.
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1),
                                                     labels.flatten(), ignore_index=-100)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= warmup:
                out[kind].append(time.perf_counter() - start)
    del model, optimizer
    gc.collect()
    return out


# --- peaks -----------------------------------------------------------------------------------

def torch_matmul_peak(dtype: str, size: int = 2048, repeats: int = 5) -> float:
    import torch

    a = torch.randn(size, size).to(getattr(torch, dtype))
    b = torch.randn(size, size).to(getattr(torch, dtype))
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _run_phase(args: argparse.Namespace, phase: str, env: dict[str, str] | None,
               batches_file: Path) -> dict:
    argv = [sys.executable, __file__, "--model", args.model, "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--phase", phase, "--batches-file", str(batches_file)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{proc.stderr[-3000:]}")
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("PHASE "))[6:])


def main() -> None:
    args = parse_args()
    if args.phase:
        run_phase(args)
        return
    from train_jax.config.run_config import TrainConfig
    from train_jax.convert.hf_import import load_hf_config
    from train_jax.model.config import ModelConfig
    from train_jax.train.flops import train_flops_per_token
    from train_jax.train.host_memory import environment_for

    cfg = ModelConfig.from_hf_config(load_hf_config(args.model))
    flops_per_token = train_flops_per_token(cfg, args.length)
    dtypes = [d for d in args.dtypes.split(",") if d]
    batches = load_batches(args)
    batches_file = Path(tempfile.mkdtemp(prefix="jaxtune-bench-")) / "batches.npz"
    np.savez(batches_file, **{f"{kind}/{field}": array for kind, batch in batches.items()
                              for field, array in batch.items()})
    rows: dict[tuple[str, str], dict] = {}
    peaks: dict[str, float] = {}
    # Default: what `jaxtune train` runs with when the config says nothing.
    policies = (args.allocators or TrainConfig().host_allocator).split(",")
    envs = {policy: environment_for(policy) for policy in policies}
    tuned_env = envs[policies[0]]
    names = [f"jaxtune@{policy}" for policy in policies] + ["pytorch"] + (
        ["pytorch_tuned"] if tuned_env is not None else [])
    for policy, env in envs.items():
        print(f"host allocator {policy}: " + (f"GLIBC_TUNABLES={env['GLIBC_TUNABLES']}"
                                              if env else "nothing to change here"), flush=True)
    try:
        for dtype in dtypes:
            for name in names:
                env = (envs[name.split("@")[1]] if name.startswith("jaxtune@")
                       else tuned_env if CONTENDERS[name][1] else None)
                # The machine is shared: the peak is measured right before and right after each
                # phase, under the same load and allocator settings, in its own process. A burst
                # of other work can only lower a measurement (once, both frameworks' fp32 peaks
                # came out at half the machine's, and the phase's MFU at an impossible 140%), so
                # the higher one counts. Each phase runs in a fresh process too, holding one
                # framework only: neither framework's threads or heap can slow the other down.
                before = _run_phase(args, f"peak:{dtype}", env, batches_file)
                phase = _run_phase(args, f"{name}:{dtype}", env, batches_file)
                after = _run_phase(args, f"peak:{dtype}", env, batches_file)
                peak = peaks[f"{dtype}/{name}"] = max(before["jax_peak"], before["torch_peak"],
                                                      after["jax_peak"], after["torch_peak"])
                for when, measured in (("before", before), ("after", after)):
                    print(f"matmul peak {dtype} {when} {name}: JAX "
                          f"{measured['jax_peak'] / 1e9:.0f} GFLOP/s, PyTorch "
                          f"{measured['torch_peak'] / 1e9:.0f} GFLOP/s", flush=True)
                for kind, times in phase["times"].items():
                    tokens = int(np.count_nonzero(batches[kind]["segment_ids"]))
                    positions = batches[kind]["input_ids"].size
                    row = rows.setdefault((kind, dtype), {"batch": kind, "dtype": dtype,
                                                          "tokens_per_step": tokens})
                    step_s = statistics.median(times)
                    row[f"{name}_step_s"] = step_s
                    row[f"{name}_step_times_s"] = times
                    row[f"{name}_tokens_per_s"] = tokens / step_s
                    row[f"{name}_mfu"] = flops_per_token * positions / step_s / peak
                    row[f"{name}_peak_rss_bytes"] = phase["peak_rss_bytes"]
                    print(f"  {kind:6s} {dtype:8s} {name:17s} median step {step_s:6.2f} s  "
                          f"{tokens / step_s:7.1f} tokens/s  MFU {row[f'{name}_mfu']:.1%}  "
                          f"peak RSS {phase['peak_rss_bytes'] / 1e9:.1f} GB", flush=True)
    finally:
        shutil.rmtree(batches_file.parent, ignore_errors=True)
    results = []
    jaxtune_names = [name for name in names if name.startswith("jaxtune@")]
    for row in rows.values():
        peers = [row[f"{name}_tokens_per_s"] for name in names if name.startswith("pytorch")]
        row["pytorch_best_tokens_per_s"] = max(peers)
        for name in jaxtune_names:
            row[f"{name}_ratio_vs_best"] = row[f"{name}_tokens_per_s"] / max(peers)
            # Against the plain PyTorch loop: the peer a user would otherwise run.
            row[f"{name}_rss_ratio"] = (row[f"{name}_peak_rss_bytes"]
                                        / row["pytorch_peak_rss_bytes"])
        results.append(row)
    print()
    print("| batch | dtype | run | tok/s | MFU | peak RSS GB | tok/s vs best PyTorch "
          "| peak RSS vs PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for name in names:
            vs = (f"{r[f'{name}_ratio_vs_best']:.2f}x | {r[f'{name}_rss_ratio']:.2f}x"
                  if name in jaxtune_names else "| ")
            print(f"| {r['batch']} | {r['dtype']} | {name} | {r[f'{name}_tokens_per_s']:.0f} | "
                  f"{r[f'{name}_mfu']:.1%} | {r[f'{name}_peak_rss_bytes'] / 1e9:.1f} | {vs} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"peaks": peaks, "results": results}, indent=2))


if __name__ == "__main__":
    main()
