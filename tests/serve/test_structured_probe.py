"""`FirstTokenProbe`: can a tokenizer begin what a constraint allows? (xgrammar, no engine)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.fixtures.tiny_model import TINYSTORIES_DIR

# Slow only for its imports (vLLM, torch); the default suite checks the same 400s through a
# real server (tests/serve/test_vllm_server.py).
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _spec(**given):
    fields = dict.fromkeys(("json", "json_object", "regex", "choice", "grammar"))
    return SimpleNamespace(**{**fields, **given})


def test_the_tinystories_vocabulary_cannot_begin_a_json_object():
    pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    from serve.grammar_reach import FirstTokenProbe

    tokenizer = AutoTokenizer.from_pretrained(TINYSTORIES_DIR)
    probe = FirstTokenProbe(tokenizer, len(tokenizer))
    # No token of this tokenizer holds '{' or '[' (and it has no byte tokens).
    assert probe.allowed_first_tokens(_spec(json={"type": "object"})) == 0
    assert probe.allowed_first_tokens(_spec(json_object=True)) == 0
    assert probe.allowed_first_tokens(_spec(json={"type": "array"})) == 0
    # '"' and digits exist: a JSON string, a regex over digits, a choice can begin.
    assert probe.allowed_first_tokens(_spec(json={"type": "string", "enum": ["yes"]})) >= 1
    assert probe.allowed_first_tokens(_spec(regex="[0-9]{3}")) == 10
    assert probe.allowed_first_tokens(_spec(choice=("red", "green"))) >= 2
    assert probe.allowed_first_tokens(_spec(grammar='root ::= "hi"')) >= 1
    assert probe.allowed_first_tokens(_spec()) is None  # nothing this probe compiles
