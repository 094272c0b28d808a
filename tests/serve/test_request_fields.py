"""Fail closed: every documented field the server does not honour, and every unknown field, is a
400 naming it; the no-op values of refused fields pass; the table matches the models and docs."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    StreamOptions,
    StructuredOutputs,
)
from serve.request_fields import FIELD_TABLE, FieldRule, rules_for
from tests.serve.fake_server import FAKE_MODEL, fake_app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "SERVING.md"
HELLO = [{"role": "user", "content": "hi"}]
ROUTES = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
BASE = {"completions": {"model": FAKE_MODEL, "prompt": "a b", "max_tokens": 2},
        "chat": {"model": FAKE_MODEL, "messages": HELLO, "max_tokens": 2}}


@pytest.fixture(scope="module")
def served():
    """One app for the module (hundreds of cases); tests look at the requests they add."""
    app, engine = fake_app()
    with TestClient(app) as client:
        yield client, engine


@pytest.fixture
def client(served):
    return served[0]


@pytest.fixture
def engine(served):
    served[1].requests.clear()
    return served[1]


def _request(endpoint: str, scope: str, name: str, value) -> tuple[dict, str]:
    """A request with field `name` = `value` placed in `scope`; the `param` naming it."""
    body = dict(BASE[endpoint])
    if scope == "stream_options":
        body.update(stream=True, stream_options={"include_usage": True, name: value})
        return body, f"stream_options.{name}"
    if scope == "message":
        body.update(messages=[{**HELLO[0], name: value}])
        return body, f"messages[0].{name}"
    if scope == "structured_outputs":
        body.update(structured_outputs={"regex": "[a-z]+", name: value})
        return body, f"structured_outputs.{name}"
    body[name] = value
    return body, name


def _cases(statuses: tuple[str, ...]) -> list[tuple[str, str, FieldRule]]:
    cases = []
    for endpoint in ROUTES:
        scopes = (endpoint, "stream_options", "structured_outputs") + \
            (("message",) if endpoint == "chat" else ())
        for scope in scopes:
            cases += [(endpoint, scope, rule) for rule in rules_for(scope).values()
                      if rule.status in statuses]
    return cases


REFUSED = _cases(("refused", "removed"))


@pytest.mark.parametrize(("endpoint", "scope", "rule"), REFUSED,
                         ids=[f"{e}-{s}-{r.name}" for e, s, r in REFUSED])
def test_a_value_the_server_does_not_honour_is_a_400_naming_the_field(client, engine, endpoint,
                                                                      scope, rule):
    body, param = _request(endpoint, scope, rule.name, rule.example)
    r = client.post(ROUTES[endpoint], json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == (param, "unsupported_parameter")
    assert error["message"].startswith(f"'{param}' is ")
    if rule.status == "removed":
        assert "structured_outputs" in error["message"]
    assert engine.requests == []


NOOPS = [(e, s, rule, value) for e, s, rule in REFUSED if rule.status == "refused"
         for value in rule.noop]


@pytest.mark.parametrize(("endpoint", "scope", "rule", "value"), NOOPS,
                         ids=[f"{e}-{s}-{r.name}-{v!r}" for e, s, r, v in NOOPS])
def test_a_no_op_value_of_a_refused_field_is_accepted(client, endpoint, scope, rule, value):
    # The value asks for what the server does anyway (`"echo": false`, `"top_k": -1`).
    body, _ = _request(endpoint, scope, rule.name, value)
    r = client.post(ROUTES[endpoint], json=body)
    assert r.status_code == 200, r.text


UNKNOWN = [("completions", "completions", "frobnicate"), ("chat", "chat", "frobnicate"),
           # A field of the other endpoint is unknown here.
           ("completions", "completions", "messages"), ("chat", "chat", "prompt"),
           ("chat", "chat", "suffix"), ("completions", "completions", "tools"),
           ("chat", "stream_options", "frobnicate"), ("chat", "message", "frobnicate")]


@pytest.mark.parametrize(("endpoint", "scope", "name"), UNKNOWN)
def test_an_unknown_field_is_a_400_as_openai_answers_it(client, engine, endpoint, scope, name):
    body, param = _request(endpoint, scope, name, 1)
    r = client.post(ROUTES[endpoint], json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error == {"message": f"Unrecognized request argument supplied: {param}",
                     "type": "invalid_request_error", "param": param,
                     "code": "unknown_parameter"}
    assert engine.requests == []


def test_several_unknown_fields_are_named_together(client):
    r = client.post("/v1/completions", json={**BASE["completions"], "foo": 1, "bar": 2})
    assert r.json()["error"]["message"] == "Unrecognized request arguments supplied: foo, bar"


def test_an_unknown_field_in_a_content_part_is_named(client):
    messages = [{"role": "user", "content": [{"type": "text", "text": "x", "cache": 1}]}]
    r = client.post("/v1/chat/completions", json={**BASE["chat"], "messages": messages})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[0].content[0].cache"


def test_honoured_vllm_fields_act(client, engine):
    plain = {**BASE["completions"], "prompt": "a b"}
    client.post("/v1/completions", json={**plain, "add_special_tokens": False})
    client.post("/v1/completions", json=plain)
    without, default = (len(r.prompt_token_ids) for r in engine.requests)
    assert (without, default) == (2, 3)  # the fake tokenizer's BOS
    client.post("/v1/chat/completions", json={**BASE["chat"], "add_special_tokens": True})
    assert engine.requests[-1].prompt_token_ids[0] == 1


def test_the_table_matches_the_request_models():
    models = {"completions": CompletionRequest, "chat": ChatCompletionRequest,
              "stream_options": StreamOptions, "message": ChatMessage,
              "structured_outputs": StructuredOutputs}
    for scope, model in models.items():
        honoured = {n for n, r in rules_for(scope).items() if r.status == "honoured"}
        names = {f.alias or n for n, f in model.model_fields.items()}
        assert honoured == names, scope


def test_the_table_is_consistent_and_documented():
    docs = DOCS.read_text()
    for rule in FIELD_TABLE:
        assert f"`{rule.name}`" in docs, f"{rule.name} missing from docs/SERVING.md"
        if rule.status != "honoured":
            assert rule.example is not None and rule.example not in rule.noop, rule.name
    keys = [(rule.name, scope) for rule in FIELD_TABLE for scope in rule.scopes]
    assert len(keys) == len(set(keys)), "a field is listed twice for one scope"
