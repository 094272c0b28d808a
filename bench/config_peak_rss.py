"""Peak host memory of every shipped SmolLM2 train config, against a PyTorch peer's.

For each `configs/train/*.yaml` whose model is the SmolLM2 folder (tiny and TPU configs are
skipped), runs `jaxtune train --config C train.steps=3` with an evaluation and a checkpoint at
step 3 (so the eval step, the checkpoint writer and the train step have all run), as its own
process, and reads the process's peak resident set size from the kernel (`wait4`). The peer is
the PyTorch + transformers AdamW step of `bench/train_throughput.py` on the same number of
sequences per pass (rows per micro-batch; for DPO chosen and rejected both), the same length
and compute dtype, 3 steps, plain allocator. Bound: jaxtune's peak <= 1.5x the peer's
(issue #17), and below the machine's memory with room to spare.

    .venv/bin/python bench/config_peak_rss.py --model runs/models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from train_throughput import random_batch  # the peer's own batch maker

BOUND = 1.5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the SmolLM2 HF folder the configs use")
    parser.add_argument("--configs", default=None,
                        help="comma-separated config files (default: every SmolLM2 config)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    return parser.parse_args()


def smollm2_configs(model_dir: str) -> list[Path]:
    """Shipped train configs that train the SmolLM2 folder (or an export of it)."""
    found = []
    for path in sorted((REPO / "configs" / "train").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        model_path = str((raw.get("model") or {}).get("path", ""))
        if "smollm2" in model_path.lower() or model_path == model_dir:
            found.append(path)
    return found


def run_measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, int, str]:
    """(exit status, peak RSS bytes, stderr tail) of one child process."""
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                cwd=REPO)
        out = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-3000:]
    return proc.returncode, usage.ru_maxrss * 1024, out + tail


def jaxtune_peak(config: Path, model_dir: str, run_dir: Path) -> tuple[int, dict]:
    """Peak RSS of a 3-step `jaxtune train` of `config`, and its resolved config."""
    overrides = [f"model.path={model_dir}", f"run_dir={run_dir}", "train.steps=3",
                 "train.epochs=null", "train.time_budget_minutes=null", "eval.every=3",
                 "checkpoint.every=3", "train.progress=false"]
    argv = [str(REPO / ".venv/bin/jaxtune"), "train", "--config", str(config), *overrides]
    status, peak, tail = run_measured(argv)
    if status != 0:
        raise SystemExit(f"{config.name}: jaxtune train failed ({status}):\n{tail}")
    return peak, yaml.safe_load((run_dir / "config.yaml").read_text())


def peer_shape(resolved: dict) -> tuple[int, int, str]:
    """(sequences per pass, length, compute dtype) that the PyTorch peer runs."""
    train = resolved["train"]
    rows = train["batch_size"] // train["micro_batches"]
    objective = (resolved.get("objective") or {}).get("name", "sft")
    if objective == "dpo":
        rows *= 2  # chosen and rejected
    elif objective == "grpo":
        grpo = resolved["objective"]["grpo"]
        rows = grpo["prompts_per_step"] * grpo["group_size"]
    length = resolved["data"]["sources"][0]["dataset"]["max_length"]
    return rows, length, resolved["model"]["dtype"]


def peer_peak(model_dir: str, rows: int, length: int, dtype: str, vocab: int) -> int:
    """Peak RSS of the PyTorch peer (bench/train_throughput.py's loop) on a random batch."""
    batch = random_batch(rows, length, vocab)
    with tempfile.TemporaryDirectory(prefix="jaxtune-rss-") as tmp:
        batches_file = Path(tmp) / "batches.npz"
        np.savez(batches_file, **{f"random/{k}": v for k, v in batch.items()})
        argv = [sys.executable, str(REPO / "bench/train_throughput.py"), "--model", model_dir,
                "--steps", "3", "--warmup", "0", "--phase", f"pytorch:{dtype}",
                "--batches-file", str(batches_file)]
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        status, peak, tail = run_measured(argv, env)
    if status != 0:
        raise SystemExit(f"PyTorch peer failed ({status}):\n{tail}")
    return peak


def main() -> None:
    args = parse_args()
    from train_jax.convert.hf_import import load_hf_config

    vocab = int(load_hf_config(args.model)["vocab_size"])
    configs = ([Path(c) for c in args.configs.split(",")] if args.configs
               else smollm2_configs(args.model))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    results = []
    for config in configs:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="jaxtune-rss-run-") as tmp:
            peak, resolved = jaxtune_peak(config, args.model, Path(tmp) / "run")
        rows, length, dtype = peer_shape(resolved)
        peer = peer_peak(args.model, rows, length, dtype, vocab)
        row = {"config": config.name, "objective": (resolved.get("objective") or {}).get(
                   "name", "sft"), "method": resolved["method"]["name"], "rows": rows,
               "length": length, "dtype": dtype, "remat": resolved["model"].get("remat"),
               "jaxtune_peak_rss_bytes": peak, "pytorch_peak_rss_bytes": peer,
               "ratio": peak / peer, "machine_fraction": peak / total,
               "within_bound": peak <= BOUND * peer}
        results.append(row)
        print(f"{config.name}: jaxtune {peak / 1e9:.1f} GB, PyTorch {peer / 1e9:.1f} GB "
              f"({row['ratio']:.2f}x; {row['machine_fraction']:.0%} of the machine) "
              f"[{time.perf_counter() - started:.0f} s]", flush=True)
    print()
    print("| config | objective | method | sequences x length | dtype | jaxtune peak RSS GB "
          "| PyTorch peak RSS GB | ratio | of machine | <= 1.5x |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['config']} | {r['objective']} | {r['method']} | {r['rows']} x {r['length']} "
              f"| {r['dtype']} | {r['jaxtune_peak_rss_bytes'] / 1e9:.1f} | "
              f"{r['pytorch_peak_rss_bytes'] / 1e9:.1f} | {r['ratio']:.2f}x | "
              f"{r['machine_fraction']:.0%} | {'yes' if r['within_bound'] else 'NO'} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    if not all(r["within_bound"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
