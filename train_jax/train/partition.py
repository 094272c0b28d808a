"""Split a model into trainable parameters, frozen parameters and the rest (dropout RNG).

Full fine-tuning trains every `nnx.Param`; LoRA trains only `LoraParam` adapters; "freeze"
trains the top N decoder blocks, the final norm and the LM head (the embedding too when it is
tied to the head). Trainable and frozen parameters travel as pure nested dicts (the pytree
of the checkpoint contract); `ModelParts.merge` rebuilds the NNX model inside a traced step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from train_jax.config.run_config import MethodConfig
from train_jax.model.llama import LlamaForCausalLM, LoraParam

PureTree = dict[str, Any]


def trainable_filter(method: MethodConfig, num_layers: int, tied: bool) -> Any:
    """The NNX filter selecting the trainable parameters of `method`."""
    if method.name == "full":
        return nnx.Param
    if method.name == "lora":
        return LoraParam
    first = num_layers - min(method.unfrozen_blocks, num_layers)

    def is_unfrozen(path: tuple[Any, ...], _value: Any) -> bool:
        head = path[0]
        if head == "layers":
            return int(path[1]) >= first
        return head in ("norm", "lm_head") or (tied and head == "embed_tokens")

    return nnx.All(nnx.Param, is_unfrozen)


@dataclass
class ModelParts:
    """The static graph of a model plus templates of its three state partitions."""

    graphdef: Any
    trainable: nnx.State
    frozen: nnx.State
    rest: nnx.State

    @classmethod
    def split(cls, model: LlamaForCausalLM, method: MethodConfig) -> tuple[ModelParts, PureTree,
                                                                           PureTree]:
        """Parts of `model` and its trainable / frozen parameters as pure dicts."""
        cfg = model.cfg
        flt = trainable_filter(method, cfg.num_hidden_layers, cfg.tie_word_embeddings)
        graphdef, trainable, frozen, rest = nnx.split(model, flt, nnx.Param, ...)
        parts = cls(graphdef, trainable, frozen, rest)
        return parts, trainable.to_pure_dict(), frozen.to_pure_dict()

    def merge(self, trainable: PureTree, frozen: PureTree, rng_index: jax.Array | int = 0,
              *, train: bool = True) -> LlamaForCausalLM:
        """The model with these parameters; dropout keys are folded with `rng_index`."""
        model = nnx.merge(self.graphdef, _filled(self.trainable, trainable),
                          _filled(self.frozen, frozen), _refreshed_rngs(self.rest, rng_index))
        if not train:
            model.eval()
        return model


def _filled(template: nnx.State, values: PureTree) -> nnx.State:
    state = jax.tree.map(lambda x: x, template)  # fresh Variables; the template stays intact
    nnx.replace_by_pure_dict(state, values)
    return state


def _refreshed_rngs(rest: nnx.State, rng_index: jax.Array | int) -> nnx.State:
    # Dropout keys depend only on (initial key, step): a resumed run draws the same masks.
    def refresh(var: Any) -> Any:
        if isinstance(var, nnx.RngKey):
            return var.replace(jax.random.fold_in(var[...], rng_index))
        if isinstance(var, nnx.RngCount):
            return var.replace(jnp.zeros_like(var[...]))
        return var

    return jax.tree.map(refresh, rest, is_leaf=lambda x: isinstance(x, nnx.Variable))


def merge_pure(*trees: PureTree) -> PureTree:
    """Deep-merge disjoint nested dicts (trainable + frozen -> the full params tree)."""
    out: PureTree = {}
    for tree in trees:
        for key, value in tree.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge_pure(out[key], value)
            elif isinstance(value, dict):
                out[key] = merge_pure(value)
            else:
                out[key] = value
    return out


def select_pure(full: PureTree, like: PureTree) -> PureTree:
    """The sub-tree of `full` with the keys of `like` (full params -> trainable or frozen)."""
    return {k: select_pure(full[k], v) if isinstance(v, dict) else full[k]
            for k, v in like.items()}
