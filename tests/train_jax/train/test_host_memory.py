"""Host allocator policies: the tunables each adds, that `jaxtune train` re-executes itself
once with them, and that they really cut the page faults of a repeated XLA:CPU step."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from train_jax.config.loading import ConfigError
from train_jax.config.run_config import load_raw_run_config, run_config_from_dict
from train_jax.train.host_memory import (
    HeapTrimmer,
    allocator_environment,
    transparent_huge_page_mode,
)

REPO = Path(__file__).resolve().parents[3]
SYSTEM = (platform.libc_ver()[0], transparent_huge_page_mode())
NOT_GLIBC = SYSTEM[0] != "glibc"


def test_each_policy_adds_its_tunables_and_keeps_the_users():
    retain = allocator_environment({"PATH": "/bin"}, "retain", "glibc", "madvise")
    assert retain["PATH"] == "/bin"
    assert dict(item.split("=") for item in retain["GLIBC_TUNABLES"].split(":")) == {
        "glibc.malloc.arena_max": "1", "glibc.malloc.mmap_max": "0",
        "glibc.malloc.trim_threshold": str(2**62), "glibc.malloc.hugetlb": "1"}
    # Already applied (the re-executed process): nothing to do, so no loop.
    assert allocator_environment(retain, "retain", "glibc", "madvise") is None
    # The user's own value of a tunable wins; the others are still added.
    user = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}
    added = allocator_environment(user, "retain", "glibc", "madvise")["GLIBC_TUNABLES"]
    assert added.startswith("glibc.malloc.arena_max=4:") and added.count("arena_max") == 1
    assert allocator_environment({}, "huge_pages", "glibc", "madvise") == {
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    # Huge pages are asked for only in madvise mode; "system" and non-glibc change nothing.
    for thp_mode in ("always", "never", None):
        assert allocator_environment({}, "huge_pages", "glibc", thp_mode) is None
        assert "hugetlb" not in allocator_environment({}, "retain", "glibc", thp_mode)[
            "GLIBC_TUNABLES"]
    assert allocator_environment({}, "system", "glibc", "madvise") is None
    assert allocator_environment({}, "retain", "", "madvise") is None  # musl, macOS
    with pytest.raises(ValueError, match="retain, huge_pages, system"):
        allocator_environment({}, "jemalloc", "glibc", "madvise")


def test_thp_mode_is_read_from_the_bracketed_word(tmp_path):
    mode_file = tmp_path / "enabled"
    mode_file.write_text("always [madvise] never\n")
    assert transparent_huge_page_mode(mode_file) == "madvise"
    assert transparent_huge_page_mode(tmp_path / "missing") is None


def test_train_config_is_bounded_by_default_and_rejects_unknown_policies():
    tiny = REPO / "configs" / "train" / "tiny.yaml"
    assert run_config_from_dict(load_raw_run_config(tiny, [])).train.host_allocator == "bounded"
    system = run_config_from_dict(load_raw_run_config(tiny, ["train.host_allocator=system"]))
    assert system.train.host_allocator == "system"
    with pytest.raises(ConfigError, match="host_allocator"):
        run_config_from_dict(load_raw_run_config(tiny, ["train.host_allocator=tcmalloc"]))


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


@pytest.mark.skipif(NOT_GLIBC, reason="glibc tunables only")
def test_retained_memory_is_not_page_faulted_again():
    base = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    default = _probe_faults(base)
    retained = _probe_faults(allocator_environment(base, "retain", *SYSTEM))
    if default < 16384 // 4:
        pytest.skip(f"the default allocator took only {default} faults for 64 MiB here")
    assert retained * 20 < default, (retained, default)


@pytest.mark.skipif(SYSTEM != ("glibc", "madvise"), reason="THP not in madvise mode")
def test_huge_pages_cut_the_page_faults_of_a_repeated_step():
    base = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    default = _probe_faults(base)
    with_huge_pages = _probe_faults(allocator_environment(base, "huge_pages", *SYSTEM))
    assert default >= 16384  # 64 MiB of fresh 4 KiB pages
    assert with_huge_pages * 20 < default, (with_huge_pages, default)


@pytest.mark.skipif(NOT_GLIBC, reason="glibc tunables only")
def test_jaxtune_train_re_executes_itself_once_with_the_tunables(tmp_path):
    # Training itself is replaced by a print of the environment it would run in.
    env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    code = ("import os, sys\n"
            "import train_jax.train.stages as stages\n"
            "class R: interrupted_by=None; final_step=0; last_loss=None; exit_code=0\n"
            "def fake(cfg):\n"
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
    expected = allocator_environment({}, "bounded", *SYSTEM)["GLIBC_TUNABLES"]
    assert proc.stdout.count(f"TUNABLES={expected}\n") == 1, proc.stdout


# Resident bytes after a buffer of N MiB was written and freed, and the page faults of writing
# a second buffer of the same size (malloc straight from libc: no JAX, no noise).
_FREE_PROBE = """
import ctypes, json, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
size = int(sys.argv[1]) << 20
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
before = rss()
buf = libc.malloc(size); ctypes.memset(buf, 1, size); libc.free(ctypes.c_void_p(buf))
kept = rss() - before
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
buf = libc.malloc(size); ctypes.memset(buf, 1, size)
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}))
"""


def _free_probe(env: dict[str, str], mib: int) -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-c", _FREE_PROBE, str(mib)], capture_output=True,
                          text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(NOT_GLIBC, reason="glibc tunables only")
def test_bounded_returns_big_buffers_and_reuses_small_ones():
    base = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    bounded = allocator_environment(base, "bounded", *SYSTEM)
    retain = allocator_environment(base, "retain", *SYSTEM)
    # A 256 MiB buffer: `retain` keeps it resident after free, `bounded` gives it back.
    assert _free_probe(retain, 256)["kept"] > 200 << 20
    assert _free_probe(bounded, 256)["kept"] < 16 << 20
    # An 8 MiB buffer stays in the `bounded` heap: writing the next one faults no new pages,
    # where glibc's defaults (no tunables) map and zero it afresh.
    assert _free_probe(bounded, 8)["faults"] < 64
    assert _free_probe(base, 8)["faults"] > 1024


def test_heap_trimmer_trims_only_past_its_factor_of_the_warm_size():
    sizes = iter([4, 5, 6, 6.5, 7.4, 7.6, 6.0, 7.6])
    trims = []
    trimmer = HeapTrimmer(True, factor=1.25, warmup=3, read_rss=lambda: next(sizes),
                          trim=lambda: trims.append(1))
    done = [trimmer.after_step() for _ in range(8)]
    if not trimmer.enabled:
        pytest.skip("glibc only")
    # Warm size: 6 (the third step); the bound is 7.5.
    assert done == [False, False, False, False, False, True, False, True]
    assert trimmer.trims == len(trims) == 2
    assert not HeapTrimmer(False, read_rss=lambda: 1 / 0, trim=lambda: 1 / 0).after_step()
