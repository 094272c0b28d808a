"""The served runtimes: `jaxtune serve` on the merged export (and the LoRA adapter on its base),
scored and sampled through the OpenAI-compatible API."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.pipeline.processes import jaxtune_command
from infra.pipeline.server_process import free_port, running_server
from infra.verify.metrics import ServerEntry

MERGED = "merged"
BASE = "base"
ADAPTER = "adapter"


@dataclass(frozen=True)
class LoraServing:
    """A LoRA run served as vLLM serves adapters: the base folder plus a PEFT adapter folder."""

    base_dir: Path
    adapter_dir: Path
    rank: int


def serve_command(export_dir: Path, lora: LoraServing | None, port: int,
                  serve_args: Sequence[str]) -> list[str]:
    """`jaxtune serve` argv: the merged export as `merged`; with LoRA, the base as `base`
    carrying the adapter as `adapter` (one server, one engine per full model)."""
    if lora is None:
        models = ["--model", str(export_dir), "--name", MERGED]
    else:
        models = ["--model", str(lora.base_dir), "--name", BASE,
                  "--lora", f"{ADAPTER}={lora.adapter_dir}",
                  "--extra-model", f"{MERGED}={export_dir}"]
        if "--max-lora-rank" not in serve_args:
            models += ["--max-lora-rank", str(max(16, lora.rank))]
    return jaxtune_command("serve", *models, "--port", str(port), *serve_args)


@contextlib.contextmanager
def verify_server(export_dir: Path, lora: LoraServing | None, log_path: Path,
                  serve_args: Sequence[str], timeout_s: float = 600.0) -> Iterator[str]:
    """Start the server for the time of the block; yield its base URL."""
    port = free_port()
    argv = serve_command(export_dir, lora, port, serve_args)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(argv)}\n")
    with running_server(argv, port, log_path, timeout_s=timeout_s) as url:
        yield url


class ServedModel:
    """One served model (`merged` or `adapter`) reached through /v1/completions."""

    def __init__(self, base_url: str, model: str, timeout_s: float = 300.0):
        self.model = model
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()

    def _complete(self, body: dict) -> dict:
        response = self._http.post("/v1/completions", json={"model": self.model, **body})
        if response.status_code != 200:
            raise RuntimeError(f"server refused the {self.model!r} request: "
                               f"HTTP {response.status_code} {response.text[:300]}")
        return response.json()

    def prompt_logprobs(self, ids: Sequence[int], top_k: int) -> list[ServerEntry | None]:
        """vLLM's prompt logprobs: per position {token id: (logprob, rank)} of the prompt token
        and its `top_k` best candidates (None at position 0)."""
        out = self._complete({"prompt": list(ids), "max_tokens": 1, "temperature": 0.0,
                              "prompt_logprobs": top_k})
        rows = out["choices"][0]["prompt_logprobs"]
        return [None if row is None else
                {int(tid): (float(e["logprob"]), int(e["rank"])) for tid, e in row.items()}
                for row in rows]

    def greedy(self, prompts: Sequence[Sequence[int]], max_tokens: int, *,
               batched: bool) -> list[str]:
        """Greedy continuations: one request per prompt (batch 1), or all prompts in one
        request that the engine runs as one batch (batch N)."""
        body = {"max_tokens": max_tokens, "temperature": 0.0}
        if not batched:
            return [self._complete({**body, "prompt": list(ids)})["choices"][0]["text"]
                    for ids in prompts]
        choices = self._complete({**body, "prompt": [list(ids) for ids in prompts]})["choices"]
        return [c["text"] for c in sorted(choices, key=lambda c: c["index"])]


def served_model_name(base_url: str, name: str | None) -> str:
    """`name` once the server at `base_url` is found to serve it, or (None) the server's only
    model; `ServerCheckError` (a ValueError) naming what to change otherwise."""
    from eval.client import ClientConfig
    from eval.preflight import ServerCheckError, check_server, served_models

    if name is not None:
        check_server(ClientConfig(base_url, name))
        return name
    served = served_models(ClientConfig(base_url, ""))
    if len(served) != 1:
        raise ServerCheckError(f"{base_url} serves {len(served)} models "
                               f"({', '.join(served) or 'none'}): name one with --served-model")
    return served[0]
