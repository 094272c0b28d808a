"""In-flight cap (429), client disconnects and shutdown, with the fake engine behind a real
uvicorn server (disconnects only happen over a real connection)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serve.admission import Admission
from serve.errors import ServiceUnavailableError, TooManyRequestsError
from tests.serve.fake_server import FAKE_MODEL, fake_app, fake_engine, running_server

SLOW = {"model": FAKE_MODEL, "prompt": "x", "max_tokens": 60}


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def read_chunks(response: httpx.Response, count: int) -> list[str]:
    """Read `count` SSE data lines, keeping the stream open (breaking out of `aiter_lines`
    would close the connection)."""
    lines = getattr(response, "_test_lines", None)
    if lines is None:
        lines = response._test_lines = response.aiter_lines()
    got = []
    while len(got) < count:
        line = await anext(lines)
        if line.startswith("data: "):
            got.append(line)
    return got


@pytest.mark.asyncio
async def test_requests_beyond_the_cap_get_429():
    app, engine = fake_app(fake_engine(token_delay_s=0.05), max_in_flight=2)
    state = app.state.server
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        async with http.stream("POST", "/v1/completions", json={**SLOW, "stream": True}) as a, \
                http.stream("POST", "/v1/completions", json={**SLOW, "stream": True}) as b:
            await read_chunks(a, 1)
            await read_chunks(b, 1)
            assert state.admission.in_flight == 2
            r = await http.post("/v1/completions", json=SLOW)
            assert r.status_code == 429
            assert r.json()["error"]["type"] == "rate_limit_error"
            assert r.json()["error"]["code"] == "too_many_requests"
        # Closing both streams frees both slots: the next request is served.
        await wait_until(lambda: state.admission.in_flight == 0)
        r = await http.post("/v1/completions", json={**SLOW, "max_tokens": 2})
        assert r.status_code == 200
    assert len(engine.requests) == 3


@pytest.mark.asyncio
async def test_stream_disconnect_aborts_the_engine_request():
    app, engine = fake_app(fake_engine(token_delay_s=0.05))
    state = app.state.server
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        async with http.stream("POST", "/v1/chat/completions", json={
                "model": FAKE_MODEL, "max_tokens": 60, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}) as response:
            await read_chunks(response, 3)
            (request,) = engine.requests
            assert engine.load().running == 1
        # Leaving the block closes the connection mid-stream.
        await wait_until(lambda: request.request_id in engine.aborted)
        await wait_until(lambda: state.admission.in_flight == 0)
        assert engine.load().running == 0
        metrics = (await http.get("/metrics")).text
        assert "jaxtune_requests_in_flight 0.0" in metrics
        # Generation stopped early: far fewer than 60 tokens were produced.
        gen = [line for line in metrics.splitlines()
               if line.startswith("jaxtune_generation_tokens_total")]
        assert float(gen[0].split()[-1]) < 30


@pytest.mark.asyncio
async def test_non_streaming_disconnect_aborts_the_engine_request():
    app, engine = fake_app(fake_engine(token_delay_s=0.05))
    state = app.state.server
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        task = asyncio.create_task(http.post("/v1/completions", json=SLOW))
        await wait_until(lambda: len(engine.requests) == 1)
        task.cancel()  # httpx drops the connection
        await asyncio.gather(task, return_exceptions=True)
        await wait_until(lambda: engine.requests[0].request_id in engine.aborted)
        await wait_until(lambda: state.admission.in_flight == 0)
        assert engine.load().running == 0


@pytest.mark.asyncio
async def test_shutdown_aborts_requests_still_running_after_the_drain_timeout():
    app, engine = fake_app(fake_engine(token_delay_s=0.05), drain_timeout_s=0.3)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        task = asyncio.create_task(http.post("/v1/completions", json=SLOW))
        await wait_until(lambda: len(engine.requests) == 1)
        await lifespan.__aexit__(None, None, None)
        r = await task
    assert engine.requests[0].request_id in engine.aborted
    assert engine.closed
    # The client is told its request was cut, not handed a truncated answer as a success.
    assert r.status_code == 503 and r.json()["error"]["code"] == "aborted"


@pytest.mark.asyncio
async def test_shutdown_lets_short_requests_finish():
    app, engine = fake_app(fake_engine(token_delay_s=0.02), drain_timeout_s=10)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        task = asyncio.create_task(http.post("/v1/completions", json={**SLOW, "max_tokens": 10}))
        await wait_until(lambda: len(engine.requests) == 1)
        await lifespan.__aexit__(None, None, None)
        r = await task
    assert r.status_code == 200
    assert r.json()["usage"]["completion_tokens"] == 10
    assert engine.aborted == [] and engine.closed


@pytest.mark.asyncio
async def test_admission_counts_refuses_and_drains():
    admission = Admission(max_in_flight=1)
    ticket = admission.admit("a")
    with pytest.raises(TooManyRequestsError):
        admission.admit("b")
    assert not await admission.drain(timeout_s=0.05)
    with pytest.raises(ServiceUnavailableError):
        admission.admit("c")
    admission.release(ticket)
    admission.release(ticket)  # idempotent
    assert admission.in_flight == 0
    assert await admission.drain(timeout_s=0.05)


def test_engine_failure_is_a_500_with_the_error_shape_and_frees_the_slot():
    from fastapi.testclient import TestClient

    app, _ = fake_app(fake_engine(fail_after=2))
    # raise_server_exceptions (the default) proves no exception escapes the app.
    with TestClient(app) as client:
        r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "x",
                                                 "max_tokens": 5})
        assert r.status_code == 500
        error = r.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "internal_error")
        assert "RuntimeError" in error["message"]
        # Headers already sent: a stream reports the failure in-band, then still ends.
        r = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": "x",
                                                 "max_tokens": 5, "stream": True})
        assert r.status_code == 200
        events = [e for e in r.text.split("\n\n") if e.strip()]
        assert events[-1] == "data: [DONE]"
        assert '"type": "server_error"' in events[-2]
        assert sum('"text"' in e for e in events) == 2
        assert app.state.server.admission.in_flight == 0
