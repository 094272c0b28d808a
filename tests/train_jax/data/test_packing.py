"""Packing layout, determinism, and isolation of packed examples through the real model."""

from __future__ import annotations

import numpy as np
import pytest

from tests.train_jax.data.conftest import head_of_task_file
from train_jax.data.config import DataConfig
from train_jax.data.packing import assign_rows, build_arrays
from train_jax.data.prepare import prepare_dataset
from train_jax.data.tokenization import TokenizedExample


def example(n: int, prompt: int) -> TokenizedExample:
    ids = np.arange(10, 10 + n, dtype=np.int32)
    return TokenizedExample(ids, np.arange(n) >= prompt)


def test_rows_hold_shifted_segments_with_restarting_positions():
    examples = [example(5, 2), example(4, 1), example(3, 2)]
    arrays = build_arrays(examples, [[0, 2], [1]], max_length=8, pad_id=0)
    assert arrays["segment_ids"][0].tolist() == [1, 1, 1, 1, 2, 2, 0, 0]
    assert arrays["positions"][0].tolist() == [0, 1, 2, 3, 0, 1, 0, 0]
    assert arrays["input_ids"][0].tolist() == [10, 11, 12, 13, 10, 11, 0, 0]
    assert arrays["targets"][0].tolist() == [11, 12, 13, 14, 11, 12, 0, 0]
    # loss on targets that are completion tokens: ids[2:] of ex0, ids[2:] of ex2
    assert arrays["loss_mask"][0].tolist() == [0, 1, 1, 1, 0, 1, 0, 0]
    assert arrays["segment_ids"][1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


def test_assign_rows_fits_all_examples_deterministically():
    lengths = list(np.random.default_rng(0).integers(2, 60, size=300))
    rows = assign_rows(lengths, 64, packing=True, seed=1)
    assert sorted(i for r in rows for i in r) == list(range(300))
    assert all(sum(lengths[i] - 1 for i in r) <= 64 for r in rows)
    used = sum(n - 1 for n in lengths) / (len(rows) * 64)
    assert used > 0.9
    assert rows == assign_rows(lengths, 64, packing=True, seed=1)
    assert rows != assign_rows(lengths, 64, packing=True, seed=2)
    unpacked = assign_rows(lengths, 64, packing=False, seed=1)
    assert len(unpacked) == 300 and all(len(r) == 1 for r in unpacked)


def test_no_pack_gives_one_padded_example_per_row(tmp_path, bytelevel_tokenizer):
    data = head_of_task_file("viggo", tmp_path, 12)
    cfg = DataConfig(task="viggo", train_file=str(data), max_length=256, packing=False,
                     val_fraction=0.0)
    arrays = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out", progress=False
                             ).arrays("train")
    assert arrays["segment_ids"].max() == 1 and arrays["input_ids"].shape[0] == 12
    pad = arrays["segment_ids"] == 0
    assert (arrays["input_ids"][pad] == bytelevel_tokenizer.pad_token_id).all()
    assert (arrays["loss_mask"][pad] == 0).all()


def per_segment_losses(logits, targets, mask, segment_ids) -> dict[int, float]:
    import jax

    logp = jax.nn.log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    nll = -np.take_along_axis(np.asarray(logp), targets[..., None], axis=-1)[..., 0]
    return {int(s): float((nll * mask)[segment_ids == s].sum() / mask[segment_ids == s].sum())
            for s in np.unique(segment_ids[segment_ids > 0])}


def test_packed_losses_equal_each_example_alone(tmp_path, bytelevel_tokenizer):
    from flax import nnx

    from tests.fixtures.tiny_model import TINY_CONFIG
    from train_jax.model.config import ModelConfig
    from train_jax.model.llama import LlamaForCausalLM

    data = head_of_task_file("viggo", tmp_path, 30)
    cfg = DataConfig(task="viggo", train_file=str(data), max_length=512, val_fraction=0.0)
    arrays = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out", progress=False
                             ).arrays("train")
    row = int(np.argmax(arrays["segment_ids"].max(axis=1)))  # the row with most examples
    batch = {name: np.asarray(a[row:row + 1]) for name, a in arrays.items()}
    segments = batch["segment_ids"][0]
    assert segments.max() >= 3

    model_cfg = ModelConfig.from_hf_config({**TINY_CONFIG, "vocab_size": len(bytelevel_tokenizer),
                                            "hidden_size": 64, "intermediate_size": 128,
                                            "head_dim": 32})
    # jit: op-by-op eager dispatch of the model costs tens of seconds on a busy machine.
    model = nnx.jit(lambda: LlamaForCausalLM(model_cfg, rngs=nnx.Rngs(params=0)))()
    forward = nnx.jit(lambda m, ids, pos, seg: m(ids, positions=pos, segment_ids=seg))
    packed_logits = forward(model, batch["input_ids"], batch["positions"], batch["segment_ids"])
    packed = per_segment_losses(packed_logits[0], batch["targets"][0],
                                batch["loss_mask"][0].astype(np.float64), segments)

    # Each example alone: its tokens at the start of an otherwise padded row, plain causal
    # attention from position 0 (trailing padding cannot affect earlier tokens).
    alone_ids = np.zeros((len(packed), segments.shape[0]), dtype=np.int32)
    alone_targets, alone_mask = np.zeros_like(alone_ids), np.zeros(alone_ids.shape)
    alone_segments = np.zeros_like(alone_ids)
    for k, seg in enumerate(sorted(packed)):
        span = segments == seg
        n = int(span.sum())
        alone_ids[k, :n] = batch["input_ids"][0][span]
        alone_targets[k, :n] = batch["targets"][0][span]
        alone_mask[k, :n] = batch["loss_mask"][0][span]
        alone_segments[k, :n] = 1
    alone_logits = forward(model, alone_ids, None, None)
    for k, seg in enumerate(sorted(packed)):
        alone = per_segment_losses(alone_logits[k], alone_targets[k], alone_mask[k],
                                   alone_segments[k])[1]
        assert packed[seg] == pytest.approx(alone, rel=1e-5, abs=1e-6)

    # Control: without segment ids/positions, later examples see earlier ones and differ.
    leaky_logits = forward(model, batch["input_ids"], None, None)
    leaky = per_segment_losses(leaky_logits[0], batch["targets"][0],
                               batch["loss_mask"][0].astype(np.float64), segments)
    assert leaky[1] == pytest.approx(packed[1], rel=1e-5)
    assert any(abs(leaky[s] - packed[s]) > 1e-4 for s in packed if s > 1)
