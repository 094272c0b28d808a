"""`train_jax.distributed`: settings resolution, and two real local processes joined through
`jax.distributed` with exactly the environment the GKE GPU JobSet renders."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra.launch.gke_manifest import COMPLETION_INDEX_FIELD, GkeJobSpec, GpuNodes, render_jobset
from infra.pipeline.server_process import free_port
from train_jax.distributed import DistributedConfig, DistributedSetupError, initialize, resolve

REPO = Path(__file__).resolve().parents[2]
ENV_KEYS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
            "JAXTUNE_TPU_HOSTS", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES")


def test_nothing_set_is_a_single_process():
    assert resolve(DistributedConfig(), {}).mode == "single"


def test_environment_gives_explicit_settings():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234", "JAX_NUM_PROCESSES": "4",
           "JAX_PROCESS_ID": "3"}
    plan = resolve(DistributedConfig(), env)
    assert (plan.mode, plan.coordinator_address, plan.num_processes, plan.process_id) == (
        "explicit", "10.0.0.2:1234", 4, 3)


def test_config_fields_win_over_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "a:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    plan = resolve(DistributedConfig(coordinator_address="b:2", process_id=1), env)
    assert (plan.coordinator_address, plan.num_processes, plan.process_id) == ("b:2", 4, 1)


def test_one_process_needs_no_coordinator():
    assert resolve(DistributedConfig(num_processes=1), {}).mode == "single"


@pytest.mark.parametrize(
    ("cfg", "env", "message"),
    [
        (DistributedConfig(), {"JAX_NUM_PROCESSES": "2"},
         "missing coordinator_address, process_id"),
        (DistributedConfig(), {"JAX_NUM_PROCESSES": "two"},
         "JAX_NUM_PROCESSES must be an integer"),
        (DistributedConfig("h:1", 2, 2), {}, "process_id must be in [0, num_processes)"),
        (DistributedConfig("host-without-port", 2, 0), {}, "must be host:port"),
    ],
)
def test_bad_settings_are_clear_errors(cfg, env, message):
    with pytest.raises(DistributedSetupError, match=re.escape(message)):
        resolve(cfg, env)


def test_gke_tpu_slice_is_auto_detected():
    plan = resolve(DistributedConfig(), {"TPU_WORKER_HOSTNAMES": "h0,h1,h2,h3",
                                         "TPU_WORKER_ID": "2"})
    assert (plan.mode, plan.expected_processes) == ("tpu_auto", 4)
    assert resolve(DistributedConfig(), {"TPU_WORKER_HOSTNAMES": "h0"}).mode == "single"


def test_tpu_vm_slice_announced_by_the_launcher_is_auto_detected():
    plan = resolve(DistributedConfig(), {"JAXTUNE_TPU_HOSTS": "2"})
    assert (plan.mode, plan.expected_processes) == ("tpu_auto", 2)
    assert resolve(DistributedConfig(), {"JAXTUNE_TPU_HOSTS": "1"}).mode == "single"


def test_initialize_on_a_single_process_does_nothing(monkeypatch):
    import jax

    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    initialize(DistributedConfig())
    initialize()
    assert not jax.distributed.is_initialized()
    assert jax.process_count() == 1


WORKER = """
import json, sys
from train_jax.distributed import DistributedConfig, initialize
if len(sys.argv) > 1:  # settings from a run config file + overrides, as `jaxtune train` reads them
    from train_jax.config.run_config import load_run_config
    cfg = load_run_config(sys.argv[1], sys.argv[2:]).distributed
else:  # settings from the environment
    cfg = DistributedConfig(initialization_timeout_s=60)
initialize(cfg)
initialize(cfg)  # idempotent: a second call must not try to connect again
import jax
import numpy as np
from jax.experimental import multihost_utils
gathered = multihost_utils.process_allgather(np.array([jax.process_index() * 10 + 1]))
total = multihost_utils.process_allgather(np.ones((jax.local_device_count(),)), tiled=True)
print(json.dumps({"count": jax.process_count(), "index": jax.process_index(),
                  "devices": jax.device_count(), "gathered": gathered.ravel().tolist(),
                  "total": float(total.sum())}))
jax.distributed.shutdown()
"""


def _rendered_env(nodes: int) -> list[dict]:
    spec = GkeJobSpec(name="jt", image="img", accelerator="gpu", run_config={},
                      gpu=GpuNodes("nvidia-l4", nodes, 1))
    pod = render_jobset(spec)["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    return pod["spec"]["containers"][0]["env"]


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=str(REPO))
    return env


def _run_pair(envs: list[dict[str, str]], argvs: list[list[str]], cwd: Path) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, *argv], env=env, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for env, argv in zip(envs, argvs, strict=True)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results


def _assert_one_job_of_two(results: list[dict]) -> None:
    assert sorted(r["index"] for r in results) == [0, 1]
    for r in results:
        assert r["count"] == 2
        assert r["devices"] == 4  # 2 local CPU devices in each of the 2 processes
        assert r["gathered"] == [1, 11]  # each process's value, in process order
        assert r["total"] == 4.0


def test_two_local_processes_join_through_the_rendered_gpu_env(tmp_path):
    rendered = _rendered_env(nodes=2)
    port = free_port()
    envs = []
    for index in range(2):
        env = _base_env()
        for var in rendered:
            if "value" in var:
                value = var["value"]
                if var["name"] == "JAX_COORDINATOR_ADDRESS":
                    # The pod-0 DNS name only resolves in the cluster; point it at this machine.
                    assert value == "jt-workers-0-0.jt:1234"
                    value = f"127.0.0.1:{port}"
            else:
                # The kubelet fills this from the pod's completion index.
                assert var["valueFrom"]["fieldRef"]["fieldPath"] == COMPLETION_INDEX_FIELD
                value = str(index)
            env[var["name"]] = value
        envs.append(env)
    _assert_one_job_of_two(_run_pair(envs, [[], []], tmp_path))


def test_two_local_processes_join_through_run_config_settings(tmp_path):
    config = REPO / "tests" / "infra" / "golden" / "run_config.yaml"
    port = free_port()
    argvs = [[str(config), f"distributed.coordinator_address=127.0.0.1:{port}",
              "distributed.num_processes=2", f"distributed.process_id={index}",
              "distributed.initialization_timeout_s=60"] for index in range(2)]
    _assert_one_job_of_two(_run_pair([_base_env(), _base_env()], argvs, tmp_path))
