"""Helpers for tests that run `jaxtune train` end to end on a tiny model and a ViGGO slice."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
TOKENIZER = REPO / "configs" / "assets" / "tinystories-tokenizer"

TINY_ARCH = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 2048,
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}


def viggo_slice(out_dir: Path, rows: int) -> Path:
    """The first `rows` ViGGO training rows as a CSV in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / "viggo_slice.csv"
    with open(REPO / "data" / "viggo" / "train.csv", encoding="utf-8", newline="") as src, \
            open(dst, "w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows(islice(csv.reader(src), rows + 1))
    return dst


def write_config(path: Path, data_file: Path, **sections) -> Path:
    """A tiny run config; `sections` deep-update the defaults."""
    cfg = {
        "model": {"architecture": TINY_ARCH, "tokenizer": str(TOKENIZER)},
        "data": {"sources": [{"dataset": {"task": "viggo", "train_file": str(data_file),
                                          "max_length": 128, "val_fraction": 0.1}}],
                 "prepared_dir": str(path.parent / "prepared")},
        "optimizer": {"learning_rate": 3e-3, "schedule": "cosine", "warmup_steps": 2},
        "train": {"steps": 20, "batch_size": 4, "log_every": 1, "progress": False},
        "eval": {"every": 0, "batches": 1},
        "checkpoint": {"every": 5, "keep": 2, "keep_best": 0},
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_command(config: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "infra.cli", "train", "--config", str(config), *overrides]


def env(devices: int = 8, **extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    out["JAX_PLATFORMS"] = "cpu"
    out["PYTHONPATH"] = str(REPO)
    out.update(extra)
    return out


def run_train(config: Path, *overrides: str, devices: int = 8, timeout: float = 300
              ) -> subprocess.CompletedProcess:
    """Run `jaxtune train` to completion in a subprocess (raises with its output on failure)."""
    proc = subprocess.run(train_command(config, *overrides), cwd=REPO, env=env(devices),
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"jaxtune train failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def losses(run_dir: Path) -> dict[int, float]:
    """step -> training loss from RUN_DIR/metrics.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def logged_steps(metrics: Path) -> int:
    """The highest step in a metrics.jsonl (0 when there is none yet)."""
    if not metrics.is_file():
        return 0
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return max((r["step"] for r in rows), default=0)


def train_and_sigkill(config: Path, run_dir: Path, after_steps: int, *,
                      once_checkpointed: bool = False, timeout: float = 240) -> int:
    """Start `jaxtune train` on `config` in a subprocess and SIGKILL it once `after_steps`
    steps are logged (and, with `once_checkpointed`, a checkpoint is committed); returns the
    last logged step."""
    from train_jax.checkpoint import committed_steps

    proc = subprocess.Popen(train_command(config, f"run_dir={run_dir}"), cwd=config.parent,
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while logged_steps(run_dir / "metrics.jsonl") < after_steps or (
                once_checkpointed and not committed_steps(run_dir / "checkpoints")):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return logged_steps(run_dir / "metrics.jsonl")
