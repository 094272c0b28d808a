"""Whether a model's vocabulary can begin the output a structured-output constraint allows.

vLLM's xgrammar backend masks every token the grammar forbids. When the tokenizer has no token
that can start an allowed output (e.g. a JSON object on a tokenizer without `{` and without
byte-fallback tokens), every logit is -inf, the sampler returns token 0, the grammar rejects
it and vLLM ends the request with an error ("grammar rejected tokens [0]"). That is not a
device problem: it happens with any model whose vocabulary cannot spell the constraint. This
module asks xgrammar the same question before the request starts, so the client gets a 400
naming the field instead of an aborted generation.

It checks the first token only; a grammar that dead-ends later is still ended by vLLM.
Imported only by `serve.vllm_engine` (xgrammar ships with vLLM).
"""

from __future__ import annotations

import json
import threading
from typing import Any

_lock = threading.Lock()


class FirstTokenProbe:
    """xgrammar's view of one model's vocabulary (built once, on the first constrained
    request), answering whether a constraint allows any first token."""

    def __init__(self, tokenizer: Any, vocab_size: int, *, any_whitespace: bool = True):
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._any_whitespace = any_whitespace
        self._compiler: Any = None

    def _get_compiler(self) -> Any:
        import xgrammar as xgr

        with _lock:
            if self._compiler is None:
                # The same TokenizerInfo vLLM's XgrammarBackend builds for HF tokenizers.
                info = xgr.TokenizerInfo.from_huggingface(self._tokenizer,
                                                          vocab_size=self._vocab_size)
                self._compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=True)
            return self._compiler

    def allowed_first_tokens(self, structured_outputs: Any) -> int | None:
        """How many tokens may start the output of vLLM's `StructuredOutputsParams` (as
        `SamplingParams.verify` left it: a choice is already a grammar), or None when the
        constraint is not one this probe compiles (e.g. a structural tag)."""
        import xgrammar as xgr
        from vllm.v1.structured_output.utils import choice_as_grammar, grammar_is_likely_lark

        so = structured_outputs
        compiler = self._get_compiler()
        if so.json is not None:
            schema = so.json if isinstance(so.json, str) else json.dumps(so.json)
            compiled = compiler.compile_json_schema(schema, any_whitespace=self._any_whitespace)
        elif so.json_object:
            compiled = compiler.compile_json_schema('{"type": "object"}',
                                                    any_whitespace=self._any_whitespace)
        elif so.regex is not None:
            compiled = compiler.compile_regex(so.regex)
        elif so.choice is not None:
            compiled = compiler.compile_grammar(choice_as_grammar(list(so.choice)))
        elif so.grammar is not None:
            compiled = (compiler.compile_lark(so.grammar) if grammar_is_likely_lark(so.grammar)
                        else compiler.compile_grammar(so.grammar))
        else:
            return None
        matcher = xgr.GrammarMatcher(compiled)
        bitmask = xgr.allocate_token_bitmask(1, self._vocab_size)
        matcher.fill_next_token_bitmask(bitmask)
        # One bit per token in int32 words (masked to count a negative word's bits).
        return sum((int(word) & 0xFFFFFFFF).bit_count() for word in bitmask[0].tolist())
