"""POST /v1/completions against the fake engine: answers, streaming, and every bad input."""

from __future__ import annotations

import json

import pytest

from serve.fake_engine import BOS_ID
from tests.serve.fake_server import CONTEXT, FAKE_MODEL, VOCAB


def sse_events(text: str) -> list[str]:
    lines = [line for line in text.split("\n\n") if line.strip()]
    assert all(line.startswith("data: ") for line in lines), text
    return [line[len("data: "):] for line in lines]


def test_completion_returns_text_usage_and_finish_reason(client, engine):
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "a b c",
                                             "max_tokens": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert r.headers["x-request-id"] == body["id"]
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "length"
    assert len(choice["text"].split()) == 5
    # BOS + 3 words.
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    (req,) = engine.requests
    assert req.prompt_token_ids[0] == BOS_ID and len(req.prompt_token_ids) == 4
    assert req.sampling.max_tokens == 5


def test_sampling_fields_reach_the_engine(client, engine):
    r = client.post("/v1/completions", json={
        "model": FAKE_MODEL, "prompt": "x", "max_tokens": 3, "temperature": 0, "top_p": 0.5,
        "seed": 11, "stop": ["zz", "yy"], "presence_penalty": 0.5, "frequency_penalty": -1,
        "ignore_eos": True})
    assert r.status_code == 200, r.text
    s = engine.requests[0].sampling
    assert (s.temperature, s.top_p, s.seed, s.stop) == (0.0, 0.5, 11, ("zz", "yy"))
    assert (s.presence_penalty, s.frequency_penalty, s.ignore_eos) == (0.5, -1.0, True)


def test_default_max_tokens_is_16_clipped_to_context(client, engine):
    client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "x"})
    assert engine.requests[-1].sampling.max_tokens == 16
    long_prompt = " ".join(["w"] * (CONTEXT - 5))  # BOS + 59 words = 60 tokens
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": long_prompt})
    assert r.status_code == 200, r.text
    assert engine.requests[-1].sampling.max_tokens == 4


def test_stop_string_cuts_output_and_reports_stop(client):
    full = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "q",
                                                "max_tokens": 6}).json()
    words = full["choices"][0]["text"].split()
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "q",
                                             "max_tokens": 6, "stop": words[3]})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"].split() == words[:3]


def test_n_and_batched_prompts_give_one_choice_each(client, engine):
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": ["a", "b c"],
                                             "n": 3, "max_tokens": 2, "seed": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["index"] for c in body["choices"]] == list(range(6))
    assert len(engine.requests) == 6
    # Each sample of a prompt gets its own seed, as vLLM does for n > 1.
    assert sorted(q.sampling.seed for q in engine.requests) == [5, 5, 6, 6, 7, 7]
    # prompt tokens are counted once per prompt, not once per sample.
    assert body["usage"]["prompt_tokens"] == 2 + 3
    assert body["usage"]["completion_tokens"] == 12


def test_token_id_prompts(client, engine):
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": [5, 6, 7],
                                             "max_tokens": 1})
    assert r.status_code == 200, r.text
    assert engine.requests[-1].prompt_token_ids == (5, 6, 7)
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": [[1, 2], [3]],
                                             "max_tokens": 1})
    assert r.status_code == 200 and len(r.json()["choices"]) == 2


def test_streaming_chunks_concatenate_to_the_full_text(client):
    req = {"model": FAKE_MODEL, "prompt": "s t", "max_tokens": 4, "seed": 3}
    full = client.post("/v1/completions", json=req).json()["choices"][0]["text"]
    r = client.post("/v1/completions", json={**req, "stream": True,
                                             "stream_options": {"include_usage": True}})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    text = "".join(ch["text"] for c in chunks for ch in c["choices"])
    assert text == full
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4,
                                   "total_tokens": 7}


def test_streaming_without_usage_has_no_usage_chunk(client):
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "s",
                                             "max_tokens": 2, "stream": True})
    chunks = [json.loads(e) for e in sse_events(r.text)[:-1]]
    assert len(chunks) == 2 and all("usage" not in c for c in chunks)


BAD_REQUESTS = [
    # (body, status, param, code)
    ({"prompt": "x"}, 400, "model", "missing_required_parameter"),
    ({"model": FAKE_MODEL}, 400, "prompt", "missing_required_parameter"),
    ({"model": 5, "prompt": "x"}, 400, "model", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": 5}, 400, "prompt", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "max_tokens": "5"}, 400, "max_tokens", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "max_tokens": 2.5}, 400, "max_tokens", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "max_tokens": -3}, 400, "max_tokens", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "max_tokens": CONTEXT}, 400, "max_tokens",
     "context_length_exceeded"),
    ({"model": FAKE_MODEL, "prompt": " ".join(["w"] * CONTEXT)}, 400, "prompt",
     "context_length_exceeded"),
    ({"model": FAKE_MODEL, "prompt": list(range(CONTEXT))}, 400, "prompt",
     "context_length_exceeded"),
    ({"model": FAKE_MODEL, "prompt": [[]]}, 400, "prompt[0]", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": []}, 400, "prompt", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": [VOCAB]}, 400, "prompt", "invalid_token_id"),
    ({"model": FAKE_MODEL, "prompt": [-1]}, 400, "prompt[0]", "invalid_value"),
    ({"model": "nope", "prompt": "x"}, 404, "model", "model_not_found"),
    ({"model": FAKE_MODEL, "prompt": "x", "temperature": -0.1}, 400, "temperature",
     "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "temperature": 2.5}, 400, "temperature",
     "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "temperature": "hot"}, 400, "temperature",
     "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "top_p": 0}, 400, "top_p", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "top_p": 1.5}, 400, "top_p", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "presence_penalty": 3}, 400, "presence_penalty",
     "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "n": 0}, 400, "n", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "n": 9}, 400, "n", "n_too_large"),
    ({"model": FAKE_MODEL, "prompt": "x", "seed": "1"}, 400, "seed", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "stop": 3}, 400, "stop", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "stop": [""]}, 400, "stop[0]", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "stop": ["a"] * 17}, 400, "stop", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "stream": "yes"}, 400, "stream", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "stream_options": {"include_usage": True}}, 400,
     "stream_options", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "logprobs": 21}, 400, "logprobs", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "logprobs": True}, 400, "logprobs", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "prompt_logprobs": 1, "stream": True}, 400,
     "prompt_logprobs", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "echo": "yes"}, 400, "echo", "invalid_value"),
    ({"model": FAKE_MODEL, "prompt": "x", "best_of": 3}, 400, "best_of",
     "unsupported_parameter"),
]


@pytest.mark.parametrize(("body", "status", "param", "code"), BAD_REQUESTS,
                         ids=[f"{i}-{c[3]}-{c[2]}" for i, c in enumerate(BAD_REQUESTS)])
def test_invalid_request_gets_openai_error(client, engine, body, status, param, code):
    r = client.post("/v1/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code)
    assert error["message"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert engine.requests == []


@pytest.mark.parametrize("raw", [b"{bad json", b'{"model": "fake", "prompt": "x",}', b"",
                                 b"[]", b"null", b'"text"'])
def test_malformed_body_is_400(client, raw):
    r = client.post("/v1/completions", content=raw,
                    headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] in ("invalid_json", "invalid_body")


def test_wrong_method_and_unknown_path_use_the_error_shape(client):
    r = client.get("/v1/completions")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    r = client.post("/v1/nothing", json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
