"""How much memory each vLLM engine gets for its KV cache, checked before vLLM starts.

On GPU vLLM sizes the KV cache itself from `--memory-fraction` (its gpu_memory_utilization).
On CPU that fraction is a share of all RAM, whoever holds it: its default of 0.9 asks for
~20 GiB of a 24 GiB machine and vLLM dies at start-up as soon as anything else holds a few GB.
So on CPU, without `--kv-cache-gib`, the server sizes the cache from the memory actually
available (`MemAvailable`, and the cgroup limit in a container), keeping room for the OS and
for one training process, and says what it chose. A size that cannot fit is refused before
vLLM starts, with one line naming the flag to change. No vLLM import here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from serve.settings import ServeConfigError, ServeSettings

GIB = 1 << 30
# Left alone when sizing the cache on CPU:
# - the OS, the page cache holding the weights while they load, shells and tools: 2 GiB;
OS_RESERVE_GIB = 2.0
# - one training process: `make demo` trains SmolLM2-135M at 13.7-17.2 GB RSS on this
#   project's reference machine (shared/ENVIRONMENT.md), so 16 GiB;
TRAINING_RESERVE_GIB = 16.0
# - per engine, besides its KV cache: the weights (measured from the model folder) and about
#   1 GiB of torch/vLLM runtime and activation buffers.
ENGINE_RUNTIME_GIB = 1.0
# The automatic size is clamped to this range and rounded down to a step; when the memory
# cannot be read (no /proc/meminfo), a small fixed size is used instead.
MIN_KV_GIB, MAX_KV_GIB, STEP_GIB = 0.5, 16.0, 0.25
FALLBACK_KV_GIB = 2.0
# vLLM's CPU platform takes the KV cache size (GiB) from this variable over its engine args.
VLLM_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


class EngineStartError(ServeConfigError):
    """vLLM could not start (or would not fit); the message names the cause and the flag."""


@dataclass(frozen=True)
class Memory:
    """Bytes of RAM in total and available to a new process now."""

    total: int
    available: int


@dataclass(frozen=True)
class KvCachePlan:
    """What each engine is asked for: `gib` of KV cache (vLLM's kv_cache_memory_bytes; None:
    vLLM sizes it from `memory_fraction`, its gpu_memory_utilization, None: vLLM's default)."""

    gib: float | None
    memory_fraction: float | None
    message: str


def read_memory(meminfo: Path = Path("/proc/meminfo"),
                cgroup: Path = Path("/sys/fs/cgroup")) -> Memory | None:
    """RAM from /proc/meminfo, lowered to the cgroup (v2) limit if one is set; None if the
    memory cannot be read (not Linux)."""
    try:
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024
                  for line in meminfo.read_text().splitlines() if line.strip()}
        memory = Memory(total=fields["MemTotal"], available=fields["MemAvailable"])
    except (OSError, KeyError, ValueError, IndexError):
        return None
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        used = int((cgroup / "memory.current").read_text())
    except (OSError, ValueError):
        return memory
    if limit == "max":
        return memory
    return Memory(total=min(memory.total, int(limit)),
                  available=max(0, min(memory.available, int(limit) - used)))


def weights_bytes(settings: ServeSettings) -> int:
    """Bytes of weight files in the served model folders (adapters are small)."""
    total = 0
    for source in settings.models:
        if source.path.is_dir():
            total += sum(f.stat().st_size for f in source.path.iterdir()
                         if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))
    return total


def plan_kv_cache(settings: ServeSettings, *, on_cpu: bool, memory: Memory | None,
                  weights: int, environ: Mapping[str, str] | None = None) -> KvCachePlan:
    """The KV cache each engine gets, and the start-up line that says so."""
    environ = os.environ if environ is None else environ
    fraction = settings.memory_fraction
    if on_cpu and environ.get(VLLM_KV_ENV):
        gib = float(environ[VLLM_KV_ENV])
        return KvCachePlan(gib, fraction, f"KV cache: {gib:g} GiB per model (from ${VLLM_KV_ENV}, "
                                          "which overrides --kv-cache-gib inside vLLM)")
    if settings.kv_cache_gib is not None:
        return KvCachePlan(settings.kv_cache_gib, fraction,
                           f"KV cache: {settings.kv_cache_gib:g} GiB per model (--kv-cache-gib)")
    if not on_cpu or fraction is not None:
        of = "RAM" if on_cpu else "GPU memory"
        share = f"--memory-fraction {fraction:g}" if fraction is not None else \
            "vLLM's default memory fraction (0.9)"
        return KvCachePlan(None, fraction, f"KV cache: sized by vLLM from {share} of {of} "
                                           "(--kv-cache-gib to set it)")
    if memory is None:
        return KvCachePlan(FALLBACK_KV_GIB, None, f"KV cache: {FALLBACK_KV_GIB:g} GiB per model "
                                                  "(memory unknown; --kv-cache-gib to change)")
    engines = len(settings.models)
    spare = (memory.available / GIB - OS_RESERVE_GIB - TRAINING_RESERVE_GIB
             - weights / GIB - engines * ENGINE_RUNTIME_GIB)
    gib = _step_down(min(max(spare / engines, MIN_KV_GIB), MAX_KV_GIB))
    return KvCachePlan(gib, None, f"KV cache: {gib:g} GiB per model (from "
                                  f"{memory.available / GIB:.1f} GiB available; --kv-cache-gib "
                                  "to change)")


def check_fits(plan: KvCachePlan, settings: ServeSettings, *, on_cpu: bool,
               memory: Memory | None, weights: int) -> None:
    """On CPU, refuse before vLLM starts a KV cache (or memory fraction) that cannot fit."""
    if not on_cpu or memory is None:
        return
    engines = len(settings.models)
    available = memory.available / GIB
    room = available - weights / GIB - engines * ENGINE_RUNTIME_GIB
    if plan.gib is not None:
        if engines * plan.gib <= room:
            return
        asked = f"a {plan.gib:g} GiB KV cache" + (f" for each of {engines} models"
                                                   if engines > 1 else "")
    elif plan.memory_fraction is not None:
        asked_gib = plan.memory_fraction * memory.total / GIB
        if asked_gib <= available:
            return
        asked = f"--memory-fraction {plan.memory_fraction:g} ({asked_gib:.1f} GiB of RAM)"
    else:
        return
    raise EngineStartError(f"vLLM could not start: not enough memory for {asked} "
                           f"({available:.1f} GiB available); {_advice(room / engines)}")


def start_failure(model: str, exc: BaseException, *, on_cpu: bool,
                  memory: Memory | None) -> EngineStartError:
    """The one-line error for an engine vLLM failed to start (its cause is in vLLM's log)."""
    cause = " ".join(str(exc).split()) or type(exc).__name__
    hint = "; the cause is in vLLM's log above"
    if on_cpu and memory is not None:
        hint += (f"; {memory.available / GIB:.1f} GiB of memory is available now: if the log "
                 "says memory, pass a smaller --kv-cache-gib")
    return EngineStartError(f"vLLM could not start the engine for {model!r}: {cause}{hint}")


def _advice(per_engine_gib: float) -> str:
    fits = _step_down(per_engine_gib)
    if fits >= STEP_GIB:
        return (f"pass --kv-cache-gib {fits:g} or less (or neither flag, to size it from the "
                "memory available)")
    return "free memory (other processes hold it) or serve fewer models"


def _step_down(gib: float) -> float:
    return math.floor(gib / STEP_GIB) * STEP_GIB
