"""HF -> jaxtune checkpoint -> HF is bit-exact; sharding, dtypes, tied heads, LoRA merge, PEFT."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open

from tests.fixtures.tiny_model import TINYSTORIES_DIR, build_tiny_hf_model
from train_jax import checkpoint as ckpt
from train_jax.convert import hf_export, names
from train_jax.convert.hf_import import from_hf
from train_jax.model.config import LoraSpec


def _read_hf(model_dir: Path) -> dict[str, np.ndarray]:
    index = model_dir / "model.safetensors.index.json"
    files = (sorted({model_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
             if index.is_file() else [model_dir / "model.safetensors"])
    out = {}
    for file in files:
        with safe_open(file, framework="flax") as handle:
            out.update({k: np.asarray(handle.get_tensor(k)) for k in handle.keys()})  # noqa: SIM118 (safe_open is not iterable)
    return out


def _assert_bit_exact(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name, value in a.items():
        assert value.dtype == b[name].dtype, name
        assert value.shape == b[name].shape, name
        assert value.tobytes() == b[name].tobytes(), name


def _import_export(src: Path, tmp: Path, **export_kwargs) -> Path:
    cfg, params = from_hf(src)
    ckpt.write_model_checkpoint(tmp / "ckpt", params, cfg, assets_from=src, source={"hf_dir": str(src)})
    hf_export.export_checkpoint(tmp / "ckpt", tmp / "out", **export_kwargs)
    return tmp / "out"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_round_trip_is_bit_exact_and_config_round_trips(dtype, tmp_path):
    src = build_tiny_hf_model(tmp_path / "src", dtype=dtype)
    out = _import_export(src, tmp_path)
    _assert_bit_exact(_read_hf(src), _read_hf(out))
    assert json.loads((out / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes(), name
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("slice_bytes", [None, 96])
def test_export_file_is_what_save_file_writes(dtype, slice_bytes, tmp_path, monkeypatch):
    # The export streams tensors (read, cast, transposed one at a time; weights needing no
    # conversion written in slices between the others); the file must be the one save_file
    # writes from the whole converted model (here fp32 -> bf16 casts as well).
    from safetensors.numpy import save_file

    if slice_bytes is not None:  # many slices, interleaved with the converted weights
        monkeypatch.setattr(hf_export, "_SLICE_BYTES", slice_bytes)
    out = _import_export(build_tiny_hf_model(tmp_path / "src", dtype="float32"), tmp_path, dtype=dtype)
    reference = {}
    for path, value in names.flatten(ckpt.restore_params(tmp_path / "ckpt")).items():
        name, transposed = names.hf_name(path)
        array = np.asarray(value).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32)
        reference[name] = np.ascontiguousarray(array.T) if transposed else array
    save_file(reference, tmp_path / "reference.safetensors", metadata={"format": "pt"})
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()


def test_pretrained_tied_model_round_trips_without_lm_head(tmp_path):
    out = _import_export(TINYSTORIES_DIR, tmp_path)
    tensors = _read_hf(out)
    assert "lm_head.weight" not in tensors
    assert tensors["model.embed_tokens.weight"].dtype == ml_dtypes.bfloat16
    _assert_bit_exact(_read_hf(TINYSTORIES_DIR), tensors)


def test_sharded_in_and_out(tmp_path):
    src = build_tiny_hf_model(tmp_path / "src")
    total = sum(a.nbytes for a in _read_hf(src).values())
    sharded = _import_export(src, tmp_path, max_shard_bytes=total // 3)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and not (sharded / "model.safetensors").exists()
    assert index["metadata"]["total_size"] == total
    for shard in shards:  # no shard above the limit unless it holds a single tensor
        with safe_open(sharded / shard, framework="flax") as handle:
            keys = list(handle.keys())
            assert len(keys) == 1 or sum(np.asarray(handle.get_tensor(k)).nbytes for k in keys) <= total // 3
    # Sharded folder in -> single file out, still bit-exact.
    again = _import_export(sharded, tmp_path / "again")
    assert (again / "model.safetensors").is_file()
    _assert_bit_exact(_read_hf(src), _read_hf(again))

    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 5, 9, 200, 7]])
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(src).eval()(ids).logits
        got = AutoModelForCausalLM.from_pretrained(sharded).eval()(ids).logits
    assert torch.equal(ref, got)


def test_export_dtype_choice(tmp_path):
    src = build_tiny_hf_model(tmp_path / "src", dtype="bfloat16")
    up = _import_export(src, tmp_path / "a", dtype="fp32")
    ref = _read_hf(src)
    got = _read_hf(up)
    assert all(a.dtype == np.float32 for a in got.values())
    assert all(np.array_equal(ref[k].astype(np.float32), got[k]) for k in ref)
    assert json.loads((up / "config.json").read_text())["dtype"] == "float32"
    # An fp16 base is exported as fp32 unless fp16 is asked for.
    fp16 = build_tiny_hf_model(tmp_path / "fp16", dtype="float16")
    assert all(a.dtype == np.float32 for a in _read_hf(_import_export(fp16, tmp_path / "b")).values())
    assert all(a.dtype == np.float16 for a in _read_hf(_import_export(fp16, tmp_path / "c", dtype="fp16")).values())


def _with_lora(params: dict, lora: LoraSpec, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    flat = names.flatten(params)
    for path in list(flat):
        if path[-1] == "kernel" and len(path) > 2 and path[-2] in lora.targets:
            fan_in, fan_out = flat[path].shape
            flat[(*path[:-1], "lora_a")] = rng.standard_normal((fan_in, lora.rank)).astype(np.float32)
            flat[(*path[:-1], "lora_b")] = rng.standard_normal((lora.rank, fan_out)).astype(np.float32)
    return names.unflatten(flat)


def test_lora_checkpoint_merges_and_writes_peft_adapter(tmp_path):
    src = build_tiny_hf_model(tmp_path / "src")
    lora = LoraSpec(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj"))
    cfg, params = from_hf(src, lora=lora)
    ckpt.write_model_checkpoint(tmp_path / "ckpt", _with_lora(params, lora), cfg, assets_from=src)
    assert ckpt.read_checkpoint_info(tmp_path / "ckpt").lora == lora
    hf_export.export_checkpoint(tmp_path / "ckpt", tmp_path / "merged", peft_adapter_dir=tmp_path / "peft")
    base, merged = _read_hf(src), _read_hf(tmp_path / "merged")
    assert sorted(base) == sorted(merged)  # adapter leaves dropped
    with safe_open(tmp_path / "peft" / "adapter_model.safetensors", framework="flax") as handle:
        adapter = {k: np.asarray(handle.get_tensor(k)) for k in handle.keys()}  # noqa: SIM118
    peft_cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert peft_cfg["r"] == 4 and peft_cfg["lora_alpha"] == 8.0
    assert len(adapter) == 2 * 3 * 2  # A and B, 3 targets, 2 layers
    # PEFT semantics: W_hf' = W_hf + (alpha / r) * lora_B.weight @ lora_A.weight.
    changed = 0
    for name in base:
        prefix = "base_model.model." + name.removesuffix(".weight")
        if f"{prefix}.lora_A.weight" in adapter:
            delta = adapter[f"{prefix}.lora_B.weight"] @ adapter[f"{prefix}.lora_A.weight"]
            np.testing.assert_allclose(merged[name], base[name] + 2.0 * delta, rtol=1e-5, atol=1e-5)
            changed += 1
        else:
            assert merged[name].tobytes() == base[name].tobytes(), name
    assert changed == 6


def test_import_errors(tmp_path):
    from train_jax.convert.errors import MissingFileError, ShapeMismatchError
    from train_jax.model.config import UnsupportedModelError

    with pytest.raises(MissingFileError, match="does not exist"):
        from_hf(tmp_path / "nope")
    src = build_tiny_hf_model(tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(UnsupportedModelError, match="supported: llama, qwen2, mistral"):
        from_hf(src)
    (src / "config.json").write_text(json.dumps({**config, "intermediate_size": 512}))
    with pytest.raises(ShapeMismatchError, match=r"layers\.0\.mlp\.gate_proj\.weight has shape \[256, 128\], "
                       r"but config.json implies \[512, 128\]"):
        from_hf(src)
    (src / "config.json").write_text(json.dumps(config))
    tensors = _read_hf(src)
    tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.int8)
    from safetensors.numpy import save_file

    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ShapeMismatchError, match="model.norm.weight has dtype int8; jaxtune imports"):
        from_hf(src)
    (src / "model.safetensors").unlink()
    with pytest.raises(MissingFileError, match="neither model.safetensors nor"):
        from_hf(src)


@pytest.mark.parametrize("family", ["qwen2_bias", "smollm2_like", "gqa_head_dim_32"])
def test_expected_shapes_match_the_flax_model(family):
    from tests.train_jax.model.hf_reference import BASE, FAMILIES
    from train_jax.model.config import ModelConfig

    cfg = ModelConfig.from_hf_config({**BASE, **FAMILIES[family]})
    assert names.expected_shapes(cfg) == names.model_param_shapes(cfg)
    lora_cfg = cfg.replace(lora=LoraSpec(targets=("q_proj", "up_proj")))
    with_lora = names.model_param_shapes(lora_cfg)
    assert {p for p in with_lora if p[-1] not in names.LORA_LEAVES} == set(names.expected_shapes(cfg))
    # The params tree a checkpoint of this config holds.
    assert sorted(names.checkpoint_param_paths(lora_cfg), key=str) == sorted(with_lora, key=str)
    assert sorted(names.checkpoint_param_paths(cfg), key=str) == sorted(names.expected_shapes(cfg), key=str)


def test_config_options_do_not_cast_weights_and_weight_dtype_does(tmp_path):
    cfg, params = from_hf(TINYSTORIES_DIR, dtype="bfloat16", param_dtype="float32")
    assert (cfg.dtype, cfg.param_dtype) == ("bfloat16", "float32")
    assert params["embed_tokens"]["embedding"].dtype == ml_dtypes.bfloat16  # as stored
    _, cast = from_hf(TINYSTORIES_DIR, weight_dtype="float32")
    assert cast["norm"]["scale"].dtype == np.float32
    np.testing.assert_array_equal(cast["norm"]["scale"], params["norm"]["scale"].astype(np.float32))


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    from train_jax.convert.errors import MissingFileError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingFileError, match="could not be downloaded from the Hugging Face hub"):
        from_hf("jaxtune-test/no-such-model")
