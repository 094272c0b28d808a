"""`jaxtune serve` on a real vLLM engine (one server for the whole module), driven by the
official `openai` client: completions, chat, streaming, a LoRA adapter, metrics that match
the traffic, 64 concurrent streams, a client that disconnects mid-stream, and vLLM's request
surface (logprobs against transformers, echo, structured outputs, forced tool calls,
`tool_choice: "auto"` read by vLLM's hermes parser, /tokenize)."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.serve.lora_adapter import build_lora_adapter
from tests.serve.test_system_routes import metric
from tests.serve.vllm_server import TEST_ENGINE_FLAGS, jaxtune_server, serving_context_len

pytestmark = pytest.mark.vllm

MODEL = "tiny"
ADAPTER = "tiny-lora"
API_KEY = "integration-key"
PROMPT = "Once upon a time there was a little dog"
GREEDY = {"temperature": 0.0, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def context(served_model_dir) -> int:
    return serving_context_len(served_model_dir)


@pytest.fixture(scope="module")
def server(served_model_dir, context, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm_server")
    adapter = build_lora_adapter(served_model_dir, tmp / "adapter")
    with jaxtune_server(served_model_dir, name=MODEL, log_path=tmp / "server.log",
                        extra_args=[*TEST_ENGINE_FLAGS, "--lora", f"{ADAPTER}={adapter}",
                                    "--max-in-flight", "128", "--max-model-len", str(context),
                                    "--tool-call-parser", "hermes"],
                        env={"JAXTUNE_API_KEY": API_KEY}) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer(served_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(served_model_dir)


def scrape(server: str, http: httpx.Client | None = None) -> str:
    if http is not None:  # an open client: no connection or TLS-context set-up on the clock
        return http.get(f"{server}/metrics").text
    return httpx.get(f"{server}/metrics", timeout=10).text


# First in the module, on a fresh server. Run last (after the 64-stream test and the others),
# in about three module runs in eight the client read its first event only ~27-35 s after the
# request, once the generation was over or nearly so, although the server logged a 6 ms time
# to first token: the hang-up then came too late to abort anything. That delivery delay is a
# separate, open problem (see the 2026-11-22 notes in docs/SERVING.md); this test checks that a
# hang-up mid-stream aborts the generation and frees its slot.
def test_client_disconnect_mid_stream_frees_its_slot(server, context):
    before = scrape(server)
    # As long as the context allows, so the generation is still running when we hang up.
    max_tokens = context - 20
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": max_tokens, "ignore_eos": True,
            "stream": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    started = time.monotonic()
    with httpx.Client(base_url=server, timeout=60) as http, \
            http.stream("POST", "/v1/completions", json=body, headers=headers) as response:
        lines = response.iter_lines()  # one iterator: leaving it early would close the stream
        while not next(lines).startswith("data: "):
            pass
        during = scrape(server, http)
    # Leaving the block closed the connection: the engine request must be aborted.
    deadline = time.monotonic() + 30
    while True:
        after = scrape(server)
        running = metric(after, "jaxtune_engine_requests_running")
        waiting = metric(after, "jaxtune_engine_requests_waiting")
        if (running, waiting, metric(after, "jaxtune_requests_in_flight")) == (0, 0, 0):
            break
        assert time.monotonic() < deadline, after
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    generated = metric(after, "jaxtune_generation_tokens_total", model=MODEL) - \
        metric(before, "jaxtune_generation_tokens_total", model=MODEL)
    # Proof of the abort: the request stopped well short of its max_tokens.
    assert 1 <= generated < max_tokens, (generated, elapsed)
    # While it streamed, it held a slot and an engine sequence.
    assert metric(during, "jaxtune_requests_in_flight") == 1
    assert metric(during, "jaxtune_engine_requests_running") + \
        metric(during, "jaxtune_engine_requests_waiting") == 1


def test_models_list_base_and_adapter(client, context):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {MODEL, ADAPTER}
    assert models[ADAPTER].model_extra["parent"] == MODEL
    assert models[MODEL].model_extra["parent"] is None
    assert models[MODEL].model_extra["max_model_len"] == context


def test_completion_with_the_openai_client(client, tokenizer):
    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, **GREEDY)
    (choice,) = out.choices
    assert choice.finish_reason == "length" and choice.text
    assert out.usage.completion_tokens == 8
    assert out.usage.prompt_tokens == len(tokenizer.encode(PROMPT))
    again = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, **GREEDY)
    assert again.choices[0].text == choice.text


def test_chat_with_the_openai_client(client, tokenizer):
    messages = [{"role": "user", "content": "Tell me a story about a cat."}]
    out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, **GREEDY)
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content
    assert out.usage.completion_tokens == 6
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert out.usage.prompt_tokens == len(tokenizer.encode(rendered, add_special_tokens=False))


def test_streaming_equals_non_streaming(client):
    full = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, **GREEDY)
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, stream=True,
                                       stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
    assert chunks[-1].usage.completion_tokens == 12

    messages = [{"role": "user", "content": "Hello"}]
    chat_full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10,
                                               **GREEDY)
    chat_stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10,
                                                 stream=True, **GREEDY)
    parts = list(chat_stream)
    assert parts[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parts) == \
        chat_full.choices[0].message.content
    assert parts[-1].choices[0].finish_reason == "length"


def test_seed_n_and_stop(client):
    sample = {"model": MODEL, "prompt": PROMPT, "max_tokens": 10, "temperature": 1.0,
              "extra_body": {"ignore_eos": True}}
    a = client.completions.create(seed=123, n=2, **sample)
    b = client.completions.create(seed=123, n=2, **sample)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len(a.choices) == 2 and a.usage.completion_tokens == 20
    greedy = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, **GREEDY)
    text = greedy.choices[0].text
    stop = text[len(text) // 2:len(text) // 2 + 3]
    cut = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, stop=[stop],
                                    **GREEDY)
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[:text.index(stop)]


def test_lora_adapter_is_selected_by_model_name(client):
    base = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, **GREEDY)
    tuned = client.completions.create(model=ADAPTER, prompt=PROMPT, max_tokens=10, **GREEDY)
    tuned_again = client.completions.create(model=ADAPTER, prompt=PROMPT, max_tokens=10,
                                            **GREEDY)
    assert tuned.model == ADAPTER
    assert tuned.choices[0].text == tuned_again.choices[0].text
    assert tuned.choices[0].text != base.choices[0].text


def test_invalid_requests_are_4xx(client, server, context):
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt="dog " * (context + 10), max_tokens=1)
    assert exc.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=100_000)
    assert exc.value.body["param"] == "max_tokens"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt=PROMPT, max_tokens=1)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).models.list()
    r = httpx.post(f"{server}/v1/completions", content=b"{oops",
                   headers={"Authorization": f"Bearer {API_KEY}",
                            "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_metrics_match_the_requests_sent(client, server):
    before = scrape(server)
    prompt_tokens = completion_tokens = 0
    for i in range(4):
        out = client.completions.create(model=MODEL, prompt=f"{PROMPT} {i}", max_tokens=3 + i,
                                        **GREEDY)
        prompt_tokens += out.usage.prompt_tokens
        completion_tokens += out.usage.completion_tokens
    chat = client.chat.completions.create(model=MODEL, max_tokens=5, **GREEDY,
                                          messages=[{"role": "user", "content": "hi"}])
    prompt_tokens += chat.usage.prompt_tokens
    completion_tokens += chat.usage.completion_tokens
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=100_000)
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("jaxtune_http_requests_total", endpoint="/v1/completions", status="200") == 4
    assert delta("jaxtune_http_requests_total", endpoint="/v1/completions", status="400") == 1
    assert delta("jaxtune_http_requests_total", endpoint="/v1/chat/completions",
                 status="200") == 1
    assert delta("jaxtune_prompt_tokens_total", model=MODEL) == prompt_tokens
    assert delta("jaxtune_generation_tokens_total", model=MODEL) == completion_tokens
    assert completion_tokens == 3 + 4 + 5 + 6 + 5
    assert delta("jaxtune_time_to_first_token_seconds_count", model=MODEL) == 5
    assert delta("jaxtune_e2e_request_latency_seconds_count", model=MODEL) == 5
    assert delta("jaxtune_inter_token_latency_seconds_count", model=MODEL) == \
        completion_tokens - 5


def test_64_concurrent_streams_finish_without_errors(server):
    async def run() -> list[int | BaseException]:
        async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=API_KEY,
                                      max_retries=0, timeout=300) as aclient:
            async def one(i: int) -> int:
                stream = await aclient.completions.create(
                    model=MODEL if i % 2 else ADAPTER, prompt=f"{PROMPT} number {i}",
                    max_tokens=16, stream=True, stream_options={"include_usage": True},
                    **GREEDY)
                text, usage = "", None
                async for chunk in stream:
                    text += "".join(c.text for c in chunk.choices)
                    usage = chunk.usage or usage
                assert text
                return usage.completion_tokens

            return await asyncio.gather(*(one(i) for i in range(64)), return_exceptions=True)

    results = asyncio.run(run())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert results == [16] * 64
    text = scrape(server)
    assert metric(text, "jaxtune_requests_in_flight") == 0
    assert metric(text, "jaxtune_engine_requests_running") == 0



# ---- vLLM's request surface (issue #19): logprobs, echo, structured outputs, tools ----------

def _logprobs_by_transformers(model_dir, ids: list[int]):
    """log p(ids[t] | ids[:t]) for t >= 1 from transformers, the reference for vLLM's."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]


