"""`jaxtune plan --target`: the train step compiled for a TPU slice through libtpu on this host.

The compiled numbers are checked against each other and against the model-FLOPs formula
(`train_jax.train.flops`), with the dense attention the reference kernels compute (full T x T
scores; the causal mask does not skip any):

    FLOPs per step = 6 x N x tokens + 12 x L x H x hd x T x tokens

N the weights that take part in matmuls per token (the head included, the embedding lookup
not), L layers, H query heads of width hd, T the row length, tokens = batch x T. Full remat
recomputes each decoder block's forward once more: 2 x N_blocks x tokens + 4 x L x H x hd x T
x tokens (the head and the loss are not recomputed). The TPU splash kernel is causal: it
computes half the attention (6 instead of 12 x L x H x hd x T x tokens).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# libtpu (installed by `make setup` beside the venv) exists for Linux only; elsewhere the compiles cannot run.
compiles = pytest.mark.skipif(sys.platform != "linux", reason="libtpu is Linux-only")

from infra.cli import main
from train_jax.config.run_config import load_run_config
from train_jax.model.config import ModelConfig
from train_jax.sharding.mesh import build_mesh
from train_jax.sharding.tpu_slices import parse_tpu_type
from train_jax.train.flops import matmul_params
from train_jax.train.plan import model_config_for_plan
from train_jax.train.tpu_compile import topology_devices

REPO = Path(__file__).resolve().parents[3]
TINY = "configs/train/tiny.yaml"
SMOLLM2 = "configs/train/tpu/smollm2-135m-v5litepod-8.yaml"
# Reference kernels: the formula's dense attention (the TPU splash kernel is a Mosaic call
# whose FLOPs XLA's cost analysis cannot see inside).
DENSE = ("model.kernels=reference",)
KEYS = ("target", "chips", "hbm_bytes_per_chip", "peak_bytes_per_chip", "fits",
        "flops_per_step", "step_time_s", "mfu")


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def _plan_json(capsys, config: str, target: str, *overrides: str) -> dict:
    code = main(["plan", "--config", config, "--target", target, "--json", *overrides])
    captured = capsys.readouterr()
    assert code in (0, 3), captured.err
    return json.loads(captured.out)


def _formula_attention(config: str, *overrides: str) -> float:
    """12 x L x H x hd x T x tokens: the dense attention of one training step."""
    cfg = load_run_config(config, overrides)
    m = model_config_for_plan(cfg)
    t = cfg.data.max_length
    return 12 * m.num_hidden_layers * m.num_attention_heads * m.head_dim * t * (
        cfg.train.batch_size * t)


def _formula(config: str, *overrides: str) -> tuple[float, float]:
    """(6 N tokens + attention, one forward of the blocks) in FLOPs per step."""
    cfg = load_run_config(config, overrides)
    m: ModelConfig = model_config_for_plan(cfg)
    tokens = cfg.train.batch_size * cfg.data.max_length
    n = matmul_params(m)
    n_blocks = n - m.hidden_size * m.vocab_size
    attention = _formula_attention(config, *overrides)
    return 6 * n * tokens + attention, 2 * n_blocks * tokens + attention / 3


def _check_consistent(plan: dict) -> None:
    assert all(key in plan for key in KEYS)
    assert plan["fits"] == (plan["peak_bytes_per_chip"] <= plan["hbm_bytes_per_chip"])
    assert 0 < plan["peak_bytes_per_chip"]
    assert plan["flops_per_step"] == pytest.approx(plan["flops_per_chip"] * plan["chips"])
    assert plan["step_time_s"] == pytest.approx(max(
        plan["flops_per_chip"] / plan["peak_flops_per_chip"],
        plan["bytes_accessed_per_chip"] / plan["hbm_bandwidth_per_chip"]))
    assert plan["mfu"] == pytest.approx(plan["model_flops_per_step"] / (
        plan["chips"] * plan["peak_flops_per_chip"] * plan["step_time_s"]))
    assert 0 < plan["mfu"] <= 1.0


@compiles
def test_tiny_on_v5p_8_compiles_with_consistent_numbers(capsys):
    plan = _plan_json(capsys, TINY, "v5p-8", *DENSE, "model.remat=none")
    _check_consistent(plan)
    assert (plan["target"], plan["chips"], plan["topology"]) == ("v5p-8", 4, "2x2x1")
    assert plan["hbm_bytes_per_chip"] == 95 * 2**30 and plan["fits"] is True
    assert plan["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    expected, _ = _formula(TINY, *DENSE)
    assert plan["flops_per_step"] == pytest.approx(expected, rel=0.15)
    assert plan["model_flops_per_step"] == pytest.approx(expected, rel=1e-6)


@compiles
def test_full_remat_costs_about_one_more_forward(capsys):
    none = _plan_json(capsys, TINY, "v5p-8", *DENSE, "model.remat=none")
    full = _plan_json(capsys, TINY, "v5p-8", *DENSE, "model.remat=full")
    _, forward = _formula(TINY, *DENSE)
    assert full["flops_per_step"] - none["flops_per_step"] == pytest.approx(forward, rel=0.25)
    assert full["model_flops_per_step"] == none["model_flops_per_step"]  # MFU convention
    assert full["temp_bytes"] < none["temp_bytes"]


@compiles
def test_accumulation_and_the_splash_kernel_are_counted(capsys):
    one = _plan_json(capsys, TINY, "v5p-8", *DENSE, "model.remat=none")
    two = _plan_json(capsys, TINY, "v5p-8", *DENSE, "model.remat=none", "train.micro_batches=2")
    # XLA counts the accumulation loop's body once; the plan scales it by the micro-batches.
    assert two["flops_per_step"] == pytest.approx(one["flops_per_step"], rel=0.02)
    # The TPU kernels: splash attention, causal, which XLA's cost analysis cannot see into.
    splash = _plan_json(capsys, TINY, "v5p-8", "model.kernels=auto", "model.remat=none")
    assert any("splash attention" in note for note in splash["notes"])
    full, _ = _formula(TINY, *DENSE)
    causal = full - _formula_attention(TINY) / 2
    assert splash["flops_per_step"] == pytest.approx(causal, rel=0.15)
    assert splash["model_flops_per_step"] == pytest.approx(causal, rel=1e-6)


@compiles
def test_the_layer_scan_and_the_chunked_head_loss_are_counted(capsys):
    # 4 x 2048 tokens on the TPU kernels: the head loss runs over two chunks of positions, and
    # with the layer scan the blocks are one loop too; XLA counts a loop body once (counted
    # as loops, this step reads about 25% low).
    long = ("model.kernels=auto", "model.remat=full", "train.batch_size=4",
            "data.sources.0.dataset.max_length=2048")
    scanned = _plan_json(capsys, TINY, "v5p-8", *long, "model.scan_layers=true")
    _check_consistent(scanned)
    m = model_config_for_plan(load_run_config(TINY, long))
    tokens = 4 * 2048
    full, forward = _formula(TINY, *DENSE, *long[1:])
    attention = _formula_attention(TINY, *long[1:])
    # Causal splash (half the dense attention), one more forward of the blocks (full remat),
    # and the chunked head's logits made again in the backward pass.
    expected = (full - attention / 2) + (forward - attention / 6) + (
        2 * m.hidden_size * m.vocab_size * tokens)
    assert scanned["flops_per_step"] == pytest.approx(expected, rel=0.1)


@compiles
def test_text_report_names_the_verdict(capsys):
    assert main(["plan", "--config", TINY, "--target", "v5p-8", *DENSE]) == 0
    out = capsys.readouterr().out
    assert "v5p-8: 4 chips on 1 host(s), topology 2x2x1" in out
    assert "of 95.0 GiB HBM: fits" in out and "MFU <=" in out


@compiles
def test_a_run_that_does_not_fit_gets_a_change_that_does(capsys):
    # 2048 x 512 tokens of the tiny model on one 16 GiB v5e chip: the activations do not fit.
    big = (*DENSE, "model.remat=none", "train.batch_size=2048",
           "data.sources.0.dataset.max_length=512")
    report = _plan_json(capsys, TINY, "v5litepod-1", *big)
    assert report["fits"] is False and report["peak_bytes_per_chip"] > 16 * 2**30
    suggestion = report["suggestion"]
    assert suggestion["fits"] is True, report["tried"]
    assert suggestion["overrides"][0] == "model.scan_layers=true"  # the first, free change
    assert suggestion["peak_bytes_per_chip"] <= suggestion["hbm_bytes_per_chip"]
    assert report["tried"][-1]["overrides"] == suggestion["overrides"]
    assert main(["plan", "--config", TINY, "--target", "v5litepod-1", "--no-suggest",
                 *big]) == 3
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_unknown_target_lists_the_known_ones(capsys):
    assert main(["plan", "--config", TINY, "--target", "v9-8"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unsupported TPU generation 'v9'" in err
    for known in ("v4-8", "v5p-16", "v5litepod-1", "v6e-256"):
        assert known in err


@compiles
@pytest.mark.parametrize(("override", "message"), [
    ("mesh.data=3", "mesh.data=3 cannot tile them (4 is not a multiple of 3)"),
    ("mesh.tensor=8", "mesh.tensor=8 cannot tile them"),
])
def test_a_mesh_that_cannot_tile_the_slice_names_the_axis(capsys, override, message):
    assert main(["plan", "--config", TINY, "--target", "v5p-8", override]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert message in err and "4 chips of v5p-8" in err


@compiles
def test_a_mesh_axis_that_would_split_the_torus_is_named():
    cfg = load_run_config(TINY, ["mesh.data=2", "mesh.fsdp=32", "mesh.tensor=1"])
    devices = topology_devices(parse_tpu_type("v5p-128"))  # a 4x4x4 torus
    from train_jax.config.loading import ConfigError

    with pytest.raises(ConfigError, match=r"mesh.fsdp=32 cannot be made of whole sides of the "
                                          r"4x4x4 chip grid"):
        build_mesh(cfg.mesh, devices, "chips of v5p-128")


def hide_libtpu(monkeypatch, tmp_path):
    """No libtpu anywhere the plan looks: not in the environment, importable or side-installed."""
    from train_jax.train import tpu_compile

    monkeypatch.delenv("TPU_LIBRARY_PATH", raising=False)
    monkeypatch.setitem(sys.modules, "libtpu", None)  # `import libtpu` now fails
    monkeypatch.setattr(tpu_compile, "SIDE_LIBTPU_DIR", tmp_path / "no-libtpu")


def test_missing_libtpu_is_one_line(capsys, monkeypatch, tmp_path):
    hide_libtpu(monkeypatch, tmp_path)
    assert main(["plan", "--config", TINY, "--target", "v5p-8"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "needs libtpu" in err and "make setup" in err and "'libtpu==0." in err


def test_libtpu_is_found_beside_the_environment_not_in_it():
    # vLLM takes an importable libtpu for a TPU host and refuses to start on CPU/GPU hosts.
    import importlib.util

    from train_jax.train.tpu_compile import libtpu_library_path

    assert importlib.util.find_spec("libtpu") is None
    path = libtpu_library_path()
    assert path is not None and Path(path).is_file()


def test_json_and_topology_need_a_target(capsys):
    assert main(["plan", "--config", TINY, "--json"]) == 1
    assert "need --target" in capsys.readouterr().err


@pytest.mark.parametrize("config", sorted((REPO / "configs" / "train" / "tpu").glob("*.yaml")))
def test_shipped_tpu_configs_load_and_read_their_architecture(config):
    cfg = load_run_config(config)
    model_cfg = model_config_for_plan(cfg)  # config.json alone, from configs/models/
    assert Path(cfg.model.path).parent == Path("configs/models")
    assert not list(Path(cfg.model.path).glob("*.safetensors"))
    assert cfg.model.dtype == "bfloat16" and model_cfg.num_hidden_layers > 0
    target = config.stem.rsplit("-", 2)
    assert parse_tpu_type("-".join(target[-2:])).chips > 0


@compiles
@pytest.mark.slow  # about 90 s of compiling here
def test_smollm2_on_v5p_8_compiles_with_consistent_numbers(capsys):
    small = (*DENSE, "model.remat=none", "train.batch_size=16")  # 16 x 2048 tokens
    plan = _plan_json(capsys, SMOLLM2, "v5p-8", *small)
    _check_consistent(plan)
    assert plan["fits"] is True and plan["chips"] == 4
    expected, _ = _formula(SMOLLM2, *small)
    assert plan["flops_per_step"] == pytest.approx(expected, rel=0.15)
