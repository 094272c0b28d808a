"""LoRA adapters loaded and unloaded while the server runs: POST /v1/load_lora_adapter and
/v1/unload_lora_adapter (vLLM's routes and bodies), on the fake engine; the bookkeeping of
`VllmEngine` without vLLM; and, slow, the whole cycle on a real vLLM engine."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from serve.cli import add_arguments, settings_from_args
from serve.settings import LoraSource, ModelSource, ServeSettings
from serve.vllm_engine import _RuntimeAdapters, _worker_error
from tests.serve.fake_server import FAKE_MODEL, fake_app, fake_engine

LOAD, UNLOAD = "/v1/load_lora_adapter", "/v1/unload_lora_adapter"


def write_adapter(path: Path, *, rank: int = 8, targets=("q_proj", "v_proj"),
                  weights: bool = True, **config) -> Path:
    """A PEFT adapter folder as far as the HTTP layer and the fake engine read it."""
    path.mkdir(parents=True)
    adapter_config = {"peft_type": "LORA", "r": rank, "lora_alpha": 16,
                      "target_modules": list(targets), **config}
    (path / "adapter_config.json").write_text(json.dumps(adapter_config))
    if weights:
        (path / "adapter_model.safetensors").write_bytes(b"")
    return path


@pytest.fixture
def lora_app():
    """An app whose fake engine takes adapters at run time (`--enable-lora`), and the engine."""
    return fake_app(enable_lora=True)


@pytest.fixture
def lora_client(lora_app):
    with TestClient(lora_app[0]) as client:
        yield client


def complete(client: TestClient, model: str):
    return client.post("/v1/completions", json={"model": model, "prompt": "a b",
                                                "max_tokens": 2})


def model_ids(client: TestClient) -> dict[str, str | None]:
    return {m["id"]: m["parent"] for m in client.get("/v1/models").json()["data"]}


def test_load_serve_and_unload_an_adapter(lora_client, lora_app, tmp_path):
    engine = lora_app[1]
    adapter = write_adapter(tmp_path / "viggo")
    r = lora_client.post(LOAD, json={"lora_name": "viggo", "lora_path": str(adapter)})
    assert r.status_code == 200, r.text
    assert r.text == "Success: LoRA adapter 'viggo' added successfully."  # vLLM's words
    assert engine.lora_paths == {"viggo": str(adapter.resolve())}
    assert model_ids(lora_client) == {FAKE_MODEL: None, "viggo": FAKE_MODEL}
    r = complete(lora_client, "viggo")
    assert r.status_code == 200 and r.json()["model"] == "viggo"
    assert engine.requests[-1].model == "viggo"

    r = lora_client.post(UNLOAD, json={"lora_name": "viggo"})
    assert r.status_code == 200, r.text
    assert r.text == "Success: LoRA adapter 'viggo' removed successfully."
    assert model_ids(lora_client) == {FAKE_MODEL: None}
    r = complete(lora_client, "viggo")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    # Unloaded twice: now unknown.
    r = lora_client.post(UNLOAD, json={"lora_name": "viggo"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "lora_not_found"


def test_load_inplace_replaces_an_adapters_weights(lora_client, lora_app, tmp_path):
    first, second = write_adapter(tmp_path / "v1"), write_adapter(tmp_path / "v2")
    assert lora_client.post(LOAD, json={"lora_name": "a", "lora_path": str(first)}).is_success
    r = lora_client.post(LOAD, json={"lora_name": "a", "lora_path": str(second),
                                     "load_inplace": True})
    assert r.status_code == 200, r.text
    assert lora_app[1].lora_paths == {"a": str(second.resolve())}
    assert list(model_ids(lora_client)) == [FAKE_MODEL, "a"]


@pytest.mark.parametrize("route,body", [
    (LOAD, {"lora_name": "x", "lora_path": "/nonexistent"}),
    (UNLOAD, {"lora_name": "x"}),
])
def test_without_lora_support_the_routes_say_which_flag_enables_it(client, engine, route, body):
    r = client.post(route, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "lora_not_enabled" and "--enable-lora" in error["message"]
    assert complete(client, FAKE_MODEL).status_code == 200


def test_an_adapter_given_at_start_up_enables_loading_more():
    base = ModelSource("base", Path("/b"))
    plain = ServeSettings(models=(base,))
    with_lora = ServeSettings(models=(base,), loras=(LoraSource("l", Path("/l"), "base"),))
    assert plain.runtime_lora_base is None
    assert with_lora.runtime_lora_base == "base"
    assert ServeSettings(models=(base,), enable_lora=True).runtime_lora_base == "base"


def test_enable_lora_is_a_serve_flag(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = settings_from_args(parser.parse_args(["--model", str(tmp_path),
                                                     "--enable-lora"]))
    assert settings.enable_lora and settings.runtime_lora_base == settings.primary.name


def _bad_folders(tmp: Path) -> dict[str, tuple[Path | str, str]]:
    """Adapter folders a client may name, each with a phrase its 400 must contain."""
    (tmp / "file").write_text("x")
    (tmp / "empty").mkdir()
    bad_json = write_adapter(tmp / "bad_json")
    (bad_json / "adapter_config.json").write_text("{not json")
    return {
        "missing": (tmp / "nope", "no folder"),
        "file": (tmp / "file", "no folder"),
        "not-peft": (tmp / "empty", "no adapter_config.json"),
        "bad-json": (bad_json, "not valid JSON"),
        "no-weights": (write_adapter(tmp / "no_w", weights=False), "no adapter weights"),
        "rank": (write_adapter(tmp / "rank", rank=64), "--max-lora-rank 64"),
        "no-rank": (write_adapter(tmp / "no_rank", rank=0), "rank 'r'"),
        "prefix": (write_adapter(tmp / "ia3", peft_type="IA3"), "only LORA"),
        "targets": (write_adapter(tmp / "targets", targets=("q_proj", "lm_hat")), "lm_hat"),
        "nul": ("/tmp/a\x00b", "not a usable path"),
    }


def test_bad_adapter_folders_are_400s_naming_lora_path(lora_client, lora_app, tmp_path):
    for case, (path, phrase) in _bad_folders(tmp_path).items():
        r = lora_client.post(LOAD, json={"lora_name": f"bad-{case}", "lora_path": str(path)})
        assert r.status_code == 400, (case, r.text)
        error = r.json()["error"]
        assert error["param"] == "lora_path", (case, error)
        assert error["code"] == "invalid_lora_adapter", (case, error)
        assert phrase in error["message"], (case, error["message"])
    assert model_ids(lora_client) == {FAKE_MODEL: None}
    assert lora_app[1].lora_paths == {}
    assert complete(lora_client, FAKE_MODEL).status_code == 200  # still serving


@pytest.mark.parametrize("body,param,code", [
    ({"lora_name": "x"}, "lora_path", "missing_required_parameter"),
    ({"lora_path": "/x"}, "lora_name", "missing_required_parameter"),
    ({"lora_name": "", "lora_path": "/x"}, "lora_name", "invalid_value"),
    ({"lora_name": "bad name", "lora_path": "/x"}, "lora_name", "invalid_value"),
    ({"lora_name": 3, "lora_path": "/x"}, "lora_name", "invalid_value"),
    ({"lora_name": "x", "lora_path": "/x", "is_3d_lora_weight": True}, "is_3d_lora_weight",
     "unknown_parameter"),
])
def test_malformed_load_bodies_are_400s_naming_the_field(lora_client, body, param, code):
    r = lora_client.post(LOAD, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error


def test_names_already_served_are_refused(lora_client, tmp_path):
    adapter = write_adapter(tmp_path / "a")
    for name in (FAKE_MODEL, "dup"):
        if name == "dup":
            assert lora_client.post(LOAD, json={"lora_name": name,
                                                "lora_path": str(adapter)}).is_success
        r = lora_client.post(LOAD, json={"lora_name": name, "lora_path": str(adapter)})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert (error["param"], error["code"]) == ("lora_name", "lora_name_taken"), error
    assert model_ids(lora_client) == {FAKE_MODEL: None, "dup": FAKE_MODEL}


@pytest.mark.parametrize("name", ["never-loaded", FAKE_MODEL])
def test_unloading_what_is_not_an_adapter_is_404(lora_client, name):
    r = lora_client.post(UNLOAD, json={"lora_name": name})
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == ("lora_name", "lora_not_found")
    assert name in error["message"]
    assert model_ids(lora_client) == {FAKE_MODEL: None}


def test_unload_bodies_are_checked(lora_client):
    r = lora_client.post(UNLOAD, json={"lora_name": "x", "lora_int_id": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "lora_int_id"
    r = lora_client.post(UNLOAD, json={})
    assert r.status_code == 400 and r.json()["error"]["param"] == "lora_name"


def test_the_routes_need_the_api_key(tmp_path):
    app, _ = fake_app(fake_engine(), enable_lora=True, api_key="k")
    adapter = write_adapter(tmp_path / "a")
    body = {"lora_name": "a", "lora_path": str(adapter)}
    with TestClient(app) as client:
        assert client.post(LOAD, json=body).status_code == 401
        assert client.post(UNLOAD, json={"lora_name": "a"}).status_code == 401
        auth = {"Authorization": "Bearer k"}
        assert client.post(LOAD, json=body, headers=auth).status_code == 200
        assert client.post(UNLOAD, json={"lora_name": "a"}, headers=auth).status_code == 200


def test_openapi_states_the_routes_and_no_fixed_model_list_with_runtime_lora(lora_client):
    spec = lora_client.get("/openapi.json").json()
    load = spec["paths"][LOAD]["post"]["responses"]
    unload = spec["paths"][UNLOAD]["post"]["responses"]
    assert set(load) == {"200", "400", "500", "503"}
    assert set(unload) == {"200", "400", "404", "500", "503"}
    assert list(load["200"]["content"]) == ["text/plain"]
    # Any adapter name may become servable, so `model` lists no fixed names.
    assert "enum" not in spec["components"]["schemas"]["CompletionRequest"]["properties"]["model"]


# ---- VllmEngine's bookkeeping, without vLLM -------------------------------------------------


class _RecordingLlm:
    def __init__(self):
        self.removed: list[int] = []

    async def remove_lora(self, lora_id: int) -> bool:
        self.removed.append(lora_id)
        return True


def test_an_unloaded_adapter_leaves_vllm_when_its_last_request_ends():
    llm = _RecordingLlm()
    served = SimpleNamespace(engine=llm)
    adapters = _RuntimeAdapters(iter(range(5, 100)))
    request = SimpleNamespace(lora_int_id=5)

    async def scenario():
        adapters.started(request)
        adapters.started(request)
        await adapters.remove(served, request)
        assert llm.removed == []  # two requests still use it
        await adapters.finished(request, served)
        assert llm.removed == []
        await adapters.finished(request, served)
        assert llm.removed == [5]
        other = SimpleNamespace(lora_int_id=6)
        await adapters.remove(served, other)  # nothing running: removed at once
        assert llm.removed == [5, 6]
        adapters.started(None)  # base-model requests are not counted
        await adapters.finished(None, served)

    asyncio.run(scenario())


def test_vllms_worker_error_is_reduced_to_its_own_words():
    exc = Exception("Call to add_lora method failed: Worker failed with error 'LoRA rank 32 is "
                    "greater than max_lora_rank 16.', please check the stack trace above for "
                    "the root cause")
    assert _worker_error(exc) == "LoRA rank 32 is greater than max_lora_rank 16."
    assert _worker_error(Exception("Call to add_lora method failed: boom")) == "boom"



# ---- on a real vLLM engine (slow: one engine start) -----------------------------------------


@pytest.mark.vllm
@pytest.mark.slow
def test_runtime_adapters_on_vllm(served_model_dir, tmp_path):
    import httpx

    from tests.serve.lora_adapter import build_lora_adapter
    from tests.serve.vllm_server import TEST_ENGINE_FLAGS, jaxtune_server

    adapter = build_lora_adapter(served_model_dir, tmp_path / "adapter")
    # An adapter for a wider model: its tensors do not fit the served base (vLLM's check).
    wide = tmp_path / "wide_base"
    wide.mkdir()
    config = json.loads((served_model_dir / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**config, "hidden_size": 256}))
    misfit = build_lora_adapter(wide, tmp_path / "misfit")
    key = "lora-key"
    with jaxtune_server(served_model_dir, name="tiny", log_path=tmp_path / "server.log",
                        extra_args=[*TEST_ENGINE_FLAGS, "--enable-lora", "--max-model-len",
                                    "256"],
                        env={"JAXTUNE_API_KEY": key}) as url, \
            httpx.Client(base_url=url, timeout=120,
                         headers={"Authorization": f"Bearer {key}"}) as http:
        def greedy(model: str) -> httpx.Response:
            return http.post("/v1/completions", json={
                "model": model, "prompt": "Once upon a time", "max_tokens": 12,
                "temperature": 0, "ignore_eos": True})

        def ids() -> dict[str, str | None]:
            return {m["id"]: m["parent"] for m in http.get("/v1/models").json()["data"]}

        base_text = greedy("tiny").json()["choices"][0]["text"]
        assert ids() == {"tiny": None}

        r = http.post(LOAD, json={"lora_name": "misfit", "lora_path": str(misfit)})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert (error["param"], error["code"]) == ("lora_path", "invalid_lora_adapter")
        assert "size of tensor" in error["message"], error["message"]  # vLLM's own words

        r = http.post(LOAD, json={"lora_name": "story", "lora_path": str(adapter)})
        assert r.status_code == 200, r.text
        assert ids() == {"tiny": None, "story": "tiny"}
        r = greedy("story")
        assert r.status_code == 200 and r.json()["model"] == "story"
        story_text = r.json()["choices"][0]["text"]
        assert story_text != base_text  # the adapter's weights are used
        r = http.post(LOAD, json={"lora_name": "story", "lora_path": str(adapter)})
        assert r.status_code == 400 and r.json()["error"]["code"] == "lora_name_taken"

        assert http.post(UNLOAD, json={"lora_name": "story"}).status_code == 200
        assert ids() == {"tiny": None}
        r = greedy("story")
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert http.post(UNLOAD, json={"lora_name": "story"}).status_code == 404
        # Nothing above disturbed the base model.
        assert greedy("tiny").json()["choices"][0]["text"] == base_text
        # Loaded again under another name, the adapter answers as before.
        assert http.post(LOAD, json={"lora_name": "again",
                                     "lora_path": str(adapter)}).status_code == 200
        assert greedy("again").json()["choices"][0]["text"] == story_text
