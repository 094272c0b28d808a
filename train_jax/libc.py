"""The process's C library, loaded once, for the few calls Python's standard library lacks
(`malloc_trim`, `fallocate`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, with `ctypes.get_errno()` reporting its calls' errors."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
