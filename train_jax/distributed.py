"""Multi-host start-up: connect this process to the others through `jax.distributed`.

`initialize(cfg)` must run before anything touches a JAX backend (the first array,
`jax.devices()`, ...). Settings come, in order, from:

1. the `DistributedConfig` fields;
2. the environment: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``
   (what the GKE GPU JobSet and hand-written launch scripts set);
3. a detected multi-host TPU slice, where JAX finds everything itself and
   `jax.distributed.initialize()` is called without arguments: GKE TPU pods carry
   ``TPU_WORKER_HOSTNAMES`` (or ``TPU_PROCESS_ADDRESSES``); on Cloud TPU VMs the slice layout
   is only in the metadata server, so `jaxtune launch tpu` exports ``JAXTUNE_TPU_HOSTS``.

With none of these, or exactly one process, nothing happens: a single process needs no
coordinator. Calling `initialize` again after success is a no-op.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
# Set by `jaxtune launch tpu` on every worker of a Cloud TPU VM slice: the number of hosts.
ENV_TPU_HOSTS = "JAXTUNE_TPU_HOSTS"
# Set by the GKE TPU webhook on every pod of a TPU slice (comma-separated worker list).
GKE_TPU_WORKER_ENVS = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")


class DistributedSetupError(ValueError):
    """The multi-host settings are incomplete or contradictory."""


@dataclass(frozen=True)
class DistributedConfig:
    """Explicit `jax.distributed` settings; every field left None falls back to the environment."""

    coordinator_address: str | None = None  # "host:port" of process 0
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    initialization_timeout_s: int = 300


@dataclass(frozen=True)
class DistributedPlan:
    """What `initialize` will do, resolved from config and environment (pure, testable)."""

    mode: Literal["single", "explicit", "tpu_auto"]
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    expected_processes: int | None = None  # checked after a TPU auto-detected start
    reason: str = ""


def _int_setting(name: str, value: int | str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DistributedSetupError(f"{name} must be an integer, got {value!r}") from None


def resolve(cfg: DistributedConfig, env: Mapping[str, str] | None = None) -> DistributedPlan:
    """Decide how to start from `cfg` and the environment `env` (default: `os.environ`)."""
    env = os.environ if env is None else env
    address = cfg.coordinator_address or env.get(ENV_COORDINATOR) or None
    num = cfg.num_processes
    if num is None:
        num = _int_setting(ENV_NUM_PROCESSES, env.get(ENV_NUM_PROCESSES))
    pid = cfg.process_id
    if pid is None:
        pid = _int_setting(ENV_PROCESS_ID, env.get(ENV_PROCESS_ID))

    given = {"coordinator_address": address, "num_processes": num, "process_id": pid}
    if any(v is not None for v in given.values()):
        if num == 1 and pid in (None, 0):
            return DistributedPlan("single", reason="num_processes is 1")
        missing = [name for name, value in given.items() if value is None]
        if missing:
            raise DistributedSetupError(
                f"incomplete multi-host settings: missing {', '.join(missing)} (set them in the "
                f"config or as {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID})"
            )
        assert num is not None and pid is not None
        if num < 1 or not 0 <= pid < num:
            raise DistributedSetupError(
                f"process_id must be in [0, num_processes): got process_id={pid}, "
                f"num_processes={num}"
            )
        if ":" not in address:  # type: ignore[operator]
            raise DistributedSetupError(
                f"coordinator_address must be host:port, got {address!r}"
            )
        return DistributedPlan("explicit", address, num, pid, reason="explicit settings")

    for name in GKE_TPU_WORKER_ENVS:
        workers = [w for w in env.get(name, "").split(",") if w.strip()]
        if len(workers) > 1:
            return DistributedPlan("tpu_auto", expected_processes=len(workers),
                                   reason=f"GKE TPU slice ({name} lists {len(workers)} hosts)")
        if workers:
            return DistributedPlan("single", reason=f"{name} lists one host")
    hosts = _int_setting(ENV_TPU_HOSTS, env.get(ENV_TPU_HOSTS))
    if hosts is not None and hosts > 1:
        return DistributedPlan("tpu_auto", expected_processes=hosts,
                               reason=f"Cloud TPU VM slice ({ENV_TPU_HOSTS}={hosts})")
    return DistributedPlan("single", reason="no multi-host settings found")


def initialize(cfg: DistributedConfig | None = None) -> None:
    """Start `jax.distributed` when this run spans several processes; otherwise do nothing.

    Idempotent: returns at once if the distributed runtime is already up.
    Raises `DistributedSetupError` for incomplete settings and when JAX's own TPU detection
    finds a different number of processes than the launcher announced.
    """
    import jax  # local: keeps this module importable (and cheap) without touching JAX

    if jax.distributed.is_initialized():
        return
    plan = resolve(cfg or DistributedConfig())
    if plan.mode == "single":
        logger.debug("single process: %s", plan.reason)
        return
    timeout = (cfg or DistributedConfig()).initialization_timeout_s
    local_ids = list(cfg.local_device_ids) if cfg and cfg.local_device_ids is not None else None
    if plan.mode == "explicit":
        logger.info("jax.distributed: process %d of %d, coordinator %s", plan.process_id,
                    plan.num_processes, plan.coordinator_address)
        jax.distributed.initialize(
            coordinator_address=plan.coordinator_address,
            num_processes=plan.num_processes,
            process_id=plan.process_id,
            local_device_ids=local_ids,
            initialization_timeout=timeout,
        )
        return
    logger.info("jax.distributed: auto-detecting the TPU slice (%s)", plan.reason)
    jax.distributed.initialize(local_device_ids=local_ids, initialization_timeout=timeout)
    if plan.expected_processes is not None and jax.process_count() != plan.expected_processes:
        raise DistributedSetupError(
            f"JAX detected {jax.process_count()} processes but the slice has "
            f"{plan.expected_processes} hosts ({plan.reason})"
        )
