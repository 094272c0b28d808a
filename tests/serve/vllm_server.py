"""Run the server (`python -m serve`, the same code as `jaxtune serve`) as a subprocess on a real vLLM engine, for integration tests and
benchmarks (loopback only; always stopped)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from infra.pipeline.server_process import free_port, running_server

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
    with running_server(cmd, port, log_path, timeout_s=start_timeout_s, env=env) as url:
        yield url
