"""vLLM's request surface on the fake engine: logprobs, echo and prompt logprobs in OpenAI's
and vLLM's shapes (streaming too), structured outputs reaching the engine as one constraint,
forced tool calls read back into `tool_calls`, and every malformed one a 400 naming the field.
The same features against a real vLLM engine: test_vllm_request_surface.py."""

from __future__ import annotations

import json

import pytest

from serve.engine import StructuredOutput
from tests.serve.fake_server import FAKE_MODEL

HELLO = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def events(text: str) -> list[dict]:
    lines = [line[len("data: "):] for line in text.split("\n\n") if line.strip()]
    assert lines[-1] == "[DONE]", text
    return [json.loads(line) for line in lines[:-1]]


def completion(client, **fields) -> dict:
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "a b c", **fields})
    assert r.status_code == 200, r.text
    return r.json()


def chat(client, **fields):
    return client.post("/v1/chat/completions",
                       json={"model": FAKE_MODEL, "messages": HELLO, **fields})


# ---- logprobs ----------------------------------------------------------------------------


def test_completion_logprobs_have_openais_shape(client, engine):
    body = completion(client, max_tokens=3, logprobs=2)
    assert engine.requests[-1].sampling.logprobs == 2
    choice = body["choices"][0]
    lp = choice["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert "".join(lp["tokens"]) == choice["text"]
    assert lp["text_offset"] == [0, len(lp["tokens"][0]),
                                 len(lp["tokens"][0]) + len(lp["tokens"][1])]
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"],
                                   strict=True):
        # The 2 best candidates plus the token itself (OpenAI: up to logprobs + 1).
        assert top[token] == logprob and 2 <= len(top) <= 3


def test_chat_logprobs_have_openais_shape(client, engine):
    r = chat(client, max_tokens=3, logprobs=True, top_logprobs=2)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert "".join(c["token"] for c in content) == choice["message"]["content"]
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert entry["bytes"] == list(entry["token"].encode())
        assert len(entry["top_logprobs"]) == 2
        assert [t["logprob"] for t in entry["top_logprobs"]] == \
            sorted((t["logprob"] for t in entry["top_logprobs"]), reverse=True)
    plain = chat(client, max_tokens=2, logprobs=True).json()["choices"][0]["logprobs"]
    assert all(e["top_logprobs"] == [] for e in plain["content"])
    assert chat(client, max_tokens=2).json()["choices"][0]["logprobs"] is None


def test_streamed_logprobs_equal_the_non_streamed_ones(client):
    full = completion(client, max_tokens=4, logprobs=1)["choices"][0]["logprobs"]
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "a b c",
                                             "max_tokens": 4, "logprobs": 1, "stream": True})
    parts = [e["choices"][0]["logprobs"] for e in events(r.text)]
    merged = {key: [x for p in parts for x in p[key]] for key in full}
    assert merged == full  # text offsets continue across chunks

    whole = chat(client, max_tokens=4, logprobs=True, top_logprobs=1).json()
    r = chat(client, max_tokens=4, logprobs=True, top_logprobs=1, stream=True)
    content = [c for e in events(r.text)[1:] for c in e["choices"][0]["logprobs"]["content"]]
    assert content == whole["choices"][0]["logprobs"]["content"]


# ---- echo and prompt logprobs --------------------------------------------------------------


def test_echo_prepends_the_prompt_and_its_logprobs(client, engine):
    body = completion(client, max_tokens=2, echo=True, logprobs=1)
    choice = body["choices"][0]
    assert choice["text"].startswith("a b c")
    # echo scores the prompt with as many candidates as the output (as vLLM).
    assert engine.requests[-1].sampling.prompt_logprobs == 1
    lp = choice["logprobs"]
    prompt_len = body["usage"]["prompt_tokens"]
    assert len(lp["tokens"]) == prompt_len + 2
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(v is not None for v in lp["token_logprobs"][1:])
    assert len(choice["prompt_logprobs"]) == prompt_len and choice["prompt_logprobs"][0] is None


def test_echo_with_max_tokens_0_scores_the_prompt_only(client, engine):
    # What `lm_eval --model local-completions` sends for loglikelihood tasks.
    body = completion(client, prompt=[5, 6, 7], max_tokens=0, echo=True, logprobs=1,
                      temperature=0)
    choice = body["choices"][0]
    assert choice["text"] == " w5 w6 w7"  # token-id prompts are decoded
    assert len(choice["logprobs"]["tokens"]) == 3
    assert engine.requests[-1].sampling.max_tokens == 1


