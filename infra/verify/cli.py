"""`jaxtune verify`: Flax, transformers and the served model on the same prompts, pair by pair."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `jaxtune verify`."""
    parser.add_argument("--checkpoint", type=Path, metavar="CKPT_DIR",
                        help="jaxtune checkpoint (full or LoRA); exported here unless --export")
    parser.add_argument("--export", type=Path, metavar="HF_DIR",
                        help="exported HF folder (alone: verify the export by itself)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--dtype", choices=("bf16", "fp32", "fp16"), default=None,
                        help="dtype of the export written from --checkpoint (default: as `jaxtune export`)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prompts", type=Path, metavar="FILE",
                        help="prompts: JSONL with a 'prompt' field, or text, one per line "
                             "(default: a shipped task-like set)")
    source.add_argument("--task", help="build prompts from a task file (with --data)")
    parser.add_argument("--data", type=Path, help="the task file for --task")
    parser.add_argument("--num-prompts", type=int, default=4,
                        help="prompts taken from --task/--data (default 4)")
    parser.add_argument("--no-server", dest="serve", action="store_false",
                        help="skip the vLLM pairs (Flax vs transformers only)")
    parser.add_argument("--base-url", metavar="URL",
                        help="check one model on an already running server (the deployment, "
                             "say) instead of starting one; no LoRA adapter pair")
    parser.add_argument("--served-model", metavar="NAME",
                        help="with --base-url: the served model to check (default: the server's "
                             "only model)")
    parser.add_argument("--serve-arg", action="append", default=None, metavar="ARG",
                        help="extra argument for `jaxtune serve` (repeatable; replaces the "
                             "default --kv-cache-gib 1)")
    parser.add_argument("--top-k", type=int, default=20,
                        help="prompt-logprob candidates asked of the server (1-20, default 20)")
    parser.add_argument("--max-new-tokens", type=int, default=16,
                        help="length of the greedy continuations (default 16)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write verify.json and verify.md here (and keep the work files)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")


def _prompts(args: argparse.Namespace) -> tuple[str, ...]:
    from infra.verify.prompts import DEFAULT_PROMPTS, load_prompts, task_prompts

    if args.prompts is not None:
        return tuple(load_prompts(args.prompts))
    if args.task is not None:
        if args.data is None:
            raise ValueError("--task needs --data FILE")
        if args.num_prompts < 1:
            raise ValueError(f"--num-prompts must be >= 1, got {args.num_prompts}")
        return tuple(task_prompts(args.task, args.data, args.num_prompts))
    if args.data is not None:
        raise ValueError("--data needs --task NAME")
    return DEFAULT_PROMPTS


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON); exit 1 with one line naming the failing pairs."""
    from infra.verify.run import DEFAULT_SERVE_ARGS, VerifySettings, verify
    from infra.verify.table import render_markdown, report_json, write_outputs

    prompts = _prompts(args)
    if args.base_url is None and args.served_model is not None:
        raise ValueError("--served-model needs --base-url URL")
    if args.base_url is not None and not args.serve:
        raise ValueError("--base-url and --no-server contradict each other: drop one")
    if args.base_url is not None and args.serve_arg is not None:
        raise ValueError("--serve-arg starts a server; with --base-url none is started: drop one")
    with tempfile.TemporaryDirectory(prefix="jaxtune_verify_") as tmp:
        work = (args.out / "work") if args.out is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = verify(VerifySettings(
            prompts=prompts, work_dir=work, checkpoint=args.checkpoint, export=args.export,
            step=args.step, dtype=args.dtype, serve=args.serve,
            serve_args=tuple(args.serve_arg) if args.serve_arg is not None else DEFAULT_SERVE_ARGS,
            top_k=args.top_k, max_new_tokens=args.max_new_tokens,
            server_url=args.base_url, served_model=args.served_model))
    if args.out is not None:
        write_outputs(report, args.out)
    print(json.dumps(report_json(report), indent=2) if args.json else render_markdown(report), end="")
    if not report.passed:
        print(f"jaxtune: verify failed: {report.failure_line()}", file=sys.stderr)
        return 1
    return 0
