"""The contracts every process shares: job types and states, event names, wire messages.

Events travel on the primary's PUB socket as two frames, ``[topic, json]``;
requests from web workers and messages to and from executors are single JSON
frames; a web worker may send several requests in one frame (a JSON array), answered by one frame of
replies in the same order. Every message is a frozen dataclass with ``encode``/``decode``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any

LOG_TOPIC = "log"


class ProtocolError(ValueError):
    """A message that could not be decoded."""


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DELAYED = "delayed"  # failed, waiting for its retry
    COMPLETED = "completed"
    DEAD = "dead"  # permanent failure, kept in the dead-letter list
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)


class Priority(str, Enum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return {"high": 0, "normal": 1, "low": 2}[self.value]


class EventName(str, Enum):
    QUEUED = "job:queued"
    STARTED = "job:started"
    PROGRESS = "job:progress"
    COMPLETED = "job:completed"
    FAILED = "job:failed"
    PERMANENT_FAILURE = "job:permanent-failure"
    CANCELLED = "job:cancelled"
    STALLED = "job:stalled"


class PipelineEvent(str, Enum):
    """A pipeline's steps (primary/pipelines.py); each carries the jobId of its stage, so it is routed as
    that job's events are (its video's rooms, its owner, administrators)."""

    STARTED = "pipeline:started"
    STAGE_COMPLETED = "pipeline:stage-completed"
    REVIEW_NEEDED = "pipeline:review-needed"
    COMPLETED = "pipeline:completed"
    FAILED = "pipeline:failed"
    RESUMED = "pipeline:resumed"
    CANCELLED = "pipeline:cancelled"


def _parse(frame: bytes) -> Any:
    try:
        return json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ProtocolError(f"not JSON: {frame[:80]!r}") from e


def _loads(frame: bytes) -> dict[str, Any]:
    value = _parse(frame)
    if not isinstance(value, dict):
        raise ProtocolError(f"not a JSON object: {frame[:80]!r}")
    return value


def _dumps(value: dict[str, Any] | list[dict[str, Any]]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Event:
    event: str
    seq: int
    ts: float
    data: dict[str, Any]

    def body(self) -> bytes:
        return self._body

    @cached_property
    def _body(self) -> bytes:
        """Built once: the bus, the webhooks and the replay all send the same bytes."""
        return _dumps({"event": self.event, "seq": self.seq, "ts": self.ts, "data": self.data})

    def encode(self) -> list[bytes]:
        return [self.event.encode(), self.body()]

    @classmethod
    def decode(cls, frames: list[bytes]) -> Event:
        if len(frames) != 2:
            raise ProtocolError(f"an event has 2 frames, got {len(frames)}")
        return cls.from_body(frames[1])

    @classmethod
    def from_body(cls, body: bytes) -> Event:
        value = _loads(body)
        try:
            return cls(value["event"], int(value["seq"]), float(value["ts"]), dict(value["data"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"bad event: {body[:80]!r}") from e


@dataclass(frozen=True)
class Request:
    """A web worker's call to the primary over the control socket."""

    id: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _dumps(self._value())

    def _value(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op, "args": self.args}

    @staticmethod
    def encode_many(requests: list[Request]) -> bytes:
        """One frame: the request itself when alone, else an array of them."""
        if len(requests) == 1:
            return requests[0].encode()
        return _dumps([r._value() for r in requests])

    @classmethod
    def decode(cls, frame: bytes) -> Request:
        return cls._from(_loads(frame), frame)

    @classmethod
    def decode_many(cls, frame: bytes) -> tuple[list[Request], bool]:
        """The requests of a frame, and whether it was an array (its replies then go back as one)."""
        value = _parse(frame)
        if isinstance(value, dict):
            return [cls._from(value, frame)], False
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            raise ProtocolError(f"not a request or an array of requests: {frame[:80]!r}")
        return [cls._from(v, frame) for v in value], True

    @classmethod
    def _from(cls, value: dict[str, Any], frame: bytes) -> Request:
        try:
            return cls(int(value["id"]), str(value["op"]), dict(value.get("args") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"bad request: {frame[:80]!r}") from e


@dataclass(frozen=True)
class Reply:
    id: int
    result: Any = None
    error: str | None = None
    status: int = 200

    @property
    def ok(self) -> bool:
        return self.error is None

    def encode(self) -> bytes:
        return _dumps(self._value())

    def _value(self) -> dict[str, Any]:
        return {"id": self.id, "result": self.result, "error": self.error, "status": self.status}

    @staticmethod
    def encode_many(replies: list[Reply]) -> bytes:
        return _dumps([r._value() for r in replies])

    @classmethod
    def decode(cls, frame: bytes) -> Reply:
        return cls._from(_loads(frame), frame)

    @classmethod
    def decode_many(cls, frame: bytes) -> list[Reply]:
        """A reply, or an array of them (the answer to an array of requests)."""
        value = _parse(frame)
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, dict) for v in values):
            raise ProtocolError(f"not a reply or an array of replies: {frame[:80]!r}")
        return [cls._from(v, frame) for v in values]

    @classmethod
    def _from(cls, value: dict[str, Any], frame: bytes) -> Reply:
        try:
            return cls(int(value["id"]), value.get("result"), value.get("error"), int(value.get("status", 200)))
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"bad reply: {frame[:80]!r}") from e


