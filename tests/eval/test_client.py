"""The OpenAI-compatible client against the fake server: timing, errors, retries, cache."""

import asyncio
import statistics

import pytest

from eval.cache import GenerationCache
from eval.client import ClientConfig, EndpointConfigError, OpenAIClient, SamplingParams
from tests.eval.fake_server import FakeBehaviour, run_fake_server

PARAMS = SamplingParams(max_tokens=16)


def _generate(config, prompts, params=PARAMS, cache=None):
    async def main():
        async with OpenAIClient(config, cache) as client:
            return await asyncio.gather(*(client.generate(p, params) for p in prompts))
    return asyncio.run(main())


def test_measured_ttft_and_itl_match_injected_delays():
    behaviour = FakeBehaviour(ttft_s=0.2, itl_s=0.05, default_answer="a b c d e f")
    with run_fake_server(behaviour) as url:
        outcomes = _generate(ClientConfig(base_url=url, model="m", concurrency=3),
                             [f"p{i}" for i in range(6)])
    for outcome in outcomes:
        assert outcome.ok, outcome.error_message
        assert outcome.text == "a b c d e f"
        assert outcome.output_tokens == 6
        assert len(outcome.itl_s) == 5
        # Injected delays are hard lower bounds on TTFT and on the whole stream (single gaps
        # are not: chunks that queue up while the client is descheduled arrive together).
        assert outcome.ttft_s >= 0.19 and outcome.e2e_s >= 0.2 + 5 * 0.05 - 0.01
        assert outcome.tpot_s == pytest.approx((outcome.e2e_s - outcome.ttft_s) / 5)
        assert outcome.e2e_s == pytest.approx(outcome.ttft_s + sum(outcome.itl_s), abs=1e-6)
    # Medians sit on the injected values; scheduling noise on a shared machine adds a little.
    assert 0.19 <= statistics.median(o.ttft_s for o in outcomes) <= 0.2 + 0.1
    assert 0.04 <= statistics.median(g for o in outcomes for g in o.itl_s) <= 0.05 + 0.025
    assert 0.045 <= statistics.median(o.tpot_s for o in outcomes) <= 0.05 + 0.025


def test_chat_endpoint_assembles_deltas():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    behaviour = FakeBehaviour(answers={"hi": "hello there"})
    with run_fake_server(behaviour) as url:
        (outcome,) = _generate(ClientConfig(base_url=url + "/v1", model="m", endpoint="chat"),
                               [messages])
    assert outcome.ok and outcome.text == "hello there"


def test_http_error_timeout_and_cut_stream_are_counted_not_raised():
    behaviour = FakeBehaviour(ttft_s=0.01)
    with run_fake_server(behaviour) as url:
        config = ClientConfig(base_url=url, model="m", timeout_s=0.5)
        outcomes = _generate(config, ["x [[500]]", "y [[hang]]", "z [[cut]]", "fine"])
    kinds = [o.error_kind for o in outcomes]
    assert kinds[0] == "http_500" and "injected failure" in outcomes[0].error_message
    assert kinds[1] == "timeout"
    assert kinds[2] in ("transport_error", "empty_response")
    assert outcomes[3].ok
    assert [o.attempts for o in outcomes] == [1, 1, 1, 1]  # HTTP errors are never retried
    assert behaviour.requests_seen == 4


def test_connection_errors_are_retried_then_reported():
    config = ClientConfig(base_url="http://127.0.0.1:9", model="m", max_retries=2,
                          retry_backoff_s=0.01, connect_timeout_s=1.0)
    (outcome,) = _generate(config, ["p"])
    assert not outcome.ok
    assert outcome.error_kind == "connection_error"
    assert outcome.attempts == 3


def test_cache_returns_stored_answer_without_a_request(tmp_path):
    behaviour = FakeBehaviour(default_answer="cached answer")
    cache = GenerationCache(tmp_path / "cache.sqlite")
    with run_fake_server(behaviour) as url:
        config = ClientConfig(base_url=url, model="m")
        (first,) = _generate(config, ["p"], cache=cache)
        (second,) = _generate(config, ["p"], cache=cache)
        (other,) = _generate(config, ["p"], params=SamplingParams(max_tokens=1), cache=cache)
    assert not first.cached and second.cached
    assert second.text == first.text == "cached answer"
    assert second.tpot_s is None  # no timing is replayed from the cache
    assert other.text == "cached" and not other.cached  # other parameters, other key
    assert behaviour.requests_seen == 2
    assert len(cache) == 2


def test_bad_settings_are_rejected():
    with pytest.raises(EndpointConfigError, match="http"):
        ClientConfig(base_url="localhost:8000", model="m")
    with pytest.raises(EndpointConfigError, match="concurrency"):
        ClientConfig(base_url="http://x", model="m", concurrency=0)
    assert ClientConfig(base_url="http://x/v1/", model="m", endpoint="chat").url == \
        "http://x/v1/chat/completions"
