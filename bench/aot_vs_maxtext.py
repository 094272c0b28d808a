"""jaxtune's AOT plan beside MaxText's AOT compile (`train_compile.py`) of the same training step.

For each model (Llama-3-8B and Llama-3.2-1B from `configs/models/`), one TPU slice, batch,
sequence length and remat policy, two compiles for the slice on this CPU host:

- jaxtune: `aot_plan.plan_for_target` (what `jaxtune plan --target` prints): full fine-tuning,
  bf16 compute on fp32 weights, AdamW with fp32 moments, global-norm clipping, splash attention
  and the chunked head loss (`model.kernels=tpu`), fsdp over the whole slice. Twice, as
  MaxText: `model.scan_layers=true` (the shipped TPU configs' setting) and `false`.
- MaxText: `python -m maxtext.trainers.pre_train.train_compile` with the same architecture
  (given dimension by dimension from the model's `config.json`, `model_name=default`), the same
  per-chip batch and length, `remat_policy` of the same name, `attention=flash` (splash on TPU),
  `dtype=bfloat16 weight_dtype=float32 opt_type=adamw`, `ici_fsdp_parallelism=-1` (the whole
  slice on fsdp). Twice: with `scan_layers=true`, MaxText's default (the decoder layers in
  one `lax.scan`: XLA reuses one layer's buffers for the next, and its cost analysis counts
  the scanned layer once, so its FLOPs are those of the embedding, head and one layer), and
  with `scan_layers=false`, unrolled as jaxtune's blocks are (like for like, FLOPs
  comparable). Its printed memory and cost analyses are parsed.

Both sides are read the same way: peak bytes per chip = arguments + outputs not aliased onto
donated arguments + temporaries + generated code (at least XLA's heap-simulated peak), against
the chip's HBM for the fit verdict; FLOPs per step = XLA's cost analysis of the compiled
per-chip program x chips (which counts a loop XLA made once, so both are low in the same way);
jaxtune's own pre-partitioning count (`flops_per_step` of the plan) is shown beside them.

MaxText needs Python >= 3.12 and jax >= 0.11.1 with libtpu >= 0.0.46, which the project's
pinned jax excludes, so it runs from an environment of its own, made once with
    python3.12 -m venv /tmp/maxtext-venv
    /tmp/maxtext-venv/bin/pip install 'maxtext[tpu]==0.2.5'
and named with --maxtext-python (or $MAXTEXT_PYTHON). Where there is none, or it fails, the
reason is printed and the peer is jaxtune's own plan of the same step with the other remat
policy (`none` beside `full`), as issue #17 allows.

    flock /tmp/jaxtune_cpu.lock .venv/bin/python bench/aot_vs_maxtext.py \\
        --maxtext-python /tmp/maxtext-venv/bin/python --cache /tmp/aot_vs_maxtext.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a clone: the repo's packages come first

GIB = 2**30
TARGET_RATIO = 1.1  # issue #17: jaxtune's peak bytes per chip <= 1.1 x MaxText's
MODELS = {"llama-3-8b": "configs/train/tpu/llama-3-8b-v5p-16.yaml",
          "llama-3.2-1b": "configs/train/tpu/llama-3.2-1b-v5p-8.yaml"}
OTHER_REMAT = {"full": "none", "none": "full"}
# MaxText prints `compiled.memory_analysis()` and `compiled.cost_analysis()` after compiling.
_MEMORY_FIELD_RE = re.compile(r"(\w+_in_bytes)=(\d+)")
_FLOPS_RE = re.compile(r"'flops': ([0-9.eE+-]+)")
_JAX_VERSION_RE = re.compile(r"Jax Version: (\S+)")
# XLA's refusal of a step too big for HBM, as in `tpu_compile`: needed and available bytes.
_OOM_RE = re.compile(r"Ran out of memory.*?\(([\d.]+)([KMGT])\).*?available.*?\(([\d.]+)([KMGT])\)",
                     re.DOTALL)
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
logger = logging.getLogger("aot_vs_maxtext")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--target", default="v5p-16", help="TPU slice (MaxText: compile_topology)")
    parser.add_argument("--batch", type=int, default=8, help="rows per step (all chips)")
    parser.add_argument("--length", type=int, default=8192, help="tokens per row")
    parser.add_argument("--remat", default="full", choices=sorted(OTHER_REMAT),
                        help="remat policy of both sides (MaxText's remat_policy of that name; "
                             "`none` is MaxText's `minimal`)")
    parser.add_argument("--maxtext-python", default=os.environ.get(
        "MAXTEXT_PYTHON", "/tmp/maxtext-venv/bin/python"),
        help="python of an environment with `maxtext[tpu]` installed")
    parser.add_argument("--maxtext-timeout", type=float, default=900.0,
                        help="seconds one MaxText compile may take")
    parser.add_argument("--own-peers", action="store_true",
                        help="also plan jaxtune with the other remat policy when MaxText ran")
    parser.add_argument("--cache", type=Path, default=None,
                        help="JSON file of finished compiles: read, and each new one added, so "
                             "the comparison can be split over several shorter runs")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    return parser.parse_args(argv)


def _cached(args: argparse.Namespace, key: list[Any], compute: Any) -> dict[str, Any]:
    cache = (json.loads(args.cache.read_text())
             if args.cache is not None and args.cache.exists() else {})
    name = json.dumps(key)
    if name not in cache:
        cache[name] = compute()
        if args.cache is not None:
            args.cache.write_text(json.dumps(cache, indent=1))
    return cache[name]


def jaxtune_side(args: argparse.Namespace, model: str, remat: str, scan: bool) -> dict[str, Any]:
    """jaxtune's plan of the step for the slice (the shipped TPU config, batch and length set),
    its decoder blocks in one layer scan (`model.scan_layers`) or unrolled."""
    from train_jax.config.run_config import load_run_config
    from train_jax.sharding.tpu_slices import parse_tpu_type
    from train_jax.train.aot_plan import plan_for_target

    overrides = ("model.kernels=tpu", f"model.remat={remat}",
                 f"data.sources.0.dataset.max_length={args.length}",
                 f"train.batch_size={args.batch}", "train.micro_batches=1",
                 "mesh.data=1", "mesh.fsdp=-1", "mesh.tensor=1",
                 f"model.scan_layers={'true' if scan else 'false'}")
    cfg = load_run_config(REPO / MODELS[model], overrides)
    plan = plan_for_target(cfg, parse_tpu_type(args.target))
    side = f"jaxtune (remat {remat}, scan_layers={'true' if scan else 'false'})"
    return {"side": side, "ok": True, "compiled": plan.compiled,
            "peak_bytes_per_chip": plan.peak_bytes_per_chip, "temp_bytes": plan.temp_bytes,
            "argument_bytes": plan.argument_bytes, "hbm_bytes_per_chip": plan.hbm_bytes_per_chip,
            "chips": plan.chips, "mesh": plan.mesh,
            "compiled_flops_per_step": None if plan.compiled_flops_per_chip is None
            else plan.compiled_flops_per_chip * plan.chips,
            "flops_per_step": plan.flops_per_step, "compile_s": plan.compile_s,
            "jax": _jax_version(), "notes": list(plan.notes)}


def _jax_version() -> str:
    import jax

    from train_jax.train.tpu_compile import libtpu_library_path

    libtpu = Path(libtpu_library_path() or "").parent.parent
    dist = sorted(libtpu.glob("libtpu-*.dist-info"))
    return f"jax {jax.__version__}" + (f", {dist[0].name.removesuffix('.dist-info')}"
                                       if dist else "")


def maxtext_flags(args: argparse.Namespace, model: str, remat: str, chips: int,
                  scan: bool) -> list[str]:
    """MaxText `train_compile` settings for the same model, slice, batch, length and remat."""
    from train_jax.config.run_config import load_run_config
    from train_jax.train.plan import model_config_for_plan

    m = model_config_for_plan(load_run_config(REPO / MODELS[model]))
    if args.batch % chips:
        raise ValueError(f"--batch {args.batch} does not split over {chips} chips")
    return [
        "model_name=default", "decoder_block=llama2", "mlp_activations=[silu,linear]",
        f"base_emb_dim={m.hidden_size}", f"base_mlp_dim={m.intermediate_size}",
        f"base_num_query_heads={m.num_attention_heads}",
        f"base_num_kv_heads={m.num_key_value_heads}",
        f"base_num_decoder_layers={m.num_hidden_layers}", f"head_dim={m.head_dim}",
        f"vocab_size={m.vocab_size}", f"logits_via_embedding={str(m.tie_word_embeddings).lower()}",
        f"normalization_layer_epsilon={m.rms_norm_eps}", f"rope_max_timescale={int(m.rope_theta)}",
        "enable_dropout=false",
        f"compile_topology={args.target}", "compile_topology_num_slices=1",
        f"per_device_batch_size={args.batch // chips}", f"max_target_length={args.length}",
        f"remat_policy={'minimal' if remat == 'none' else remat}", "attention=flash",
        "dtype=bfloat16", "weight_dtype=float32", "opt_type=adamw",
        "gradient_clipping_threshold=1.0", "gradient_accumulation_steps=1",
        "ici_fsdp_parallelism=-1", f"scan_layers={str(scan).lower()}", "dataset_type=synthetic", "enable_checkpointing=false",
        "skip_jax_distributed_system=true", "base_output_directory=/tmp/maxtext-aot",
        f"run_name=aot-{model}",
    ]


def maxtext_side(args: argparse.Namespace, model: str, remat: str, chips: int,
                 hbm_bytes: int, scan: bool) -> dict[str, Any]:
    """MaxText's AOT compile of the same step in its own environment, or why it did not run."""
    python = Path(args.maxtext_python)
    side = (f"MaxText (remat_policy {'minimal' if remat == 'none' else remat}, "
            f"scan_layers={str(scan).lower()})")
    if not python.exists():
        return {"side": side, "ok": False,
                "reason": f"no MaxText environment at {python} (see the module docstring)"}
    locate = "import maxtext, os; print(os.path.dirname(maxtext.__file__))"
    probe = subprocess.run([str(python), "-c", locate], check=False, capture_output=True,
                           text=True)
    if probe.returncode:
        return {"side": side, "ok": False,
                "reason": f"`import maxtext` fails in {python}: {_last_line(probe.stderr)}"}
    base_yml = Path(probe.stdout.strip()) / "configs" / "base.yml"
    command = [str(python), "-m", "maxtext.trainers.pre_train.train_compile", str(base_yml),
               *maxtext_flags(args, model, remat, chips, scan)]
    # As `tpu_compile` does for jaxtune: name the slice so libtpu starts quietly on a host
    # without TPU chips, and keep the CPU the default backend.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TPU_SKIP_MDS_QUERY": "1",
           "TPU_ACCELERATOR_TYPE": args.target, "TPU_WORKER_HOSTNAMES": "localhost",
           "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
    started = time.perf_counter()
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, env=env,
                              timeout=args.maxtext_timeout, cwd="/tmp")
    except subprocess.TimeoutExpired:
        return {"side": side, "ok": False,
                "reason": f"train_compile did not finish in {args.maxtext_timeout:.0f} s"}
    out = done.stdout + done.stderr
    result = {"side": side, "command": command[2:], "chips": chips,
              "hbm_bytes_per_chip": hbm_bytes, "compile_s": round(time.perf_counter() - started, 1),
              "jax": _maxtext_versions(python, out)}
    refusal = _OOM_RE.search(out)
    if done.returncode and refusal:
        return {**result, "ok": True, "compiled": False,
                "peak_bytes_per_chip": int(float(refusal[1]) * _UNITS[refusal[2]]),
                "compiled_flops_per_step": None}
    memory = {k: int(v) for k, v in _MEMORY_FIELD_RE.findall(out)}
    flops = _FLOPS_RE.search(out)
    if done.returncode or "temp_size_in_bytes" not in memory:
        return {**result, "ok": False,
                "reason": f"train_compile exited {done.returncode}: {_last_line(out)}"}
    total = (memory["argument_size_in_bytes"] + memory["output_size_in_bytes"]
             - memory["alias_size_in_bytes"] + memory["temp_size_in_bytes"]
             + memory["generated_code_size_in_bytes"])
    return {**result, "ok": True, "compiled": True,
            "peak_bytes_per_chip": max(total, memory.get("peak_memory_in_bytes", 0)),
            "temp_bytes": memory["temp_size_in_bytes"],
            "argument_bytes": memory["argument_size_in_bytes"],
            "compiled_flops_per_step": float(flops[1]) * chips if flops else None}


