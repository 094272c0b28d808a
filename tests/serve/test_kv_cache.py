"""KV cache sizing on CPU from the memory available, the fit check before vLLM starts, and the
one-line error when the engine cannot start."""

from __future__ import annotations

from pathlib import Path

import pytest

import serve.app
from infra.cli import main as jaxtune_main
from infra.pipeline.server_process import free_port
from serve.kv_cache import (
    GIB,
    EngineStartError,
    Memory,
    check_fits,
    plan_kv_cache,
    read_memory,
    start_failure,
    weights_bytes,
)
from serve.settings import ModelSource
from tests.serve.fake_server import fake_settings
from tests.serve.test_settings_cli import make_model_dir

MACHINE = Memory(total=24 * GIB, available=int(22.4 * GIB))  # this project's reference box


def _plan(memory=MACHINE, weights=0, environ=None, on_cpu=True, **settings):
    return plan_kv_cache(fake_settings(**settings), on_cpu=on_cpu, memory=memory,
                         weights=weights, environ=environ or {})


def test_cpu_default_is_sized_from_available_memory_and_said():
    plan = _plan(weights=GIB // 2)
    # 22.4 available - 2 (OS) - 16 (a training process) - 0.5 (weights) - 1 (runtime) = 2.9.
    assert (plan.gib, plan.memory_fraction) == (2.75, None)
    assert plan.message == ("KV cache: 2.75 GiB per model (from 22.4 GiB available; "
                            "--kv-cache-gib to change)")


def test_the_cpu_default_is_shared_between_models_and_clamped():
    models = (ModelSource("a", Path("/x")), ModelSource("b", Path("/y")))
    assert _plan(models=models).gib == 1.0  # (22.4 - 18 - 2 x 1) / 2 = 1.2, rounded down
    assert _plan(Memory(8 * GIB, 6 * GIB)).gib == 0.5  # never below the minimum
    assert _plan(Memory(512 * GIB, 500 * GIB)).gib == 16.0  # nor above the maximum
    assert _plan(memory=None).gib == 2.0  # memory unknown: a small fixed size


def test_flags_env_and_gpu_take_precedence_over_the_rule():
    assert _plan(kv_cache_gib=0.25).message == "KV cache: 0.25 GiB per model (--kv-cache-gib)"
    env = _plan(environ={"VLLM_CPU_KVCACHE_SPACE": "1"}, kv_cache_gib=4.0)
    assert env.gib == 1.0 and "VLLM_CPU_KVCACHE_SPACE" in env.message
    fraction = _plan(memory_fraction=0.3)
    assert (fraction.gib, fraction.memory_fraction) == (None, 0.3)
    gpu = _plan(on_cpu=False)
    assert gpu.gib is None and "GPU memory" in gpu.message


def test_a_cache_that_cannot_fit_is_refused_before_vllm_starts():
    settings = fake_settings(kv_cache_gib=19.8)
    memory = Memory(total=24 * GIB, available=int(17.4 * GIB))
    plan = plan_kv_cache(settings, on_cpu=True, memory=memory, weights=0, environ={})
    with pytest.raises(EngineStartError) as err:
        check_fits(plan, settings, on_cpu=True, memory=memory, weights=0)
    assert str(err.value) == ("vLLM could not start: not enough memory for a 19.8 GiB KV cache "
                              "(17.4 GiB available); pass --kv-cache-gib 16.25 or less (or "
                              "neither flag, to size it from the memory available)")
    fraction = fake_settings(memory_fraction=0.9)
    plan = plan_kv_cache(fraction, on_cpu=True, memory=memory, weights=0, environ={})
    with pytest.raises(EngineStartError, match=r"--memory-fraction 0.9 \(21.6 GiB of RAM\)"):
        check_fits(plan, fraction, on_cpu=True, memory=memory, weights=0)
    # What fits passes, and GPU memory is vLLM's to check.
    check_fits(_plan(), fake_settings(), on_cpu=True, memory=MACHINE, weights=0)
    check_fits(plan, fraction, on_cpu=False, memory=memory, weights=0)


def test_nothing_fits_on_a_full_machine():
    settings = fake_settings(kv_cache_gib=1.0)
    full = Memory(total=24 * GIB, available=GIB)
    plan = plan_kv_cache(settings, on_cpu=True, memory=full, weights=0, environ={})
    with pytest.raises(EngineStartError, match="free memory .* or serve fewer models"):
        check_fits(plan, settings, on_cpu=True, memory=full, weights=0)


def test_memory_is_read_from_meminfo_and_the_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683584 kB\nMemFree: 1 kB\n"
                       "MemAvailable:   23400232 kB\n")
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    assert read_memory(meminfo, cgroup) == Memory(24683584 * 1024, 23400232 * 1024)
    (cgroup / "memory.max").write_text("8589934592\n")
    (cgroup / "memory.current").write_text(str(2 * GIB))
    assert read_memory(meminfo, cgroup) == Memory(8 * GIB, 6 * GIB)
    assert read_memory(tmp_path / "missing", cgroup) is None


def test_weights_are_measured_from_the_model_folder(tmp_path):
    model = make_model_dir(tmp_path / "m")
    (model / "model.safetensors").write_bytes(b"\0" * 1000)
    (model / "tokenizer.json").write_text("{}")
    assert weights_bytes(fake_settings(models=(ModelSource("m", model),))) == 1000


def test_a_failed_start_is_one_line_naming_the_cause():
    err = start_failure("tiny", RuntimeError("Engine core initialization failed.\nSee above."),
                        on_cpu=True, memory=Memory(24 * GIB, 3 * GIB))
    assert "\n" not in str(err)
    assert str(err).startswith("vLLM could not start the engine for 'tiny': Engine core "
                               "initialization failed. See above.; the cause is in vLLM's log")
    assert "--kv-cache-gib" in str(err)


def test_jaxtune_serve_ends_with_one_line_and_a_non_zero_exit(tmp_path, capsys, monkeypatch):
    async def cannot_start(settings):
        raise EngineStartError("vLLM could not start: not enough memory for a 19.8 GiB KV "
                               "cache (17.4 GiB available); pass --kv-cache-gib 4")

    monkeypatch.setattr(serve.app, "start_vllm_engine", cannot_start)
    model = make_model_dir(tmp_path / "m")
    code = jaxtune_main(["serve", "--model", str(model), "--port", str(free_port())])
    assert code != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == ("jaxtune: error: vLLM could not start: not enough memory for a 19.8 GiB KV "
                    "cache (17.4 GiB available); pass --kv-cache-gib 4")
