"""A Llama-family decoder in Flax NNX (Llama 2/3, SmolLM2, Qwen2/2.5, Mistral).

Read top to bottom: RMSNorm, Linear (with optional LoRA), Attention, MLP, Block,
LlamaForCausalLM. Shapes: B batch, T length, D hidden, N query heads, K kv heads,
H head_dim, F mlp width, V vocab. The ops inside (attention, norm, gate, products, head loss)
come from the kernel backend named by `cfg.kernels` (`kernels.backend.kernel_ops`); each block
is rematerialised as `cfg.remat` says. Parameter names follow the Hugging Face checkpoint
(`layers.0.self_attn.q_proj.kernel` is `model.layers.0.self_attn.q_proj.weight`.T), so the
converter is a rename plus transpose.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from train_jax.model import axes
from train_jax.model.config import LoraSpec, ModelConfig, RematPolicy
from train_jax.model.kernels.backend import kernel_ops
from train_jax.model.loops import scan_unroll
from train_jax.model.rope import rope_cos_sin, rope_inv_freq

# Names of the attention projections' outputs, which `remat: save_qkvo` keeps.
QKVO_NAMES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoraParam(nnx.Param):
    """A LoRA adapter weight: trained in LoRA mode, merged into the base kernel on export."""


def _param(value: jax.Array, logical_axes: axes.LogicalAxes, kind: type[nnx.Param] = nnx.Param) -> nnx.Param:
    # Logical names are plain metadata: train_jax.sharding maps them to mesh axes.
    return kind(value, logical_axes=logical_axes)


# --- Layers ---------------------------------------------------------------------------------

class RMSNorm(nnx.Module):
    """RMSNorm computed in float32, scaled in the input dtype (as transformers does)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        del rngs
        self.eps, self.kernels = cfg.rms_norm_eps, cfg.kernels
        self.scale = _param(jnp.ones((cfg.hidden_size,), cfg.param_dtype), (axes.NORM,))

    def __call__(self, x: jax.Array) -> jax.Array:
        return kernel_ops(self.kernels).rms_norm(x, self.scale[...], self.eps)


class Linear(nnx.Module):
    """y = x W + b, plus (alpha / r) * dropout(x) A B when LoRA targets this projection."""

    def __init__(self, in_features: int, out_features: int, logical_axes: axes.LogicalAxes,
                 cfg: ModelConfig, *, use_bias: bool, lora: LoraSpec | None, rngs: nnx.Rngs,
                 init_std: float = 0.02):
        self.dtype, self.kernels = jnp.dtype(cfg.dtype), cfg.kernels
        kernel = init_std * jax.random.normal(rngs.params(), (in_features, out_features))
        self.kernel = _param(kernel.astype(cfg.param_dtype), logical_axes)
        self.bias = (_param(jnp.zeros((out_features,), cfg.param_dtype), (logical_axes[1],))
                     if use_bias else None)
        self.lora_scale = lora.scale if lora else 0.0
        # False computes the base projection alone: the DPO reference of a LoRA run is the
        # same weights with the adapters off (`LlamaForCausalLM.set_lora_enabled`).
        self.lora_enabled = True
        if lora:
            bound = 1.0 / math.sqrt(in_features)  # PEFT's kaiming-uniform(a=sqrt(5)) bound
            a = jax.random.uniform(rngs.params(), (in_features, lora.rank), minval=-bound, maxval=bound)
            self.lora_a = _param(a.astype(cfg.param_dtype), (logical_axes[0], axes.LORA_RANK), LoraParam)
            self.lora_b = _param(jnp.zeros((lora.rank, out_features), cfg.param_dtype),
                                 (axes.LORA_RANK, logical_axes[1]), LoraParam)
            self.lora_dropout = nnx.Dropout(lora.dropout, rngs=rngs) if lora.dropout > 0 else None
        else:
            self.lora_a = self.lora_b = self.lora_dropout = None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        y = kernel_ops(self.kernels).dense(x, self.kernel[...])
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        if self.lora_a is not None and self.lora_enabled:
            h = self.lora_dropout(x) if self.lora_dropout is not None else x
            low_rank = (h @ self.lora_a[...].astype(self.dtype)) @ self.lora_b[...].astype(self.dtype)
            y = y + self.lora_scale * low_rank
        return y


