"""Users and sessions, in the same SQLite file as the jobs (tables of their own)."""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.passwords import hash_password, token_hash
from primary.transaction import Transaction, connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);
"""


MAX_DISPLAY_NAME = 100


class AccountError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    id: str
    name: str  # the login name: it never changes
    is_admin: bool
    password_hash: str = ""
    display_name: str = ""  # shown by the pages; the login name until the user picks one

    def public(self) -> dict[str, Any]:
        return {"userId": self.id, "username": self.name, "name": self.display_name or self.name,
                "admin": self.is_admin}


class AccountStore:
    def __init__(self, path: Path) -> None:
        self._db = connect(path, synchronous="FULL")  # SQLite's default, which the accounts always had
        self._db.executescript(SCHEMA)
        _migrate(self._db)

    def close(self) -> None:
        self._db.close()

    # users

    def add_user(self, name: str, password: str, is_admin: bool = False) -> User:
        _check_name(name)
        user = User(uuid.uuid4().hex[:16], name, is_admin, hash_password(password))
        try:
            self._db.execute("INSERT INTO users (id, name, password_hash, is_admin, created_at) VALUES (?, ?, ?, ?, ?)",
                             (user.id, name, user.password_hash, int(is_admin), time.time() * 1000))
        except sqlite3.IntegrityError as e:
            raise AccountError(f"user {name!r} exists already") from e
        return user

    def user_by_name(self, name: str) -> User | None:
        row = self._db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        return _user(row) if row else None

    def user_by_id(self, user_id: str) -> User | None:
        row = self._db.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return _user(row) if row else None

    def users(self) -> list[User]:
        return [_user(r) for r in self._db.execute("SELECT * FROM users ORDER BY created_at")]

    def count_users(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0]

    def set_password_hash(self, user_id: str, password_hash: str, keep_token_hash: str = "") -> list[str]:
        """A new password ends every session of the user but ``keep_token_hash`` (the one that changed it);
        returns the token hashes of the sessions it ended."""
        with Transaction(self._db):
            self._db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
            return self._end_sessions(user_id, keep_token_hash)

    def set_display_name(self, user_id: str, display_name: str) -> None:
        """Only the name the pages show: the login name never changes."""
        self._db.execute("UPDATE users SET display_name = ? WHERE id = ?", (check_display_name(display_name), user_id))

    def remove_user(self, name: str) -> tuple[User, list[str]] | None:
        """The user and the token hashes of the sessions that ended with it; None: no such user."""
        user = self.user_by_name(name)
        if user is None:
            return None
        with Transaction(self._db):
            ended = self._end_sessions(user.id)
            self._db.execute("DELETE FROM users WHERE id = ?", (user.id,))
        return user, ended

    # sessions

    def create_session(self, user_id: str, token: str, ttl_s: float) -> float:
        now = time.time() * 1000
        expires = now + ttl_s * 1000
        self._db.execute("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                         (token_hash(token), user_id, now, expires))
        return expires

    def session_user(self, token: str) -> User | None:
        row = self._db.execute(
            "SELECT users.* FROM sessions JOIN users ON users.id = sessions.user_id "
            "WHERE sessions.token_hash = ? AND sessions.expires_at > ?", (token_hash(token), time.time() * 1000),
        ).fetchone()
        return _user(row) if row else None

    def end_session(self, token: str) -> str | None:
        """The user id of the session that ended; None: there was none."""
        row = self._db.execute("DELETE FROM sessions WHERE token_hash = ? RETURNING user_id",
                               (token_hash(token),)).fetchone()
        return row[0] if row else None

    def _end_sessions(self, user_id: str, keep_token_hash: str = "") -> list[str]:
        rows = self._db.execute("DELETE FROM sessions WHERE user_id = ? AND token_hash != ? RETURNING token_hash",
                                (user_id, keep_token_hash)).fetchall()
        return [row[0] for row in rows]

    def prune_sessions(self) -> int:
        """Forget expired sessions (they are refused already); the number removed."""
        return self._db.execute("DELETE FROM sessions WHERE expires_at <= ?", (time.time() * 1000,)).rowcount


def _migrate(db: sqlite3.Connection) -> None:
    """A cluster.db made before display names: add the column (each user shows its login name until then)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(users)")}
    if "display_name" not in columns:
        db.execute("ALTER TABLE users ADD COLUMN display_name TEXT NOT NULL DEFAULT ''")


def _user(row: sqlite3.Row) -> User:
    return User(row["id"], row["name"], bool(row["is_admin"]), row["password_hash"], row["display_name"])


def check_display_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_DISPLAY_NAME or not name.isprintable():
        raise AccountError(f"a name is 1-{MAX_DISPLAY_NAME} printable characters")
    return name


def _check_name(name: str) -> None:
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise AccountError("a user name is 1-64 letters, digits, '-', '_' or '.'")
