"""A 2-process `jax.distributed` run on localhost (CPU) trains with the losses of one process."""

from __future__ import annotations

import subprocess

import pytest

from infra.pipeline.server_process import free_port
from tests.train_jax.train.runs import REPO, env, losses, train_command, viggo_slice, write_config
from train_jax.config.run_config import load_run_config
from train_jax.train.loop import train

STEPS = 6


def test_two_processes_match_one_process(tmp_path):
    # eps=1e-3: see test_step.WELL_CONDITIONED (different meshes reduce in different orders).
    config = write_config(tmp_path / "tiny.yaml", viggo_slice(tmp_path, 80),
                          optimizer={"learning_rate": 3e-3, "eps": 1e-3},
                          train={"steps": STEPS, "batch_size": 4, "log_every": 1,
                                 "progress": False},
                          checkpoint={"every": 3, "keep": 1, "keep_best": 0})
    single_dir = tmp_path / "single"
    train(load_run_config(config, [f"run_dir={single_dir}"]))

    multi_dir = tmp_path / "multi"
    port = free_port()
    procs = [subprocess.Popen(
        train_command(config, f"run_dir={multi_dir}"), cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        env=env(devices=2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(pid)))
        for pid in range(2)]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=400)
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]
    assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 1} over 4 devices (2 processes)" in outputs[0]
    expected, got = losses(single_dir), losses(multi_dir)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-5), step
