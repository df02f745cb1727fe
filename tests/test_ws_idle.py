"""The web worker's WebSocket protocol (workers/web/ws_frames.py) once the app listens: an idle connection holds
no task, queue or handshake object; messages reach the listener one at a time and in order; every close
(the app's, the peer's, one asked for before the accept) ends the connection once; keepalive pings go on.

A real uvicorn server with FrameWriterProtocol runs on a thread of its own, real clients connect to it (the
websockets library, raw sockets), and the checks of the server's insides run on its loop; a real cluster's
web worker reports its tasks, which idle connections do not add to.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.harness import Cluster, EventClient, free_port, wait_until
from tests.test_limits import raw_websocket
from tests.test_metrics import Scrape
from workers.web.hub import WsClient
from workers.web.resume import Resume
from workers.web.websocket import Conversation
from workers.web.ws_frames import (
    MAX_BUFFERED_BYTES,
    NEVER_BLOCKS,
    FrameWriter,
    FrameWriterProtocol,
    frame_writer,
    text_frame,
)

T = TypeVar("T")
WAIT_S = 10.0
PING_INTERVAL_S = 0.2
PING_TIMEOUT_S = 1.0


@dataclass
class Recorder:
    """The listener of one connection: notes when each message's handling starts and ends, echoes it back."""

    writer: FrameWriter
    log: list[str] = field(default_factory=list)
    closed: int = 0
    gate: asyncio.Future[None] | None = None

    async def on_text(self, text: str) -> None:
        self.log.append(f"start {text}")
        if text == "hold":
            self.gate = asyncio.get_running_loop().create_future()
            await self.gate
        if text == "boom":
            raise ValueError("a handler's bug")
        self.writer.write(text_frame(f"got {text}".encode()))
        self.log.append(f"end {text}")

    def on_closed(self) -> None:
        self.closed += 1


class Server:
    """uvicorn with the web worker's WebSocket protocol, on a thread of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.recorders: list[Recorder] = []
        self.loop = uvloop.new_event_loop()
        app = Starlette(routes=[WebSocketRoute("/ws", self.endpoint)])
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, ws=FrameWriterProtocol, lifespan="off", log_config=None,
            ws_ping_interval=PING_INTERVAL_S, ws_ping_timeout=PING_TIMEOUT_S, ws_per_message_deflate=False))
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True)

    async def endpoint(self, websocket: WebSocket) -> None:
        writer = frame_writer(websocket.scope)
        recorder = Recorder(writer)
        self.recorders.append(recorder)
        code = websocket.query_params.get("close")
        if code:
            writer.close(int(code), "before the accept")
        await websocket.accept()
        writer.write(text_frame(b"welcome"))
        writer.listen(recorder)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def run(self, check: Callable[[], T]) -> T:
        """``check()`` on the server's loop, between its callbacks."""
        future: Future[T] = Future()

        def call() -> None:
            try:
                future.set_result(check())
            except BaseException as e:  # noqa: BLE001 - handed to the test's thread
                future.set_exception(e)

        self.loop.call_soon_threadsafe(call)
        return future.result(WAIT_S)

    def protocols(self) -> list[FrameWriterProtocol]:
        return [p for p in self.server.server_state.connections if isinstance(p, FrameWriterProtocol)]

    def server_tasks(self) -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks(self.loop) if not t.done()}


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    server.thread.start()
    try:
        wait_until(lambda: server.server.started, WAIT_S, "the server to start")
        yield server
    finally:
        server.server.should_exit = True
        server.thread.join(WAIT_S)
        server.loop.close()


@contextlib.contextmanager
def open_client(server: Server, query: str = "") -> Iterator[ClientConnection]:
    with connect(server.url + query, open_timeout=WAIT_S, ping_interval=None) as client:
        if not query:
            assert client.recv(WAIT_S) == "welcome"
        yield client


def test_an_idle_connection_holds_no_task_queue_or_handshake_object(server: Server) -> None:
    before = server.run(server.server_tasks)
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(open_client(server)) for _ in range(20)]
        for client in clients:
            client.send("hello")
            assert client.recv(WAIT_S) == "got hello"
        wait_until(lambda: server.run(lambda: not server.server.server_state.tasks), WAIT_S, "the ASGI tasks to end")

        def idle_state() -> None:
            assert server.server_tasks() == before, "an idle connection keeps a task"
            protocols = server.protocols()
            assert len(protocols) == len(clients)
            for protocol in protocols:
                assert isinstance(protocol.queue, FrameWriter)  # no asyncio.Queue, no Event (a deque each)
                assert protocol.writable is NEVER_BLOCKS
                assert protocol.scope is None and protocol.request is None and protocol.response is None
                assert not protocol.read_paused

        server.run(idle_state)
        assert all(r.closed == 0 for r in server.recorders)
    wait_until(lambda: server.run(lambda: all(r.closed == 1 for r in server.recorders)), WAIT_S, "every close")


def test_the_records_of_a_client_have_no_dict() -> None:
    """Each connection has one of each: a dict would cost each a few hundred bytes more."""
    for record in (WsClient, Resume, Conversation, FrameWriter):
        assert record.__dictoffset__ == 0, record


