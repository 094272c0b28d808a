"""Golden-file comparison for launcher output (test helper).

Set ``JAXTUNE_UPDATE_GOLDEN=1`` to rewrite the files from the current output; review the diff
before committing. Without it any difference fails with a unified diff.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE_ENV = "JAXTUNE_UPDATE_GOLDEN"


def assert_matches_golden(name: str, actual: str) -> None:
    """Fail unless `actual` equals the golden file `name` (or rewrite it in update mode)."""
    path = GOLDEN_DIR / name
    if os.environ.get(UPDATE_ENV) == "1":
        path.write_text(actual, encoding="utf-8")
        return
    if not path.is_file():
        raise AssertionError(f"golden file {path} is missing; create it with {UPDATE_ENV}=1")
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True),
                                            actual.splitlines(keepends=True),
                                            fromfile=f"golden/{name}", tofile="actual"))
        raise AssertionError(f"output differs from golden/{name} (regenerate with "
                             f"{UPDATE_ENV}=1 if intended):\n{diff}")