def _lora_for(cfg: ModelConfig, name: str) -> LoraSpec | None:
    return cfg.lora if cfg.lora is not None and name in cfg.lora.targets else None


class Attention(nnx.Module):
    """Grouped-query attention with RoPE; masks by causality and by packed segment."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = n, k, h
        self.kernels = cfg.kernels
        bias = cfg.attention_bias

        def linear(name, fan_in, fan_out, logical, use_bias):
            return Linear(fan_in, fan_out, logical, cfg, use_bias=use_bias,
                          lora=_lora_for(cfg, name), rngs=rngs)

        self.q_proj = linear("q_proj", d, n * h, (axes.EMBED, axes.HEADS), bias)
        self.k_proj = linear("k_proj", d, k * h, (axes.EMBED, axes.KV_HEADS), bias)
        self.v_proj = linear("v_proj", d, k * h, (axes.EMBED, axes.KV_HEADS), bias)
        self.o_proj = linear("o_proj", n * h, d, (axes.HEADS, axes.EMBED), False)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
                 segment_ids: jax.Array | None) -> jax.Array:
        b, t, _ = x.shape
        q = checkpoint_name(self.q_proj(x), "q_proj").reshape(b, t, self.num_heads, self.head_dim)
        k = checkpoint_name(self.k_proj(x), "k_proj").reshape(b, t, self.num_kv_heads, self.head_dim)
        v = checkpoint_name(self.v_proj(x), "v_proj").reshape(b, t, self.num_kv_heads, self.head_dim)
        q = axes.constrain(q, axes.ACT_BTNH)  # (B, T, N, H)
        k = axes.constrain(k, axes.ACT_BTKH)  # (B, T, K, H)
        v = axes.constrain(v, axes.ACT_BTKH)
        out = kernel_ops(self.kernels).attention(q, k, v, segment_ids, rope=(cos, sin))
        return checkpoint_name(self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim)),
                               "o_proj")


class MLP(nnx.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, f, bias = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.kernels = cfg.kernels
        self.gate_proj = Linear(d, f, (axes.EMBED, axes.MLP), cfg, use_bias=bias,
                                lora=_lora_for(cfg, "gate_proj"), rngs=rngs)
        self.up_proj = Linear(d, f, (axes.EMBED, axes.MLP), cfg, use_bias=bias,
                              lora=_lora_for(cfg, "up_proj"), rngs=rngs)
        self.down_proj = Linear(f, d, (axes.MLP, axes.EMBED), cfg, use_bias=bias,
                                lora=_lora_for(cfg, "down_proj"), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = kernel_ops(self.kernels).swiglu(self.gate_proj(x), self.up_proj(x))
        hidden = axes.constrain(hidden, axes.ACT_BTF)
        return self.down_proj(hidden)


class Block(nnx.Module):
    """Pre-norm decoder block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg, rngs=rngs)
        self.self_attn = Attention(cfg, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
                 segment_ids: jax.Array | None) -> jax.Array:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, segment_ids)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return axes.constrain(x, axes.ACT_BTD)


def _run_block(block: Block, x: jax.Array, cos: jax.Array, sin: jax.Array,
               segment_ids: jax.Array | None) -> jax.Array:
    return block(x, cos, sin, segment_ids)


def _saved_by(policy: RematPolicy) -> Callable[..., bool] | None:
    return {"full": None,  # only the block's inputs
            "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
            "save_qkvo": jax.checkpoint_policies.save_only_these_names(*QKVO_NAMES)}[policy]


def block_runner(policy: RematPolicy) -> Callable[..., jax.Array]:
    """`_run_block`, rematerialised per block as `policy` says (`config.RematPolicy`)."""
    if policy == "none":
        return _run_block
    return nnx.remat(_run_block, policy=_saved_by(policy))


