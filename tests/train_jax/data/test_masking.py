"""Decoding only the trained (unmasked) tokens of an example gives exactly target + EOS."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tests.train_jax.data.conftest import head_of_task_file, write_jsonl
from train_jax.data.config import DataConfig
from train_jax.data.prepare import PreparedDataset, prepare_dataset
from train_jax.data.rendering import render_pieces
from train_jax.data.sources import load_samples
from train_jax.data.tokenization import tokenize_pieces

ROWS = 40


def trained_texts(dataset: PreparedDataset, split: str, tokenizer) -> list[str]:
    """Decode each packed segment's trained targets on its own."""
    arrays = dataset.arrays(split)
    texts = []
    for r in range(arrays["segment_ids"].shape[0]):
        seg, mask, targets = (arrays["segment_ids"][r], arrays["loss_mask"][r],
                              arrays["targets"][r])
        for s in np.unique(seg[seg > 0]):
            ids = targets[(seg == s) & (mask == 1)]
            texts.append(tokenizer.decode(ids.tolist(), skip_special_tokens=False))
    return texts


@pytest.mark.parametrize("style", ["structured", "chat"])
@pytest.mark.parametrize("task", ["viggo", "sql", "gsm8k"])
def test_trained_tokens_decode_to_target_plus_eos(tmp_path, bytelevel_tokenizer, task, style):
    data = head_of_task_file(task, tmp_path, ROWS)
    cfg = DataConfig(task=task, train_file=str(data), style=style, max_length=1024,
                     val_fraction=0.0, dedup=False)
    dataset = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out", progress=False)
    samples, _ = load_samples(data, cfg)
    expected = Counter(s.target + bytelevel_tokenizer.eos_token for s in samples)
    assert len(samples) == ROWS
    assert Counter(trained_texts(dataset, "train", bytelevel_tokenizer)) == expected


@pytest.mark.parametrize("style", ["structured", "chat"])
@pytest.mark.parametrize("task", ["viggo", "sql", "gsm8k"])
def test_tinystories_trained_ids_are_the_target_alone(tmp_path, tinystories_tokenizer, task,
                                                      style):
    # TinyStories drops characters outside its 2k vocabulary ('[', '=', '#'), so compare ids:
    # the trained ids must be the target tokenised by itself plus EOS, and the context must
    # be exactly the prompt the model gets at inference.
    tok = tinystories_tokenizer
    data = head_of_task_file(task, tmp_path, 10)
    cfg = DataConfig(task=task, train_file=str(data), style=style, max_length=4096)
    samples, _ = load_samples(data, cfg)
    examples = tokenize_pieces([render_pieces(s, style, tok) for s in samples], tok, style,
                               progress=False)
    for sample, ex in zip(samples, examples, strict=True):
        target_ids = tok(sample.target, add_special_tokens=False)["input_ids"]
        assert ex.ids[ex.trained].tolist() == [*target_ids, tok.eos_token_id]
        if style == "structured":
            prompt_ids = tok(sample.prompt)["input_ids"]  # with BOS, as a plain prompt
        else:
            text = tok.apply_chat_template(list(sample.messages[:-1]), add_generation_prompt=True,
                                           tokenize=False)
            prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ex.ids[~ex.trained].tolist() == prompt_ids
        assert not ex.trained[: len(prompt_ids)].any() and ex.trained[len(prompt_ids):].all()


def test_tinystories_round_trippable_targets_decode_exactly(tmp_path, tinystories_tokenizer):
    tok = tinystories_tokenizer
    rows = [{"prompt": f"Tell me a story number {i}.", "completion": f"Once upon a time {i} cats"}
            for i in range(6)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    for style in ("structured", "chat"):
        cfg = DataConfig(task="jsonl", train_file=str(data), style=style, max_length=128,
                         val_fraction=0.0)
        dataset = prepare_dataset(cfg, tok, tmp_path / style, progress=False)
        expected = Counter(r["completion"] + tok.eos_token for r in rows)
        assert Counter(trained_texts(dataset, "train", tok)) == expected


def test_chat_data_trains_every_assistant_turn_only(tmp_path, bytelevel_tokenizer):
    tok = bytelevel_tokenizer
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "Green."},
        {"role": "user", "content": "Thanks"},  # trailing non-assistant turn: nothing to train
    ]
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conversation}])
    cfg = DataConfig(task="chat", train_file=str(data), style="chat", max_length=256,
                     val_fraction=0.0)
    (sample,), _ = load_samples(data, cfg)
    (ex,) = tokenize_pieces([render_pieces(sample, "chat", tok)], tok, "chat", progress=False)
    assert tok.decode(ex.ids[ex.trained].tolist()) == "Blue.<|im_end|>Green.<|im_end|>"
    # With this template the EOS is the end-of-turn marker: the sequence is the template's.
    full = tok.apply_chat_template(conversation[:5], tokenize=False)
    assert tok.decode(ex.ids.tolist()) == full.rstrip("\n")


def test_chat_style_requires_a_chat_template(tmp_path, bytelevel_tokenizer):
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=bytelevel_tokenizer.backend_tokenizer,
                                    eos_token="<|im_end|>")
    data = head_of_task_file("viggo", tmp_path, 3)
    cfg = DataConfig(task="viggo", train_file=str(data), style="chat", val_fraction=0.0)
    with pytest.raises(ValueError, match="no chat template"):
        prepare_dataset(cfg, plain, tmp_path / "out", progress=False)


def test_chat_turn_end_marker_other_than_eos_stays_context(tmp_path, bytelevel_tokenizer):
    from transformers import PreTrainedTokenizerFast

    from tests.train_jax.data.conftest import IM_TEMPLATE

    tok = PreTrainedTokenizerFast(tokenizer_object=bytelevel_tokenizer.backend_tokenizer,
                                  eos_token="<|endoftext|>", chat_template=IM_TEMPLATE)
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo."},
                    {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Yo!"}]
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conversation}])
    cfg = DataConfig(task="chat", train_file=str(data), style="chat")
    (sample,), _ = load_samples(data, cfg)
    (ex,) = tokenize_pieces([render_pieces(sample, "chat", tok)], tok, "chat", progress=False)
    assert tok.decode(ex.ids[ex.trained].tolist()) == "Yo.<|endoftext|>Yo!<|endoftext|>"
    assert tok.decode(ex.ids.tolist()) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo.<|endoftext|><|im_end|>\n"
        "<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\nYo!<|endoftext|>")
