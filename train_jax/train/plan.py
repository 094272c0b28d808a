"""The sharding plan of a run, computed from shapes only (no weights, no devices needed).

For the configured mesh it lists each parameter's partition spec and bytes per device, and
estimates per-device memory for parameters, gradients, AdamW moments and activations, so a
layout can be checked before paying for the hardware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from train_jax.config.run_config import RunConfig
from train_jax.model.config import ModelConfig
from train_jax.model.llama import init_model
from train_jax.sharding.mesh import resolve_mesh_shape
from train_jax.sharding.rules import MESH_AXES, logical_to_spec
from train_jax.sharding.specs import variable_logical_axes
from train_jax.train.partition import trainable_filter


@dataclass(frozen=True)
class MeshShape:
    """Axis sizes of a mesh that need not exist here (what `logical_to_spec` reads)."""

    shape: dict[str, int]


@dataclass(frozen=True)
class ParamPlan:
    path: str
    shape: tuple[int, ...]
    dtype: str
    spec: str
    trainable: bool
    bytes_per_device: int


@dataclass
class Plan:
    """The per-parameter table and the per-device memory estimate."""

    mesh: dict[str, int]
    params: list[ParamPlan] = field(default_factory=list)
    activation_bytes: int = 0
    rows_per_device: float = 0.0

    @property
    def param_bytes(self) -> int:
        return sum(p.bytes_per_device for p in self.params)

    @property
    def grad_bytes(self) -> int:
        return sum(p.bytes_per_device for p in self.params if p.trainable)

    @property
    def optimizer_bytes(self) -> int:
        return 2 * self.grad_bytes  # AdamW first and second moments, sharded like the params

    @property
    def total_bytes(self) -> int:
        return self.param_bytes + self.grad_bytes + self.optimizer_bytes + self.activation_bytes


def model_config_for_plan(cfg: RunConfig) -> ModelConfig:
    """The model architecture of the run, read from config files only (no weights)."""
    from train_jax import checkpoint as ckpt
    from train_jax.model.kernels.backend import resolve_backend

    options = {"dtype": cfg.model.dtype, "param_dtype": cfg.model.param_dtype,
               "kernels": resolve_backend(cfg.model.kernels), "remat": cfg.model.remat,
               "scan_layers": cfg.model.scan_layers,
               "lora": cfg.method.lora if cfg.method.name == "lora" else None}
    if cfg.model.path is None:
        return ModelConfig.from_hf_config(dict(cfg.model.architecture or {}), **options)
    if ckpt.is_jaxtune_checkpoint(cfg.model.path):
        return ModelConfig.from_hf_config(ckpt.read_checkpoint_info(cfg.model.path).model_config,
                                          **options)
    return ModelConfig.from_hf_config(hf_config_only(cfg.model.path), **options)


def hf_config_only(name_or_path: str) -> dict[str, Any]:
    """The `config.json` of an HF folder (weights or not) or hub id: for a hub id only that
    file is fetched, so a plan never downloads weights."""
    from train_jax.convert.hf_import import MissingFileError, load_hf_config, resolve_model_dir

    local = Path(name_or_path).expanduser()
    if local.exists() or name_or_path.count("/") != 1 or name_or_path.startswith((".", "~")):
        return load_hf_config(resolve_model_dir(local))  # its errors say what is missing
    from huggingface_hub import hf_hub_download

    try:
        return load_hf_config(Path(hf_hub_download(name_or_path, "config.json")).parent)
    except Exception as exc:  # noqa: BLE001 - offline / unknown repo / gated all end here
        raise MissingFileError(
            f"model.path {name_or_path} is not a local folder and its config.json could not be "
            f"fetched from the Hugging Face hub ({type(exc).__name__}); point model.path at a "
            "folder holding its config.json (configs/models/ has some)") from None


def build_plan(cfg: RunConfig, num_devices: int, model_cfg: ModelConfig | None = None) -> Plan:
    """The plan of `cfg` on `num_devices` devices."""
    model_cfg = model_cfg or model_config_for_plan(cfg)
    sizes = dict(zip(MESH_AXES, resolve_mesh_shape(cfg.mesh, num_devices), strict=True))
    mesh = MeshShape(sizes)
    abstract = nnx.eval_shape(lambda: init_model(model_cfg, 0))
    flt = trainable_filter(cfg.method, model_cfg.num_hidden_layers, model_cfg.tie_word_embeddings)
    _, trainable, frozen, _ = nnx.split(abstract, flt, nnx.Param, ...)
    plan = Plan(mesh=sizes)
    for state, is_trainable in ((trainable, True), (frozen, False)):
        for path, var in nnx.to_flat_state(state):
            value = var.get_value()
            spec = logical_to_spec(variable_logical_axes(var), value.shape, mesh)
            shards = math.prod(_axis_product(sizes, entry) for entry in spec)
            nbytes = int(np.prod(value.shape)) * np.dtype(value.dtype).itemsize
            plan.params.append(ParamPlan(".".join(map(str, path)), tuple(value.shape),
                                         str(value.dtype), str(tuple(spec)), is_trainable,
                                         math.ceil(nbytes / shards)))
    plan.params.sort(key=lambda p: p.path)
    plan.rows_per_device = cfg.train.batch_size / cfg.train.micro_batches / (
        sizes["data"] * sizes["fsdp"])
    plan.activation_bytes = activation_bytes(model_cfg, plan.rows_per_device,
                                             cfg.data.max_length, sizes["tensor"])
    return plan


def _axis_product(sizes: dict[str, int], entry: Any) -> int:
    if entry is None:
        return 1
    names = (entry,) if isinstance(entry, str) else entry
    return math.prod(sizes[n] for n in names)


def activation_bytes(cfg: ModelConfig, rows: float, length: int, tensor: int) -> int:
    """Rough peak bytes of activations kept for the backward pass of one micro-batch.

    Per layer and token: about 8 hidden-size vectors (residuals, norms, attention output),
    q/k/v, 4 mlp-width vectors (gate, up, silu, product; split over tensor) and the attention
    scores and probabilities (heads x length, split over tensor). With remat only each block's
    input is kept, plus one block's full set while it is recomputed. The float32 logits and
    their gradient (vocab split over tensor) come on top.
    """
    item = np.dtype(cfg.dtype).itemsize
    d, f, t = cfg.hidden_size, cfg.intermediate_size, length
    qkv = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim
    per_token = (8 * d + (qkv + 4 * f + 2 * cfg.num_attention_heads * t) / tensor) * item
    per_layer = rows * t * per_token
    remat = cfg.remat != "none"  # every policy recomputes at least the attention and the MLP
    layers = (cfg.num_hidden_layers * rows * t * d * item + per_layer) if remat else (
        cfg.num_hidden_layers * per_layer)
    logits = 2 * rows * t * cfg.vocab_size * 4 / tensor
    return int(layers + logits)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def render_plan(plan: Plan, cfg: RunConfig) -> str:
    """The plan as a text table plus the memory summary."""
    head = ("parameter", "shape", "dtype", "partition spec", "per device", "train")
    rows = [(p.path, "x".join(map(str, p.shape)), p.dtype, p.spec, format_bytes(p.bytes_per_device),
             "yes" if p.trainable else "no") for p in plan.params]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    summary = (f"mesh {plan.mesh} ({math.prod(plan.mesh.values())} devices), method "
               f"{cfg.method.name}, batch {cfg.train.batch_size} x {cfg.data.max_length} tokens "
               f"in {cfg.train.micro_batches} micro-batch(es): {plan.rows_per_device:g} rows per "
               "device per pass")
    lines = [summary, ""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines += ["", "per-device memory estimate:",
              f"  parameters        {format_bytes(plan.param_bytes)}",
              f"  gradients         {format_bytes(plan.grad_bytes)}",
              f"  optimizer (AdamW) {format_bytes(plan.optimizer_bytes)}",
              (f"  activations       {format_bytes(plan.activation_bytes)} (estimate"
               f"{'' if cfg.model.remat == 'none' else f', remat {cfg.model.remat}'})"),
              f"  total             {format_bytes(plan.total_bytes)}"]
    return "\n".join(lines)
