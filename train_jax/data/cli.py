"""`jaxtune data prepare`: clean, tokenise, mask and pack a dataset, and write its report."""

from __future__ import annotations

import argparse
import json
import logging

from train_jax.data.config import PROMPT_STYLES, TASK_NAMES, DataConfig

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of `jaxtune data prepare`."""
    parser.add_argument("--task", required=True, choices=TASK_NAMES,
                        help="built-in task, 'jsonl' (prompt/completion rows, JSONL or CSV), "
                             "'chat' (rows with a messages list) or 'preference' "
                             "(prompt/chosen/rejected rows for DPO)")
    parser.add_argument("--data", required=True,
                        help="training file (.jsonl/.csv) or hf://owner/name[@split]")
    parser.add_argument("--val", default=None, help="validation file (optional)")
    parser.add_argument("--model", required=True,
                        help="base model whose tokenizer (and chat template) to use: HF folder, "
                             "jaxtune checkpoint or hub id")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--style", choices=PROMPT_STYLES, default=None,
                        help="prompt style (default: structured; chat for --task chat)")
    parser.add_argument("--max-length", type=int, default=512,
                        help="row length; longer examples are dropped and counted")
    parser.add_argument("--no-pack", action="store_true",
                        help="one example per row, padded (default: pack several per row)")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="skip and count malformed rows instead of failing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="share of training rows held out when there is no --val")
    parser.add_argument("--no-dedup", action="store_true", help="keep duplicate rows")
    parser.add_argument("--drop-leaked", action="store_true",
                        help="drop training rows whose input also occurs in validation")
    parser.add_argument("--prompt-field", default="prompt", help="prompt field (--task jsonl)")
    parser.add_argument("--completion-field", default="completion",
                        help="completion field (--task jsonl)")
    parser.add_argument("--messages-field", default="messages", help="messages field (--task chat)")
    parser.add_argument("--system-prompt", default=None,
                        help="system message for --task jsonl in chat style")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even if --out holds a dataset prepared from the same inputs")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def config_from_args(args: argparse.Namespace) -> DataConfig:
    """The `DataConfig` described by parsed CLI arguments."""
    style = args.style or ("chat" if args.task == "chat" else "structured")
    return DataConfig(
        task=args.task, train_file=args.data, val_file=args.val, style=style,
        max_length=args.max_length, packing=not args.no_pack, skip_bad_rows=args.skip_bad_rows,
        seed=args.seed, val_fraction=args.val_fraction, dedup=not args.no_dedup,
        leakage="drop" if args.drop_leaked else "report", prompt_field=args.prompt_field,
        completion_field=args.completion_field, messages_field=args.messages_field,
        system_prompt=args.system_prompt,
    )


def run(args: argparse.Namespace) -> int:
    """Prepare the dataset and print a short summary; errors propagate to the dispatcher."""
    from train_jax.data.prepare import prepare_dataset

    cfg = config_from_args(args)
    dataset = prepare_dataset(cfg, args.model, args.out, progress=not args.no_progress,
                              force=args.force)
    report = json.loads((dataset.path / "report.json").read_text())
    for split, stats in report["splits"].items():
        dropped = ", ".join(f"{k} {v}" for k, v in stats["dropped"].items()) or "none"
        source = (f"{stats['split_from_train']} rows split off train" if stats["split_from_train"]
                  else f"{stats['rows_read']} rows read")
        print(f"{split}: {source} -> {stats['examples_out']} examples, "
              f"{stats['tokens']} tokens ({stats['trained_tokens']} trained) in "
              f"{stats['sequences']} sequences, packing efficiency "
              f"{stats['packing_efficiency']:.1%}; dropped: {dropped}")
    print(f"leakage: {report['leakage']['count']} training examples share an input with "
          f"validation ({report['leakage']['policy']})")
    print(f"wrote {dataset.path} (report.md, report.json, token_lengths.png)")
    return 0
