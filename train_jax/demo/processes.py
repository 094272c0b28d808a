"""Running jaxtune subcommands as child processes, and a served model for the time of a block.

Stages run in their own processes so JAX (training) and vLLM (serving) never share one
process or its memory, and a user can re-run any logged command by hand.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)


class StageFailed(RuntimeError):
    """A child command of the demo failed; the message names it and its log."""


def jaxtune_command(*args: str) -> list[str]:
    """The argv of a jaxtune subcommand run with this interpreter."""
    return [sys.executable, "-m", "infra.cli", *args]


def run_logged(argv: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> None:
    """Run `argv` (in `cwd`), teeing output to `log_path` and our log; raise `StageFailed` on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("$ %s", shlex.join(argv))
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **(env or {})}, bufsize=1, cwd=cwd)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            sys.stderr.write(line)
        code = proc.wait()
    if code != 0:
        raise StageFailed(f"command failed with exit code {code}: {shlex.join(argv)} (log: {log_path})")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served_model(model_dir: Path, name: str, log_path: Path, *, extra_args: Sequence[str] = (),
                 ready_timeout_s: float = 600.0) -> Iterator[str]:
    """Serve `model_dir` as `name` with `jaxtune serve` on a free port; yield its base URL."""
    port = free_port()
    argv = jaxtune_command("serve", "--model", str(model_dir), "--name", name,
                           "--port", str(port), *extra_args)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("$ %s", shlex.join(argv))
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(proc, base_url, ready_timeout_s, log_path)
            yield base_url
        finally:
            _stop(proc)


def _wait_ready(proc: subprocess.Popen, base_url: str, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StageFailed(f"server exited with code {proc.returncode} before it was ready "
                              f"(log: {log_path})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/ready", timeout=5).status_code == 200:
                return
        time.sleep(1.0)
    raise StageFailed(f"server not ready after {timeout_s:.0f} s (log: {log_path})")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    # The whole session: vLLM's engine core is a child process of the server.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
