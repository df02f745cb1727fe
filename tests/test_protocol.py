"""Wire messages: encode/decode round trips, and ProtocolError for anything undecodable."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from cluster.protocol import (
    Event,
    EventName,
    ExecutorMessage,
    JobState,
    Priority,
    ProtocolError,
    Reply,
    Request,
)


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


# events


@pytest.mark.parametrize("event", [
    Event("job:queued", 1, 1700000000000.125, {"jobId": "resize-a-1", "queuePosition": 3}),
    Event("job:progress", 42, 0.0, {"progress": 12.5, "speed": None, "nested": {"a": [1, 2]}}),
    Event("job:completed", 10**12, 1.5, {}),
    Event("log", 7, 2.0, {"text": "ünïcode ✓"}),
])
def test_event_round_trip(event: Event) -> None:
    frames = event.encode()
    assert len(frames) == 2
    assert frames[0] == event.event.encode()  # the topic subscribers filter on
    assert json.loads(frames[1]) == {"event": event.event, "seq": event.seq, "ts": event.ts, "data": event.data}
    assert Event.decode(frames) == event
    assert Event.from_body(event.body()) == event


@pytest.mark.parametrize("frames", [
    [],
    [b"job:queued"],
    [b"job:queued", b"{}", b"extra"],
])
def test_event_decode_wrong_frame_count(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError, match="2 frames"):
        Event.decode(frames)


@pytest.mark.parametrize("body", [
    b"",
    b"not json",
    b"{\"event\": ",
    b"\xff\xfe\x00garbage",
])
def test_event_decode_not_json(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="not JSON"):
        Event.decode([b"job:queued", body])


@pytest.mark.parametrize("value", [[1, 2], "job:queued", 3, None, True])
def test_event_decode_json_that_is_not_an_object(value: object) -> None:
    with pytest.raises(ProtocolError, match="not a JSON object"):
        Event.decode([b"job:queued", _json(value)])


GOOD_EVENT = {"event": "job:queued", "seq": 1, "ts": 1.0, "data": {}}


@pytest.mark.parametrize("body", [
    {k: v for k, v in GOOD_EVENT.items() if k != "event"},
    {k: v for k, v in GOOD_EVENT.items() if k != "seq"},
    {k: v for k, v in GOOD_EVENT.items() if k != "ts"},
    {k: v for k, v in GOOD_EVENT.items() if k != "data"},
    {**GOOD_EVENT, "seq": "one"},
    {**GOOD_EVENT, "seq": None},
    {**GOOD_EVENT, "ts": "later"},
    {**GOOD_EVENT, "data": None},
    {**GOOD_EVENT, "data": 5},
])
def test_event_decode_missing_or_bad_fields(body: dict[str, object]) -> None:
    with pytest.raises(ProtocolError, match="bad event"):
        Event.decode([b"job:queued", _json(body)])


@pytest.mark.parametrize("decode", [
    lambda frame: Event.decode([b"job:queued", frame]),
    Request.decode,
    Reply.decode,
    ExecutorMessage.decode,
], ids=["event", "request", "reply", "executor"])
def test_deeply_nested_json_is_a_protocol_error(decode: Callable[[bytes], object]) -> None:
    with pytest.raises(ProtocolError):
        decode(b"[" * 100_000)


# requests and replies


@pytest.mark.parametrize("request_", [
    Request(1, "health"),
    Request(2, "submit_job", {"type": "resize", "videoId": "abc", "params": {"width": 640, "height": 360}}),
    Request(2**40, "list_jobs", {"state": None, "limit": 10}),
])
def test_request_round_trip(request_: Request) -> None:
    assert Request.decode(request_.encode()) == request_


def test_request_without_args_gets_empty_args() -> None:
    assert Request.decode(b'{"id": 3, "op": "health"}') == Request(3, "health", {})
    assert Request.decode(b'{"id": 3, "op": "health", "args": null}').args == {}


@pytest.mark.parametrize("frame", [
    b"",
    b"nope",
    b"[1, 2]",
    b'"health"',
    b'{"op": "health"}',
    b'{"id": 1}',
    b'{"id": "x", "op": "health"}',
    b'{"id": null, "op": "health"}',
    b'{"id": 1, "op": "health", "args": 5}',
    b'{"id": 1, "op": "health", "args": "ab"}',
])
def test_request_decode_errors(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        Request.decode(frame)


@pytest.mark.parametrize("reply", [
    Reply(1, result={"jobId": "j", "created": True}),
    Reply(2, result=[1, "two", None]),
    Reply(3, error="video v not found", status=404),
    Reply(4, result=None, error="internal error: boom", status=500),
])
def test_reply_round_trip(reply: Reply) -> None:
    decoded = Reply.decode(reply.encode())
    assert decoded == reply
    assert decoded.ok is (reply.error is None)


def test_reply_defaults_when_only_id_given() -> None:
    assert Reply.decode(b'{"id": 9}') == Reply(9, None, None, 200)


@pytest.mark.parametrize("frame", [b"", b"[]", b'{"result": 1}', b'{"id": "x"}', b'{"id": 1, "status": "bad"}'])
def test_reply_decode_errors(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        Reply.decode(frame)


def test_several_requests_travel_in_one_frame_and_a_lone_one_as_itself() -> None:
    requests = [Request(1, "health"), Request(2, "submit_job", {"type": "resize"})]
    assert Request.decode_many(Request.encode_many(requests)) == (requests, True)
    assert Request.encode_many(requests[:1]) == requests[0].encode()
    assert Request.decode_many(requests[0].encode()) == (requests[:1], False)
    replies = [Reply(1, result={"ok": True}), Reply(2, error="nope", status=404)]
    assert Reply.decode_many(Reply.encode_many(replies)) == replies
    assert Reply.decode_many(replies[1].encode()) == replies[1:]


@pytest.mark.parametrize("frame", [b"[]", b"[1]", b'[{"id": 1, "op": "a"}, "b"]', b'[{"id": 1}]', b"7"])
def test_request_array_decode_errors(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        Request.decode_many(frame)


@pytest.mark.parametrize("frame", [b"[1]", b'[{"id": 1}, {"result": 2}]', b"null"])
def test_reply_array_decode_errors(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        Reply.decode_many(frame)


# executor messages


@pytest.mark.parametrize("message", [
    ExecutorMessage("hello", payload={"pid": 1234}),
    ExecutorMessage("ready"),
    ExecutorMessage("progress", "r1", {"progress": 12.5, "speed": 1.2, "etaSeconds": 30}),
    ExecutorMessage("run", "r2", {"jobId": "j", "params": {"format": "webm"}, "video": {"path": "/x"}}),
    ExecutorMessage("failed", "r3", {"error": "ffmpeg exited 1", "permanent": True}),
])
def test_executor_message_round_trip(message: ExecutorMessage) -> None:
    assert ExecutorMessage.decode(message.encode()) == message


def test_executor_message_defaults() -> None:
    assert ExecutorMessage.decode(b'{"kind": "ready"}') == ExecutorMessage("ready", "", {})


@pytest.mark.parametrize("frame", [
    b"",
    b"\x80",
    b"[]",
    b"null",
    b'{"run_id": "r1"}',
    b'{"kind": "done", "payload": 3}',
    b'{"kind": "done", "payload": [1, 2]}',
])
def test_executor_message_decode_errors(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        ExecutorMessage.decode(frame)


# enums


@pytest.mark.parametrize(("state", "final"), [
    (JobState.QUEUED, False),
    (JobState.RUNNING, False),
    (JobState.DELAYED, False),
    (JobState.COMPLETED, True),
    (JobState.DEAD, True),
    (JobState.CANCELLED, True),
])
def test_job_state_is_final(state: JobState, final: bool) -> None:
    assert state.is_final is final


def test_every_job_state_is_covered() -> None:
    assert len(JobState) == 6


@pytest.mark.parametrize(("priority", "rank"), [(Priority.HIGH, 0), (Priority.NORMAL, 1), (Priority.LOW, 2)])
def test_priority_rank(priority: Priority, rank: int) -> None:
    assert priority.rank == rank
    assert Priority(priority.value) is priority


def test_priorities_sort_high_first_by_rank() -> None:
    assert sorted(Priority, key=lambda p: p.rank, reverse=True) == [Priority.LOW, Priority.NORMAL, Priority.HIGH]


def test_event_names_are_job_topics() -> None:
    assert {e.value for e in EventName} == {
        "job:queued", "job:started", "job:progress", "job:completed",
        "job:failed", "job:permanent-failure", "job:cancelled", "job:stalled",
    }