def test_logprobs_are_the_models(client):
    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, logprobs=3,
                                    **GREEDY)
    lp = out.choices[0].logprobs
    assert "".join(lp.tokens) == out.choices[0].text and len(lp.tokens) == 5
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        # Greedy: the chosen token is the best candidate.
        assert logprob <= 0 and logprob == pytest.approx(max(top.values()), abs=1e-5)
        assert top[token] == logprob and 3 <= len(top) <= 4
    chat = client.chat.completions.create(model=MODEL, max_tokens=4, logprobs=True,
                                          top_logprobs=2, **GREEDY,
                                          messages=[{"role": "user", "content": "Hello"}])
    content = chat.choices[0].logprobs.content
    assert "".join(c.token for c in content) == chat.choices[0].message.content
    for entry in content:
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-5)
        assert entry.bytes == list(entry.token.encode("utf-8", errors="replace"))
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, logprobs=3,
                                       stream=True, **GREEDY)
    streamed = [x for c in stream if c.choices for x in c.choices[0].logprobs.token_logprobs]
    assert streamed == pytest.approx(lp.token_logprobs, abs=1e-6)


def test_echo_scores_the_prompt_as_transformers_does(client, tokenizer, served_model_dir):
    # The request `lm_eval --model local-completions` sends for loglikelihood tasks.
    ids = tokenizer.encode(PROMPT)
    out = client.completions.create(model=MODEL, prompt=ids, max_tokens=1, echo=True,
                                    logprobs=1, temperature=0, seed=1234)
    lp = out.choices[0].logprobs
    assert out.choices[0].text.startswith(tokenizer.decode(ids))
    assert len(lp.tokens) == len(ids) + 1 and lp.token_logprobs[0] is None
    expected = _logprobs_by_transformers(served_model_dir, ids)
    # The bound. float32 model, served in float32 (`--dtype auto` keeps the checkpoint's
    # dtype; vLLM's own `auto` ran it in bfloat16, which differed by up to 2.05e-3 here).
    tol = 1e-3
    assert lp.token_logprobs[1:len(ids)] == pytest.approx(expected, abs=tol)
    only = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=0, echo=True,
                                     logprobs=0)
    assert only.choices[0].text == PROMPT
    assert only.choices[0].logprobs.token_logprobs[1:] == pytest.approx(expected, abs=tol)
    scored = client.completions.create(model=MODEL, prompt=ids, max_tokens=1,
                                       extra_body={"prompt_logprobs": 2})
    prompt_lps = scored.choices[0].model_extra["prompt_logprobs"]
    assert prompt_lps[0] is None and len(prompt_lps) == len(ids)
    for t, entry in enumerate(prompt_lps[1:], start=1):
        assert entry[str(ids[t])]["logprob"] == pytest.approx(expected[t - 1], abs=tol)
        assert 1 <= len(entry) <= 3


