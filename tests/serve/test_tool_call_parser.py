"""`tool_choice: "auto"` with `--tool-call-parser`: the fake engine answers in hermes syntax
(`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`) and vLLM's real hermes parser
(`serve.vllm_tools`, on the TinyStories tokenizer) reads it back, whole and streamed. Without the
flag `auto` stays a 400; an unknown parser name stops `jaxtune serve` before any engine starts.
The same on a real vLLM engine: test_vllm_server.py."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from infra.cli import main as jaxtune_main
from serve import vllm_tools
from serve.engine import InvalidGenerationError, ToolCallRequest
from serve.vllm_params import sampling_params
from tests.fixtures.tiny_model import TINYSTORIES_DIR
from tests.serve.fake_server import FAKE_MODEL, fake_app, fake_engine
from tests.serve.test_request_surface import HELLO, WEATHER, chat, events
from tests.serve.test_settings_cli import make_model_dir, parse

pytest.importorskip("vllm")  # the parsers are vLLM's

CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def hermes():
    """A fake-engine hook that sets requests up with vLLM's hermes parser, as VllmEngine does."""
    from vllm.tokenizers import get_tokenizer

    tokenizer = get_tokenizer(TINYSTORIES_DIR)
    parser_cls = vllm_tools.parser_class("hermes", tokenizer, FAKE_MODEL)

    def parsing(model: str, request: ToolCallRequest):
        return vllm_tools.tool_call_parsing(parser_cls, tokenizer, request, model=model)

    return parsing


@pytest.fixture
def auto(hermes):
    engine = fake_engine()
    engine.tool_parser = hermes
    app, _ = fake_app(engine, tool_call_parser="hermes")
    with TestClient(app) as client:
        yield client, engine


@pytest.mark.parametrize("choice", [{}, {"tool_choice": "auto"}], ids=["default", "auto"])
def test_a_call_in_the_models_syntax_comes_back_as_tool_calls(auto, choice):
    client, engine = auto
    engine.reply = f"Let me look. {CALL}"
    r = chat(client, tools=[WEATHER], max_tokens=30, n=2, **choice)
    assert r.status_code == 200, r.text
    # Unconstrained, the tools shown to the template, special tokens kept (hermes asks so).
    sampling = engine.requests[-1].sampling
    assert sampling.structured is None and sampling.skip_special_tokens is False
    assert engine.rendered_tools[-1] == [WEATHER]
    assert engine.tool_requests[-1].tools == (WEATHER,)
    for choice_ in r.json()["choices"]:  # each choice read by its own parser
        assert choice_["finish_reason"] == "tool_calls"
        message = choice_["message"]
        assert message["content"] == "Let me look. "  # as the parser returns it
        (call,) = message["tool_calls"]
        assert call["id"] and call["type"] == "function"
        assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


def test_plain_text_stays_content(auto):
    client, engine = auto
    engine.reply = "It is sunny in Paris today."
    r = chat(client, tools=[WEATHER], max_tokens=30)
    (choice,) = r.json()["choices"]
    assert choice["message"] == {"role": "assistant", "content": "It is sunny in Paris today.",
                                 "tool_calls": None}
    assert choice["finish_reason"] == "stop"


def test_parallel_tool_calls_false_keeps_the_first_call(auto):
    client, engine = auto
    engine.reply = CALL + '<tool_call>{"name": "get_time", "arguments": {"zone": "CET"}}' \
                          '</tool_call>'
    both = chat(client, tools=[WEATHER, TIME], max_tokens=30).json()["choices"][0]
    assert [c["function"]["name"] for c in both["message"]["tool_calls"]] == \
        ["get_weather", "get_time"]
    assert both["message"]["content"] is None
    one = chat(client, tools=[WEATHER, TIME], max_tokens=30, parallel_tool_calls=False)
    assert [c["function"]["name"] for c in one.json()["choices"][0]["message"]["tool_calls"]] \
        == ["get_weather"]


