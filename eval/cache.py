"""A disk cache of generations keyed by (model, endpoint, prompt, sampling parameters).

Re-running an evaluation (e.g. after changing a scorer) then costs no server time. Only
successful generations are stored; latency is never replayed from the cache, so cached
results are excluded from latency statistics by their callers.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any


def cache_key(model: str, endpoint: str, prompt: Any, params: dict[str, Any]) -> str:
    """A stable hash of everything that determines a generation at fixed sampling settings."""
    blob = json.dumps({"model": model, "endpoint": endpoint, "prompt": prompt, "params": params},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """A SQLite file mapping `cache_key` to a JSON record of the generation."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path)
        self._conn.execute("CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, record TEXT)")
        self._conn.commit()

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record for `key`, or None."""
        row = self._conn.execute("SELECT record FROM generations WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store (or replace) the record for `key`."""
        self._conn.execute("INSERT OR REPLACE INTO generations VALUES (?, ?)",
                           (key, json.dumps(record, ensure_ascii=False)))
        self._conn.commit()

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        """Close the database file."""
        self._conn.close()