def test_prompt_logprobs_have_vllms_shape(client):
    body = completion(client, max_tokens=1, prompt_logprobs=2)
    entries = body["choices"][0]["prompt_logprobs"]
    assert entries[0] is None
    for entry in entries[1:]:
        assert 2 <= len(entry) <= 3
        for token_id, value in entry.items():
            assert token_id.isdigit() and set(value) == {"logprob", "rank", "decoded_token"}
    assert body["choices"][0]["logprobs"] is None
    r = chat(client, max_tokens=1, prompt_logprobs=0)
    assert r.json()["prompt_logprobs"][0] is None and len(r.json()["prompt_logprobs"]) > 1


def test_echo_streams_the_prompt_first(client):
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "a b c",
                                             "max_tokens": 2, "echo": True, "logprobs": 0,
                                             "stream": True})
    chunks = [e["choices"][0] for e in events(r.text)]
    assert chunks[0]["text"].startswith("a b c")
    assert chunks[0]["logprobs"]["token_logprobs"][0] is None
    assert chunks[-1]["finish_reason"] == "length"


# ---- structured outputs -------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.mark.parametrize(("fields", "expected"), [
    ({"response_format": {"type": "json_object"}},
     StructuredOutput("json_object", True, "response_format")),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}},
     StructuredOutput("json", SCHEMA, "response_format.json_schema.schema")),
    ({"structured_outputs": {"json": SCHEMA}},
     StructuredOutput("json", SCHEMA, "structured_outputs.json")),
    ({"structured_outputs": {"json": json.dumps(SCHEMA)}},
     StructuredOutput("json", SCHEMA, "structured_outputs.json")),
    ({"structured_outputs": {"regex": "[0-9]+"}},
     StructuredOutput("regex", "[0-9]+", "structured_outputs.regex")),
    ({"structured_outputs": {"choice": ["yes", "no"]}},
     StructuredOutput("choice", ("yes", "no"), "structured_outputs.choice")),
    ({"structured_outputs": {"grammar": "root ::= 'a'"}},
     StructuredOutput("grammar", "root ::= 'a'", "structured_outputs.grammar")),
    ({"response_format": {"type": "text"}}, None),
])
def test_a_structured_output_reaches_the_engine_as_one_constraint(client, engine, fields,
                                                                   expected):
    completion(client, max_tokens=2, **fields)
    assert engine.requests[-1].sampling.structured == expected
    assert chat(client, max_tokens=2, **fields).status_code == 200
    assert engine.requests[-1].sampling.structured == expected


def test_a_choice_is_answered(client):
    body = completion(client, max_tokens=5, structured_outputs={"choice": ["yes", "no"]})
    assert body["choices"][0]["text"] == "yes"


BAD_STRUCTURED = [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "s",
                                                                "schema": {"type": "nope"}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "s"}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "structural_tag"}}, "response_format"),
    ({"structured_outputs": {"json": {"properties": {"a": {"minimum": "x"}}}}},
     "structured_outputs.json"),
    ({"structured_outputs": {"json": "{not json"}}, "structured_outputs.json"),
    ({"structured_outputs": {"regex": "(unclosed"}}, "structured_outputs.regex"),
    ({"structured_outputs": {"grammar": "not a grammar"}}, "structured_outputs.grammar"),
    ({"structured_outputs": {"choice": []}}, "structured_outputs.choice"),
    ({"structured_outputs": {}}, "structured_outputs"),
    ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
    ({"structured_outputs": {"json_object": False}}, "structured_outputs.json_object"),
    ({"structured_outputs": {"regex": "a"}, "response_format": {"type": "json_object"}},
     "structured_outputs"),
]


@pytest.mark.parametrize(("fields", "param"), BAD_STRUCTURED,
                         ids=[p + str(i) for i, (_, p) in enumerate(BAD_STRUCTURED)])
@pytest.mark.parametrize("stream", [False, True])
def test_a_malformed_constraint_is_a_400_naming_it(client, engine, fields, param, stream):
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "x",
                                             "stream": stream, **fields})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert engine.requests == []


