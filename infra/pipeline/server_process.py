"""An HTTP server run as a child process for the time of a `with` block.

The demo, the benchmarks and the integration tests all start a server (`jaxtune serve`,
`vllm serve`, a peer), wait until it answers, use it and stop it; this is that one lifecycle.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx


class ServerStartError(RuntimeError):
    """The server exited or did not answer in time; the message names its log."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(argv: Sequence[str], port: int, log_path: Path, *, ready_path: str = "/ready",
                   timeout_s: float = 600.0, poll_s: float = 1.0,
                   env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Iterator[str]:
    """Start `argv` (listening on `port`), wait until `ready_path` answers 200, yield the base URL.

    Output goes to `log_path` (appended). On exit the server gets SIGTERM (so it can drain and
    shut its engine down), then whatever is left of its process session is killed.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url + ready_path, timeout_s, poll_s, log_path)
        yield url
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen, ready_url: str, timeout_s: float, poll_s: float,
                log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise ServerStartError(f"server exited with code {proc.returncode} before it was "
                                   f"ready (log: {log_path}):\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(ready_url, timeout=5).status_code == 200:
                return
        time.sleep(poll_s)
    raise ServerStartError(f"server not ready after {timeout_s:.0f} s (log: {log_path})")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    # Engine processes (vLLM's engine core) live in the server's session: leave none behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