class ExecutorKind(str, Enum):
    """The kinds of ``ExecutorMessage``."""

    HELLO = "hello"  # executor -> primary, first: its pid
    READY = "ready"  # one credit: idle, whatever it ran has ended
    HEARTBEAT = "heartbeat"
    PROGRESS = "progress"
    DONE = "done"
    FAILED = "failed"
    BYE = "bye"  # a remote executor that stops
    RUN = "run"  # primary -> executor
    CANCEL = "cancel"
    WELCOME = "welcome"  # the answer to hello: the settings a remote executor needs
    REJOIN = "rejoin"  # we do not know you: join again
    REFUSED = "refused"  # your key is revoked: exit


# Reasons and errors made in one process and matched in another.
TIMEOUT_ERROR = "timeout"  # an attempt's ffmpeg passed the job's timeout (executor), an outcome (engine)
LOST_NO_HEARTBEAT = "executor lost: no heartbeat"
RUN_STALLED = "run stalled: no word from the executor past the job's timeout and grace"


@dataclass(frozen=True)
class ExecutorMessage:
    """Between the primary and an executor, both ways.

    ``kind`` is an ``ExecutorKind``. Executor -> primary: ``hello``, ``ready`` (one credit), ``heartbeat``,
    ``progress``, ``done``, ``failed``, ``bye`` (a remote executor that stops).
    Primary -> executor: ``welcome`` (the answer to hello: the settings a remote
    executor needs), ``run``, ``cancel``, ``heartbeat`` (to a remote executor, so it
    notices a partition), ``rejoin`` (we do not know you: join again), ``refused``
    (your key is revoked: exit). ``run_id`` names one attempt of one job, so a late
    report is recognised; it is also the fencing token of the run's files.
    """

    kind: str
    run_id: str = ""
    payload: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _dumps({"kind": self.kind, "run_id": self.run_id, "payload": self.payload})

    @classmethod
    def decode(cls, frame: bytes) -> ExecutorMessage:
        value = _loads(frame)
        try:
            return cls(str(value["kind"]), str(value.get("run_id", "")), dict(value.get("payload") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"bad executor message: {frame[:80]!r}") from e


# Sessions: published by the primary for the web workers only (never forwarded to a WebSocket client).
SESSION_TOPIC = "session:"
CLOSE_SESSION_ENDED = 4401  # the WebSocket close code of a session that ended (logout, password, removal)


class SessionEventName(str, Enum):
    ENDED = "session:ended"  # data: userId, tokenHashes (the sessions that ended)
    USER_CHANGED = "session:user-changed"  # data: userId (its profile changed: forget what is cached)


def reaches_clients(event_name: str) -> bool:
    """Whether WebSocket clients may ever hear an event of this name."""
    return not event_name.startswith(SESSION_TOPIC)


class AccountOp(str, Enum):
    """Control ops of ``run_cluster.py user`` when a primary runs: it changes the store and tells the workers."""

    SET_PASSWORD = "account_set_password"  # args: name, passwordHash
    REMOVE = "account_remove"  # args: name


class ClientMessage(str, Enum):
    """What a WebSocket client sends."""

    SUBSCRIBE_VIDEO = "subscribe-video"
    UNSUBSCRIBE_VIDEO = "unsubscribe-video"
    SUBSCRIBE_JOB = "subscribe-job"
    UNSUBSCRIBE_JOB = "unsubscribe-job"
    SUBSCRIBE_ALL = "subscribe-all"
    RESUME = "resume"
