"""Fixtures of the serve tests.

`served_model_dir` is the ONE place that decides which HF folder the real-vLLM tests serve
(any Llama-family folder with head_dim 64 and a chat template works).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.tiny_model import build_exported_tiny_model
from tests.serve.fake_server import fake_app


@pytest.fixture(scope="session")
def served_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A long context gives the disconnect test a generation that outlasts the hang-up even on an
    # idle machine, where the tiny model streams thousands of tokens per second.
    # What vLLM serves here is a `jaxtune export` output, as users serve their tuned models.
    return build_exported_tiny_model(tmp_path_factory.mktemp("served"), max_position_embeddings=16384)


@pytest.fixture
def app_and_engine():
    return fake_app()


@pytest.fixture
def client(app_and_engine):
    app, _ = app_and_engine
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def engine(app_and_engine):
    return app_and_engine[1]
