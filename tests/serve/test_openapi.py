"""/openapi.json states every status each route answers, and schemathesis finds nothing wrong.

The schemathesis runs fuzz the app on the fake engine over a loopback port with `--checks all`
and a bounded number of examples, with and without an API key (a few seconds each).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.serve.fake_server import FAKE_MODEL, fake_app, serve_in_thread

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
CONFIG = Path(__file__).with_name("schemathesis.toml")
GENERATION = {"200", "400", "404", "429", "499", "500", "503"}


def _spec(**overrides) -> dict:
    app, _ = fake_app(**overrides)
    with TestClient(app) as client:
        return client.get("/openapi.json").json()


def _statuses(spec: dict) -> dict[tuple[str, str], set[str]]:
    return {(method, path): set(op["responses"]) for path, item in spec["paths"].items()
            for method, op in item.items()}


def test_every_status_a_route_answers_is_declared():
    assert _statuses(_spec()) == {
        ("get", "/health"): {"200"},
        ("get", "/ready"): {"200", "503"},
        ("get", "/metrics"): {"200"},
        ("get", "/v1/models"): {"200", "500", "503"},
        ("post", "/v1/completions"): GENERATION,
        ("post", "/v1/chat/completions"): GENERATION,
        ("post", "/tokenize"): {"200", "400", "404", "500", "503"},
        ("post", "/detokenize"): {"200", "400", "404", "500", "503"},
        ("post", "/v1/load_lora_adapter"): {"200", "400", "500", "503"},
        ("post", "/v1/unload_lora_adapter"): {"200", "400", "404", "500", "503"},
    }


def test_errors_have_the_openai_body_and_no_fastapi_422_is_left():
    spec = _spec()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    op = spec["paths"]["/v1/completions"]["post"]
    for status in ("400", "404", "429", "500", "503"):
        ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorResponse")
    assert set(op["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]


def test_the_schema_names_the_served_models_and_documents_refused_fields():
    schemas = _spec()["components"]["schemas"]
    assert schemas["CompletionRequest"]["properties"]["model"]["enum"] == [FAKE_MODEL]
    assert schemas["CompletionRequest"]["additionalProperties"] is False
    echo = schemas["ChatCompletionRequest"]["properties"]["echo"]
    assert echo["enum"] == [None, False] and "Not supported" in echo["description"]
    seed = schemas["ChatCompletionRequest"]["properties"]["seed"]["anyOf"][0]
    assert seed == {"type": "integer", "format": "int64"}  # exact, not a rounded float


def test_with_an_api_key_v1_routes_declare_bearer_auth_and_401():
    spec = _spec(api_key="k")
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for (_, path), statuses in _statuses(spec).items():
        assert ("401" in statuses) == (path.startswith("/v1/") or "tokenize" in path), path
    assert "401" not in _statuses(_spec())[("get", "/v1/models")]


@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed (dev extra)")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("api_key", [None, "s3cret"], ids=["open", "api-key"])
def test_schemathesis_finds_no_failure(tmp_path, api_key):
    app, _ = fake_app(**({"api_key": api_key} if api_key else {}))
    auth = ["-H", f"Authorization: Bearer {api_key}"] if api_key else []
    with serve_in_thread(app) as url:
        result = subprocess.run(
            [SCHEMATHESIS, "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
             "--checks", "all", "--max-examples", "20", "--seed", "1", "--workers", "1",
             "--output-sanitize", "false", *auth],
            cwd=tmp_path, capture_output=True, text=True, timeout=110, check=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout
