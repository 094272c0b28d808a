"""The one mapping between Flax parameter paths and Hugging Face tensor names.

Flax paths mirror HF names: `('layers', 0, 'self_attn', 'q_proj', 'kernel')` is
`model.layers.0.self_attn.q_proj.weight` transposed (kernels are (in, out), HF weights are
(out, in)); embeddings, norms and biases are stored as-is. LoRA leaves (`lora_a` (in, r),
`lora_b` (r, out)) have no HF base name; `peft_name` gives their PEFT adapter name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx, traverse_util

from train_jax.model.config import ModelConfig
from train_jax.model.llama import LlamaForCausalLM

Path = tuple[Any, ...]
LORA_LEAVES = ("lora_a", "lora_b")


def hf_name(path: Path) -> tuple[str, bool]:
    """(HF tensor name, whether the array is transposed between the two layouts)."""
    *parents, leaf = (str(p) for p in path)
    if leaf in LORA_LEAVES:
        raise ValueError(f"LoRA leaf {'.'.join(map(str, path))} has no HF base tensor name")
    prefix = "" if parents and parents[0] == "lm_head" else "model."
    if leaf == "embedding":
        return prefix + ".".join(parents) + ".weight", False
    if leaf == "scale":
        return prefix + ".".join(parents) + ".weight", False
    if leaf == "kernel":
        return prefix + ".".join(parents) + ".weight", True
    if leaf == "bias":
        return prefix + ".".join(parents) + ".bias", False
    raise ValueError(f"no HF name for parameter {'.'.join(map(str, path))}")


def peft_name(path: Path) -> str:
    """PEFT adapter tensor name of a LoRA leaf (A and B are stored transposed)."""
    *parents, leaf = (str(p) for p in path)
    which = {"lora_a": "lora_A", "lora_b": "lora_B"}[leaf]
    return "base_model.model.model." + ".".join(parents) + f".{which}.weight"


def expected_shapes(cfg: ModelConfig) -> dict[Path, jax.ShapeDtypeStruct]:
    """Flat {path: ShapeDtypeStruct} of the base parameters (no LoRA), computed from the config.

    Equal to the shapes of `nnx.eval_shape(LlamaForCausalLM)` (a test checks it), without its
    cost of tracing every layer's initialiser (seconds for a 30-layer model).
    """
    dtype = jax.numpy.dtype(cfg.param_dtype)
    d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    shapes: dict[Path, tuple[int, ...]] = {("embed_tokens", "embedding"): (v, d)}
    projections = {"self_attn": {"q_proj": (d, q, cfg.attention_bias), "k_proj": (d, kv, cfg.attention_bias),
                                 "v_proj": (d, kv, cfg.attention_bias), "o_proj": (q, d, False)},
                   "mlp": {"gate_proj": (d, f, cfg.mlp_bias), "up_proj": (d, f, cfg.mlp_bias),
                           "down_proj": (f, d, cfg.mlp_bias)}}
    for i in range(cfg.num_hidden_layers):
        shapes[("layers", i, "input_layernorm", "scale")] = (d,)
        shapes[("layers", i, "post_attention_layernorm", "scale")] = (d,)
        for module, projs in projections.items():
            for name, (fan_in, fan_out, bias) in projs.items():
                shapes[("layers", i, module, name, "kernel")] = (fan_in, fan_out)
                if bias:
                    shapes[("layers", i, module, name, "bias")] = (fan_out,)
    shapes[("norm", "scale")] = (d,)
    if not cfg.tie_word_embeddings:
        shapes[("lm_head", "kernel")] = (d, v)
    return {path: jax.ShapeDtypeStruct(shape, dtype) for path, shape in shapes.items()}


def checkpoint_param_paths(cfg: ModelConfig) -> list[Path]:
    """Paths of the params tree a checkpoint of this config holds: base parameters plus LoRA leaves."""
    paths = list(expected_shapes(cfg))
    if cfg.lora is None:
        return paths
    adapted = [(*path[:-1], leaf) for path in paths
               if path[-1] == "kernel" and path[0] == "layers" and path[-2] in cfg.lora.targets
               for leaf in LORA_LEAVES]
    return paths + adapted


def model_param_shapes(cfg: ModelConfig) -> dict[Path, jax.ShapeDtypeStruct]:
    """The same as `expected_shapes` (plus LoRA leaves), read from the Flax model itself."""
    abstract = nnx.eval_shape(lambda: LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)))
    return flatten(nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))


def flatten(params: Mapping[str, Any]) -> dict[Path, Any]:
    """Flat {path tuple: leaf} view of a nested params dict."""
    return traverse_util.flatten_dict(params)


def unflatten(flat: Mapping[Path, Any]) -> dict[str, Any]:
    """Nested params dict from a flat {path tuple: leaf} mapping."""
    return traverse_util.unflatten_dict(dict(flat))
