"""Real SQLite databases for text-to-SQL rows: where they are, and opening them read-only.

A data row names its database by ``db_id`` (Spider rows carry the real Spider id). A database
directory holds ``<db_id>.sqlite`` files, or Spider's own layout ``<db_id>/<db_id>.sqlite``.
jaxtune ships the Spider train databases in ``data/sql/spider_db/`` (`SHIPPED_DB_DIR`).

Queries on a real database come from a model, so the connection is made safe to run anything:
the file is opened read-only (``mode=ro`` URI) and an authorizer refuses every statement
that is not a read (SELECT, reads of columns, functions, recursive CTEs): DROP, INSERT,
UPDATE, ATTACH, PRAGMA ... fail with "not authorized" before they run. Time limits are the
caller's (`eval.tasks.sql_exec.run_query`).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

SHIPPED_DB_DIR = Path(__file__).resolve().parents[2] / "data" / "sql" / "spider_db"
SQLITE_SUFFIX = ".sqlite"
# A db_id is a file name stem: refuse anything that could walk out of the directory.
_DB_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                           sqlite3.SQLITE_RECURSIVE})


class DatabaseDirError(ValueError):
    """A database directory is missing or holds no databases; the message names the path."""


def shipped_db_dir() -> Path | None:
    """The Spider databases shipped with jaxtune, or None when this install has no copy."""
    has_copy = SHIPPED_DB_DIR.is_dir() and next(SHIPPED_DB_DIR.glob(f"*{SQLITE_SUFFIX}"), None)
    return SHIPPED_DB_DIR if has_copy else None


def check_db_dir(db_dir: str | Path) -> Path:
    """`db_dir` as a Path; raises `DatabaseDirError` unless it is a directory holding at least
    one ``*.sqlite`` file (directly or one folder down)."""
    path = Path(db_dir)
    if not path.is_dir():
        raise DatabaseDirError(f"database directory not found: {path}")
    if next(path.glob(f"*{SQLITE_SUFFIX}"), None) is None and \
            next(path.glob(f"*/*{SQLITE_SUFFIX}"), None) is None:
        raise DatabaseDirError(f"{path} holds no {SQLITE_SUFFIX} files (expected "
                               f"<db_id>{SQLITE_SUFFIX} or <db_id>/<db_id>{SQLITE_SUFFIX})")
    return path


def find_database(db_dir: Path, db_id: str) -> Path | None:
    """The database file of `db_id` in `db_dir` (either layout), or None when it has none."""
    if not _DB_ID.match(db_id):
        return None
    name = f"{db_id}{SQLITE_SUFFIX}"
    for candidate in (db_dir / name, db_dir / db_id / name):
        if candidate.is_file():
            return candidate
    return None


def _authorize(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def refuse_writes(conn: sqlite3.Connection) -> sqlite3.Connection:
    """Install the authorizer that lets only reads compile on `conn`; returns `conn`."""
    conn.set_authorizer(_authorize)
    return conn


def open_read_only(path: Path) -> sqlite3.Connection:
    """A connection to the database file at `path` that can only read it (see module doc).

    Text that is not valid UTF-8 (a few Spider cells) is decoded with replacement characters
    rather than failing the query, identically for gold and prediction.
    """
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                           check_same_thread=False)
    conn.text_factory = lambda raw: raw.decode("utf-8", errors="replace")
    return refuse_writes(conn)