def test_the_400_carries_the_parsers_message(client):
    r = completion_error(client, {"structured_outputs": {"json": {"type": "nope"}}})
    assert "'nope' is not valid under any of the given schemas" in r["message"]
    r = completion_error(client, {"structured_outputs": {"regex": "(unclosed"}})
    assert "missing ), unterminated subpattern" in r["message"]


def completion_error(client, fields: dict) -> dict:
    r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "x", **fields})
    assert r.status_code == 400, r.text
    return r.json()["error"]


# ---- tools ------------------------------------------------------------------------------


def test_a_named_tool_call_is_forced_and_returned(client, engine):
    engine.reply = '{"city": "Paris"}'
    r = chat(client, tools=[WEATHER], max_tokens=20,
             tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert r.status_code == 200, r.text
    spec = engine.requests[-1].sampling.structured
    assert (spec.kind, spec.value) == ("json", WEATHER["function"]["parameters"])
    assert engine.rendered_tools[-1] == [WEATHER]  # the chat template sees the tools
    choice = r.json()["choices"][0]
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert choice["message"]["content"] is None and choice["finish_reason"] == "stop"


def test_required_tool_calls_follow_vllms_schema(client, engine):
    engine.reply = '[{"name": "get_weather", "parameters": {"city": "Oslo"}}]'
    r = chat(client, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,
             max_tokens=30)
    schema = engine.requests[-1].sampling.structured.value
    assert schema["type"] == "array" and schema["maxItems"] == 1
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}


def test_the_required_schema_is_vllms():
    tool_utils = pytest.importorskip("vllm.tool_parsers.utils")
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as Vllm

    from serve.protocol import ChatCompletionRequest
    from serve.tool_calls import required_schema

    fields = {"model": "m", "messages": HELLO, "tools": [WEATHER, {
        "type": "function", "function": {"name": "noargs"}}], "tool_choice": "required"}
    for parallel in (None, False):
        ours = ChatCompletionRequest.model_validate({**fields, "parallel_tool_calls": parallel})
        theirs = Vllm.model_validate({**fields, "parallel_tool_calls": parallel})
        assert required_schema(ours) == tool_utils.get_json_schema_from_tools(
            theirs.tool_choice, theirs.tools, parallel)


def test_a_streamed_tool_call_arrives_whole(client, engine):
    engine.reply = '{"city": "Rome"}'
    r = chat(client, tools=[WEATHER], stream=True, max_tokens=20,
             tool_choice={"type": "function", "function": {"name": "get_weather"}})
    last = events(r.text)[-1]["choices"][0]
    (call,) = last["delta"]["tool_calls"]
    assert call["index"] == 0 and call["function"]["arguments"] == '{"city": "Rome"}'


def test_tool_choice_none_generates_text(client, engine):
    r = chat(client, tools=[WEATHER], tool_choice="none", max_tokens=2)
    assert r.json()["choices"][0]["message"]["content"]
    assert engine.requests[-1].sampling.structured is None


BAD_TOOLS = [
    ({"tools": [WEATHER]}, "tool_choice", "unsupported_parameter"),  # auto, the default
    ({"tools": [WEATHER], "tool_choice": "auto"}, "tool_choice", "unsupported_parameter"),
    ({"tool_choice": "required"}, "tool_choice", "invalid_value"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "tool_choice.function.name", "invalid_value"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": 5}}}}}], "tool_choice": "required"},
     "tools[0].function.parameters", "invalid_schema"),
    ({"tools": [WEATHER, WEATHER], "tool_choice": "required"}, "tools[1].function.name",
     "invalid_value"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}],
      "tool_choice": "required"}, "tools[0].function.name", "invalid_value"),
    ({"tools": [WEATHER], "tool_choice": "required",
      "response_format": {"type": "json_object"}}, "tool_choice", "invalid_value"),
]


@pytest.mark.parametrize(("fields", "param", "code"), BAD_TOOLS,
                         ids=[f"{i}-{p}" for i, (_, p, _) in enumerate(BAD_TOOLS)])
def test_a_bad_tool_request_is_a_400_naming_the_field(client, engine, fields, param, code):
    r = chat(client, **fields)
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["param"], r.json()["error"]["code"]) == (param, code)
    assert engine.requests == []
