"""POST /tokenize and /detokenize (vLLM's shapes) on the fake engine, behind the API key."""

from __future__ import annotations

from fastapi.testclient import TestClient

from serve.fake_engine import BOS_ID
from tests.serve.fake_server import CONTEXT, FAKE_MODEL, VOCAB, fake_app


def test_tokenize_gives_the_ids_generation_sees(client, engine):
    r = client.post("/tokenize", json={"model": FAKE_MODEL, "prompt": "a b c"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 4 and body["tokens"][0] == BOS_ID
    assert body["max_model_len"] == CONTEXT and body["token_strs"] is None
    out = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "a b c",
                                               "max_tokens": 1}).json()
    assert out["usage"]["prompt_tokens"] == body["count"]
    plain = client.post("/tokenize", json={"model": FAKE_MODEL, "prompt": "a b c",
                                           "add_special_tokens": False}).json()
    assert plain["tokens"] == body["tokens"][1:]


def test_tokenize_chat_messages_as_chat_completions_does(client):
    messages = [{"role": "user", "content": "hello there"}]
    body = client.post("/tokenize", json={"model": FAKE_MODEL, "messages": messages}).json()
    out = client.post("/v1/chat/completions", json={"model": FAKE_MODEL, "messages": messages,
                                                    "max_tokens": 1}).json()
    assert body["count"] == out["usage"]["prompt_tokens"]


def test_detokenize(client):
    r = client.post("/detokenize", json={"model": FAKE_MODEL, "tokens": [3, 4]})
    assert r.status_code == 200 and r.json() == {"prompt": " w3 w4"}


def test_bad_tokenize_requests_are_4xx(client):
    cases = [("/tokenize", {"model": FAKE_MODEL}, 400, None),
             ("/tokenize", {"model": FAKE_MODEL, "prompt": "x", "messages": [
                 {"role": "user", "content": "x"}]}, 400, None),
             ("/tokenize", {"model": FAKE_MODEL, "prompt": "x", "frob": 1}, 400, "frob"),
             ("/tokenize", {"model": "nope", "prompt": "x"}, 404, "model"),
             ("/detokenize", {"model": FAKE_MODEL, "tokens": [VOCAB]}, 400, "tokens"),
             ("/detokenize", {"model": FAKE_MODEL, "tokens": "x"}, 400, "tokens")]
    for path, body, status, param in cases:
        r = client.post(path, json=body)
        assert r.status_code == status, (path, body, r.text)
        if param is not None:
            assert r.json()["error"]["param"] == param


def test_the_tokenizer_routes_need_the_api_key():
    app, _ = fake_app(api_key="k")
    with TestClient(app) as client:
        for path, body in (("/tokenize", {"model": FAKE_MODEL, "prompt": "x"}),
                           ("/detokenize", {"model": FAKE_MODEL, "tokens": [1]})):
            assert client.post(path, json=body).status_code == 401
            ok = client.post(path, json=body, headers={"Authorization": "Bearer k"})
            assert ok.status_code == 200, ok.text
