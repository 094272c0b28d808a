"""The fit check of the TPU launchers: the run is compiled for the slice before anything exists.

Uses the tiny config (a compile takes seconds). A run that does not fit: the tiny model with
2048 x 512 tokens per step on one 16 GiB v5e chip.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_jax.train.test_aot_plan import hide_libtpu

# libtpu (installed by `make setup` beside the venv) exists for Linux only; elsewhere the compiles cannot run.
compiles = pytest.mark.skipif(sys.platform != "linux", reason="libtpu is Linux-only")
import yaml

from infra.cli import main

REPO = Path(__file__).resolve().parents[3]
TINY = "configs/train/tiny.yaml"
IMAGE = "us-docker.pkg.dev/my-project/jaxtune/jaxtune-train:0.1.0"
# Already scanned, so the fit search's first change (and its one compile) is full remat.
TOO_BIG = ("model.kernels=reference", "model.remat=none", "model.scan_layers=true",
           "train.batch_size=2048", "data.sources.0.dataset.max_length=512")


@pytest.fixture(autouse=True)
def _in_repo_without_subprocesses(monkeypatch):
    monkeypatch.chdir(REPO)

    def refuse(*args, **kwargs):
        raise AssertionError(f"a dry run or a refused launch ran a command: {args}")
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def _tpu(*argv: str) -> list[str]:
    return ["launch", "tpu", "--zone", "us-east5-a", "--config", TINY, "--name", "plan-test",
            *argv]


@compiles
def test_tpu_dry_run_prints_the_plan_as_comments_before_the_commands(capsys):
    assert main(_tpu("--tpu-type", "v5p-16", "run_dir=gs://b/runs/tiny", "--dry-run")) == 0
    lines = capsys.readouterr().out.splitlines()
    comments = [line for line in lines if line.startswith("#")]
    commands = [line for line in lines if not line.startswith("#")]
    assert lines[:len(comments)] == comments  # the plan comes first
    assert comments[0].startswith("# v5p-16: 8 chips on 2 host(s), topology 2x2x2")
    assert any("of 95.0 GiB HBM: fits" in line for line in comments)
    assert shlex.split(commands[0])[:4] == [sys.executable, "-m", "pip", "wheel"]
    assert " train " in commands[-1]


@compiles
def test_tpu_launch_refuses_a_run_that_does_not_fit(capsys):
    assert main(_tpu("--tpu-type", "v5litepod-1", *TOO_BIG, "--dry-run")) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no command printed, nothing created
    err = captured.err.strip().splitlines()
    assert any("DOES NOT FIT" in line for line in err)  # the plan's table on stderr
    assert err[-1].startswith("jaxtune: error: the run does not fit v5litepod-1")
    assert "it fits with model.remat=full" in err[-1] and "--skip-plan" in err[-1]


def test_skip_plan_launches_without_the_check(capsys):
    assert main(_tpu("--tpu-type", "v5litepod-1", *TOO_BIG, "--dry-run", "--skip-plan")) == 0
    out = capsys.readouterr().out
    assert not any(line.startswith("#") for line in out.splitlines())
    assert "jaxtune train" in out


@compiles
def test_gke_tpu_dry_run_shows_the_plan_and_refuses_a_run_that_does_not_fit(capsys):
    base = ["launch", "gke", "--accelerator", "tpu", "--config", TINY, "--image", IMAGE,
            "--dry-run"]
    assert main([*base, "--tpu-type", "v5p-16", "run_dir=gs://b/runs/tiny"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# v5p-16: 8 chips on 2 host(s)")
    assert [o["kind"] for o in yaml.safe_load_all(text)] == ["ConfigMap", "JobSet"]
    assert main([*base, "--tpu-type", "v5litepod-1", *TOO_BIG]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "the run does not fit v5litepod-1" in captured.err
    assert main([*base, "--tpu-type", "v5litepod-1", *TOO_BIG, "--skip-plan"]) == 0


def test_launch_without_libtpu_is_one_line(capsys, monkeypatch, tmp_path):
    hide_libtpu(monkeypatch, tmp_path)
    assert main(_tpu("--tpu-type", "v5p-8", "--dry-run")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "needs libtpu" in err and "--skip-plan" in err
