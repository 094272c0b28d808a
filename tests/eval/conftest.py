"""Fixtures of the eval tests.

`tiny_server` is the one real `jaxtune serve` (vLLM) of this package: the tiny test model as
`jaxtune export` writes it, served under the name `tiny` through the `jaxtune` console script.
It is package-scoped, so the modules that evaluate against a real server share one engine.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.pipeline.server_process import free_port, running_server
from tests.fixtures.tiny_model import build_exported_tiny_model

JAXTUNE = str(Path(sys.executable).parent / "jaxtune")
SERVE_FLAGS = ("--enforce-eager", "--kv-cache-gib", "0.25", "--memory-fraction", "0.1",
               "--max-model-len", "512")


@dataclass(frozen=True)
class TinyServer:
    url: str  # http://127.0.0.1:PORT
    model_dir: Path  # the served export (config, float32 weights, tokenizer)
    name: str  # the `model` requests name


@pytest.fixture(scope="package")
def tiny_server(tmp_path_factory) -> Iterator[TinyServer]:
    tmp = tmp_path_factory.mktemp("eval_serve")
    model = build_exported_tiny_model(tmp / "tiny")
    port = free_port()
    argv = [JAXTUNE, "serve", "--model", str(model), "--name", "tiny", "--port", str(port),
            *SERVE_FLAGS]
    with running_server(argv, port, tmp / "serve.log", timeout_s=420,
                        env={"VLLM_CPU_KVCACHE_SPACE": "1"}) as url:
        yield TinyServer(url, model, "tiny")