def _streamed(text: str) -> tuple[str, dict[int, dict], list]:
    """The content, the calls by index (pieces joined) and finish reasons of a chat stream."""
    content, calls, reasons = "", {}, []
    for event in events(text):
        (choice,) = event["choices"]
        delta = choice["delta"]
        content += delta.get("content") or ""
        for piece in delta.get("tool_calls") or ():
            call = calls.setdefault(piece["index"], {"id": None, "name": "", "arguments": ""})
            call["id"] = call["id"] or piece.get("id")
            function = piece.get("function") or {}
            call["name"] += function.get("name") or ""
            call["arguments"] += function.get("arguments") or ""
        reasons.append(choice["finish_reason"])
    return content, calls, reasons


def test_a_streamed_call_arrives_in_pieces_as_vllm_streams_it(auto):
    client, engine = auto
    engine.reply = f"Let me look. {CALL}"
    r = chat(client, tools=[WEATHER], max_tokens=30, stream=True)
    assert r.status_code == 200, r.text
    content, calls, reasons = _streamed(r.text)
    assert content == "Let me look. "
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert reasons[-1] == "tool_calls" and set(reasons[:-1]) == {None}


def test_streamed_plain_text_stays_content(auto):
    client, engine = auto
    engine.reply = "It is sunny in Paris today."
    content, calls, reasons = _streamed(chat(client, tools=[WEATHER], max_tokens=30,
                                             stream=True).text)
    assert (content, calls, reasons[-1]) == ("It is sunny in Paris today.", {}, "stop")


def test_the_parsers_constraint_reaches_the_engine(auto):
    client, engine = auto
    engine.reply = "fine"
    # A strict tool: vLLM's hermes parser pins its arguments with a structural tag.
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    assert chat(client, tools=[strict], max_tokens=5).status_code == 200
    spec = engine.requests[-1].sampling.structured
    assert (spec.kind, spec.param) == ("structural_tag", "tools")
    assert "<tool_call>" in spec.value
    # What VllmEngine hands vLLM for it.
    params = sampling_params(engine.requests[-1].sampling)
    assert params.structured_outputs.structural_tag == spec.value
    assert params.skip_special_tokens is False
    # Otherwise the request's own constraint is kept as it is.
    chat(client, tools=[WEATHER], max_tokens=5, response_format={"type": "json_object"})
    spec = engine.requests[-1].sampling.structured
    assert (spec.kind, spec.value, spec.param) == ("json_object", True, "response_format")


def test_a_parser_change_the_server_cannot_pass_on_is_refused():
    class Retemperature:  # stands in for a parser whose adjust_request changes sampling
        def __init__(self, tokenizer, tools, **kwargs):
            pass

        def adjust_request(self, request):
            request.temperature = 0.1
            return request

    request = ToolCallRequest(tuple(HELLO), (WEATHER,), (1, 2))
    with pytest.raises(InvalidGenerationError, match="temperature") as caught:
        vllm_tools.tool_call_parsing(Retemperature, None, request, model="m")
    assert caught.value.param == "tool_choice"


def test_auto_without_the_flag_is_a_400_naming_tool_choice(client, engine):
    for choice in ({}, {"tool_choice": "auto"}):
        r = chat(client, tools=[WEATHER], **choice)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert (error["param"], error["code"]) == ("tool_choice", "unsupported_parameter")
        assert "--tool-call-parser" in error["message"]
    assert engine.requests == []


def test_the_parser_flag_takes_vllms_names(tmp_path):
    base = make_model_dir(tmp_path / "m")
    from serve.cli import settings_from_args

    args = parse(["--model", str(base), "--tool-call-parser", "hermes"])
    assert settings_from_args(args).tool_call_parser == "hermes"
    assert settings_from_args(parse(["--model", str(base)])).tool_call_parser is None


def test_an_unknown_parser_stops_serve_in_one_line(tmp_path, capsys):
    base = make_model_dir(tmp_path / "m")
    code = jaxtune_main(["serve", "--model", str(base), "--tool-call-parser", "nope"])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.count("\n") == 0, err
    assert "'nope'" in err and "hermes" in err and "llama3_json" in err
