"""Webhooks against real HTTP receivers started by the tests: signed, retried, in seq order, private to
their owner, never slowing the queue, kept across a SIGKILL of the primary, refused on private addresses."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from cluster.protocol import Event
from primary.webhook_store import Webhook, WebhookStore
from primary.webhook_targets import TargetRefused, check_at_creation, parse_url, refusal
from primary.webhooks import WebhookDispatcher, WebhookSettings, may_hear, pattern_matches, signature
from tests.harness import ADMIN, Cluster, free_port, wait_until
from tests.test_metrics import Scrape
from tests.test_pages import JOB_S, UI_S, log_in, screenshot

ALLOW_PRIVATE = ["--webhook-allow-private", "--webhook-retry-initial-ms", "100"]
BOB = ("bob", "bob-password-1")
HOLD_S = 60.0  # the longest a holding receiver keeps a request before it answers anyway


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server on 127.0.0.1: records each POST; fails the first ``fail_first`` with 500;
    with ``hold``, keeps the first request unanswered until ``release()``."""

    def __init__(self, port: int | None = None, fail_first: int = 0, hold: bool = False) -> None:
        self.received: list[Received] = []
        self._fail_first = fail_first
        self._released = threading.Event()
        if not hold:
            self._released.set()
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", port or 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._changed:
                    receiver.received.append(Received(dict(self.headers.items()), body))
                    number = len(receiver.received)
                    receiver._changed.notify_all()
                if number == 1:
                    receiver._released.wait(HOLD_S)
                status = 500 if number <= receiver._fail_first else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: object) -> None:
                pass

        return Handler

    def wait_for(self, predicate: Callable[[list[Received]], bool], what: str, timeout_s: float = 30.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.received), timeout_s):
                raise TimeoutError(f"the receiver got no {what} within {timeout_s} s: "
                                   f"{[r.headers.get('X-VC-Event') for r in self.received]}")

    def events(self) -> list[dict[str, Any]]:
        with self._changed:
            return [r.event for r in self.received]

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def create_webhook(cluster: Cluster, url: str, events: list[str], token: str | None = None) -> dict[str, Any]:
    with cluster.client(token) as client:
        response = client.post("/api/webhooks", json={"url": url, "events": events})
    assert response.status_code == 201, response.text
    return response.json()


