"""Greedy / temperature sampling with the Flax model (no KV cache: fine for tests and metrics).

Every step re-runs the model over a fixed (B, prompt + new) buffer, so the whole loop is one
jitted `fori_loop` compiled once per (batch, length) shape. Causal attention means the
not-yet-written tail of the buffer never influences earlier positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from train_jax.model.llama import LlamaForCausalLM


def generate(model: LlamaForCausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             temperature: float = 0.0, eos_token_id: int | Sequence[int] | None = None,
             seed: int = 0, pad_token_id: int = 0) -> list[list[int]]:
    """Continue each prompt by up to `max_new_tokens` tokens; returns only the new tokens.

    `temperature == 0` is greedy decoding. A row stops after emitting an `eos_token_id`
    (kept in its output).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one non-empty prompt")
    if max_new_tokens <= 0:
        return [[] for _ in prompts]
    lengths = jnp.asarray([len(p) for p in prompts], jnp.int32)
    total = max(len(p) for p in prompts) + max_new_tokens
    buffer = jnp.full((len(prompts), total), pad_token_id, jnp.int32)
    for row, prompt in enumerate(prompts):
        buffer = buffer.at[row, : len(prompt)].set(jnp.asarray(prompt, jnp.int32))
    eos_ids = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    # -1 never matches a token; padding the list to a fixed size avoids recompiles.
    eos = jnp.asarray((eos_ids + [-1] * 8)[: max(8, len(eos_ids))], jnp.int32)
    graphdef, state = nnx.split(model)
    tokens, new_count = _decode(graphdef, state, buffer, lengths, eos, jax.random.key(seed),
                                max_new_tokens, jnp.float32(temperature))
    tokens, new_count = jax.device_get((tokens, new_count))
    return [tokens[row, len(p): len(p) + int(new_count[row])].tolist() for row, p in enumerate(prompts)]


@partial(jax.jit, static_argnums=(0, 6))
def _decode(graphdef, state, buffer, lengths, eos, key, max_new_tokens: int, temperature):
    model = nnx.merge(graphdef, state)
    rows = jnp.arange(buffer.shape[0])

    def step(i, carry):
        buffer, done, new_count, key = carry
        logits = model(buffer)[rows, lengths + i - 1]  # (B, V) at each row's last token
        key, sub = jax.random.split(key)
        # temperature is traced (no recompile per value); 0 selects the argmax.
        sampled = jax.random.categorical(sub, logits / jnp.maximum(temperature, 1e-6))
        token = jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1)).astype(jnp.int32)
        token = jnp.where(done, buffer[rows, lengths + i], token)
        buffer = buffer.at[rows, lengths + i].set(token)
        new_count = new_count + (~done).astype(jnp.int32)
        done = done | jnp.isin(token, eos)
        return buffer, done, new_count, key

    done = jnp.zeros(buffer.shape[0], bool)
    init = (buffer, done, jnp.zeros(buffer.shape[0], jnp.int32), key)
    buffer, _, new_count, _ = jax.lax.fori_loop(0, max_new_tokens, step, init)
    return buffer, new_count