def _maxtext_versions(python: Path, out: str) -> str:
    jax_version = _JAX_VERSION_RE.search(out)
    pip = subprocess.run([str(python), "-m", "pip", "list", "--format=json"],
                         check=False, capture_output=True, text=True)
    versions = {p["name"]: p["version"] for p in json.loads(pip.stdout or "[]")}
    return (f"jax {jax_version[1] if jax_version else versions.get('jax', '?')}, "
            f"libtpu-{versions.get('libtpu', '?')}, maxtext {versions.get('maxtext', '?')}")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def compare(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """jaxtune and MaxText for one model, each with its layers scanned and unrolled; else (or
    also) jaxtune's other remat policy as the peer."""
    ours = {scan: _cached(args, ["jaxtune", model, args.target, args.batch, args.length,
                                 args.remat, "scan" if scan else "unrolled"],
                          lambda scan=scan: jaxtune_side(args, model, args.remat, scan))
            for scan in (True, False)}
    chips, hbm = ours[True]["chips"], ours[True]["hbm_bytes_per_chip"]
    # The unrolled run keeps the cache key it had before the scanned one was added.
    peers = {scan: _cached(args, ["maxtext", model, args.target, args.batch, args.length,
                                  args.remat, *(["scan"] if scan else [])],
                           lambda scan=scan: maxtext_side(args, model, args.remat, chips, hbm,
                                                          scan))
             for scan in (True, False)}
    rows = [ours[True], peers[True], ours[False], peers[False]]
    if not all(peer["ok"] for peer in peers.values()) or args.own_peers:
        other = OTHER_REMAT[args.remat]
        rows.append(_cached(args, ["jaxtune", model, args.target, args.batch, args.length, other,
                                   "scan"],
                            lambda: jaxtune_side(args, model, other, True)))
    verdicts = []
    for scan, peer in peers.items():  # like for like: scanned with scanned, unrolled with unrolled
        if not peer["ok"]:
            continue
        ratio = ours[scan]["peak_bytes_per_chip"] / peer["peak_bytes_per_chip"]
        same_fit = _fits(ours[scan]) == _fits(peer)
        verdicts.append({"side": ours[scan]["side"], "peer": peer["side"], "peak_ratio": ratio,
                         "same_fit": same_fit, "met": ratio <= TARGET_RATIO and same_fit})
    return {"model": model, "rows": rows, "verdicts": verdicts}


def _fits(row: dict[str, Any]) -> bool:
    return bool(row.get("compiled")) and row["peak_bytes_per_chip"] <= row["hbm_bytes_per_chip"]


def render(args: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    """One markdown table of every side of every model, then the verdicts and the misses."""
    title = (f"{args.target}, {args.batch} x {args.length} tokens per step "
             f"({args.batch // max(results[0]['rows'][0]['chips'], 1)} row(s) per chip), "
             f"remat {args.remat}, bf16 compute, fp32 weights and AdamW moments, splash "
             "attention, fsdp over the slice; per chip")
    header = ("| model | side | peak per chip | fits | temporaries | FLOPs/step, compiled x "
              "chips | FLOPs/step, jaxtune count | compile | software |")
    lines = [title, "", header, "|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        for row in result["rows"]:
            if not row["ok"]:
                continue
            peak = row["peak_bytes_per_chip"]
            fit = (f"{'yes' if _fits(row) else 'no'} ({peak / row['hbm_bytes_per_chip']:.0%})"
                   + ("" if row["compiled"] else ", refused by XLA"))
            temp = row.get("temp_bytes")
            lines.append(
                f"| {result['model']} | {row['side']} | {peak / GIB:.2f} GiB | {fit} | "
                f"{'-' if temp is None else f'{temp / GIB:.2f} GiB'} | "
                f"{_sci(row.get('compiled_flops_per_step'))} | {_sci(row.get('flops_per_step'))} "
                f"| {row['compile_s']:.0f} s | {row.get('jax', '')} |")
    lines.append("")
    for result in results:
        missing = [row for row in result["rows"] if not row["ok"]]
        for row in missing:
            lines.append(f"{result['model']}: {row['side']} not compared: {row['reason']}")
        for verdict in result["verdicts"]:
            lines.append(
                f"{result['model']}: {verdict['side']} / {verdict['peer']} peak bytes per chip = "
                f"{verdict['peak_ratio']:.3f} (target <= {TARGET_RATIO}); same fit verdict: "
                f"{'yes' if verdict['same_fit'] else 'NO'}; "
                f"{'met' if verdict['met'] else 'NOT met'}")
        if not result["verdicts"]:
            lines.append(f"{result['model']}: peer used: jaxtune's own "
                         f"remat {OTHER_REMAT[args.remat]} plan (MaxText did not run)")
    return "\n".join(lines)


def _sci(x: float | None) -> str:
    return "-" if x is None else f"{x:.3e}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    from train_jax.train.tpu_compile import use_host_cpu

    use_host_cpu()
    results = []
    for model in (m.strip() for m in args.models.split(",")):
        if model not in MODELS:
            raise SystemExit(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
        logger.info("compiling %s for %s", model, args.target)
        results.append(compare(args, model))
    print(json.dumps(results, indent=2) if args.json else render(args, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
