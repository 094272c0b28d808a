"""Run the server (`python -m serve`, the same code as `jaxtune serve`) as a subprocess on a real vLLM engine, for integration tests and
benchmarks (loopback only; always stopped)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.serve.fake_server import free_port

# Small, CPU-friendly engine settings: eager mode starts fastest, 0.25 GiB of KV cache is
# plenty for tiny models and leaves the shared machine alone.
TEST_ENGINE_FLAGS = ("--enforce-eager", "--kv-cache-gib", "0.25", "--memory-fraction", "0.1")
MAX_TEST_CONTEXT = 16384


def serving_context_len(model_dir: Path) -> int:
    """The context the tests serve `model_dir` with: its own, capped at 16384 tokens."""
    config = json.loads((model_dir / "config.json").read_text())
    return min(MAX_TEST_CONTEXT, int(config.get("max_position_embeddings", MAX_TEST_CONTEXT)))


@contextmanager
def jaxtune_server(model_dir: Path, *, name: str, log_path: Path,
                   extra_args: Sequence[str] = (), env: dict[str, str] | None = None,
                   start_timeout_s: float = 420.0) -> Iterator[str]:
    """Start `jaxtune serve`, wait for /ready, yield its base URL, then stop it (SIGTERM)."""
    port = free_port()
    cmd = [sys.executable, "-m", "serve", "--model", str(model_dir), "--name",
           name, "--port", str(port), *extra_args]
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, log_path, start_timeout_s)
        yield url
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen, url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"jaxtune serve exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"jaxtune serve not ready after {timeout_s:.0f} s; see {log_path}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # The engine core runs in its own processes in the server's session.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
