"""Every `jaxtune launch` command in docs/LAUNCH.md parses and dry-runs (docs cannot drift)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from infra.cli import main

REPO = Path(__file__).resolve().parents[3]


def doc_commands(prefix: str, *, fences: str = "bash", section: str | None = None) -> list[str]:
    """The commands starting with `prefix` in docs/LAUNCH.md's code blocks fenced as `fences`
    (a regex alternation), in its `## section` only when given; continuation lines joined."""
    text = (REPO / "docs" / "LAUNCH.md").read_text(encoding="utf-8")
    if section is not None:
        text = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(rf"```(?:{fences})\n(.*?)```", text, flags=re.DOTALL):
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines()
                     if line.strip().startswith(prefix)]
    return commands


def _launch_commands() -> list[str]:
    return doc_commands("jaxtune launch")


def test_the_doc_has_launch_commands():
    commands = _launch_commands()
    assert sum(" tpu " in c for c in commands) >= 3
    assert sum(" gke " in c for c in commands) >= 3


@pytest.mark.parametrize("command", _launch_commands())
def test_doc_command_dry_runs(command, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    argv = shlex.split(command.replace("$REGISTRY", "us-docker.pkg.dev/p/jaxtune"))[1:]
    config = argv[argv.index("--config") + 1]
    assert (REPO / config).is_file(), f"docs/LAUNCH.md names {config}, which does not exist"
    if "--dry-run" not in argv:
        argv.append("--dry-run")
    assert main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip()
