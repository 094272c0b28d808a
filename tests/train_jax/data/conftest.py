"""Tokenizers and small data files for the data-preparation tests (all local)."""

from __future__ import annotations

import csv
import json
from itertools import islice
from pathlib import Path

import pytest

from tests.fixtures.tiny_model import CHATML_TEMPLATE, TINYSTORIES_DIR

REPO = Path(__file__).resolve().parents[3]
TASK_FILES = {
    "viggo": REPO / "data" / "viggo" / "train.csv",
    "sql": REPO / "data" / "sql" / "train.jsonl",
    "gsm8k": REPO / "data" / "gsm8k" / "train.jsonl",
}

# A SmolLM2-like ChatML template (the EOS <|im_end|> also ends each turn).
IM_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def bytelevel_tokenizer():
    """A small byte-level BPE tokenizer (every string round-trips), trained on task text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", chat_template=IM_TEMPLATE)


def _corpus():
    for path in TASK_FILES.values():
        with open(path, encoding="utf-8") as handle:
            yield from islice(handle, 300)


@pytest.fixture(scope="session")
def tinystories_tokenizer():
    """The real TinyStories tokenizer (Metaspace/SentencePiece style) with a ChatML template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINYSTORIES_DIR)
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def head_of_task_file(task: str, out_dir: Path, rows: int) -> Path:
    """Copy the first `rows` data rows of a vendored task file into `out_dir`."""
    src = TASK_FILES[task]
    dst = out_dir / src.name
    with open(src, encoding="utf-8", newline="") as handle:
        if src.suffix == ".csv":
            reader = csv.reader(handle)
            with open(dst, "w", encoding="utf-8", newline="") as out:
                csv.writer(out).writerows(islice(reader, rows + 1))
        else:
            dst.write_text("".join(islice(handle, rows)), encoding="utf-8")
    return dst


def write_jsonl(path: Path, rows: list) -> Path:
    """Write `rows` (dicts, or raw strings written as-is) as JSONL."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
