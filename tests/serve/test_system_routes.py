"""/health, /ready, /metrics, /v1/models and the API key, on the fake engine."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from serve.engine import ModelCard
from serve.fake_engine import FakeEngine
from serve.settings import API_KEY_ENV, resolve_api_key
from tests.serve.fake_server import FAKE_MODEL, fake_app


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(2) or "{}")[1:-1].split(","))) if m.group(2) else ""
        if got == want:
            return float(m.group(3))
    return 0.0


def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200


def test_ready_is_503_before_the_engine_loads():
    app, _ = fake_app()
    # Without entering the lifespan the engine was never built.
    client = TestClient(app)
    r = client.get("/ready")
    assert r.status_code == 503 and r.json() == {"status": "loading"}
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "x"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_not_ready"


def test_models_lists_bases_and_adapters_with_their_parent():
    engine = FakeEngine((ModelCard("base", 128, 100, created=7),
                         ModelCard("viggo", 128, 100, parent="base", created=7),
                         ModelCard("sql-merged", 256, 100, created=7)))
    app, _ = fake_app(engine)
    with TestClient(app) as client:
        data = client.get("/v1/models").json()["data"]
    assert [(m["id"], m["parent"], m["root"], m["max_model_len"]) for m in data] == [
        ("base", None, "base", 128), ("viggo", "base", "base", 128),
        ("sql-merged", None, "sql-merged", 256)]
    assert all(m["object"] == "model" and m["created"] == 7 for m in data)


def test_metrics_count_requests_tokens_and_latencies(client):
    usages = []
    for prompt in ("a", "b c", "d e f"):
        r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": prompt,
                                                 "max_tokens": 4})
        usages.append(r.json()["usage"])
    client.post("/v1/chat/completions", json={"model": FAKE_MODEL, "max_tokens": 2,
                                              "messages": [{"role": "user", "content": "x"}]})
    client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "x", "n": 99})
    client.post("/v1/completions", json={"model": "missing", "prompt": "x"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert metric(text, "jaxtune_http_requests_total", endpoint="/v1/completions",
                  status="200") == 3
    assert metric(text, "jaxtune_http_requests_total", endpoint="/v1/completions",
                  status="400") == 1
    assert metric(text, "jaxtune_http_requests_total", endpoint="/v1/completions",
                  status="404") == 1
    assert metric(text, "jaxtune_http_requests_total", endpoint="/v1/chat/completions",
                  status="200") == 1
    assert metric(text, "jaxtune_generation_tokens_total", model=FAKE_MODEL) == \
        sum(u["completion_tokens"] for u in usages) + 2
    chat_prompt = 3  # "user:", "x", "assistant:"
    assert metric(text, "jaxtune_prompt_tokens_total", model=FAKE_MODEL) == \
        sum(u["prompt_tokens"] for u in usages) + chat_prompt
    for name in ("jaxtune_time_to_first_token_seconds_count",
                 "jaxtune_e2e_request_latency_seconds_count"):
        assert metric(text, name, model=FAKE_MODEL) == 4
    # 4 tokens -> 3 gaps per completion, 1 gap for the 2-token chat answer.
    assert metric(text, "jaxtune_inter_token_latency_seconds_count", model=FAKE_MODEL) == 10
    assert metric(text, "jaxtune_requests_in_flight") == 0
    assert metric(text, "jaxtune_engine_requests_running") == 0
    assert metric(text, "jaxtune_engine_requests_waiting") == 0


@pytest.fixture
def keyed_client():
    app, _ = fake_app(api_key="s3cret")
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "s3cret"},
                                     {"Authorization": "Basic s3cret"}])
def test_api_key_required_on_v1(keyed_client, headers):
    for method, path, body in (("get", "/v1/models", None),
                               ("post", "/v1/completions", {"model": FAKE_MODEL,
                                                            "prompt": "x"})):
        r = keyed_client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"


def test_right_key_passes_and_health_stays_open(keyed_client):
    ok = {"Authorization": "Bearer s3cret"}
    assert keyed_client.get("/v1/models", headers=ok).status_code == 200
    r = keyed_client.post("/v1/completions", headers=ok,
                          json={"model": FAKE_MODEL, "prompt": "x", "max_tokens": 1})
    assert r.status_code == 200
    for path in ("/health", "/ready", "/metrics"):
        assert keyed_client.get(path).status_code == 200


def test_auth_is_checked_before_the_body_is_judged(keyed_client):
    r = keyed_client.post("/v1/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert r.status_code == 401
    r = keyed_client.post("/v1/completions", json={"model": "unknown", "prompt": "x"})
    assert r.status_code == 401
    text = keyed_client.get("/metrics").text
    assert metric(text, "jaxtune_http_requests_total", endpoint="/v1/completions",
                  status="401") == 2


def test_api_key_from_environment():
    assert resolve_api_key(None, {API_KEY_ENV: "from-env"}) == "from-env"
    assert resolve_api_key("flag", {API_KEY_ENV: "from-env"}) == "flag"
    assert resolve_api_key(None, {API_KEY_ENV: ""}) is None
    assert resolve_api_key(None, {}) is None


def test_key_matching():
    from serve.auth import key_matches

    assert key_matches("Bearer abc", "abc")
    assert key_matches("bearer abc", "abc")
    assert not key_matches("Bearer abcd", "abc")
    assert not key_matches("Bearer ab", "abc")
    assert not key_matches("Token abc", "abc")
    assert not key_matches("", "abc")