def test_structured_outputs_are_kept_on_the_cpu_backend(client):
    # Random weights: unconstrained, this model writes neither a colour nor a number, so a
    # conforming output is the constraint's work. Sampled (temperature 1) over several seeds.
    import json
    import re

    for seed in range(4):
        choice = client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=1.0, seed=seed,
            extra_body={"structured_outputs": {"choice": ["red", "green"]}})
        assert choice.choices[0].text in ("red", "green")
        assert choice.choices[0].finish_reason == "stop"
        regex = client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=12, temperature=1.0, seed=seed, stream=True,
            extra_body={"structured_outputs": {"regex": "[0-9]{3}-[a-z]{2}"}})
        assert re.fullmatch("[0-9]{3}-[a-z]{2}", "".join(c.choices[0].text for c in regex))
    # The TinyStories tokenizer has '"' but no '{' or '[': a JSON string is the JSON schema it
    # can spell (an object one is the 400 below; SmolLM2's is in test_structured_smollm2.py).
    schema = {"type": "string", "enum": ["yes", "no"]}
    chat = client.chat.completions.create(
        model=MODEL, max_tokens=8, temperature=1.0, seed=0,
        messages=[{"role": "user", "content": "yes or no?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    assert json.loads(chat.choices[0].message.content) in ("yes", "no")


def test_a_constraint_the_vocabulary_cannot_begin_is_a_400(client):
    # Without the check vLLM masks every logit, samples token 0 and aborts the request.
    schema = {"type": "object", "required": ["answer"],
              "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}}}
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": params}}]
    requests = [
        ("response_format.json_schema.schema", lambda stream: client.chat.completions.create(
            model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "JSON"}],
            stream=stream, response_format={"type": "json_schema",
                                            "json_schema": {"name": "a", "schema": schema}})),
        ("structured_outputs.json_object", lambda stream: client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, stream=stream,
            extra_body={"structured_outputs": {"json_object": True}})),
        ("tools", lambda stream: client.chat.completions.create(
            model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "Weather?"}],
            stream=stream, tools=tools, tool_choice="required")),
    ]
    for param, send in requests:
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as caught:
                send(stream)
            body = caught.value.body or {}
            assert body.get("param") == param, body
            assert "has no token that can begin" in body.get("message", ""), body
    # A dead end after the first token ('a', then no token holds '('): vLLM ends the request
    # and the client is told why, not handed the partial text.
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8,
                                  extra_body={"structured_outputs": {"regex": "a[(]b"}})
    body = caught.value.body or {}
    assert body.get("param") == "structured_outputs.regex", body
    assert "stopped midway" in body.get("message", ""), body


