"""Sessions end at once on every web worker (issue 9, item 2): logout, a password change, `user passwd`
and `user remove` while the cluster runs; the session's WebSockets close with 4401; a new display name
is seen at once by the other worker; the login name never changes.

Each test holds keep-alive HTTP connections and WebSockets on both web workers (the kernel picks the
worker of a connection: they are opened until both have some), so both workers have the session cached.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import pytest

from cluster.protocol import CLOSE_SESSION_ENDED
from primary.accounts import AccountStore
from tests.harness import Cluster, EventClient, wait_until
from tests.test_accounts import user_cli

PASSWORD = "session-password-1"
CONNECT_TRIES = 60
CLOSE_WITHIN_S = 1.0


class Http:
    """One keep-alive HTTP connection with a session token, and the web worker at its other end."""

    def __init__(self, cluster: Cluster, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=10)
        self.token = token
        assert self.request("GET", "/api/health")[0] == 200  # answered: a worker has accepted it
        port = self.connection.sock.getsockname()[1]
        self.worker = wait_until(lambda: _worker_with_peer(cluster, port), 5, "the worker of a connection")

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        self.connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = self.connection.getresponse()
        return response.status, json.loads(response.read() or b"null")

    def close(self) -> None:
        self.connection.close()


def _worker_with_peer(cluster: Cluster, port: int) -> int | None:
    for pid in cluster.pids("web"):
        for connection in psutil.Process(pid).net_connections(kind="tcp"):
            if connection.raddr and connection.raddr.port == port:
                return pid
    return None


@pytest.fixture
def connections(cluster_factory: Callable[..., Cluster]) -> Iterator[Callable[[Cluster, str], list[Http]]]:
    """``connections(cluster, token)``: keep-alive connections until both web workers serve some."""
    made: list[Http] = []

    def make(cluster: Cluster, token: str) -> list[Http]:
        mine: list[Http] = []
        for _ in range(CONNECT_TRIES):
            mine.append(Http(cluster, token))
            if len({h.worker for h in mine}) == 2 and len(mine) >= 4:
                break
        made.extend(mine)
        assert len({h.worker for h in mine}) == 2, "both workers serve one of the connections"
        return mine

    yield make
    for connection in made:
        connection.close()


def sockets_on_both_workers(cluster: Cluster, token: str, ws_factory: Callable[..., EventClient]) -> list[EventClient]:
    sockets: list[EventClient] = []
    workers: set[int] = set()
    for _ in range(CONNECT_TRIES):
        client = ws_factory(cluster, token)
        sockets.append(client)
        welcome = client.wait_for(lambda ms: any(m.get("type") == "welcome" for m in ms), what="welcome")
        workers.add(welcome[0]["worker"])
        if len(workers) == 2:
            return sockets
    raise AssertionError("both workers accepted a WebSocket")


def statuses(connections: list[Http], path: str = "/api/user") -> set[int]:
    return {connection.request("GET", path)[0] for connection in connections}


def assert_closed_for_session_end(sockets: list[EventClient], since: float) -> None:
    """Each socket closes with 4401 within CLOSE_WITHIN_S of `since`."""
    for client in sockets:
        remaining = max(0.0, since + CLOSE_WITHIN_S - time.monotonic())
        assert client.closed.wait(remaining), f"the WebSocket closed within {CLOSE_WITHIN_S} s"
        assert client.connection.close_code == CLOSE_SESSION_ENDED


@pytest.fixture
def two_workers(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(workers=2, executors=0, extra=["--worker-timeout-s", "300"])


def new_user(cluster: Cluster, name: str) -> None:
    cluster.add_user(name, PASSWORD)


class TwoSessions(NamedTuple):
    """Two sessions of alice, both cached on both workers: the first ends, the second stays."""

    ending: list[Http]
    ending_sockets: list[EventClient]
    staying: list[Http]
    staying_socket: EventClient


def two_sessions_of_alice(cluster: Cluster, connections: Callable[[Cluster, str], list[Http]],
                          ws_factory: Callable[..., EventClient]) -> TwoSessions:
    new_user(cluster, "alice")
    ending, staying = cluster.login("alice", PASSWORD), cluster.login("alice", PASSWORD)
    sessions = TwoSessions(connections(cluster, ending), sockets_on_both_workers(cluster, ending, ws_factory),
                           connections(cluster, staying), ws_factory(cluster, staying))
    assert statuses(sessions.ending) == {200} and statuses(sessions.staying) == {200}  # cached on both workers now
    return sessions


def test_after_logout_every_request_is_401_on_both_workers_and_its_websockets_close(
        two_workers: Cluster, connections: Callable[[Cluster, str], list[Http]],
        ws_factory: Callable[..., EventClient]) -> None:
    cluster = two_workers
    ending, sockets, staying, kept_socket = two_sessions_of_alice(cluster, connections, ws_factory)
    token = ending[0].token

    assert ending[0].request("DELETE", "/api/logout")[0] == 200
    logged_out = time.monotonic()
    for _ in range(5):
        assert statuses(ending) == {401}, "every request with the old token, on every worker"
    fresh = [Http(cluster, token) for _ in range(8)]
    try:
        assert statuses(fresh) == {401}, "new connections too"
    finally:
        for connection in fresh:
            connection.close()
    assert_closed_for_session_end(sockets, logged_out)

    assert statuses(staying) == {200}, "the user's other session goes on"
    assert not kept_socket.closed.is_set()


def test_a_password_change_ends_the_other_sessions_at_once(
        two_workers: Cluster, connections: Callable[[Cluster, str], list[Http]],
        ws_factory: Callable[..., EventClient]) -> None:
    cluster = two_workers
    others, other_sockets, changing, changer_socket = two_sessions_of_alice(cluster, connections, ws_factory)

    assert changing[0].request("PUT", "/api/user", {"password": "a-new-password-1"})[0] == 200
    changed = time.monotonic()
    assert statuses(others) == {401}
    assert_closed_for_session_end(other_sockets, changed)
    assert statuses(changing) == {200}, "the session that changed the password stays"
    assert not changer_socket.closed.is_set()
    assert cluster.login("alice", "a-new-password-1")


@pytest.mark.parametrize("command", ["passwd", "remove"])
def test_user_passwd_and_remove_end_sessions_at_once_while_the_cluster_runs(
        two_workers: Cluster, connections: Callable[[Cluster, str], list[Http]],
        ws_factory: Callable[..., EventClient], command: str) -> None:
    cluster = two_workers
    new_user(cluster, "carol")
    token = cluster.login("carol", PASSWORD)
    https, sockets = connections(cluster, token), sockets_on_both_workers(cluster, token, ws_factory)
    assert statuses(https) == {200}

    args = ("passwd", "carol", "--password-stdin") if command == "passwd" else ("remove", "carol")
    done = user_cli(cluster.data_dir, *args, password="carol-new-password\n")
    ran = time.monotonic()
    assert done.returncode == 0, done.stderr
    assert "sessions ended" in done.stdout
    assert statuses(https) == {401}
    assert_closed_for_session_end(sockets, ran)
    unknown = user_cli(cluster.data_dir, *[("nobody" if a == "carol" else a) for a in args],
                       password="whatever-password\n")
    assert unknown.returncode == 1 and "no user 'nobody'" in unknown.stderr


def test_a_new_display_name_is_seen_at_once_by_the_other_worker_and_the_login_name_stays(
        two_workers: Cluster, connections: Callable[[Cluster, str], list[Http]]) -> None:
    cluster = two_workers
    new_user(cluster, "alice")
    https = connections(cluster, cluster.login("alice", PASSWORD))
    status, user = https[0].request("GET", "/api/user")
    assert status == 200 and set(user) == {"userId", "username", "name", "admin"}
    assert (user["username"], user["name"], user["admin"]) == ("alice", "alice", False)

    changer = https[0]
    elsewhere = next(h for h in https if h.worker != changer.worker)
    assert changer.request("PUT", "/api/user", {"name": "Alice Liddell"}) == (200, {**user, "name": "Alice Liddell"})
    assert elsewhere.request("GET", "/api/user")[1]["name"] == "Alice Liddell"
    assert {h.request("GET", "/api/user")[1]["username"] for h in https} == {"alice"}
    for bad in ("", "   ", "x" * 101, 5, "tab\there"):
        status, answer = changer.request("PUT", "/api/user", {"name": bad})
        assert status == 400 and "error" in answer, (bad, answer)
    assert cluster.login("alice", PASSWORD), "the login name did not change"


def test_a_worker_that_was_stopped_meanwhile_does_not_keep_a_session_that_ended(
        two_workers: Cluster, connections: Callable[[Cluster, str], list[Http]]) -> None:
    cluster = two_workers
    new_user(cluster, "alice")
    token = cluster.login("alice", PASSWORD)
    https = connections(cluster, token)
    assert statuses(https) == {200}
    logging_out = https[0]
    stopped = next(h for h in https if h.worker != logging_out.worker)
    os.kill(stopped.worker, signal.SIGSTOP)  # it misses the moment of the logout
    try:
        assert logging_out.request("DELETE", "/api/logout")[0] == 200
    finally:
        os.kill(stopped.worker, signal.SIGCONT)
    assert stopped.request("GET", "/api/user")[0] == 401


def test_an_existing_cluster_db_gets_display_names(tmp_path: Path) -> None:
    path = tmp_path / "cluster.db"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, "
                   "is_admin INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL)")
        db.execute("INSERT INTO users VALUES ('u1', 'olduser', 'scrypt$x', 0, 0)")
    store = AccountStore(path)
    try:
        user = store.user_by_name("olduser")
        assert user is not None and user.public() == {"userId": "u1", "username": "olduser", "name": "olduser",
                                                      "admin": False}
        store.set_display_name("u1", "Old User")
        assert store.user_by_id("u1").public()["name"] == "Old User"  # type: ignore[union-attr]
    finally:
        store.close()
    AccountStore(path).close()  # opening it again is fine


# the cache itself, without processes


class FakeRpc:
    """Answers `session` like the primary; `ended` holds the tokens whose session ended."""

    def __init__(self) -> None:
        self.calls = 0
        self.ended: set[str] = set()
        self.during_call: Callable[[], None] = lambda: None

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert op == "session"
        self.calls += 1
        self.during_call()
        if args["token"] in self.ended:
            from workers.web.rpc import RpcError

            raise RpcError(401, "not logged in")
        return {"userId": "u1", "username": "alice", "name": "alice", "admin": False}


def test_the_session_cache_trusts_an_entry_only_while_no_session_event_can_be_waiting() -> None:
    import asyncio

    from cluster.passwords import token_hash
    from workers.web.auth import SessionCache
    from workers.web.rpc import RpcError

    async def scenario() -> None:
        rpc, fresh = FakeRpc(), [True]
        cache = SessionCache(rpc, lambda: fresh[0])  # type: ignore[arg-type]
        await cache.user("t1")
        await cache.user("t1")
        assert rpc.calls == 1, "a hit while the feed is up to date"
        fresh[0] = False
        await cache.user("t1")
        assert rpc.calls == 2, "an event may be waiting: the primary is asked"
        fresh[0] = True

        rpc.ended.add("t1")
        cache.end([token_hash("t1")])
        with pytest.raises(RpcError):
            await cache.user("t1")

        rpc.during_call = lambda: cache.user_changed("u1")  # a profile event while a lookup is in flight
        await cache.user("t2")
        rpc.during_call = lambda: None
        await cache.user("t2")
        assert rpc.calls == 5, "a lookup that overlapped an invalidation is not cached"
        cache.user_changed("u1")
        await cache.user("t2")
        assert rpc.calls == 6

    asyncio.run(scenario())


def test_the_feed_is_behind_only_while_a_session_event_it_has_not_applied_has_arrived() -> None:
    """Job events streaming past do not make the feed look behind (every request would ask the primary for
    its session); a session event that reached the worker does, until the feed has handed it on."""
    import asyncio
    import uuid

    import zmq.asyncio

    from cluster.protocol import SESSION_TOPIC, Event
    from workers.web.event_feed import EventFeed, SessionTripwire

    class LastSeqRpc:
        async def call(self, op: str, **args: Any) -> Any:
            assert op == "last_seq"
            return 0

    async def scenario() -> None:
        context = zmq.asyncio.Context()
        endpoint = f"inproc://events-{uuid.uuid4().hex}"
        pub = zmq.Context.shadow(context.underlying).socket(zmq.XPUB)  # it hears each subscription
        pub.bind(endpoint)
        sub, wire = context.socket(zmq.SUB), zmq.Context.shadow(context.underlying).socket(zmq.SUB)
        subscriptions = ((sub, b""), (wire, SESSION_TOPIC.encode()))
        for socket, topic in subscriptions:
            socket.setsockopt(zmq.SUBSCRIBE, topic)
            socket.connect(endpoint)
        topics = {topic for _socket, topic in subscriptions}
        while topics:  # both subscriptions have reached the publisher: nothing sent from now on is lost
            assert pub.poll(5000), f"subscriptions never arrived: {topics}"
            topics.discard(pub.recv()[1:])
        feed = EventFeed(sub, LastSeqRpc(), SessionTripwire(wire))  # type: ignore[arg-type]
        seen: list[int] = []
        pumping = asyncio.create_task(feed.pump(lambda event, _text: seen.append(event.seq)))
        try:
            for seq in range(1, 51):
                pub.send_multipart(Event("job:queued", seq, 0.0, {"jobId": f"j{seq}"}).encode())
            assert feed.up_to_date(), "job events waiting are not session events"
            pub.send_multipart(Event("session:ended", 51, 0.0, {"userId": "u1", "tokenHashes": []}).encode())
            # inproc delivers at once, and the pump has not run since (nothing awaited)
            assert not feed.up_to_date(), "a session event arrived that the feed has not applied"
            deadline = time.monotonic() + 5
            while 51 not in seen:
                assert time.monotonic() < deadline, "the feed never applied the session event"
                await asyncio.sleep(0.01)
            assert feed.up_to_date() and seen == list(range(1, 52))
        finally:
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)
            for socket in (pub, sub, wire):
                socket.close(linger=0)
            context.term()

    asyncio.run(scenario())
