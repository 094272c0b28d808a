"""Benchmark: GRPO rollout tokens/s of the Flax sampler vs vLLM, same prompts, same model.

The prompts are GSM8K's, rendered and drawn as a GRPO run renders and draws them
(`train_jax.train.grpo.prompts`: structured style, the first step's shuffled prompts, each
repeated group_size times, left-padded to the longest prompt of the set). For each batch shape
(prompts_per_step x group_size rows) both sides sample max_new_tokens per row at temperature
1 with EOS ignored by default, so both generate the same token count; the tokens actually
generated are counted either way. Each engine runs in its own child process (vLLM binds its
OpenMP threads; JAX keeps its own pool):

- flax: `train_jax.model.generate.sample_tokens` (what `grpo.rollout.Sampler` runs), jitted
  once per shape from the model as `jaxtune train` loads it; compile time reported apart.
- vllm: `vllm.LLM(...).generate` on the token ids, one request per row with its own seed (as a
  seeded rollout would), the engine in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0), KV cache
  VLLM_CPU_KVCACHE_SPACE GiB; engine start-up reported apart, one warm-up batch untimed.

    .venv/bin/python bench/rollout_throughput.py [--model HF_DIR|tiny ...] [--engines flax,vllm]
        [--shapes 4x4,8x4,16x4] [--max-new-tokens 128] [--repeats 2] [--dtype float32]
        [--keep-eos] [--vllm-eager] [--json PATH] [--markdown PATH]
    .venv/bin/python bench/rollout_throughput.py --combine A.json B.json [--markdown PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_MODEL = Path("/tmp/rollout_smollm2")
GSM8K = REPO / "data" / "gsm8k" / "train.jsonl"
DATA_MAX_LENGTH = 512  # configs/train/gsm8k_grpo.yaml
KV_CACHE_GIB = "2"


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _shapes(text: str) -> list[tuple[int, int]]:
    try:
        shapes = [tuple(int(n) for n in part.split("x")) for part in text.split(",")]
    except ValueError:
        raise SystemExit(f"--shapes: expected PxG[,PxG...], got {text!r}") from None
    if any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise SystemExit(f"--shapes: expected PxG[,PxG...] with P, G >= 1, got {text!r}")
    return shapes  # type: ignore[return-value]


def _rollout_prompts(model_dir: Path, max_new_tokens: int, shapes: list[tuple[int, int]]):
    """Per shape: the rows' prompt ids (P x G lists) as GRPO draws them; and the set's width."""
    import numpy as np

    from eval.tasks import get_task
    from train_jax.data.config import DataConfig
    from train_jax.data.tokenization import load_tokenizer
    from train_jax.train.grpo.prompts import RolloutState, load_prompts

    tokenizer = load_tokenizer(model_dir)
    data = DataConfig(task="gsm8k", train_file=str(GSM8K), style="structured",
                      max_length=DATA_MAX_LENGTH)
    prompts = load_prompts(get_task("gsm8k"), data, tokenizer, max_new_tokens)
    batches = []
    for per_step, group in shapes:
        drawn = RolloutState(len(prompts.ids), per_step, seed=0).next_prompts()
        batches.append([prompts.ids[i] for i in np.repeat(drawn, group)])
    return batches, prompts.width, tokenizer


def _child_flax(args: argparse.Namespace) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from train_jax.config.run_config import MethodConfig, ModelSpec
    from train_jax.model.generate import eos_array, left_pad, sample_tokens
    from train_jax.train.model_init import load_initial_model

    shapes = _shapes(args.shapes)
    batches, width, tokenizer = _rollout_prompts(args.model, args.max_new_tokens, shapes)
    spec = ModelSpec(path=str(args.model), dtype=args.dtype, param_dtype=args.dtype)
    model = load_initial_model(spec, MethodConfig(), 0).model
    model.eval()
    graphdef, state = nnx.split(model)
    eos = eos_array(None if args.ignore_eos else tokenizer.eos_token_id)
    new = args.max_new_tokens

    def sample(state, prompts, pad, key):
        return sample_tokens(nnx.merge(graphdef, state), prompts, pad, eos, key, new, 1.0)

    results = []
    for (per_step, group), rows in zip(shapes, batches, strict=True):
        padded, pad = left_pad(rows, width, pad_token_id=tokenizer.pad_token_id or 0)
        key = jax.random.key(0)
        started = time.perf_counter()
        compiled = jax.jit(sample).lower(state, padded, pad, key).compile()
        compile_s = time.perf_counter() - started
        times, tokens = [], []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            _, counts = compiled(state, padded, pad, jax.random.fold_in(key, repeat))
            counts = np.asarray(jax.device_get(counts))
            times.append(time.perf_counter() - started)
            tokens.append(int(counts.sum()))
            _progress(f"flax {per_step}x{group}: {tokens[-1]} tokens in {times[-1]:.2f} s")
        results.append(_row(per_step, group, times, tokens, compile_s=compile_s))
    return {"engine": "flax", "width": width, "setup_s": None, "shapes": results}


def _child_vllm(args: argparse.Namespace) -> dict:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", KV_CACHE_GIB)
    from vllm import LLM, SamplingParams

    shapes = _shapes(args.shapes)
    batches, width, _ = _rollout_prompts(args.model, args.max_new_tokens, shapes)
    started = time.perf_counter()
    rows = max(p * g for p, g in shapes)
    # A budget that prefills every row in one step, as the vllm rollout sets it: vLLM on CPU
    # cannot rewind a seeded request's generator after a chunked (partial) prefill.
    llm = LLM(model=str(args.model), dtype=args.dtype, seed=0,
              max_model_len=width + args.max_new_tokens, max_num_seqs=rows,
              max_num_batched_tokens=rows * (width + args.max_new_tokens),
              enforce_eager=args.vllm_eager)
    setup_s = time.perf_counter() - started
    _progress(f"vllm engine started in {setup_s:.1f} s")

    def run(rows: list[list[int]], seed: int) -> int:
        params = [SamplingParams(temperature=1.0, max_tokens=args.max_new_tokens,
                                 ignore_eos=args.ignore_eos, seed=seed * 100_003 + i)
                  for i in range(len(rows))]
        outputs = llm.generate([{"prompt_token_ids": r} for r in rows], params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outputs)

    run(batches[0], seed=10_000)  # warm-up, untimed
    results = []
    for (per_step, group), rows in zip(shapes, batches, strict=True):
        times, tokens = [], []
        for repeat in range(args.repeats):
            llm.reset_prefix_cache()  # each rollout sees its prompts for the first time
            started = time.perf_counter()
            tokens.append(run(rows, seed=repeat))
            times.append(time.perf_counter() - started)
            _progress(f"vllm {per_step}x{group}: {tokens[-1]} tokens in {times[-1]:.2f} s")
        results.append(_row(per_step, group, times, tokens))
    return {"engine": "vllm", "width": width, "setup_s": setup_s, "shapes": results}


def _row(per_step: int, group: int, times: list[float], tokens: list[int], *,
         compile_s: float | None = None) -> dict:
    rates = [n / t for n, t in zip(tokens, times, strict=True)]
    return {"shape": f"{per_step}x{group}", "rows": per_step * group, "seconds": times,
            "tokens": tokens, "tokens_per_s": statistics.median(rates),
            "best_tokens_per_s": max(rates),
            "compile_s": compile_s}


def _run_child(engine: str, model: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", engine, "--model", str(model),
           "--shapes", args.shapes, "--max-new-tokens", str(args.max_new_tokens),
           "--repeats", str(args.repeats), "--dtype", args.dtype]
    cmd += [] if args.ignore_eos else ["--keep-eos"]
    cmd += ["--vllm-eager"] if args.vllm_eager else []
    _progress(f"{engine} on {model.name}: starting")
    proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"{engine} child failed on {model} (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _markdown(report: dict) -> str:
    header = ("| model | rows (P x G) | prompt width | Flax tok/s median (best) | "
              "vLLM tok/s median (best) | vLLM / Flax, medians (bests) | Flax compile s |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for entry in report["models"]:
        flax, vllm = entry["flax"], entry["vllm"]
        for f, v in zip(flax["shapes"], vllm["shapes"], strict=True):
            f_best = f.get("best_tokens_per_s", f["tokens_per_s"])
            v_best = v.get("best_tokens_per_s", v["tokens_per_s"])
            lines.append(f"| {entry['model']} | {f['rows']} ({f['shape']}) | {flax['width']} | "
                         f"{f['tokens_per_s']:.0f} ({f_best:.0f}) | "
                         f"{v['tokens_per_s']:.0f} ({v_best:.0f}) | "
                         f"{v['tokens_per_s'] / f['tokens_per_s']:.2f} "
                         f"({v_best / f_best:.2f}) | {f['compile_s']:.1f} |")
    starts = ", ".join(f"{e['model']} {e['vllm']['setup_s']:.0f} s" for e in report["models"])
    loads = ", ".join(f"{e['model']} flax {e['flax'].get('load_average', 0):.1f} / vllm "
                      f"{e['vllm'].get('load_average', 0):.1f}" for e in report["models"])
    lines.append(f"\nvLLM engine start-up (not in the rates): {starts}. 1-min load average "
                 f"after each engine's run (2 cores): {loads}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append",
                        help=f"HF folder, or `tiny` for the tiny test model (tests/fixtures/"
                             f"tiny_model.py); repeatable; default {DEFAULT_MODEL}, fetched with "
                             "`jaxtune model fetch smollm2-135m-instruct --out DIR`")
    parser.add_argument("--shapes", default="4x4,8x4,16x4",
                        help="rollout batches as prompts_per_step x group_size")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--keep-eos", dest="ignore_eos", action="store_false",
                        help="stop rows at EOS (token counts then differ between engines)")
    parser.add_argument("--vllm-eager", action="store_true", help="vLLM enforce_eager=True")
    parser.add_argument("--engines", default="flax,vllm",
                        help="which to run (comma separated); merge reports with --combine")
    parser.add_argument("--combine", type=Path, nargs="+", default=None,
                        help="only merge these JSON reports (one engine each) into one table")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here")
    parser.add_argument("--child", choices=("flax", "vllm"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.max_new_tokens < 1 or args.repeats < 1:
        raise SystemExit("--max-new-tokens and --repeats must be >= 1")
    _shapes(args.shapes)

    if args.child:
        args.model = args.model[0]
        out = _child_flax(args) if args.child == "flax" else _child_vllm(args)
        print(json.dumps(out), flush=True)
        return

    if args.combine:
        report = _combined([json.loads(p.read_text()) for p in args.combine])
        _write(report, args)
        return
    engines = args.engines.split(",")
    if not engines or set(engines) - {"flax", "vllm"}:
        raise SystemExit(f"--engines: flax and/or vllm, got {args.engines!r}")
    models = list(args.model or [DEFAULT_MODEL])
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        if Path("tiny") in models:
            from tests.fixtures.tiny_model import build_tiny_hf_model

            tiny = build_tiny_hf_model(Path(tmp) / "tiny", dtype=args.dtype)
            models = [tiny if m == Path("tiny") else m for m in models]
        report = {"max_new_tokens": args.max_new_tokens, "dtype": args.dtype,
                  "ignore_eos": args.ignore_eos, "repeats": args.repeats,
                  "vllm_eager": args.vllm_eager, "cpu_count": os.cpu_count(),
                  "load_average_before": os.getloadavg()[0], "models": []}
        for model in models:
            name = model.name
            entry = {"model": name}
            for engine in engines:
                entry[engine] = _run_child(engine, model, args)
                entry[engine]["load_average"] = os.getloadavg()[0]  # others share the cores
            report["models"].append(entry)
    _write(report, args)


def _combined(reports: list[dict]) -> dict:
    """One report from several runs (e.g. one per engine) of the same settings."""
    out = {k: v for k, v in reports[0].items() if k != "models"}
    models: dict[str, dict] = {}
    for report in reports:
        for entry in report["models"]:
            models.setdefault(entry["model"], {}).update(entry)
    out["models"] = list(models.values())
    return out


def _write(report: dict, args: argparse.Namespace) -> None:
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if all("flax" in e and "vllm" in e for e in report["models"]):
        table = _markdown(report)
        print(table)
        if args.markdown:
            args.markdown.write_text(table)


if __name__ == "__main__":
    main()
