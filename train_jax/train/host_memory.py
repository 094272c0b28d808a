"""Back large host allocations with transparent huge pages, so step buffers fault in cheaply.

XLA:CPU allocates each step's output and temporary buffers with `malloc` and frees them when
the step ends. glibc serves large allocations with a fresh `mmap` and returns them with
`munmap`, so every step the kernel faults the buffers in again, one 4 KiB page at a time: on
SmolLM2-135M a bf16 step took ~580,000 page faults (2.3 GB), and an elementwise op writing a
new 200 MB buffer ran 4-7x slower than the same op writing reused memory.

Where transparent huge pages are in `madvise` mode (the default of Debian and Ubuntu, among
others), glibc's `glibc.malloc.hugetlb=1` tunable makes malloc advise huge pages for its
mappings: the same step then takes ~1,300 faults of 2 MiB pages. Tunables are read when the
process starts, so `jaxtune train` re-executes itself once with the tunable added to
`GLIBC_TUNABLES` (docs/BENCHMARKS.md#training has the measured effect).

Keeping freed memory in the process instead (one arena, no mmap, no trim) removed the faults
altogether, but the heap fragmented around the step's 2 GB temporary buffer and grew by 2 GB
every few steps; huge pages keep the resident size flat.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

HUGETLB_TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def transparent_huge_page_mode(mode_file: Path = THP_MODE_FILE) -> str | None:
    """The kernel's THP mode ("always", "madvise" or "never"), None when unknown."""
    try:
        text = mode_file.read_text()
    except OSError:
        return None
    selected = [word[1:-1] for word in text.split() if word.startswith("[")]
    return selected[0] if selected else None


def huge_page_environment(env: Mapping[str, str], libc: str, thp_mode: str | None
                          ) -> dict[str, str] | None:
    """`env` with glibc's huge-page malloc tunable added, or None when it would change nothing.

    Nothing to do off glibc, when THP is not in `madvise` mode ("always" already backs large
    mappings with huge pages, "never" forbids them; None: unknown), or when the user set the
    tunable. `libc` is `platform.libc_ver()[0]`.
    """
    tunables = env.get("GLIBC_TUNABLES", "")
    if libc != "glibc" or thp_mode != "madvise" or HUGETLB_TUNABLE + "=" in tunables:
        return None
    setting = f"{HUGETLB_TUNABLE}=1"
    return {**env, "GLIBC_TUNABLES": f"{tunables}:{setting}" if tunables else setting}


def reexec_with_huge_page_malloc() -> None:
    """Replace this process by the same command with huge-page malloc, when that helps.

    Only for a process that has done nothing yet but parse its arguments: everything it did
    is lost, and the command line runs again from the start.
    """
    env = huge_page_environment(os.environ, platform.libc_ver()[0], transparent_huge_page_mode())
    if env is None:
        return
    logger.debug("re-executing with GLIBC_TUNABLES=%s", env["GLIBC_TUNABLES"])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
