"""Log-probabilities in OpenAI's (and vLLM's) response shapes, from the engine's plain
`TokenLogprob`s.

The shapes follow vLLM's OpenAI server (`vllm/entrypoints/openai/completion/serving.py`
`_create_completion_logprobs`, `chat_completion/serving.py` `_create_chat_logprobs`): those are
methods of vLLM's serving classes over vLLM objects, so they are restated here over our engine
data; the tests compare the served numbers with vLLM's engine.
"""

from __future__ import annotations

from collections.abc import Sequence

from serve.engine import TokenLogprob
from serve.protocol import (
    ChatLogprobEntry,
    ChatLogprobs,
    CompletionLogprobs,
    PromptLogprob,
    PromptLogprobs,
    TopLogprobEntry,
)


def completion_logprobs(positions: Sequence[TokenLogprob], k: int,
                        initial_offset: int = 0) -> CompletionLogprobs:
    """Completions' `logprobs` for consecutive tokens: each token's text and log-probability,
    its `k` best candidates plus the token itself (OpenAI: "up to logprobs + 1"), and the
    offset of each token in the text, counted from `initial_offset`."""
    out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    offset = initial_offset
    for pos in positions:
        out.tokens.append(pos.token)
        out.token_logprobs.append(pos.logprob)
        if pos.logprob is None:
            out.top_logprobs.append(None)
        else:
            top = {pos.token: pos.logprob}
            top.update((cand.token, cand.logprob) for cand in pos.top[:k])
            out.top_logprobs.append(top)
        out.text_offset.append(offset)
        offset += len(pos.token)
    return out


def next_offset(logprobs: CompletionLogprobs, initial_offset: int) -> int:
    """The text offset after the last token of `logprobs` (where a stream's next chunk
    continues)."""
    if not logprobs.tokens:
        return initial_offset
    return logprobs.text_offset[-1] + len(logprobs.tokens[-1])


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8", errors="replace"))


def chat_logprobs(positions: Sequence[TokenLogprob], top_k: int) -> ChatLogprobs:
    """Chat's `logprobs.content`: per generated token, its log-probability and bytes and the
    `top_k` best candidates in rank order."""
    content = []
    for pos in positions:
        logprob = -9999.0 if pos.logprob is None else pos.logprob
        top = [TopLogprobEntry(token=c.token, logprob=c.logprob, bytes=_bytes(c.token))
               for c in pos.top[:top_k]]
        content.append(ChatLogprobEntry(token=pos.token, logprob=logprob,
                                        bytes=_bytes(pos.token), top_logprobs=top))
    return ChatLogprobs(content=content)


def prompt_logprobs(positions: Sequence[TokenLogprob], k: int) -> PromptLogprobs:
    """vLLM's `prompt_logprobs`: per prompt position (null for the first, which nothing
    precedes) {token id: {logprob, rank, decoded_token}} of the prompt's token and its `k`
    best candidates."""
    out: PromptLogprobs = []
    for pos in positions:
        if pos.logprob is None:
            out.append(None)
            continue
        entries = {str(pos.token_id): PromptLogprob(logprob=pos.logprob, rank=pos.rank,
                                                    decoded_token=pos.token)}
        for cand in pos.top[:k]:
            entries.setdefault(str(cand.token_id), PromptLogprob(
                logprob=cand.logprob, rank=cand.rank, decoded_token=cand.token))
        out.append(entries)
    return out
