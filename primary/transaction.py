"""One SQLite write transaction, for every store of the primary (jobs, webhooks): BEGIN IMMEDIATE takes the
write lock at once, so a transaction never fails half-way for want of it."""

from __future__ import annotations

import sqlite3


class Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
