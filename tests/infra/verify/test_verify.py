"""`jaxtune verify` without a server: Flax vs transformers on a tiny export (full and LoRA), a
corrupted export caught, bad inputs refused; the numbers of each pair on hand-made inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from infra.cli import main
from infra.verify.metrics import compare_full, compare_greedy, compare_server
from infra.verify.tolerances import TOLERANCES
from tests.fixtures.tiny_model import build_exported_tiny_model, build_tiny_lora_checkpoint

TOL = TOLERANCES["float32"]["server"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """work dir with `checkpoint/` (jaxtune) and `export/` (HF) of the same tiny model."""
    return build_exported_tiny_model(tmp_path_factory.mktemp("verify")).parent


def _rows(out: Path) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads((out / "verify.json").read_text())["rows"]}


def test_flax_and_transformers_agree_on_an_export(tiny, tmp_path, capsys):
    code = main(["verify", "--checkpoint", str(tiny / "checkpoint"), "--export",
                 str(tiny / "export"), "--no-server", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    row = _rows(tmp_path)["flax vs transformers"]
    assert row["passed"] and row["kl_scope"] == "full vocabulary"
    assert 0 < row["max_dlogprob"] <= 1e-3 and row["agreement"] == 1.0 and row["count"] > 50
    assert 0 <= row["mean_kl"] <= 1e-6  # a KL, so never negative
    assert "| flax vs transformers | prompt logprobs |" in out and out.rstrip().endswith("PASS")
    assert (tmp_path / "verify.md").read_text() == out


def _nudge_one_weight(weights: dict) -> None:
    weights["model.layers.0.mlp.down_proj.weight"][0, 0] += 0.5  # one weight of one matrix


def _swap_layers(weights: dict) -> None:
    # A permuted layer order: every tensor of layer 0 exchanged with layer 1's.
    for name in [n for n in weights if n.startswith("model.layers.0.")]:
        other = name.replace("model.layers.0.", "model.layers.1.")
        weights[name], weights[other] = weights[other].copy(), weights[name].copy()


@pytest.mark.parametrize("corrupt", [_nudge_one_weight, _swap_layers])
def test_a_corrupted_export_fails_and_names_the_pair(tiny, tmp_path, capsys, corrupt):
    export = shutil.copytree(tiny / "export", tmp_path / "export")
    weights = load_file(export / "model.safetensors")
    corrupt(weights)
    save_file(weights, export / "model.safetensors", metadata={"format": "pt"})
    code = main(["verify", "--checkpoint", str(tiny / "checkpoint"), "--export", str(export),
                 "--no-server", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out)["passed"] is False
    (line,) = [x for x in captured.err.splitlines() if x.startswith("jaxtune: verify failed")]
    assert "flax vs transformers: max |dlogprob|" in line


def test_a_lora_checkpoint_is_scored_with_its_adapters(tmp_path, capsys):
    src, _ = build_tiny_lora_checkpoint(tmp_path, rank=4, alpha=8.0)
    # No --export: verify exports (merging the adapters) into its --out work folder.
    assert main(["verify", "--checkpoint", str(tmp_path / "ckpt"), "--no-server",
                 "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().out
    assert _rows(tmp_path / "out")["flax vs transformers"]["passed"]
    # The merge matters: the base model alone is far from the adapted checkpoint.
    code = main(["verify", "--checkpoint", str(tmp_path / "ckpt"), "--export", str(src),
                 "--no-server"])
    assert code == 1 and "flax vs transformers" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    ([], "give --checkpoint CKPT_DIR and/or --export HF_DIR"),
    (["--checkpoint", "/nonexistent/ckpt"], "checkpoint not found: /nonexistent/ckpt"),
    (["--export", "/nonexistent/export"], "export not found: /nonexistent/export"),
    (["--export", "/tmp", "--no-server"], "/tmp is not an HF model folder (no config.json)"),
    (["--export", "x", "--task", "viggo"], "--task needs --data FILE"),
])
def test_bad_inputs_are_one_line_errors(argv, message, capsys):
    assert main(["verify", *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"jaxtune: error: {message}"


def test_a_training_run_dir_gets_a_hint(tiny, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").symlink_to(tiny / "checkpoint")
    assert main(["verify", "--checkpoint", str(run_dir), "--no-server"]) == 1
    assert f"did you mean {run_dir / 'checkpoints'}?" in capsys.readouterr().err


def _logprobs(logits: np.ndarray) -> np.ndarray:
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def test_full_distribution_numbers():
    rng = np.random.default_rng(0)
    ref = _logprobs(rng.standard_normal((5, 7)))
    ids = [0, 3, 1, 6, 2]
    same = compare_full("a", "b", [ref], [ref], [ids], TOL)
    assert same.passed and same.max_dlogprob == 0 and same.mean_kl == 0 and same.count == 4
    shifted = ref.copy()
    shifted[1] = _logprobs(shifted[1] + np.eye(7)[1] * 0.1)  # position 2 scores token ids[2] = 1
    out = compare_full("a", "b", [ref], [shifted], [ids], TOL)
    assert out.max_dlogprob == pytest.approx(abs(ref[1, 1] - shifted[1, 1]))
    expected_kl = (np.exp(ref[1]) * (ref[1] - shifted[1])).sum() / 4
    assert out.mean_kl == pytest.approx(expected_kl)
    assert not out.passed and out.failures[0].startswith("max |dlogprob|")


def test_server_numbers_use_the_returned_candidates_only():
    rng = np.random.default_rng(1)
    ref = _logprobs(rng.standard_normal((3, 10)))
    ids = [4, 2, 9]

    def entry(row: np.ndarray, token: int, k: int, bump: float = 0.0) -> dict:
        order = np.argsort(-row)
        cands = {int(c) for c in order[:k]} | {token}
        return {c: (float(row[c]) + (bump if c == token else 0.0), int((row > row[c]).sum()) + 1)
                for c in cands}

    exact = [None, entry(ref[0], 2, 3), entry(ref[1], 9, 3)]
    out = compare_server("transformers", "vllm", [ref], [exact], [ids], TOL, top_k=3)
    assert out.passed and out.max_dlogprob == 0 and out.mean_kl == pytest.approx(0, abs=1e-12)
    assert out.agreement == 1.0 and "top-3" in out.kl_scope
    off = [None, entry(ref[0], 2, 3, bump=0.05), entry(ref[1], 9, 3)]
    bad = compare_server("transformers", "vllm", [ref], [off], [ids], TOL, top_k=3)
    assert bad.max_dlogprob == pytest.approx(0.05) and bad.mean_kl > 0 and not bad.passed


def test_greedy_rows_count_only_decisive_disagreements():
    out = compare_greedy("transformers", "vllm b1", [None, 1e-4, None, 3.0], TOL)
    assert out.agreement == 0.5 and out.decisive == 1 and not out.passed
    assert compare_greedy("a", "b", [None, TOL.tie_gap / 2], TOL).passed


def test_a_bf16_export_is_compared_with_the_checkpoint_rounded_to_bf16(tiny, tmp_path, capsys):
    # The export rounds every weight; the Flax side rounds the same way, so float32's tight
    # bound still holds and a conversion error would stand out from the rounding.
    code = main(["verify", "--checkpoint", str(tiny / "checkpoint"), "--dtype", "bf16",
                 "--no-server", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "verify.json").read_text())
    assert report["dtype"] == "bfloat16"
    row = _rows(tmp_path / "out")["flax vs transformers"]
    assert row["passed"] and row["max_dlogprob"] <= TOLERANCES["bfloat16"]["local"].max_dlogprob
    assert "weights rounded to bfloat16" in json.dumps(report["sources"])


def test_an_export_of_an_earlier_step_is_compared_with_that_step(tmp_path, capsys):
    # `jaxtune export --step best` may export step 1 of 2: verify then compares step 1 (from the
    # export's jaxtune.json), not the latest, and refuses a --step that contradicts it.
    import jax.numpy as jnp
    from flax import nnx

    from tests.train_jax.train.runs import TINY_ARCH, TOKENIZER
    from train_jax import checkpoint as ckpt
    from train_jax.config.run_config import CheckpointConfig
    from train_jax.model.config import ModelConfig
    from train_jax.model.llama import init_model
    from train_jax.train.checkpointing import TrainCheckpointer

    model_cfg = ModelConfig.from_hf_config(TINY_ARCH)  # the tokenizer's vocabulary
    checkpoint = tmp_path / "checkpoints"
    ckpt.write_checkpoint_info(checkpoint, model_cfg, assets_from=TOKENIZER)
    saver = TrainCheckpointer(checkpoint, CheckpointConfig(every=1, keep=2, keep_best=0))
    for step, seed in ((1, 0), (2, 1)):
        params = nnx.to_pure_dict(nnx.state(init_model(model_cfg, seed), nnx.Param))
        saver.save({"step": jnp.int32(step), "trainable": params, "frozen": {},
                    "opt_state": {"count": jnp.int32(step)}}, {"position": step}, {}, {})
    saver.close()
    assert main(["export", "--checkpoint", str(checkpoint), "--step", "1",
                 "--out", str(tmp_path / "export")]) == 0
    capsys.readouterr()
    args = ["verify", "--checkpoint", str(checkpoint), "--export", str(tmp_path / "export"),
            "--no-server"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0, capsys.readouterr()
    report = json.loads((tmp_path / "out" / "verify.json").read_text())
    assert "(step 1" in report["sources"]["flax"]
    assert main([*args, "--step", "2", "--out", str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"jaxtune: error: --step 2, but {tmp_path / 'export'} was exported from "
                       "step 1; drop --step or pass --step 1")


def test_base_url_checks_the_running_server_it_names(tiny, tmp_path, capsys):
    # A server that serves other weights than the export (here the fake engine) must fail
    # the vllm pairs: --base-url checks what is deployed, it does not start its own server.
    from tests.serve.fake_server import FAKE_MODEL, fake_app, serve_in_thread

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello there\n")
    with serve_in_thread(fake_app()[0]) as url:
        code = main(["verify", "--checkpoint", str(tiny / "checkpoint"), "--export",
                     str(tiny / "export"), "--base-url", url, "--prompts", str(prompts),
                     "--out", str(tmp_path / "out")])
    assert code == 1
    assert "transformers vs vllm: max |dlogprob|" in capsys.readouterr().err
    rows = _rows(tmp_path / "out")
    assert rows["flax vs transformers"]["passed"] and not rows["transformers vs vllm"]["passed"]
    sources = json.loads((tmp_path / "out" / "verify.json").read_text())["sources"]
    assert sources["vllm"] == f"{url} (model {FAKE_MODEL})"  # the server's only model
    assert not (tmp_path / "out" / "work" / "server.log").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--served-model", "m"], "--served-model needs --base-url URL"),
    (["--base-url", "http://127.0.0.1:9", "--no-server"],
     "--base-url and --no-server contradict each other: drop one"),
    (["--base-url", "http://127.0.0.1:9", "--serve-arg=--enforce-eager"],
     "--serve-arg starts a server; with --base-url none is started: drop one"),
])
def test_base_url_flag_conflicts_are_one_line_errors(tiny, extra, message, capsys):
    assert main(["verify", "--export", str(tiny / "export"), *extra]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"jaxtune: error: {message}"


def test_base_url_without_a_server_or_with_several_models_is_refused(tiny, capsys):
    from infra.pipeline.server_process import free_port
    from serve.engine import ModelCard
    from serve.fake_engine import FakeEngine
    from tests.serve.fake_server import fake_app, serve_in_thread

    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["verify", "--export", str(tiny / "export"), "--base-url", dead]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"jaxtune: error: no server at {dead}/v1 (connection refused); start one with "
        f"`jaxtune serve` or check --base-url")
    engine = FakeEngine((ModelCard("a", 64, 1000), ModelCard("b", 64, 1000)))
    with serve_in_thread(fake_app(engine)[0]) as url:
        assert main(["verify", "--export", str(tiny / "export"), "--base-url", url]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"jaxtune: error: {url} serves 2 models (a, b): name one with --served-model")
