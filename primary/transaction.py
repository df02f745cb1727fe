"""SQLite as every store of the primary (jobs, accounts, webhooks) uses it: the writing connection to the
cluster's database, and one write transaction: BEGIN IMMEDIATE takes the write lock at once, so a transaction
never fails half-way for want of it."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A connection in autocommit (transactions are explicit), usable from threads, rows by name, WAL;
    ``synchronous`` NORMAL: in WAL a power cut may lose the last commits, never the database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db


class Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
