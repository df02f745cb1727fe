"""A seeded, bounded fuzz of every route and of the WebSocket (issue 11, item 5): generated bodies, query
strings, path parameters, headers and messages. Whatever comes in, the answer is a 2xx or a 4xx with a
JSON ``{"error"}`` (never a 500 nor a traceback), every process lives on, and the store is sound."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from primary.store import JobStore
from tests.harness import Cluster, EventClient

SEED = 11
HTTP_CASES = 2500
WS_MESSAGES = 600
MAX_WS_CHARS = 16_000  # a frame past the worker's 64 KiB limit is closed with 1009, by design

ROUTES = [
    ("POST", "/api/login"), ("DELETE", "/api/logout"), ("GET", "/api/user"), ("PUT", "/api/user"),
    ("POST", "/api/upload-video"), ("PUT", "/api/video/resize"), ("PUT", "/api/video/convert"),
    ("GET", "/api/videos"), ("DELETE", "/api/videos/{id}"), ("PATCH", "/api/video/extract-audio"),
    ("POST", "/api/video/hls"), ("GET", "/api/jobs"), ("GET", "/api/jobs/{id}"), ("DELETE", "/api/jobs/{id}"),
    ("POST", "/api/jobs/{id}/retry"), ("GET", "/api/queue/stats"), ("GET", "/api/queue/dead-letter"),
    ("DELETE", "/api/queue/dead-letter/{id}"), ("POST", "/api/queue/pause"), ("POST", "/api/queue/resume"),
    ("POST", "/api/queue/clean"), ("GET", "/api/admin/processes"), ("GET", "/get-video-asset"),
    ("GET", "/hls/{id}/{path}"), ("GET", "/api/health"), ("GET", "/metrics"), ("GET", "/dashboard"),
    ("GET", "/{path}"),
]
KEYS = ["videoId", "width", "height", "format", "priority", "timeout", "renditions", "username", "password",
        "name", "olderThan", "type", "dimensions", "limit", "state", "since", "filename"]
WEIRD_STRINGS = ["", "²", "٣", "²x²", "9" * 5000, "-1", "0", "nan", "inf", "1e999", "\ud800", "\x00", "..",
                 "../../etc/passwd", "%2e%2e%2f", "x" * 70_000, "320x240", "mp4", "webm", "high", "ünïcödé",
                 "<script>", "null", "true", "[]", "{}", "\\", "'", '"', "320x" + "9" * 400]
WEIRD_NUMBERS: list[Any] = [0, -1, 1, 2, 64, 7680, 4320, 7682, 2**63, -(2**63), 10**30, 1.5, 1e308, True, False,
                            None]


class Fuzzer:
    def __init__(self, rng: random.Random, video_id: str) -> None:
        self.rng = rng
        self.video_id = video_id

    def scalar(self) -> Any:
        pick = self.rng.random()
        if pick < 0.35:
            return self.rng.choice(WEIRD_STRINGS)
        if pick < 0.7:
            return self.rng.choice(WEIRD_NUMBERS)
        if pick < 0.85:
            return self.video_id
        return "".join(chr(self.rng.randrange(0x20, 0x3000)) for _ in range(self.rng.randrange(12)))

    def value(self, depth: int = 0) -> Any:
        pick = self.rng.random()
        if depth < 4 and pick < 0.15:
            return [self.value(depth + 1) for _ in range(self.rng.randrange(4))]
        if depth < 4 and pick < 0.3:
            return {self.rng.choice(KEYS): self.value(depth + 1) for _ in range(self.rng.randrange(4))}
        return self.scalar()

    def body(self) -> bytes:
        pick = self.rng.random()
        if pick < 0.5:
            return json.dumps({self.rng.choice(KEYS): self.value() for _ in range(self.rng.randrange(6))}).encode(
                "utf-8", "surrogatepass")
        if pick < 0.6:
            depth = self.rng.choice([10, 40, 2000, 60_000])
            return b"[" * depth + b"]" * depth
        if pick < 0.7:
            return b'{"width": ' + b"9" * self.rng.choice([20, 400, 5000]) + b"}"
        if pick < 0.8:
            return bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(64)))
        if pick < 0.9:
            return self.rng.choice([b"", b"{", b"null", b"[]", b'"x"', b"NaN", b'{"a": Infinity}', b"\xff\xfe{}",
                                    b'{"username": "\\udc00", "password": "x"}', b'{"videoId": "\\u0000"}'])
        return json.dumps(self.value()).encode("utf-8", "surrogatepass")

    def query(self) -> str:
        """Percent-encoded by hand: a lone surrogate goes as its UTF-8-ish bytes, as a hostile client sends it."""
        pairs = [(self.rng.choice(KEYS), str(self.scalar())[:3000]) for _ in range(self.rng.randrange(5))]
        return "&".join(f"{key}={quote(value.encode('utf-8', 'surrogatepass'))}" for key, value in pairs)

    def path(self, template: str) -> str:
        def segment() -> str:
            return self.rng.choice([self.video_id, "x" * 300, "²", "..", "%2e%2e", "%ff", "master.m3u8",
                                    "index.html", "a/b/../../c", "j" + str(self.rng.randrange(10**6))])

        return template.replace("{id}", segment()).replace("{path}", segment())

    def headers(self, tokens: list[str], own_origin: str) -> dict[str, str]:
        headers = {"content-type": "application/json"} if self.rng.random() < 0.75 else {
            "content-type": self.rng.choice(["application/json; charset=utf-8", "text/plain", "",
                                             "application/x-www-form-urlencoded", "multipart/form-data"])}
        credential = self.rng.random()
        if credential < 0.8:
            headers["authorization"] = f"Bearer {self.rng.choice(tokens[:2] * 3 + tokens)}"
        elif credential < 0.9:
            headers["cookie"] = f"token={self.rng.choice(tokens)}"
        if self.rng.random() < 0.3:
            headers["origin"] = self.rng.choice([own_origin] * 4 + ["null", "http://evil.example", "", own_origin + "x"])
        if self.rng.random() < 0.1:
            headers["referer"] = self.rng.choice([own_origin + "/", "http://evil.example/", "garbage"])
        if self.rng.random() < 0.3:
            headers["filename"] = self.rng.choice(["a.mp4", "a.txt", "x" * 300 + ".mp4", "", "..\\a.mp4"])
        if self.rng.random() < 0.1:
            headers["x-forwarded-for"] = self.rng.choice(["10.0.0.1", "garbage", "1.1.1.1, 2.2.2.2"])
        return headers


def check_answer(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    assert "Traceback" not in response.text, what
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        assert isinstance(response.json().get("error"), str), what


@pytest.mark.slow  # about a minute on a busy 2-core machine
def test_fuzzing_every_route_gets_only_2xx_and_4xx(cluster_factory: Callable[..., Cluster], clip: Path) -> None:
    cluster = cluster_factory(workers=2, executors=0, extra=["--login-rate-per-min", "0"])
    cluster.add_user("alice", "alice-password")
    tokens = [cluster.token, cluster.login("alice", "alice-password"), "junk", "x" * 500, "-"]
    video_id = cluster.upload(clip)
    rng = random.Random(SEED)
    fuzz = Fuzzer(rng, video_id)
    workers = set(cluster.pids("web"))
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        for case in range(HTTP_CASES):
            method, template = rng.choice(ROUTES)
            if template in ("/api/logout", "/api/user") and method != "GET":
                headers = fuzz.headers(["junk"], cluster.url)  # never end nor change the sessions in use
            else:
                headers = fuzz.headers(tokens, cluster.url)
            content = fuzz.body() if method != "GET" or rng.random() < 0.1 else None
            request = client.build_request(method, f"{fuzz.path(template)}?{fuzz.query()}", content=content,
                                           headers=headers)
            response = client.send(request)
            check_answer(response, f"case {case}: {method} {request.url}")
            statuses[response.status_code] += 1
    # the fuzz reached past the guards: into the routes' own validation, and some requests were fine
    assert statuses[400] > HTTP_CASES // 20 and sum(n for s, n in statuses.items() if s < 300) > HTTP_CASES // 20, \
        statuses
    fuzz_websocket(cluster, fuzz)
    assert set(cluster.pids("web")) == workers, "no web worker died (nor was replaced)"
    assert cluster.health()["status"] == "ok"
    assert cluster.stop() == 0
    with closing(JobStore(cluster.data_dir / "cluster.db")) as store:
        assert store.integrity_problems() == []


def fuzz_websocket(cluster: Cluster, fuzz: Fuzzer) -> None:
    """Every message is answered (an error for the malformed ones) and the connection stays open."""
    client = EventClient(cluster.ws_url, cluster.token)
    try:
        for since in (2**63, 2**64, -1, "1", 1.5, None, [0]):  # as found by hand, before the generated ones
            client.send({"type": "resume", "since": since})
        client.connection.send('{"type": "resume", "since": ' + "9" * 5000 + "}")
        for _ in range(WS_MESSAGES):
            kind = fuzz.rng.choice(["resume", "subscribe-video", "unsubscribe-video", "nonsense", None])
            message = {"type": kind, **{fuzz.rng.choice(KEYS): fuzz.value() for _ in range(fuzz.rng.randrange(3))}}
            if fuzz.rng.random() < 0.3:
                text = fuzz.body().decode("utf-8", "replace")
            else:
                text = json.dumps(message)
            client.connection.send(text[:MAX_WS_CHARS])  # beyond --ws-max-size the close (1009) is the answer
        client.connection.send(json.dumps({"type": "subscribe-video", "videoId": "last-one"}))
        client.wait_for(lambda ms: any(m.get("videoId") == "last-one" for m in ms), 30,
                        "the answer to the last message")
        assert not client.closed.is_set()
    finally:
        client.close()
