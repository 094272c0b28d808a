"""How the training process's host memory allocator treats XLA:CPU's per-step buffers.

XLA:CPU allocates each step's output and temporary buffers with `malloc` and frees them when
the step ends. By default glibc serves large allocations with a fresh `mmap` and gives them
back with `munmap`, so every step the kernel maps ~2 GB again (SmolLM2-135M, bf16, 8 x 128)
and zero-fills every page on first touch: ~580,000 page faults per step, and an elementwise op
writing a new 200 MB buffer ran 4-7x slower than the same op on reused memory.

`train.host_allocator` picks one of four policies, applied through glibc's tunables. Tunables
are read when a process starts, so `jaxtune train` re-executes itself once with them added to
`GLIBC_TUNABLES` (the user's own tunables win):

- `bounded` (default): one arena; allocations of 32 MiB and more get their own `mmap` (with
  huge pages where transparent huge pages are in `madvise` mode) and go back to the kernel when
  freed; smaller ones stay in the heap, which is trimmed only past 1 GiB of free space at its
  top. The big buffers, which fragment a retained heap, never enter it, so resident memory
  stays near the step's real need; the many small ones are reused without page faults, and the
  big ones fault in 2 MiB at a time.
- `retain` (opt-in): one arena, no `mmap`, never trim. Freed memory stays in the process and
  the next step reuses it: no page faults and no page zeroing after the first steps. The cost
  is resident memory: it stays at its high-water mark, and heap fragmentation raises that mark
  every few dozen steps, to 2-3x the step's need. `HeapTrimmer` bounds it: past 1.25x the size
  after the first steps, the free pages go back to the kernel (`malloc_trim`), at the price of
  one slower step; it cannot undo the growth inside a step.
- `huge_pages`: only the huge-page tunable: the buffers still come and go every step, but are
  faulted in 2 MiB at a time; the kernel still zeroes them, which costs system time on
  every step.
- `system`: glibc's defaults.

docs/BENCHMARKS.md#training has the measured effect. On TPU and GPU only host-side buffers
are concerned. Where the C library is not glibc, nothing is changed.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, get_args

from train_jax.libc import libc

logger = logging.getLogger(__name__)

HostAllocator = Literal["bounded", "retain", "huge_pages", "system"]  # the `train.host_allocator` type
HOST_ALLOCATORS: tuple[str, ...] = get_args(HostAllocator)
# Policies that keep freed memory in the process, whose growth `HeapTrimmer` bounds.
RETAINING_ALLOCATORS: tuple[str, ...] = ("bounded", "retain")
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_HUGE_PAGES = {"glibc.malloc.hugetlb": "1"}
_RETAIN = {"glibc.malloc.arena_max": "1", "glibc.malloc.mmap_max": "0",
           "glibc.malloc.trim_threshold": str(2**62)}
# A fixed threshold also stops glibc from raising it after each free (its dynamic threshold),
# which would pull the big buffers back into the heap.
_BOUNDED = {"glibc.malloc.arena_max": "1", "glibc.malloc.mmap_threshold": str(32 * 2**20),
            "glibc.malloc.trim_threshold": str(2**30)}
_POLICY_TUNABLES = {"bounded": _BOUNDED, "retain": _RETAIN, "huge_pages": {}, "system": {}}


def transparent_huge_page_mode(mode_file: Path = THP_MODE_FILE) -> str | None:
    """The kernel's THP mode ("always", "madvise" or "never"), None when unknown."""
    try:
        text = mode_file.read_text()
    except OSError:
        return None
    selected = [word[1:-1] for word in text.split() if word.startswith("[")]
    return selected[0] if selected else None


def allocator_tunables(policy: str, thp_mode: str | None) -> dict[str, str]:
    """The glibc tunables of a `train.host_allocator` policy on a kernel in `thp_mode`."""
    if policy not in HOST_ALLOCATORS:
        raise ValueError(f"unknown host allocator {policy!r}; one of {', '.join(HOST_ALLOCATORS)}")
    # Huge pages only need asking for in madvise mode: "always" gives them anyway, and
    # "never" refuses them.
    huge_pages = _HUGE_PAGES if thp_mode == "madvise" and policy != "system" else {}
    return {**_POLICY_TUNABLES[policy], **huge_pages}


def allocator_environment(env: Mapping[str, str], policy: str, libc: str,
                          thp_mode: str | None) -> dict[str, str] | None:
    """`env` with the policy's tunables added to GLIBC_TUNABLES; None when nothing changes.

    Tunables already in GLIBC_TUNABLES are kept as they are. `libc` is
    `platform.libc_ver()[0]`; off glibc there is nothing to add.
    """
    wanted = allocator_tunables(policy, thp_mode) if libc == "glibc" else {}
    current = env.get("GLIBC_TUNABLES", "")
    present = {item.split("=", 1)[0] for item in current.split(":") if item}
    missing = [f"{key}={value}" for key, value in wanted.items() if key not in present]
    if not missing:
        return None
    return {**env, "GLIBC_TUNABLES": ":".join(([current] if current else []) + missing)}


def environment_for(policy: str) -> dict[str, str] | None:
    """`allocator_environment` of this process's environment on this machine."""
    return allocator_environment(os.environ, policy, platform.libc_ver()[0], transparent_huge_page_mode())


def reexec_with_allocator(policy: str) -> None:
    """Replace this process by the same command under the allocator policy, when that changes
    anything; returns otherwise.

    Only for a process that has done nothing yet but parse its arguments: the command line
    runs again from the start.
    """
    env = environment_for(policy)
    if env is None:
        return
    logger.debug("re-executing with GLIBC_TUNABLES=%s", env["GLIBC_TUNABLES"])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def resident_bytes() -> int:
    """This process's resident set size, from /proc (0 where there is none)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _malloc_trim() -> None:
    libc().malloc_trim(0)


class HeapTrimmer:
    """Bounds the resident size of a `bounded` or `retain` process: once it has grown past `factor` times
    its size after `warmup` steps, the heap's free pages go back to the kernel (`malloc_trim`).

    Call `after_step()` once per train step; it returns True when it trimmed.
    """

    def __init__(self, enabled: bool, factor: float = 1.25, warmup: int = 3,
                 read_rss: Callable[[], int] = resident_bytes,
                 trim: Callable[[], None] = _malloc_trim):
        self.enabled = enabled and platform.libc_ver()[0] == "glibc"
        self.factor, self.warmup = factor, warmup
        self._read_rss, self._trim = read_rss, trim
        self._steps = 0
        self.baseline = 0
        self.trims = 0

    def after_step(self) -> bool:
        if not self.enabled:
            return False
        self._steps += 1
        if self._steps <= self.warmup:
            self.baseline = self._read_rss()
            return False
        rss = self._read_rss()
        if not self.baseline or rss <= self.factor * self.baseline:
            return False
        self._trim()
        self.trims += 1
        logger.info("host heap grew to %.1f GB (%.2fx its %.1f GB after %d steps): free pages "
                    "returned to the kernel", rss / 1e9, rss / self.baseline, self.baseline / 1e9,
                    self.warmup)
        return True