@pytest.mark.parametrize(("extra", "param"), [
    ({"structured_outputs": {"regex": "(unclosed"}}, "structured_outputs.regex"),
    ({"structured_outputs": {"grammar": "root ::= ("}}, "structured_outputs.grammar"),
    ({"response_format": {"type": "json_schema",
                          "json_schema": {"name": "a", "schema": {"type": "nope"}}}},
     "response_format.json_schema.schema"),
])
def test_a_constraint_vllm_cannot_compile_is_a_400(client, extra, param):
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as exc:
            client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, stream=stream,
                                      extra_body=extra)
        assert exc.value.body["param"] == param and exc.value.body["message"]


def test_tool_choice_auto_answers_text_through_the_parser(client):
    # The server runs vLLM's hermes parser (checked against the tokenizer at start-up); the
    # random tiny model never spells a <tool_call>, so its answer stays content.
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    out = client.chat.completions.create(model=MODEL, messages=messages, tools=tools,
                                         max_tokens=8, **GREEDY)
    choice = out.choices[0]
    assert choice.message.tool_calls is None and choice.message.content
    assert choice.finish_reason == "length" and out.usage.completion_tokens == 8
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, tools=tools,
                                                 max_tokens=8, stream=True, **GREEDY))
    deltas = [c.choices[0] for c in chunks if c.choices]
    assert not any(d.delta.tool_calls for d in deltas)
    assert "".join(d.delta.content or "" for d in deltas) == choice.message.content
    assert deltas[-1].finish_reason == "length"


def test_tokenize_and_detokenize(server, tokenizer):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    r = httpx.post(f"{server}/tokenize", json={"model": MODEL, "prompt": PROMPT},
                   headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["tokens"] == tokenizer.encode(PROMPT)
    r = httpx.post(f"{server}/detokenize", json={"model": MODEL, "tokens": r.json()["tokens"]},
                   headers=headers)
    assert r.json()["prompt"] == tokenizer.decode(tokenizer.encode(PROMPT))
    assert httpx.post(f"{server}/tokenize", json={"model": MODEL, "prompt": "x"}).status_code \
        == 401
