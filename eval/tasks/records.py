"""Reading task files (CSV and JSONL) into examples, with `file:line` errors."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

PromptStyle = Literal["chat", "structured"]
PROMPT_STYLES: tuple[str, ...] = ("chat", "structured")

T = TypeVar("T")


class DataFormatError(ValueError):
    """A row of an input file is malformed; the message names `file:line` and the field."""

    def __init__(self, path: str | Path, line: int, message: str, field_name: str | None = None):
        self.path, self.line, self.field_name = str(path), line, field_name
        where = f"{path}:{line}"
        what = f"field {field_name!r}: " if field_name else ""
        super().__init__(f"{where}: {what}{message}")


@dataclass(frozen=True)
class TaskExample:
    """One input/target pair of a task.

    `inputs` holds the task's input fields by name (e.g. ``{"ref": ...}`` for ViGGO);
    `target` is the text the model must produce; `source` is ``file:line`` when known.
    """

    inputs: Mapping[str, str]
    target: str
    source: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RawRow:
    """A parsed row of a file before task validation, with its location."""

    path: str
    line: int
    data: Mapping[str, object]


def read_jsonl(path: str | Path) -> Iterator[RawRow | DataFormatError]:
    """Yield one `RawRow` per non-blank line, or a `DataFormatError` for a malformed one.

    Errors are yielded, not raised, so callers decide between failing and skipping.
    """
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield DataFormatError(path, line_no, f"malformed JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(data, dict):
                yield DataFormatError(path, line_no, f"expected a JSON object, got {type(data).__name__}")
                continue
            yield RawRow(str(path), line_no, data)


def read_csv(path: str | Path) -> Iterator[RawRow | DataFormatError]:
    """Yield one `RawRow` per CSV record (header row required); line = the record's first line."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            return
        start = reader.line_num + 1
        for record in reader:
            if None in record:
                yield DataFormatError(path, start, "more values than header columns")
            else:
                yield RawRow(str(path), start, record)
            start = reader.line_num + 1


def read_rows(path: str | Path) -> Iterator[RawRow | DataFormatError]:
    """Read a `.csv` or `.jsonl`/`.json` file by its extension."""
    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if suffix == ".csv":
        return read_csv(path)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return read_jsonl(path)
    raise ValueError(f"{path}: unsupported data file type {suffix!r}; use .csv or .jsonl")


def require_text(row: RawRow, name: str) -> str:
    """Return string field `name` of `row`, or raise a `DataFormatError` naming it."""
    if name not in row.data:
        raise DataFormatError(row.path, row.line, "missing field", name)
    value = row.data[name]
    if not isinstance(value, str):
        raise DataFormatError(row.path, row.line, f"expected a string, got {type(value).__name__}", name)
    return value


def convert_rows(
    path: str | Path, convert: Callable[[RawRow], T], *, skip_bad_rows: bool = False
) -> tuple[list[T], list[DataFormatError]]:
    """Read `path` and `convert` each row; returns (items, skipped errors).

    A malformed row, or a `DataFormatError` raised by `convert`, stops the read unless
    `skip_bad_rows`, in which case it is collected and the row left out.
    """
    items: list[T] = []
    errors: list[DataFormatError] = []
    for row in read_rows(path):
        try:
            if isinstance(row, DataFormatError):
                raise row
            items.append(convert(row))
        except DataFormatError as exc:
            if not skip_bad_rows:
                raise
            errors.append(exc)
    return items, errors


def examples_from_file(
    path: str | Path, input_fields: Sequence[str], target_field: str, *, skip_bad_rows: bool = False
) -> tuple[list[TaskExample], list[DataFormatError]]:
    """Load (`examples`, `skipped errors`) from a task file.

    Raises on the first bad row unless `skip_bad_rows`.
    """

    def example(row: RawRow) -> TaskExample:
        inputs = {name: require_text(row, name) for name in input_fields}
        target = require_text(row, target_field)
        return TaskExample(inputs=inputs, target=target, source=f"{row.path}:{row.line}")

    return convert_rows(path, example, skip_bad_rows=skip_bad_rows)
