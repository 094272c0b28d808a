"""POST /v1/chat/completions against the fake engine."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from serve.engine import ModelCard
from serve.fake_engine import FakeEngine
from tests.serve.fake_server import CONTEXT, FAKE_MODEL, fake_app
from tests.serve.test_completions_route import sse_events

HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]


def test_chat_uses_the_template_and_answers(client, engine):
    r = client.post("/v1/chat/completions", json={"model": FAKE_MODEL, "messages": HELLO,
                                                  "max_tokens": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 3
    assert choice["finish_reason"] == "length"
    # The fake template renders "system: be brief\nuser: hi there\nassistant:" = 7 words,
    # encoded without BOS because the template owns special tokens.
    assert body["usage"]["prompt_tokens"] == 7
    assert len(engine.requests[0].prompt_token_ids) == 7


def test_text_parts_are_joined(client, engine):
    messages = [{"role": "user", "content": [{"type": "text", "text": "a b"},
                                             {"type": "text", "text": " c"}]}]
    r = client.post("/v1/chat/completions", json={"model": FAKE_MODEL, "messages": messages,
                                                  "max_tokens": 1})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 5  # "user:", "a", "b", "c", "assistant:"


def test_max_completion_tokens_wins_and_default_fills_the_context(client, engine):
    client.post("/v1/chat/completions", json={"model": FAKE_MODEL, "messages": HELLO,
                                              "max_tokens": 9, "max_completion_tokens": 2})
    assert engine.requests[-1].sampling.max_tokens == 2
    client.post("/v1/chat/completions", json={"model": FAKE_MODEL, "messages": HELLO})
    assert engine.requests[-1].sampling.max_tokens == CONTEXT - 7


def test_streaming_chat_opens_with_role_and_ends_with_done(client):
    req = {"model": FAKE_MODEL, "messages": HELLO, "max_tokens": 4, "n": 2, "seed": 1}
    full = client.post("/v1/chat/completions", json=req).json()
    r = client.post("/v1/chat/completions", json={**req, "stream": True,
                                                  "stream_options": {"include_usage": True}})
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    firsts = {c["choices"][0]["index"]: c["choices"][0]["delta"] for c in chunks[:2]}
    assert firsts == {0: {"role": "assistant", "content": ""},
                      1: {"role": "assistant", "content": ""}}
    for index in (0, 1):
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                       if c["choices"] and c["choices"][0]["index"] == index)
        assert text == full["choices"][index]["message"]["content"]
    assert chunks[-1]["usage"] == full["usage"]


def test_model_without_chat_template_is_a_clear_400():
    engine = FakeEngine((ModelCard("plain", max_model_len=64, vocab_size=100),), chat_models=[])
    app, _ = fake_app(engine)
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", json={"model": "plain", "messages": HELLO})
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["code"] == "chat_template_missing" and error["param"] == "messages"
        assert "chat template" in error["message"]
        # Plain completions still work on that model.
        ok = client.post("/v1/completions", json={"model": "plain", "prompt": "x",
                                                  "max_tokens": 1})
        assert ok.status_code == 200


BAD_CHAT = [
    ({"model": FAKE_MODEL}, "messages", "missing_required_parameter"),
    ({"model": FAKE_MODEL, "messages": []}, "messages", "invalid_value"),
    ({"model": FAKE_MODEL, "messages": "hi"}, "messages", "invalid_value"),
    ({"model": FAKE_MODEL, "messages": [{"content": "x"}]}, "messages[0].role",
     "missing_required_parameter"),
    ({"model": FAKE_MODEL, "messages": [{"role": "wizard", "content": "x"}]},
     "messages[0].role", "invalid_value"),
    ({"model": FAKE_MODEL, "messages": [{"role": "user", "content": 42}]},
     "messages[0].content", "invalid_value"),
    ({"model": FAKE_MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]},
     "messages[0].content[0].type", "unsupported_parameter"),
    ({"model": FAKE_MODEL, "messages": HELLO, "max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"model": FAKE_MODEL, "messages": HELLO, "max_completion_tokens": 0},
     "max_completion_tokens", "invalid_value"),
    ({"model": FAKE_MODEL, "messages": HELLO, "max_tokens": CONTEXT}, "max_tokens",
     "context_length_exceeded"),
    ({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "w " * CONTEXT}]},
     "messages", "context_length_exceeded"),
    ({"model": FAKE_MODEL, "messages": HELLO, "temperature": 9}, "temperature",
     "invalid_value"),
    ({"model": FAKE_MODEL, "messages": HELLO, "n": 100}, "n", "n_too_large"),
    ({"model": FAKE_MODEL, "messages": HELLO, "top_logprobs": 2}, "top_logprobs",
     "invalid_value"),
    ({"model": FAKE_MODEL, "messages": HELLO, "logprobs": True, "top_logprobs": 21},
     "top_logprobs", "invalid_value"),
    ({"model": FAKE_MODEL, "messages": HELLO, "echo": True}, "echo", "unsupported_parameter"),
    ({"model": FAKE_MODEL, "messages": HELLO, "tools": [{"type": "function"}]},
     "tools[0].function", "missing_required_parameter"),
]


@pytest.mark.parametrize(("body", "param", "code"), BAD_CHAT,
                         ids=[f"{i}-{c[2]}" for i, c in enumerate(BAD_CHAT)])
def test_invalid_chat_request_is_400(client, engine, body, param, code):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code,
                                                              "invalid_request_error")
    assert engine.requests == []


def test_unknown_model_is_404(client):
    r = client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": HELLO})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert FAKE_MODEL in r.json()["error"]["message"]
