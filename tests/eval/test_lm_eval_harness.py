"""lm-evaluation-harness against the real `jaxtune serve`: `lm_eval --model local-completions`
runs a multiple-choice task read from local files on the package's tiny server
(`tests/eval/conftest.py::tiny_server`, a float32 export), and its per-choice log-likelihoods
and accuracy are the ones transformers computes on the same export folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.vllm

LM_EVAL = str(Path(sys.executable).parent / "lm_eval")
TASK = "jaxtune_tiny_mc"

# A random model answers these at chance; what is checked is that the harness, the server and
# transformers agree on every number, not that the answers are right. With the TinyStories
# tokenizer (words carry their trailing "▁") lm-eval's split of context and continuation can
# leave a continuation no tokens (`Once upon a time there was a` + ` dog`); every choice here
# keeps at least one.
QUESTIONS = [
    {"question": "Question: What did the little dog find?\nAnswer:",
     "choices": ["a bone", "a ball", "a big tree", "his mom"], "answer": 0},
    {"question": "Question: Where did Tom go when the sun was hot?\nAnswer:",
     "choices": ["to the sea", "to the park", "to bed"], "answer": 1},
    {"question": "Question: What did Lily like to eat?\nAnswer:",
     "choices": ["apples", "cake", "soup", "a red ball"], "answer": 0},
    {"question": "Question: What did the bird do one day?\nAnswer:",
     "choices": ["it sang a song", "it flew away", "it was sad"], "answer": 2},
    {"question": "Question: What did Mom say?\nAnswer:",
     "choices": ["yes", "no", "maybe later", "go to sleep"], "answer": 3},
]

TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: question
doc_to_choice: choices
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""

# Both sides compute in float32 on the same weights (`jaxtune serve --dtype auto` keeps a
# float32 export in float32); only the kernels differ (vLLM's CPU attention and oneDNN GEMMs
# against PyTorch's), about 1e-6 on these sums. The bound is the issue's; it still separates
# float32 from bfloat16 serving (the last test).
TOL = 1e-3


def _write_task(task_dir: Path) -> None:
    task_dir.mkdir(parents=True, exist_ok=True)
    data = task_dir / "mc.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (task_dir / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=data))


def _run_lm_eval(server, tmp_path: Path) -> tuple[dict, list[dict]]:
    """Run the `lm_eval` CLI as a user would; return its results and logged samples."""
    _write_task(tmp_path / "tasks")
    model_args = ",".join([
        f"base_url={server.url}/v1/completions", f"model={server.name}",
        f"tokenizer={server.model_dir}", "tokenizer_backend=huggingface",
        "num_concurrent=1", "max_retries=1", "max_length=512"])
    argv = [LM_EVAL, "--model", "local-completions", "--model_args", model_args,
            "--tasks", TASK, "--include_path", str(tmp_path / "tasks"),
            "--output_path", str(tmp_path / "out"), "--log_samples"]
    # The datasets cache (the JSON file turned into Arrow) stays in the test's folder.
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets")}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    (samples_file,) = (tmp_path / "out").rglob(f"samples_{TASK}_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    return json.loads(results_file.read_text()), sorted(samples, key=lambda s: s["doc_id"])


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids as lm-eval's causal models split them: trailing
    spaces of the context go to the continuation, the whole is encoded (without special
    tokens: local-completions adds no BOS) and cut after the context's tokens."""
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    whole = tokenizer(stripped + continuation, add_special_tokens=False).input_ids
    ctx = tokenizer(stripped, add_special_tokens=False).input_ids
    return ctx, whole[len(ctx):]


def _transformers_loglikelihoods(model_dir: Path, dtype: str = "float32") -> list[list[float]]:
    """Per question, per choice: sum of log p(continuation token | everything before it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    out = []
    for q in QUESTIONS:
        row = []
        for choice in q["choices"]:
            ctx, cont = _encode_pair(tokenizer, q["question"], " " + choice)
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)  # (T, V)
            # The logits at position t predict token t + 1.
            row.append(sum(float(logp[len(ctx) + i - 1, tok]) for i, tok in enumerate(cont)))
        out.append(row)
    return out


@pytest.fixture(scope="module")
def lm_eval_run(tiny_server, tmp_path_factory) -> tuple[dict, list[dict]]:
    return _run_lm_eval(tiny_server, tmp_path_factory.mktemp("lm_eval"))


@pytest.fixture(scope="module")
def reference(tiny_server) -> list[list[float]]:
    return _transformers_loglikelihoods(tiny_server.model_dir)


def _harness_loglikelihoods(samples: list[dict]) -> list[list[float]]:
    # `resps`: per request (one per choice) [[loglikelihood, is_greedy]], logged as strings.
    return [[float(resp[0][0]) for resp in s["resps"]] for s in samples]


def _max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for row_a, row_b in zip(a, b, strict=True)
               for x, y in zip(row_a, row_b, strict=True))


def test_per_choice_loglikelihoods_match_transformers(lm_eval_run, reference):
    _, samples = lm_eval_run
    assert [s["doc"] for s in samples] == QUESTIONS
    for sample, q in zip(samples, QUESTIONS, strict=True):
        assert [args["arg_1"] for args in sample["arguments"].values()] == \
            [" " + c for c in q["choices"]]
    served = _harness_loglikelihoods(samples)
    # Every continuation has tokens, so no pair of zeros passes for a match.
    assert all(ll < 0 for row in served + reference for ll in row), (served, reference)
    # Measured 2026-12-03: 9.5e-7; vLLM serving the export in bfloat16: 4.6e-3.
    assert _max_diff(served, reference) <= TOL, (served, reference)


def test_reported_accuracy_is_the_argmax_of_transformers(lm_eval_run, reference):
    results, samples = lm_eval_run
    gold = np.array([q["answer"] for q in QUESTIONS])
    pred = np.array([np.argmax(lls) for lls in reference])
    # acc_norm divides by the choice's length in characters (lm-eval's `completion_len`).
    pred_norm = np.array([np.argmax(np.array(lls) / [len(c) for c in q["choices"]])
                          for lls, q in zip(reference, QUESTIONS, strict=True)])
    assert [s["acc"] for s in samples] == (pred == gold).astype(float).tolist()
    assert [s["acc_norm"] for s in samples] == (pred_norm == gold).astype(float).tolist()
    reported = results["results"][TASK]
    assert reported["acc,none"] == pytest.approx(np.mean(pred == gold))
    assert reported["acc_norm,none"] == pytest.approx(np.mean(pred_norm == gold))
    assert results["n-samples"][TASK]["effective"] == len(QUESTIONS)


def test_the_bound_tells_float32_from_bfloat16(lm_eval_run, tiny_server):
    # The same export computed in bfloat16 (what vLLM's own `--dtype auto` makes of a float32
    # checkpoint) must fall outside the bound, or the bound would not show how it is served.
    # Measured 2026-12-03: 4.3e-3.
    _, samples = lm_eval_run
    bf16 = _transformers_loglikelihoods(tiny_server.model_dir, dtype="bfloat16")
    assert _max_diff(_harness_loglikelihoods(samples), bf16) > TOL
