"""Batched tokenisation of rendered pieces into token ids with a per-token trained flag.

Each piece is tokenised on its own (no special tokens added), so the prompt tokens are
exactly what the model sees at inference when it is given the prompt alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from train_jax.data.config import PromptStyle
from train_jax.data.rendering import Piece

logger = logging.getLogger(__name__)

TOKENIZE_BATCH = 2048


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids of one example and which of them are trained on (completion + EOS)."""

    ids: np.ndarray  # (n,) int32
    trained: np.ndarray  # (n,) bool

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def load_tokenizer(model: str | Path) -> Any:
    """The fast tokenizer of `model`: an HF folder, a jaxtune checkpoint, or a hub id."""
    from transformers import AutoTokenizer

    path = Path(model)
    if (path / "jaxtune_checkpoint.json").is_file():
        path = path / "hf_assets"  # a jaxtune checkpoint keeps the base tokenizer here
    if path.is_dir():
        if not any((path / name).is_file() for name in ("tokenizer.json",
                                                        "tokenizer_config.json")):
            raise ValueError(f"{path}: no tokenizer files; --model must be a HF model folder "
                             "with a fast tokenizer, a jaxtune checkpoint or a hub id")
        source = str(path)
    elif str(model).startswith((".", "/", "~")) or str(model).count("/") > 1:
        raise FileNotFoundError(f"model folder not found: {model}")
    else:
        source = str(model)  # a hub id (needs network)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{model}: no fast tokenizer (tokenizer.json) found")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{model}: the tokenizer defines no EOS token")
    return tokenizer


def _encode_batch(tokenizer: Any, texts: list[str]) -> list[np.ndarray]:
    # The Rust tokenizer directly: what `tokenizer(texts, add_special_tokens=False)` runs, minus
    # building Python offset/mask lists we do not use (a third of the time on short rows).
    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    # int32 arrays at once: lists of Python ints cost ~10x the memory on large files.
    return [np.asarray(e.ids, dtype=np.int32) for e in encode(texts, add_special_tokens=False)]


def leading_special_ids(tokenizer: Any) -> list[int]:
    """Ids the tokenizer puts before a text by itself (e.g. BOS for Llama tokenizers)."""
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start:start + len(plain)] == plain:
            return list(with_special[:start])
    return []


def tokenize_pieces(
    examples: Sequence[Sequence[Piece]], tokenizer: Any, style: PromptStyle, *,
    progress: bool = True, desc: str = "tokenise",
) -> list[TokenizedExample]:
    """Tokenise every example's pieces in batches; EOS pieces become the EOS id.

    The structured style gets the tokenizer's own leading special tokens (BOS) in front, as
    a plain prompt would at inference; chat templates write their BOS themselves.
    """
    texts: list[str] = [p.text for pieces in examples for p in pieces if not p.eos]
    ids_per_text: list[np.ndarray] = []
    with tqdm(total=len(texts), desc=desc, unit="piece", disable=not progress,
              mininterval=1.0) as bar:
        for start in range(0, len(texts), TOKENIZE_BATCH):
            batch = texts[start:start + TOKENIZE_BATCH]
            ids_per_text.extend(_encode_batch(tokenizer, batch))
            bar.update(len(batch))
    prefix = np.asarray(leading_special_ids(tokenizer) if style == "structured" else [],
                        dtype=np.int32)
    eos = np.asarray([tokenizer.eos_token_id], dtype=np.int32)
    out: list[TokenizedExample] = []
    cursor = 0
    for pieces in examples:
        parts, flags = [prefix], [np.zeros(len(prefix), dtype=bool)]
        for piece in pieces:
            if piece.eos:
                piece_ids = eos
            else:
                piece_ids = ids_per_text[cursor]
                cursor += 1
            parts.append(piece_ids)
            flags.append(np.full(len(piece_ids), piece.trained, dtype=bool))
        out.append(TokenizedExample(np.concatenate(parts), np.concatenate(flags)))
    return out
