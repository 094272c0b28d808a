"""Run config loading: overrides, validation messages, the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from train_jax.config import ConfigError, load_run_config

REPO = Path(__file__).resolve().parents[3]
SHIPPED = sorted((REPO / "configs" / "train").glob("*.yaml"))
MINIMAL = {
    "model": {"path": "some/model"},
    "data": {"sources": [{"dataset": {"task": "viggo", "train_file": "data/viggo/train.csv"}}]},
}


@pytest.fixture
def minimal(tmp_path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    return path


def test_defaults_and_overrides(minimal):
    cfg = load_run_config(minimal, ["train.steps=7", "optimizer.learning_rate=3e-5",
                                    "mesh.tensor=2", "data.sources.0.dataset.max_length=128",
                                    "method.lora.targets=[q_proj,k_proj]"])
    assert cfg.train.steps == 7 and cfg.optimizer.learning_rate == 3e-5
    assert cfg.mesh.tensor == 2 and cfg.mesh.fsdp == -1
    assert cfg.data.max_length == 128
    assert cfg.method.lora.targets == ("q_proj", "k_proj")


def test_kernels_and_remat_default_to_auto_and_none(minimal):
    cfg = load_run_config(minimal)
    assert (cfg.model.kernels, cfg.model.remat) == ("auto", "none")
    cfg = load_run_config(minimal, ["model.kernels=reference", "model.remat=save_qkvo"])
    assert (cfg.model.kernels, cfg.model.remat) == ("reference", "save_qkvo")


def test_model_shorthand_replaces_a_random_init(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "model": {"architecture": {"model_type": "llama"},
                                                         "tokenizer": "tok"}}))
    cfg = load_run_config(path, ["model=/models/smol"])
    assert cfg.model.path == "/models/smol" and cfg.model.architecture is None


@pytest.mark.parametrize("override, message", [
    ("train.stepz=3", "unknown key train.stepz; valid keys in train: steps"),
    ("train.steps=abc", "train.steps must be an integer, got 'abc'"),
    ("train.steps=1.5", "train.steps must be an integer"),
    ("optimizer.schedule=exp", "optimizer.schedule must be one of constant, linear, cosine"),
    ("checkpoint.async_save=3", "checkpoint.async_save must be true or false"),
    ("bogus=1", "unknown key bogus"),
    ("mesh.data=0", "mesh.data=0"),
    ("train.batch_size=6", "multiple of train.micro_batches"),
    ("train.steps", "must look like key=value"),
    ("data.sources.3.weight=1", "data.sources.3 is not an index"),
    ("data.sources.0.dataset.task=poetry", "task must be one of"),
    ("model.kernels=cuda", "model.kernels must be one of auto, reference, xla_cpu, tpu, gpu"),
    # remat was a boolean: an old config says which policies replace it.
    ("model.remat=true", "model.remat must be one of none, full, save_dots, save_qkvo; got True"),
    ("model.remat=false", "model.remat must be one of none, full, save_dots, save_qkvo"),
])
def test_bad_keys_and_values_are_named(minimal, override, message):
    extra = ["train.micro_batches=4"] if "batch_size" in override else []
    with pytest.raises(ConfigError, match=None) as info:
        load_run_config(minimal, [*extra, override])
    assert message in str(info.value)


def test_stage_overrides_are_validated(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "stages": [{"train": {"steps": 5}},
                                                          {"train": {"stepz": 5}}]}))
    with pytest.raises(ConfigError, match="stages.1: unknown key train.stepz"):
        load_run_config(path)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_accept_the_documented_overrides(path, tmp_path):
    overrides = ["model=/models/base", f"run_dir={tmp_path}", "train.steps=3", "train.seed=5",
                 "checkpoint.every=2", "mesh.data=1", "mesh.fsdp=2", "mesh.tensor=1"]
    cfg = load_run_config(path, overrides)
    assert cfg.model.path == "/models/base" and cfg.run_dir == str(tmp_path)
    assert (cfg.train.steps, cfg.train.seed, cfg.checkpoint.every) == (3, 5, 2)
    assert (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor) == (1, 2, 1)
    for source in cfg.data.sources:
        assert (REPO / source.dataset.train_file).is_file()


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_a_run_config_round_trips_through_its_plain_dict(path):
    # Training stages are derived from the typed config's dict, so nothing may get lost there.
    from train_jax.config.run_config import run_config_from_dict

    cfg = load_run_config(path, ["model=/models/base", "train.steps=7"])
    assert run_config_from_dict(cfg.to_dict()) == cfg


def test_objective_and_data_task_must_agree():
    configs = REPO / "configs" / "train"
    with pytest.raises(ConfigError, match="only objective.name=dpo trains on"):
        load_run_config(configs / "tiny_dpo.yaml", ["objective.name=sft"])
    with pytest.raises(ConfigError, match="every data source needs task: preference"):
        load_run_config(configs / "tiny.yaml", ["objective.name=dpo"])
    assert load_run_config(configs / "tiny_dpo.yaml").objective.name == "dpo"


def test_the_layer_scan_refuses_lora_dropout():
    tiny = REPO / "configs" / "train" / "tiny.yaml"
    lora = ["method.name=lora", "model.scan_layers=true"]
    with pytest.raises(ConfigError, match="model.scan_layers=true does not support "
                                          r"method.lora.dropout > 0 \(got 0.1\)"):
        load_run_config(tiny, [*lora, "method.lora.dropout=0.1"])
    assert load_run_config(tiny, [*lora, "method.lora.dropout=0"]).model.scan_layers is True
