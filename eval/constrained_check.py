"""Before a constrained run: does the server enforce the task's output grammar?

A server that refuses structured outputs answers 400; one that does not know the field may
ignore it and decode freely. The first is caught here with one request, before the run, so a
constrained evaluation never silently measures unconstrained decoding.
"""

from __future__ import annotations

from dataclasses import replace

from eval.client import OpenAIClient, Prompt, SamplingParams


class ConstrainedDecodingError(RuntimeError):
    """The server will not decode under the task's output grammar; the message says why."""


async def check_constraint_accepted(client: OpenAIClient, task_name: str, prompt: Prompt,
                                    params: SamplingParams) -> None:
    """Send `prompt` once with `params` (which carry the constraint), one token long and
    uncached; raise `ConstrainedDecodingError` when the server rejects the request (4xx)."""
    if params.structured_outputs is None:
        raise ValueError("check_constraint_accepted needs sampling params with a constraint")
    outcome = await client.generate(prompt, replace(params, max_tokens=1), use_cache=False)
    kind = outcome.error_kind or ""
    if kind.startswith("http_4"):
        detail = " ".join((outcome.error_message or "").split())[:300]
        raise ConstrainedDecodingError(
            f"the server refused the {task_name} output grammar ({kind.removeprefix('http_')}: "
            f"{detail}); --constrained needs a server that enforces structured outputs")
