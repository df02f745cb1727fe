"""Cross-site requests in a real headless Chromium (issue 11, item 3): a page on another port of the same
host, which counts as the same site so the victim's SameSite=Lax cookie goes along, tries to act as the
logged-in administrator; everything it tries is refused and nothing happens. The same actions from the
cluster's own pages work, and those pages run under the Content-Security-Policy without a violation."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.harness import ADMIN, Cluster, free_port, wait_until
from tests.test_pages import UI_S, log_in

ATTACK = """<!doctype html><html><body>
<form id="forged" method="POST" enctype="text/plain" target="sink" action="{cluster}/api/queue/pause">
  <input name='{{"a":"' value='"}}'>
</form>
<iframe name="sink"></iframe>
<script>
window.results = {{}};
const done = (what, outcome) => {{ window.results[what] = outcome; }};
fetch('{cluster}/api/video/hls?videoId={video}', {{method: 'POST', mode: 'no-cors', credentials: 'include',
  headers: {{'content-type': 'text/plain'}}, body: '{{}}'}}).then(() => done('fetch', 'sent'), () => done('fetch', 'failed'));
fetch('{cluster}/api/queue/clean', {{method: 'POST', mode: 'no-cors', credentials: 'include',
  body: '{{"olderThan": 0}}'}}).then(() => done('clean', 'sent'), () => done('clean', 'failed'));
const ws = new WebSocket('{ws}');
ws.onopen = () => {{ ws.send(JSON.stringify({{type: 'resume', since: 0}})); done('ws', 'opened'); }};
ws.onclose = () => {{ if (!window.results.ws) done('ws', 'refused'); }};
document.querySelector('iframe').onload = () => done('form', 'submitted');
document.getElementById('forged').submit();
</script></body></html>"""

CSP_VIOLATION = re.compile(r"Content Security Policy|Refused to", re.IGNORECASE)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def attacker_site() -> Iterator[Callable[[str], str]]:
    """``attacker_site(html)``: the URL of a page served from another port of this host."""
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(html: str) -> str:
        pages["/attack.html"] = html.encode()
        return f"http://127.0.0.1:{server.server_address[1]}/attack.html"

    yield serve
    server.shutdown()
    server.server_close()
    thread.join(5)


def refused_counts(cluster: Cluster) -> dict[str, int]:
    """403s per route, from /metrics (the web workers report them with each heartbeat)."""
    text = httpx.get(cluster.url + "/metrics", headers={"Authorization": f"Bearer {cluster.metrics_token}"},
                     timeout=10).text
    counts: dict[str, int] = {}
    for route, value in re.findall(r'vc_http_requests_total\{[^}]*route="([^"]+)",status="403"\} (\S+)', text):
        counts[route] = int(float(value))
    return counts


def test_a_page_elsewhere_cannot_act_with_the_victim_s_cookie(cluster_factory: Callable[..., Cluster], page: Page,
                                                              clip: Path,
                                                              attacker_site: Callable[[str], str]) -> None:
    cluster = cluster_factory(workers=1, executors=1)
    video_id = cluster.upload(clip)
    page.goto(cluster.url + "/")
    log_in(page, *ADMIN)
    assert any(c["name"] == "token" for c in page.context.cookies(cluster.url)), "the victim is logged in"

    page.goto(attacker_site(ATTACK.format(cluster=cluster.url, ws=cluster.ws_url, video=video_id)))
    page.wait_for_function("() => ['fetch', 'clean', 'ws', 'form'].every((k) => k in window.results)",
                           timeout=UI_S)
    assert page.evaluate("() => window.results.ws") == "refused"
    refused = wait_until(lambda: (c := refused_counts(cluster)).get("/api/video/hls") and
                         c.get("/api/queue/pause") and c.get("/api/queue/clean") and c, 10,
                         "the forged requests to reach the cluster and be refused")
    assert refused["/api/video/hls"] == 1 and refused["/api/queue/pause"] == 1
    with cluster.client() as admin:
        assert admin.get("/api/jobs").json() == [], "nothing was queued"
    assert cluster.health()["paused"] is False


def test_the_same_actions_from_the_cluster_s_own_page_work(cluster_factory: Callable[..., Cluster], page: Page,
                                                           clip: Path) -> None:
    cluster = cluster_factory(workers=1, executors=1)
    video_id = cluster.upload(clip)
    page.goto(cluster.url + "/")
    log_in(page, *ADMIN)
    statuses = page.evaluate("""async (videoId) => {
      const post = (path, init) => fetch(path, {method: 'POST', credentials: 'same-origin', ...init})
        .then((r) => r.status);
      const json = {'content-type': 'application/json'};
      const opened = await new Promise((resolve) => {
        const ws = new WebSocket(`ws://${location.host}/ws`);
        ws.onmessage = (m) => { resolve(JSON.parse(m.data).type); ws.close(); };
        ws.onclose = () => resolve('closed');
      });
      return {
        hls: await post(`/api/video/hls?videoId=${videoId}`, {headers: json, body: '{}'}),
        textPlain: await post('/api/queue/clean', {headers: {'content-type': 'text/plain'}, body: '{}'}),
        pause: await post('/api/queue/pause', {headers: json, body: '{}'}),
        resume: await post('/api/queue/resume'),
        ws: opened,
      };
    }""", video_id)
    assert statuses == {"hls": 202, "textPlain": 403, "pause": 200, "resume": 200, "ws": "welcome"}


def test_the_pages_run_under_the_content_security_policy(cluster: Cluster, page: Page) -> None:
    violations: list[str] = []
    page.on("console", lambda message: CSP_VIOLATION.search(message.text) and violations.append(message.text))
    page.goto(cluster.url + "/")
    log_in(page, *ADMIN)
    for path in ("/", "/dashboard", "/websocket-demo.html"):
        page.goto(cluster.url + path)
        page.wait_for_load_state("networkidle", timeout=UI_S)
    assert violations == []