def test_messages_are_handled_one_at_a_time_in_order(server: Server) -> None:
    with open_client(server) as client:
        client.send("hold")
        recorder = server.recorders[0]
        wait_until(lambda: server.run(lambda: recorder.gate is not None), WAIT_S, "the first message's handling")
        client.send("a")
        client.send("b")
        assert server.run(lambda: recorder.log) == ["start hold"]
        server.run(lambda: recorder.gate and recorder.gate.set_result(None))
        assert [client.recv(WAIT_S) for _ in range(3)] == ["got hold", "got a", "got b"]
        assert server.run(lambda: recorder.log) == ["start hold", "end hold", "start a", "end a", "start b", "end b"]
        assert not server.run(lambda: server.protocols()[0].read_paused), "reading goes on once the inbox is empty"


@pytest.mark.parametrize(("send", "code"), [("boom", 1011), (b"binary", 1003)])
def test_a_failing_handler_or_a_binary_message_closes_the_connection(server: Server, send: str | bytes,
                                                                      code: int) -> None:
    with open_client(server) as client:
        client.send(send)
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(WAIT_S)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    wait_until(lambda: server.run(lambda: server.recorders[0].closed == 1 and not server.protocols()), WAIT_S,
               "the connection's end")


def test_a_close_before_the_accept_is_sent_right_after_it(server: Server) -> None:
    with open_client(server, "?close=4401") as client:
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(WAIT_S)  # no welcome: the connection was closing when it was written
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    wait_until(lambda: server.run(lambda: server.recorders[0].closed == 1), WAIT_S, "the listener to hear the end")


def test_the_apps_close_ends_the_connection_once(server: Server) -> None:
    with open_client(server) as client:
        writer = server.recorders[0].writer
        server.run(lambda: writer.close(4401, "session ended"))
        server.run(lambda: writer.close(1013, "too slow"))  # a second close changes nothing
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(WAIT_S)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        assert closed.value.rcvd.reason == "session ended"
    wait_until(lambda: server.run(lambda: not server.protocols()), WAIT_S, "the connection to go")
    assert server.recorders[0].closed == 1


def test_keepalive_pings_go_on_after_the_handoff(server: Server) -> None:
    with open_client(server) as client:
        # the client answers pings on its own thread; the server notes each answer's round trip
        wait_until(lambda: server.run(lambda: server.protocols()[0].last_ping_rtt > 0), WAIT_S, "a ping answered")
        client.send("still here")
        assert client.recv(WAIT_S) == "got still here"


@pytest.mark.parametrize("ended_by", ["keepalive", "close"])
def test_a_client_that_reads_nothing_is_refused_past_the_buffer_limit_then_cut_off(
        server: Server, ended_by: str) -> None:
    """Its unanswered pings end it, or the close the hub sends once it is too slow (1013) after close_timeout:
    either way at once, although what is buffered for it can never be sent."""
    sock = raw_websocket(server.port, receive_buffer=4096)  # a client that reads nothing: no pongs, no frames
    try:
        wait_until(lambda: server.run(lambda: len(server.recorders) == 1 and server.protocols()[0].detached),
                   WAIT_S, "the handoff")
        writer, frame = server.recorders[0].writer, text_frame(b"x" * 4096)

        def fill() -> int:
            written = 0
            while writer.write(frame):
                written += len(frame)
                assert written < 64 * MAX_BUFFERED_BYTES, "the writer never refused"
            if ended_by == "close":
                protocol = server.protocols()[0]
                protocol.stop_keepalive()
                protocol.close_timeout = 0.1
                writer.close(1013, "too slow: resume")
            return written

        assert server.run(fill) > MAX_BUFFERED_BYTES
        wait_until(lambda: server.run(lambda: server.recorders[0].closed == 1 and not server.protocols()),
                   WAIT_S, "the connection to be cut off")
    finally:
        sock.close()


# the web worker itself: its real /ws endpoint


IDLE_CLIENTS = 40


def test_idle_websockets_add_no_task_to_a_web_worker(
        cluster_factory: Callable[..., Cluster], ws_factory: Callable[..., EventClient]) -> None:
    """Each heartbeat reports the worker's asyncio tasks (vc_web_asyncio_tasks); through ASGI each connection
    would add one for its whole life."""
    cluster = cluster_factory(workers=1, executors=0)
    (pid,) = cluster.pids("web")
    tasks = {"pid": str(pid)}
    before = wait_until(lambda: Scrape(cluster).value("vc_web_asyncio_tasks", tasks), WAIT_S, "a heartbeat")
    clients = [ws_factory(cluster) for _ in range(IDLE_CLIENTS)]
    for client in clients:
        client.send({"type": "subscribe-all"})  # a message handled once the endpoint's task has ended
        client.wait_for(lambda ms: {"type": "subscribed", "all": True} in ms, what="its answer")

    def with_every_client() -> Scrape | None:
        scrape = Scrape(cluster)
        return scrape if scrape.value("vc_websocket_clients") == IDLE_CLIENTS else None

    after = wait_until(with_every_client, WAIT_S, "a heartbeat that counts every client").value(
        "vc_web_asyncio_tasks", tasks)
    assert after is not None and after - before < IDLE_CLIENTS / 2, (before, after)
