"""Webhooks and their deliveries, in the same SQLite file as the jobs (tables of their own).

A delivery is one event for one webhook, keyed by (webhook, seq); each try of it is an attempt.
Rows are inserted with ``INSERT OR IGNORE``, so replaying events after a restart never doubles one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from primary.transaction import Transaction, connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    owner_admin INTEGER NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_owner ON webhooks(owner);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    webhook_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status_code INTEGER,
    error TEXT,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_attempt_at REAL,
    finished_at REAL,
    PRIMARY KEY (webhook_id, seq)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending ON webhook_deliveries(webhook_id, state, seq);
CREATE TABLE IF NOT EXISTS webhook_attempts (
    webhook_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    number INTEGER NOT NULL,
    at REAL NOT NULL,
    duration_ms REAL NOT NULL,
    status_code INTEGER,
    error TEXT,
    PRIMARY KEY (webhook_id, seq, number)
);
CREATE TABLE IF NOT EXISTS webhook_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

SEEN_SEQ = "seen_seq"  # every event up to this seq has its deliveries written


class DeliveryState(str, Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up: the last attempt failed, or the address was refused


@dataclass(frozen=True)
class Webhook:
    id: str
    owner: str
    owner_admin: bool
    url: str
    events: tuple[str, ...]
    secret: str
    created_at: float
    created_seq: int

    def public(self) -> dict[str, Any]:
        """What its owner sees; the secret is shown once, at creation."""
        return {"webhookId": self.id, "url": self.url, "events": list(self.events), "owner": self.owner,
                "createdAt": self.created_at}


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    seq: int
    event: str
    body: bytes
    attempts: int
    next_attempt_at: float


@dataclass(frozen=True)
class AttemptRecord:
    number: int
    at: float
    duration_ms: float
    status_code: int | None
    error: str | None


class WebhookStore:
    def __init__(self, path: Path) -> None:
        self._db = connect(path)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # webhooks

    def add(self, hook: Webhook) -> None:
        self._db.execute("INSERT INTO webhooks (id, owner, owner_admin, url, events, secret, created_at, created_seq) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (hook.id, hook.owner, int(hook.owner_admin), hook.url, json.dumps(hook.events),
                          hook.secret, hook.created_at, hook.created_seq))

    def all(self) -> list[Webhook]:
        return [_webhook(r) for r in self._db.execute("SELECT * FROM webhooks ORDER BY created_at")]

    def remove(self, webhook_id: str) -> None:
        with Transaction(self._db):
            for table in ("webhook_attempts", "webhook_deliveries"):
                self._db.execute(f"DELETE FROM {table} WHERE webhook_id = ?", (webhook_id,))
            self._db.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))

    # deliveries

    def add_deliveries(self, rows: Iterable[tuple[str, int, str, bytes]], seen_seq: int) -> None:
        """(webhook id, seq, event, body) rows, due now, and the new cursor, in one transaction."""
        now = time.time() * 1000
        with Transaction(self._db):
            self._db.executemany(
                "INSERT OR IGNORE INTO webhook_deliveries (webhook_id, seq, event, body, state, created_at, "
                "next_attempt_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                [(hook_id, seq, event, body, now, now) for hook_id, seq, event, body in rows])
            self._set(SEEN_SEQ, str(seen_seq))

    def next_pending(self, webhook_id: str) -> Delivery | None:
        row = self._db.execute(
            "SELECT webhook_id, seq, event, body, attempts, next_attempt_at FROM webhook_deliveries "
            "WHERE webhook_id = ? AND state = 'pending' ORDER BY seq LIMIT 1", (webhook_id,)).fetchone()
        return Delivery(row[0], row[1], row[2], bytes(row[3]), row[4], row[5]) if row else None

    def record_attempt(self, delivery: Delivery, attempt: AttemptRecord, state: DeliveryState,
                       next_attempt_at: float) -> None:
        finished = attempt.at + attempt.duration_ms if state is not DeliveryState.PENDING else None
        with Transaction(self._db):
            self._db.execute(
                "INSERT OR REPLACE INTO webhook_attempts (webhook_id, seq, number, at, duration_ms, status_code, "
                "error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (delivery.webhook_id, delivery.seq, attempt.number, attempt.at, attempt.duration_ms,
                 attempt.status_code, attempt.error))
            self._db.execute(
                "UPDATE webhook_deliveries SET state = ?, attempts = ?, status_code = ?, error = ?, "
                "last_attempt_at = ?, next_attempt_at = ?, finished_at = ? WHERE webhook_id = ? AND seq = ?",
                (state.value, attempt.number, attempt.status_code, attempt.error, attempt.at, next_attempt_at,
                 finished, delivery.webhook_id, delivery.seq))

    def deliveries(self, webhook_id: str, limit: int, before: int | None) -> list[dict[str, Any]]:
        """Newest first, paged by seq."""
        rows = self._db.execute(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (webhook_id, before if before is not None else 2**62, limit)).fetchall()
        attempts = self._attempts(webhook_id, [r["seq"] for r in rows])
        return [_delivery_view(r, attempts.get(r["seq"], [])) for r in rows]

    def prune(self, keep_per_webhook: int) -> int:
        """Finished deliveries beyond the newest ``keep_per_webhook`` of each webhook go, with their attempts."""
        removed = 0
        with Transaction(self._db):
            for (hook_id,) in self._db.execute("SELECT id FROM webhooks").fetchall():
                row = self._db.execute("SELECT seq FROM webhook_deliveries WHERE webhook_id = ? ORDER BY seq DESC "
                                       "LIMIT 1 OFFSET ?", (hook_id, keep_per_webhook)).fetchone()
                if row is None:
                    continue
                for table in ("webhook_attempts", "webhook_deliveries"):
                    self._db.execute(
                        f"DELETE FROM {table} WHERE webhook_id = ? AND seq <= ? AND seq NOT IN "
                        "(SELECT seq FROM webhook_deliveries WHERE webhook_id = ? AND state = 'pending')",
                        (hook_id, row[0], hook_id))
                removed += self._db.execute("SELECT changes()").fetchone()[0]
        return removed

    # the cursor over the events table

    def seen_seq(self) -> int:
        row = self._db.execute("SELECT value FROM webhook_settings WHERE name = ?", (SEEN_SEQ,)).fetchone()
        return int(row[0]) if row else 0

    def set_seen_seq(self, seq: int) -> None:
        self._set(SEEN_SEQ, str(seq))

    def _set(self, name: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO webhook_settings (name, value) VALUES (?, ?)", (name, value))

    def _attempts(self, webhook_id: str, seqs: list[int]) -> dict[int, list[dict[str, Any]]]:
        if not seqs:
            return {}
        marks = ",".join("?" for _ in seqs)
        rows = self._db.execute(f"SELECT * FROM webhook_attempts WHERE webhook_id = ? AND seq IN ({marks}) "
                                "ORDER BY seq, number", (webhook_id, *seqs))
        found: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            found.setdefault(r["seq"], []).append({"number": r["number"], "at": r["at"],
                                                   "durationMs": round(r["duration_ms"], 3),
                                                   "statusCode": r["status_code"], "error": r["error"]})
        return found




def _webhook(row: sqlite3.Row) -> Webhook:
    return Webhook(row["id"], row["owner"], bool(row["owner_admin"]), row["url"], tuple(json.loads(row["events"])),
                   row["secret"], row["created_at"], row["created_seq"])


def _delivery_view(row: sqlite3.Row, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"seq": row["seq"], "event": row["event"], "state": row["state"], "attempts": row["attempts"],
            "statusCode": row["status_code"], "error": row["error"], "createdAt": row["created_at"],
            "lastAttemptAt": row["last_attempt_at"], "nextAttemptAt": row["next_attempt_at"]
            if row["state"] == DeliveryState.PENDING.value else None,
            "finishedAt": row["finished_at"], "tries": attempts}
