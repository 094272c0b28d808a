"""Greedy / temperature sampling with the Flax model, with a KV cache.

Prompts are left-padded to a common length P so that every row writes its next token at the
same cache column; each row's positions start at 0 at its first real token and padding keys
are masked out. One prefill pass fills the cache (per layer, (B, P + new, K, H)), then each step
runs the model on one token per row, until every row has emitted its EOS or `max_new_tokens`.
The whole loop is one jitted function, compiled once per (batch, P, new tokens) shape; `sample_tokens` is that loop unjitted, for callers that jit it
with their own shardings (GRPO rollouts). The layers are the model's own modules
(projections, norms, MLP, LoRA adapters); only the attention over the cache is written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from train_jax.model.llama import LlamaForCausalLM
from train_jax.model.rope import apply_rope, rope_cos_sin, rope_inv_freq


def generate(model: LlamaForCausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             temperature: float = 0.0, eos_token_id: int | Sequence[int] | None = None,
             seed: int = 0, pad_token_id: int = 0) -> list[list[int]]:
    """Continue each prompt by up to `max_new_tokens` tokens; returns only the new tokens.

    `temperature == 0` is greedy decoding. A row stops after emitting an `eos_token_id`
    (kept in its output). Dropout is off; `model` itself is not modified.
    """
    if max_new_tokens <= 0:
        left_pad(prompts)  # still refuse empty prompts
        return [[] for _ in prompts]
    padded, pad = left_pad(prompts, pad_token_id=pad_token_id)
    graphdef, state = nnx.split(model)
    tokens, new_count = _decode(graphdef, state, jnp.asarray(padded), jnp.asarray(pad),
                                eos_array(eos_token_id), jax.random.key(seed), max_new_tokens,
                                jnp.float32(temperature))
    tokens, new_count = jax.device_get((tokens, new_count))
    return [tokens[row, : int(new_count[row])].tolist() for row in range(len(prompts))]


def left_pad(prompts: Sequence[Sequence[int]], width: int | None = None, *,
             pad_token_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Prompts left-padded to `width` (default: the longest): (B, width) int32 ids and the
    (B,) int32 count of padding columns of each row, as `sample_tokens` takes them."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one non-empty prompt")
    longest = max(len(p) for p in prompts)
    width = longest if width is None else width
    if longest > width:
        raise ValueError(f"a prompt of {longest} tokens does not fit the width {width}")
    padded = np.asarray([[pad_token_id] * (width - len(p)) + list(p) for p in prompts], np.int32)
    return padded, np.asarray([width - len(p) for p in prompts], np.int32)


def eos_ids(eos_token_id: int | Sequence[int] | None) -> tuple[int, ...]:
    """A tokenizer's or config's `eos_token_id` (one id, several, or none) as a tuple."""
    return (() if eos_token_id is None else (eos_token_id,) if isinstance(eos_token_id, int)
            else tuple(eos_token_id))


def eos_array(eos_token_id: int | Sequence[int] | None) -> jax.Array:
    """EOS ids as a fixed-size int32 array (at least 8 entries, -1 filled) so that the set of
    stop tokens never changes the compiled shape."""
    ids = list(eos_ids(eos_token_id))
    # -1 never matches a token.
    return jnp.asarray((ids + [-1] * 8)[: max(8, len(ids))], jnp.int32)


def _forward(model: LlamaForCausalLM, tokens, positions, mask, cache, start):
    """Logits (B, S, V) of `tokens` (B, S) written at cache columns [start, start + S)."""
    cfg = model.cfg
    dtype = jnp.dtype(cfg.dtype)
    b, s = tokens.shape
    cos, sin = rope_cos_sin(positions, rope_inv_freq(cfg))
    table = model.embed_tokens["embedding"][...]
    x = jnp.take(table, tokens, axis=0).astype(dtype)
    keys, values = cache
    new_keys, new_values = [], []
    # One (B, T, K, H) array per layer, never stacked: in the decoding loop's carry each is
    # updated in place, where a stacked (layers, ...) cache is copied whole at every token.
    for layer, block in enumerate(model.layers):
        attn = block.self_attn
        h = block.input_layernorm(x)
        q = apply_rope(attn.q_proj(h).reshape(b, s, attn.num_heads, attn.head_dim), cos, sin)
        k = apply_rope(attn.k_proj(h).reshape(b, s, attn.num_kv_heads, attn.head_dim), cos, sin)
        v = attn.v_proj(h).reshape(b, s, attn.num_kv_heads, attn.head_dim)
        layer_k = jax.lax.dynamic_update_slice_in_dim(keys[layer], k.astype(keys[layer].dtype), start, axis=1)
        layer_v = jax.lax.dynamic_update_slice_in_dim(values[layer], v.astype(values[layer].dtype), start, axis=1)
        new_keys.append(layer_k)
        new_values.append(layer_v)
        out = jax.nn.dot_product_attention(q, layer_k.astype(q.dtype), layer_v.astype(q.dtype), mask=mask)
        x = x + attn.o_proj(out.reshape(b, s, attn.num_heads * attn.head_dim))
        x = x + block.mlp(block.post_attention_layernorm(x))
    x = model.norm(x)
    logits = x @ table.astype(dtype).T if model.lm_head is None else model.lm_head(x)
    return logits.astype(jnp.float32), (tuple(new_keys), tuple(new_values))


def _pick(logits, temperature, key):
    key, sub = jax.random.split(key)
    # temperature is traced (no recompile per value); 0 selects the argmax.
    sampled = jax.random.categorical(sub, logits / jnp.maximum(temperature, 1e-6))
    return jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1)).astype(jnp.int32), key


@partial(jax.jit, static_argnums=(0, 6))
def _decode(graphdef, state, prompts, pad, eos, key, max_new_tokens: int, temperature):
    model = nnx.merge(graphdef, state)
    model.eval()  # the merged copy only: dropout off while decoding
    return sample_tokens(model, prompts, pad, eos, key, max_new_tokens, temperature)


def sample_tokens(model: LlamaForCausalLM, prompts: jax.Array, pad: jax.Array, eos: jax.Array,
                  key: jax.Array, max_new_tokens: int, temperature: jax.Array | float
                  ) -> tuple[jax.Array, jax.Array]:
    """The decoding loop itself, traceable: the caller jits it (once per shape) with the
    shardings it wants, as `generate` and the GRPO rollouts do.

    `prompts` (B, P) left-padded ids and `pad` (B,) their padding columns (`left_pad`); `eos`
    from `eos_array`; `temperature` 0 is greedy. Returns the new tokens (B, max_new_tokens),
    0 after a row's EOS, and the count (B,) of each row's new tokens, its EOS included. The
    model should be in eval mode (dropout off).
    """
    cfg = model.cfg
    b, width = prompts.shape
    total = width + max_new_tokens
    columns = jnp.arange(total)
    valid_key = columns[None, :] >= pad[:, None]  # (B, T): False on left padding
    shape = (b, total, cfg.num_key_value_heads, cfg.head_dim)
    layers = range(cfg.num_hidden_layers)
    cache = (tuple(jnp.zeros(shape, cfg.dtype) for _ in layers),
             tuple(jnp.zeros(shape, cfg.dtype) for _ in layers))

    # Prefill. Padding queries attend to themselves only, so no softmax row is empty.
    rows = jnp.arange(width)
    causal = columns[None, :] <= rows[:, None]  # (P, T)
    own = columns[None, :] == rows[:, None]
    mask = (causal[None] & valid_key[:, None, :]) | own[None]  # (B, P, T)
    positions = jnp.maximum(rows[None, :] - pad[:, None], 0)
    logits, cache = _forward(model, prompts, positions, mask[:, None], cache, 0)
    token, key = _pick(logits[:, -1], temperature, key)

    def step(carry):
        i, out, token, done, count, cache, key = carry
        out = out.at[:, i].set(jnp.where(done, 0, token))
        count = count + (~done).astype(jnp.int32)
        done = done | jnp.isin(token, eos)
        column = width + i
        step_mask = (valid_key & (columns[None, :] <= column))[:, None, None, :]  # (B, 1, 1, T)
        logits, cache = _forward(model, token[:, None], (column - pad)[:, None], step_mask, cache, column)
        token, key = _pick(logits[:, 0], temperature, key)
        return i + 1, out, token, done, count, cache, key

    def running(carry):
        # Stop once every row has emitted its EOS: later steps would only write the zeros the
        # output already holds, so the result is that of running all max_new_tokens steps.
        i, _, _, done, *_ = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    out = jnp.zeros((b, max_new_tokens), jnp.int32)
    init = (jnp.int32(0), out, token, jnp.zeros(b, bool), jnp.zeros(b, jnp.int32), cache, key)
    _, out, _, _, count, _, _ = jax.lax.while_loop(running, step, init)
    return out, count