def scan_blocks(blocks: nnx.List, x: jax.Array, cos: jax.Array, sin: jax.Array,
                segment_ids: jax.Array | None, cfg: ModelConfig) -> jax.Array:
    """The blocks applied in order as one `lax.scan` over their stacked weights.

    The same values as the unrolled loop. The weights stay stored per block (checkpoints,
    conversion, LoRA and freezing see the same tree); they are stacked here, matrices cast to
    the compute dtype first so the stack and its gradient cost half a weight copy in bf16.
    In exchange the compiler sees one block body: one block's gathered (fsdp) weights and
    temporaries are alive at a time, where an unrolled stack lets it schedule every
    block's all-gathers early and keep them (docs/BENCHMARKS.md, AOT plan vs MaxText).
    """
    dtype = jnp.dtype(cfg.dtype)
    graphdef, first = nnx.split(blocks[0])
    states = [first, *(nnx.split(block)[1] for block in blocks[1:])]

    def stack(*leaves: jax.Array) -> jax.Array:
        return jnp.stack([leaf.astype(dtype) if leaf.ndim == 2 else leaf for leaf in leaves])

    stacked = jax.tree.map(stack, *states)

    def one_block(state: nnx.State, h: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, state)(h, cos, sin, segment_ids)

    if cfg.remat != "none":
        one_block = jax.checkpoint(one_block, policy=_saved_by(cfg.remat))
    x, _ = jax.lax.scan(lambda h, state: (one_block(state, h), None), x, stacked,
                        unroll=scan_unroll())
    return x


class LlamaForCausalLM(nnx.Module):
    """The decoder with its LM head; `__call__` returns float32 logits (B, T, V)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        embedding = 0.02 * jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.hidden_size))
        self.embed_tokens = nnx.Dict(
            embedding=_param(embedding.astype(cfg.param_dtype), (axes.VOCAB, axes.EMBED)))
        self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg, rngs=rngs)
        self.lm_head = (None if cfg.tie_word_embeddings else
                        Linear(cfg.hidden_size, cfg.vocab_size, (axes.EMBED, axes.VOCAB), cfg,
                               use_bias=False, lora=None, rngs=rngs))

    def __call__(self, input_ids: jax.Array, positions: jax.Array | None = None,
                 segment_ids: jax.Array | None = None) -> jax.Array:
        x = self.final_hidden(input_ids, positions, segment_ids)
        if self.lm_head is None:
            logits = kernel_ops(self.cfg.kernels).dense_transposed(
                x, self.embed_tokens["embedding"][...])
        else:
            logits = self.lm_head(x)
        return axes.constrain(logits.astype(jnp.float32), axes.ACT_BTV)

    def set_lora_enabled(self, enabled: bool) -> None:
        """Switch every LoRA adapter on or off; off, the model computes exactly its base
        weights (the adapters are skipped, not zeroed). A no-op without LoRA."""
        for block in self.layers:
            attn, mlp = block.self_attn, block.mlp
            for linear in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj,
                           mlp.gate_proj, mlp.up_proj, mlp.down_proj):
                linear.lora_enabled = enabled

    def token_losses(self, input_ids: jax.Array, targets: jax.Array,
                     positions: jax.Array | None = None,
                     segment_ids: jax.Array | None = None) -> jax.Array:
        """float32 (B, T) cross-entropy of the next-token distribution at `targets`.

        The same values as a cross-entropy of `__call__`'s logits, without materialising
        them in (B, T, V): the head and the loss are one fused op (`head_loss`).
        """
        x = self.final_hidden(input_ids, positions, segment_ids)
        if self.lm_head is None:
            table = self.embed_tokens["embedding"][...]
        else:
            table = self.lm_head.kernel[...].T  # (V, D); the head has no bias and no LoRA
        return kernel_ops(self.cfg.kernels).head_cross_entropy(x, table, targets)

    def final_hidden(self, input_ids: jax.Array, positions: jax.Array | None = None,
                     segment_ids: jax.Array | None = None) -> jax.Array:
        """The final-norm hidden states (B, T, D) in the compute dtype, before the head."""
        cfg = self.cfg
        dtype = jnp.dtype(cfg.dtype)
        b, t = input_ids.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        cos, sin = rope_cos_sin(positions, rope_inv_freq(cfg))
        table = self.embed_tokens["embedding"][...]
        x = axes.constrain(jnp.take(table, input_ids, axis=0).astype(dtype), axes.ACT_BTD)
        if cfg.scan_layers:
            return self.norm(scan_blocks(self.layers, x, cos, sin, segment_ids, cfg))
        run_block = block_runner(cfg.remat)
        for block in self.layers:
            x = run_block(block, x, cos, sin, segment_ids)
        return self.norm(x)


def init_model(cfg: ModelConfig, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised model (std 0.02 normal kernels, unit norms, zero LoRA B)."""
    return LlamaForCausalLM(cfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
