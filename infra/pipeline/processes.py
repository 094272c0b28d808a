"""Running jaxtune subcommands as child processes, and a served model for the time of a block.

Stages run in their own processes so JAX (training) and vLLM (serving) never share one
process or its memory, and a user can re-run any logged command by hand.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from infra.pipeline.server_process import ServerStartError, free_port, running_server

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


@contextlib.contextmanager
def served_model(model_dir: Path, name: str, log_path: Path, *, extra_args: Sequence[str] = (),
                 ready_timeout_s: float = 600.0) -> Iterator[str]:
    """Serve `model_dir` as `name` with `jaxtune serve` on a free port; yield its base URL."""
    port = free_port()
    argv = jaxtune_command("serve", "--model", str(model_dir), "--name", name,
                           "--port", str(port), *extra_args)
    logger.info("$ %s", shlex.join(argv))
    try:
        with running_server(argv, port, log_path, timeout_s=ready_timeout_s) as base_url:
            yield base_url
    except ServerStartError as exc:
        raise StageFailed(str(exc)) from None
