"""ViGGO preference pairs for DPO: the gold meaning representation against a corrupted one.

`viggo_pairs(csv)` turns each ViGGO row (`ref` sentence, `mr` gold MR) into a preference row
``{"prompt": ref, "chosen": mr, "rejected": corrupted mr}``. The corruption is deterministic
(row index and text only), one of, in turn:

0. a wrong function type (the next one in `FUNCTION_TYPES`, e.g. inform -> request);
1. a dropped attribute (the last one; with a single attribute, fall back to 0);
2. two attribute values swapped (the first two whose values differ; else fall back to 1).

So the preferred answer differs from the rejected one in exactly what the task's attribute-F1
and exact-match scorers check. `python -m train_jax.data.preference_viggo IN.csv OUT.jsonl
[--rows N]` writes the rows (the shipped data/viggo/preference_*.jsonl were made this way).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from eval.tasks.records import examples_from_file
from eval.tasks.viggo import FUNCTION_TYPES, MeaningRepresentation, parse_mr

logger = logging.getLogger(__name__)


def corrupt_mr(mr: MeaningRepresentation, index: int) -> str:
    """A wrong version of `mr`, chosen by `index` (see the module docstring)."""
    kind = index % 3
    attrs = list(mr.attributes)
    if kind == 2:
        pair = next(((i, j) for i in range(len(attrs)) for j in range(i + 1, len(attrs))
                     if attrs[i][1] != attrs[j][1]), None)
        if pair is not None:
            i, j = pair
            attrs[i], attrs[j] = (attrs[i][0], attrs[j][1]), (attrs[j][0], attrs[i][1])
            return MeaningRepresentation(mr.function, tuple(attrs), "").render()
        kind = 1
    if kind == 1 and len(attrs) > 1:
        return MeaningRepresentation(mr.function, tuple(attrs[:-1]), "").render()
    other = FUNCTION_TYPES[(FUNCTION_TYPES.index(mr.function) + 1) % len(FUNCTION_TYPES)]
    return MeaningRepresentation(other, mr.attributes, "").render()


def viggo_pairs(path: str | Path, rows: int | None = None) -> Iterator[dict[str, str]]:
    """Preference rows from a ViGGO CSV (`ref`, `mr`), the first `rows` of them if given."""
    examples, _ = examples_from_file(path, ("ref",), "mr")
    for index, example in enumerate(examples[:rows]):
        gold = parse_mr(example.target)
        if gold is None:
            logger.warning("%s: no meaning representation, skipped", example.source)
            continue
        chosen = gold.render()
        yield {"prompt": example.inputs["ref"], "chosen": chosen,
               "rejected": corrupt_mr(gold, index)}


def main(argv: list[str] | None = None) -> int:
    """Write ViGGO preference rows as JSONL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="a ViGGO CSV file (mr, ref)")
    parser.add_argument("out", help="output JSONL file")
    parser.add_argument("--rows", type=int, default=None, help="only the first N rows")
    args = parser.parse_args(argv)
    with open(args.out, "w", encoding="utf-8") as handle:
        count = 0
        for row in viggo_pairs(args.csv, args.rows):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    logging.basicConfig(level=logging.INFO)
    logger.info("wrote %d preference rows to %s", count, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