def deliveries(cluster: Cluster, webhook_id: str, token: str | None = None, **params: Any) -> list[dict[str, Any]]:
    with cluster.client(token) as client:
        response = client.get(f"/api/webhooks/{webhook_id}/deliveries", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def resize(cluster: Cluster, video_id: str, width: int, token: str | None = None) -> str:
    response = cluster.resize(video_id, width, 64, token=token)
    assert response.status_code == 202, response.text
    return response.json()["jobId"]


def first_delivery(cluster: Cluster, webhook_id: str, what: str, timeout_s: float = 30,
                   state: str | None = None) -> dict[str, Any]:
    """The webhook's newest delivery once it is no longer pending (and, with ``state``, once in that state)."""
    def recorded() -> dict[str, Any] | None:
        found = deliveries(cluster, webhook_id)
        done = found and found[0]["state"] != "pending" and (state is None or found[0]["state"] == state)
        return found[0] if done else None

    return wait_until(recorded, timeout_s, what)


def job_event(name: str, job_id: str) -> Callable[[list[Received]], bool]:
    return lambda received: any(r.event["event"] == name and r.event["data"]["jobId"] == job_id for r in received)


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"), ("10.0.0.1", "private"),
    ("172.16.5.4", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"), ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"),
    ("::", "unspecified"), ("240.0.0.1", "reserved"), ("100.64.0.1", "not a public"), ("::ffff:10.0.0.1", "private"),
])
def test_non_public_addresses_are_refused(address: str, kind: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_urls_are_checked_at_creation() -> None:
    assert parse_url("https://example.com/hook?a=1").port == 443
    assert parse_url("http://[2606:2800::1]:8080/").host == "2606:2800::1"
    assert check_at_creation("http://localhost:8080/", allow_private=False).host == "localhost", "names: at delivery"
    assert check_at_creation("http://127.0.0.1:8080/", allow_private=True).port == 8080
    for bad in ("http://127.0.0.1/", "http://[::ffff:7f00:1]/", "ftp://example.com/", "http://u:p@example.com/",
                "http://example.com:0x50/", "https://", "x" * 3000, None, 5):
        with pytest.raises(TargetRefused):
            check_at_creation(bad, allow_private=False)


def test_patterns_and_who_hears_what() -> None:
    assert pattern_matches(("job:",), "job:completed") and pattern_matches(("job:completed",), "job:completed")
    assert not pattern_matches(("job:completed",), "job:completed-x") and not pattern_matches(("job",), "job:x")
    alice = Webhook("h1", "alice", False, "http://x/", ("job:",), "s", 0, 0)
    admin = Webhook("h2", "root", True, "http://x/", ("job:",), "s", 0, 0)
    alices, bobs = (Event("job:queued", 1, 0, {"jobId": "j", "userId": user}) for user in ("alice", "bob"))
    notice = Event("queue:paused", 2, 0, {"paused": True})
    assert may_hear(alice, alices) and not may_hear(alice, bobs) and may_hear(alice, notice)
    assert may_hear(admin, alices) and may_hear(admin, bobs)
    assert not may_hear(alice, Event("job:queued", 3, 0, {"jobId": "j"})), "an event of no known owner: admins only"
    expected = hmac.new(b"key", b"body", hashlib.sha256).hexdigest()
    assert signature("key", b"body") == f"sha256={expected}"


def test_a_restart_writes_the_deliveries_a_kill_cut_off_once(tmp_path: Path) -> None:
    """Killed between an event's commit and its deliveries: the next start replays it from the event log."""
    events = [Event("job:queued", seq, 1000.0 + seq, {"jobId": f"j{seq}", "userId": "alice"}) for seq in range(1, 6)]
    store = WebhookStore(tmp_path / "cluster.db")
    store.add(Webhook("h1", "alice", False, "http://x/", ("job:",), "s", 0, created_seq=2))
    store.add(Webhook("h2", "bob", False, "http://x/", ("job:",), "s", 0, created_seq=0))

    def events_since(seq: int, limit: int) -> list[Event]:
        return [e for e in events if e.seq > seq][:limit]

    try:
        dispatcher = WebhookDispatcher(store, WebhookSettings(), events_since)
        assert dispatcher.catch_up() == 3, "alice's webhook, for the events after its creation; bob's: none"
        assert [d["seq"] for d in store.deliveries("h1", 10, None)] == [5, 4, 3]
        assert store.deliveries("h2", 10, None) == []
        assert WebhookDispatcher(store, WebhookSettings(), events_since).catch_up() == 0, "once"
        assert store.deliveries("h1", 10, None)[0]["state"] == "pending"
        assert store.next_pending("h1").body == events[2].body()  # type: ignore[union-attr]
    finally:
        store.close()


def test_a_delivery_is_the_event_signed_with_the_secret_and_in_seq_order(
        cluster_factory: Callable[..., Cluster], clip: Path, receivers: Callable[..., Receiver],
        ws_factory: Any) -> None:
    cluster = cluster_factory(extra=ALLOW_PRIVATE)
    completed, family = receivers(), receivers()
    hook = create_webhook(cluster, completed.url, ["job:completed"])
    family_hook = create_webhook(cluster, family.url, ["job:"])
    assert len(hook["secret"]) >= 32 and hook["webhookId"]
    ws = ws_factory(cluster)
    job_id = resize(cluster, cluster.upload(clip), 96)
    completed.wait_for(job_event("job:completed", job_id), "job:completed")
    family.wait_for(job_event("job:completed", job_id), "the job's last event")
    published = ws.wait_event("job:completed", job_id)

    [received] = completed.received
    expected = "sha256=" + hmac.new(hook["secret"].encode(), received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["X-VC-Signature"], expected)
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-VC-Event"] == "job:completed"
    assert received.headers["X-VC-Delivery"] == str(received.event["seq"])
    assert received.event == published, "the body is the event as published"

    family_seqs = [int(r.headers["X-VC-Delivery"]) for r in family.received]
    ws_seqs = [e["seq"] for e in ws.events(job_id) if e["seq"] <= family_seqs[-1]]
    assert family_seqs == ws_seqs, "every event of the family, once each, in seq order"
    assert {r.headers["X-VC-Event"] for r in family.received} >= {"job:queued", "job:started", "job:completed"}

    [record] = deliveries(cluster, hook["webhookId"])
    assert record["seq"] == received.event["seq"] and record["state"] == "delivered"
    assert record["attempts"] == 1 and record["statusCode"] == 200 and record["error"] is None
    newest_first = [d["seq"] for d in deliveries(cluster, family_hook["webhookId"])]
    assert newest_first == sorted(family_seqs, reverse=True)
    page = deliveries(cluster, family_hook["webhookId"], limit=2, before=newest_first[0])
    assert [d["seq"] for d in page] == newest_first[1:3]


def test_a_receiver_failing_twice_gets_three_tries_and_one_success(
        cluster_factory: Callable[..., Cluster], clip: Path, receivers: Callable[..., Receiver]) -> None:
    cluster = cluster_factory(extra=ALLOW_PRIVATE)
    receiver = receivers(fail_first=2)
    hook = create_webhook(cluster, receiver.url, ["job:completed"])
    job_id = resize(cluster, cluster.upload(clip), 96)
    receiver.wait_for(lambda r: len(r) >= 3, "three tries")
    seqs = {r.headers["X-VC-Delivery"] for r in receiver.received}
    assert len(seqs) == 1 and receiver.received[0].event["data"]["jobId"] == job_id, "the same delivery each time"

    first_delivery(cluster, hook["webhookId"], "the delivery to be recorded")
    [record] = deliveries(cluster, hook["webhookId"])
    assert record["state"] == "delivered" and record["attempts"] == 3 and record["statusCode"] == 200
    assert [t["statusCode"] for t in record["tries"]] == [500, 500, 200]
    assert [t["error"] for t in record["tries"]] == ["HTTP 500", "HTTP 500", None]
    assert len(receiver.received) == 3
    scrape = Scrape(cluster)
    for outcome, count in (("retrying", 2), ("delivered", 1), ("failed", 0), ("refused", 0)):
        assert scrape.value("vc_webhook_deliveries_total", {"outcome": outcome}) == count, outcome


def test_a_webhook_is_its_owners_alone(cluster_factory: Callable[..., Cluster], clip: Path,
                                       receivers: Callable[..., Receiver]) -> None:
    cluster = cluster_factory(extra=ALLOW_PRIVATE)
    cluster.add_user(*BOB)
    bob = cluster.login(*BOB)
    admins, bobs = receivers(), receivers()
    admin_hook = create_webhook(cluster, admins.url, ["job:completed"])
    bob_hook = create_webhook(cluster, bobs.url, ["job:"], token=bob)
    with cluster.client(bob) as client:
        for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/deliveries")):
            response = client.request(method, f"/api/webhooks/{admin_hook['webhookId']}{path}")
            assert response.status_code == 404, (method, path, response.text)
        assert [h["webhookId"] for h in client.get("/api/webhooks").json()] == [bob_hook["webhookId"]]
    with cluster.client() as client:
        listed = {h["webhookId"] for h in client.get("/api/webhooks").json()}
        assert listed == {admin_hook["webhookId"], bob_hook["webhookId"]}, "an administrator sees all"
        assert "secret" not in client.get(f"/api/webhooks/{bob_hook['webhookId']}").json()

    admin_job = resize(cluster, cluster.upload(clip), 96)
    admins.wait_for(job_event("job:completed", admin_job), "the administrator's job")
    bob_job = resize(cluster, cluster.upload(clip, token=bob), 96, token=bob)
    bobs.wait_for(job_event("job:completed", bob_job), "bob's job")
    admins.wait_for(job_event("job:completed", bob_job), "bob's job, for the administrator")
    assert {e["data"]["jobId"] for e in bobs.events()} == {bob_job}, "bob hears only his own jobs"


def test_bad_input_is_an_exact_400(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(extra=[*ALLOW_PRIVATE, "--webhook-max-per-user", "2"])
    url = "http://127.0.0.1:9/hook"
    bad_bodies: list[Any] = [
        {}, {"url": url}, {"events": ["job:"]}, {"url": 5, "events": ["job:"]}, {"url": url, "events": "job:"},
        {"url": url, "events": []}, {"url": url, "events": ["job"]}, {"url": url, "events": [7]},
        {"url": url, "events": ["job:" + "x" * 100]}, {"url": url, "events": ["job:"] * 21},
        {"url": "ftp://example.com/", "events": ["job:"]}, {"url": "http:///nohost", "events": ["job:"]},
        {"url": "http://user:pw@example.com/", "events": ["job:"]}, {"url": "http://example.com:99999/",
                                                                     "events": ["job:"]},
        {"url": "http://example.com/" + "a" * 2100, "events": ["job:"]}, {"url": "http://exa mple.com/",
                                                                          "events": ["job:"]},
        ["not", "an", "object"],
    ]
    with cluster.client() as client:
        for body in bad_bodies:
            response = client.post("/api/webhooks", json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"]
        not_json = client.post("/api/webhooks", content=b"{not json", headers={"content-type": "application/json"})
        assert not_json.status_code == 400
        hook = client.post("/api/webhooks", json={"url": url, "events": ["job:"]}).json()
        assert client.post("/api/webhooks", json={"url": url, "events": ["pipeline:"]}).status_code == 201
        too_many = client.post("/api/webhooks", json={"url": url, "events": ["job:"]})
        assert too_many.status_code == 400 and "at most 2" in too_many.json()["error"]
        for query in ("limit=0", "limit=abc", "limit=5000", "limit=%C2%B2", "before=-1", "before=x", "before=%C2%B2"):
            response = client.get(f"/api/webhooks/{hook['webhookId']}/deliveries?{query}")
            assert response.status_code == 400, (query, response.text)
        assert client.get("/api/webhooks/nosuchhook").status_code == 404
        assert client.get("/api/webhooks/bad%20id").status_code == 404
        assert client.delete(f"/api/webhooks/{hook['webhookId']}").json()["deleted"] is True
        assert client.get(f"/api/webhooks/{hook['webhookId']}").status_code == 404


def test_a_slow_receiver_does_not_slow_the_queue_nor_another_webhook(
        cluster_factory: Callable[..., Cluster], clip: Path, receivers: Callable[..., Receiver],
        ws_factory: Any) -> None:
    cluster = cluster_factory(extra=[*ALLOW_PRIVATE, "--webhook-timeout-s", str(HOLD_S * 2)])
    slow, fast = receivers(hold=True), receivers()
    create_webhook(cluster, slow.url, ["job:"])
    create_webhook(cluster, fast.url, ["job:started"])
    ws = ws_factory(cluster)
    video_id = cluster.upload(clip)
    first = resize(cluster, video_id, 96)
    slow.wait_for(lambda r: len(r) == 1, "the first delivery (held)")
    second = resize(cluster, video_id, 128)
    ws.wait_event("job:completed", second)
    fast.wait_for(job_event("job:started", second), "the next job's job:started")
    assert len(slow.received) == 1, "the slow receiver still holds its first delivery"
    slow.release()
    slow.wait_for(job_event("job:completed", second), "every event once released")
    seqs = [e["seq"] for e in slow.events()]
    assert seqs == sorted(set(seqs)), "in seq order, once each"
    assert {e["data"]["jobId"] for e in slow.events()} == {first, second}


def test_pending_deliveries_are_delivered_after_a_primary_kill(
        cluster_factory: Callable[..., Cluster], clip: Path, receivers: Callable[..., Receiver]) -> None:
    cluster = cluster_factory(extra=[*ALLOW_PRIVATE, "--webhook-max-attempts", "50"])
    port = free_port()  # nothing listens there yet: every try is refused
    hook = create_webhook(cluster, f"http://127.0.0.1:{port}/hook", ["job:completed"])
    job_id = resize(cluster, cluster.upload(clip), 96)
    wait_until(lambda: (d := deliveries(cluster, hook["webhookId"])) and d[0]["attempts"] >= 1, 60,
               "a failed try")
    children = cluster.descendants()
    cluster.kill_primary()
    wait_until(lambda: not any(c.is_running() for c in children), 10, "the children to exit by themselves")
    cluster.start()
    receiver = receivers(port=port)
    receiver.wait_for(job_event("job:completed", job_id), "the delivery after the restart", timeout_s=60)

    record = first_delivery(cluster, hook["webhookId"], "the delivery to be recorded", state="delivered")
    assert record["attempts"] >= 2 and record["tries"][0]["error"], "the tries before the kill are kept"
    assert len(receiver.received) == 1


def test_private_and_loopback_targets_are_refused_without_the_flag(
        cluster_factory: Callable[..., Cluster], clip: Path, receivers: Callable[..., Receiver]) -> None:
    cluster = cluster_factory()
    receiver = receivers()
    with cluster.client() as client:
        for host in ("127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "10.1.2.3", "192.168.0.1", "169.254.169.254",
                     "0.0.0.0", "224.0.0.1", "[fe80::1]", "[fc00::1]", "100.64.0.1"):
            response = client.post("/api/webhooks", json={"url": f"http://{host}:{receiver.port}/", "events": ["job:"]})
            assert response.status_code == 400, (host, response.text)
            assert "refused" in response.json()["error"]
    by_name = create_webhook(cluster, f"http://localhost:{receiver.port}/hook", ["job:completed"])
    job_id = resize(cluster, cluster.upload(clip), 96)

    record = first_delivery(cluster, by_name["webhookId"], "the refused delivery to be recorded", timeout_s=60)
    assert record["state"] == "failed" and record["attempts"] == 1 and record["statusCode"] is None
    assert "refused" in record["error"] and "loopback" in record["error"], record["error"]
    assert cluster.job(job_id)["state"] == "completed"
    assert receiver.received == []
    assert httpx.get(receiver.url.replace("/hook", "/"), timeout=5).status_code == 501, "the receiver was up"


def test_the_app_adds_a_webhook_shows_its_deliveries_and_deletes_it(
        cluster_factory: Callable[..., Cluster], clip: Path, receivers: Callable[..., Receiver],
        browser: Browser) -> None:
    cluster = cluster_factory(extra=ALLOW_PRIVATE)
    receiver = receivers()
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(cluster.url + "/")
        log_in(page, *ADMIN)
        page.fill("#webhook-url", receiver.url)
        page.fill("#webhook-events", "job:completed")
        page.click("#webhook-form button[type=submit]")
        expect(page.locator("#webhook-secret")).to_contain_text("secret", timeout=UI_S)
        hook = page.locator(".webhook")
        expect(hook).to_have_count(1, timeout=UI_S)
        expect(hook).to_contain_text(receiver.url)
        job_id = resize(cluster, cluster.upload(clip), 96)
        receiver.wait_for(job_event("job:completed", job_id), "the job's delivery")
        seq = receiver.received[0].event["seq"]
        row = hook.locator(f"tr[data-seq='{seq}']")
        expect(row).to_have_attribute("data-state", "delivered", timeout=JOB_S)
        expect(row).to_contain_text("job:completed")
        expect(row).to_contain_text("200")
        screenshot(page, "webhooks")
        hook.get_by_role("button", name="Delete").click()
        expect(page.locator(".webhook")).to_have_count(0, timeout=UI_S)
        with cluster.client() as client:
            assert client.get("/api/webhooks").json() == []
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
