"""Benchmark `jaxtune data prepare` against tokenising the same rows with HF `datasets.map`.

For each task file (full ViGGO and GSM8K training sets by default) this times
- jaxtune: `prepare_dataset` end to end (read, validate, clean, split, render prompts,
  tokenise, mask, pack, write arrays and report), tokenizer already loaded;
- peer: `datasets.load_dataset` from the local file + `Dataset.map(batched=True)` rendering the
  same structured prompt + target + EOS and tokenising it (no cleaning, masking or packing),
  caching disabled so nothing is reused between runs;
and prints rows/s and tokens/s side by side with the ratio jaxtune / datasets.

    .venv/bin/python bench/data_prepare.py [--model DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from eval.tasks import get_task
from eval.tasks.records import TaskExample
from eval.tasks.task import Task
from train_jax.data.config import DataConfig
from train_jax.data.prepare import prepare_dataset
from train_jax.data.tokenization import load_tokenizer

REPO = Path(__file__).resolve().parents[1]

TASK_FILES = {"viggo": REPO / "data/viggo/train.csv", "gsm8k": REPO / "data/gsm8k/train.jsonl",
              "sql": REPO / "data/sql/train.jsonl"}
TINYSTORIES = REPO / "tests/fixtures/models/tinystories-656k"


def time_jaxtune(task: str, tokenizer, work: Path) -> tuple[float, int, int]:
    """Seconds, rows read and tokens written by one full `prepare_dataset` run."""
    cfg = DataConfig(task=task, train_file=str(TASK_FILES[task]), max_length=2048)
    start = time.perf_counter()
    dataset = prepare_dataset(cfg, tokenizer, work / f"jaxtune-{task}", progress=False, force=True)
    seconds = time.perf_counter() - start
    report = json.loads((dataset.path / "report.json").read_text())
    rows = report["splits"]["train"]["rows_read"]
    tokens = sum(s["tokens"] for s in report["splits"].values())
    return seconds, rows, tokens


def time_datasets_map(task: str, tokenizer, work: Path) -> tuple[float, int, int]:
    """Seconds, rows and tokens for load_dataset + batched map over the same file."""
    import datasets

    datasets.disable_caching()
    datasets.disable_progress_bars()
    spec = get_task(task)
    path = TASK_FILES[task]
    eos = tokenizer.eos_token

    def tokenize(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(),
                                                                        strict=True)]
        texts = [spec.structured_prompt(_example(spec, r)) + r[spec.target_field] + eos
                 for r in rows]
        return {"input_ids": tokenizer(texts)["input_ids"]}

    start = time.perf_counter()
    kind = "csv" if path.suffix == ".csv" else "json"
    ds = datasets.load_dataset(kind, data_files=str(path), split="train",
                               cache_dir=str(work / f"hf-cache-{task}-{time.time_ns()}"))
    mapped = ds.map(tokenize, batched=True, batch_size=1000, remove_columns=ds.column_names)
    tokens = sum(len(ids) for ids in mapped["input_ids"])
    seconds = time.perf_counter() - start
    return seconds, len(ds), tokens


def _example(task: Task, row: dict[str, str]) -> TaskExample:
    return TaskExample(inputs={k: row[k] for k in task.input_fields}, target=row[task.target_field])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(TINYSTORIES),
                        help="tokenizer source (default: the TinyStories test model)")
    parser.add_argument("--tasks", nargs="+", default=["viggo", "gsm8k"], choices=TASK_FILES)
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs per side")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tokenizer = load_tokenizer(args.model)
    print(f"tokenizer: {args.model} ({type(tokenizer).__name__}, vocab {len(tokenizer)})")
    header = (f"{'task':<7}{'rows':>7}  {'jaxtune rows/s':>15}{'tokens/s':>11}  "
              f"{'datasets.map rows/s':>20}{'tokens/s':>11}  {'ratio':>6}")
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for task in args.tasks:
            ours = min((time_jaxtune(task, tokenizer, work) for _ in range(args.repeats)),
                       key=lambda r: r[0])
            peer = min((time_datasets_map(task, tokenizer, work) for _ in range(args.repeats)),
                       key=lambda r: r[0])
            print(f"{task:<7}{ours[1]:>7}  {ours[1] / ours[0]:>15,.0f}{ours[2] / ours[0]:>11,.0f}  "
                  f"{peer[1] / peer[0]:>20,.0f}{peer[2] / peer[0]:>11,.0f}  "
                  f"{peer[0] / ours[0]:>5.2f}x")
    print("ratio = datasets.map time / jaxtune time (>1: jaxtune faster). jaxtune also "
          "validates, cleans, masks, packs and writes arrays + report; the peer only tokenises.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
