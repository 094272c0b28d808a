"""Huge-page malloc: when `jaxtune train` re-executes itself, and that the tunable it adds
really cuts the page faults of a repeated XLA:CPU computation."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from train_jax.config.run_config import load_raw_run_config, run_config_from_dict
from train_jax.train.host_memory import (
    huge_page_environment,
    transparent_huge_page_mode,
)

REPO = Path(__file__).resolve().parents[3]
SYSTEM = (platform.libc_ver()[0], transparent_huge_page_mode())
NOT_APPLICABLE = huge_page_environment({}, *SYSTEM) is None


def test_the_tunable_is_added_only_where_it_changes_something():
    env = {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    added = huge_page_environment(env, libc="glibc", thp_mode="madvise")
    assert added == {"PATH": "/bin",
                     "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"}
    assert huge_page_environment({}, libc="glibc", thp_mode="madvise") == {
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    # Already re-executed, or the user chose a value: no loop, no override.
    assert huge_page_environment(added, libc="glibc", thp_mode="madvise") is None
    assert huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, libc="glibc",
                                 thp_mode="madvise") is None
    for thp_mode in ("always", "never", None):
        assert huge_page_environment(env, libc="glibc", thp_mode=thp_mode) is None
    assert huge_page_environment(env, libc="", thp_mode="madvise") is None  # musl, macOS


def test_thp_mode_is_read_from_the_bracketed_word(tmp_path):
    mode_file = tmp_path / "enabled"
    mode_file.write_text("always [madvise] never\n")
    assert transparent_huge_page_mode(mode_file) == "madvise"
    assert transparent_huge_page_mode(tmp_path / "missing") is None


def test_train_config_turns_it_on_by_default():
    tiny = REPO / "configs" / "train" / "tiny.yaml"
    assert run_config_from_dict(load_raw_run_config(tiny, [])).train.host_huge_pages is True
    off = run_config_from_dict(load_raw_run_config(tiny, ["train.host_huge_pages=false"]))
    assert off.train.host_huge_pages is False


# Prints the page faults of the third run of a step whose output is 64 MiB.
_PROBE = """
import json, resource
import jax, jax.numpy as jnp
x = jnp.ones((4096, 4096), jnp.float32)
step = jax.jit(lambda a: a * 2.0 + 1.0)
for _ in range(2):
    step(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
out = step(x)
out.block_until_ready()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before,
                  "ok": bool(out[0, 0] == 3.0)}))
"""


def _probe_faults(env: dict[str, str]) -> int:
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          check=False, env={**env, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"]
    return result["faults"]


@pytest.mark.skipif(NOT_APPLICABLE, reason="not glibc with transparent huge pages in madvise mode")
def test_huge_page_malloc_cuts_the_page_faults_of_a_repeated_step():
    base = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    default = _probe_faults(base)
    with_huge_pages = _probe_faults(huge_page_environment(base, *SYSTEM))
    assert default >= 16384  # 64 MiB of fresh 4 KiB pages
    assert with_huge_pages * 20 < default, (with_huge_pages, default)


@pytest.mark.skipif(NOT_APPLICABLE, reason="not glibc with transparent huge pages in madvise mode")
def test_jaxtune_train_re_executes_itself_once_with_the_tunable(tmp_path):
    # Training itself is replaced by a print of the environment it would run in.
    env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    code = ("import os, sys\n"
            "import train_jax.train.stages as stages\n"
            "class R: interrupted_by=None; final_step=0; last_loss=None; exit_code=0\n"
            "def fake(raw):\n"
            "    print('TUNABLES=' + os.environ.get('GLIBC_TUNABLES', ''), flush=True)\n"
            "    return R()\n"
            "stages.run_stages = fake\n"
            "from infra.cli import main\n"
            "sys.exit(main())\n")
    script = tmp_path / "entry.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script), "train", "--config", "configs/train/tiny.yaml",
                           f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True,
                          check=False, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("TUNABLES=glibc.malloc.hugetlb=1") == 1, proc.stdout
