"""The web pages in a real headless Chromium against real clusters: the app, the live-events page and
the dashboard. Each test leaves a full-page screenshot in test-output/."""

from __future__ import annotations

import base64
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.browser import CHROMIUM, CHROMIUM_FLAGS  # noqa: F401 - other page tests take them from here
from tests.harness import ADMIN, ROOT, Cluster
from tests.test_jobs import crashing_ffmpeg

SCREENSHOTS = ROOT / "test-output"
WIDE = {"width": 1200, "height": 900}
NARROW = {"width": 390, "height": 844}
USER = ("alice", "alice-password-1")
JOB_S = 60_000  # ms: the longest a job of these tests may take
UI_S = 15_000  # ms: anything else the pages show

# Records every value the pages give data-progress and data-state, so a test can tell a bar moved
# (or a job went through a state) even when it went by between two looks.
RECORD_CHANGES = """() => {
  window.__seen = [];
  new MutationObserver((records) => {
    for (const r of records) window.__seen.push([r.target.dataset.jobId, r.attributeName, r.target.getAttribute(r.attributeName)]);
  }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ['data-progress', 'data-state']});
}"""


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no session); an uncaught script error fails the test."""
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def log_in(page: Page, name: str, password: str) -> None:
    """Through the page's own login form."""
    expect(page.locator("#login-section")).to_be_visible(timeout=UI_S)
    page.fill("#login-username", name)
    page.fill("#login-password", password)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-section")).to_be_hidden(timeout=UI_S)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def assert_fits(page: Page, what: str) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{what} scrolls sideways: {width[0]} px of content in {width[1]} px"


def seen(page: Page, job_id: str, attribute: str) -> list[str]:
    return [value for jid, name, value in page.evaluate("window.__seen") if jid == job_id and name == attribute]


def upload_through_picker(page: Page, path: Path) -> Locator:
    page.set_input_files("#file-input", str(path))
    expect(page.locator(".upload").first).to_have_attribute("data-state", "done", timeout=JOB_S)
    card = page.locator(".video-card").first
    expect(card).to_be_visible()
    return card


def drop_file(page: Page, path: Path) -> Locator:
    """Drag a file from outside the browser onto the app's drop zone."""
    page.evaluate("""([name, data]) => {
      const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], name, {type: 'video/mp4'}));
      const zone = document.getElementById('drop-zone');
      for (const type of ['dragenter', 'dragover', 'drop']) {
        zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
      }
    }""", [path.name, base64.b64encode(path.read_bytes()).decode()])
    expect(page.locator(".upload").first).to_have_attribute("data-state", "done", timeout=JOB_S)
    card = page.locator(".video-card").first
    expect(card).to_be_visible()
    return card


def test_the_app_uploads_resizes_downloads_and_plays_hls(cluster_factory: Callable[..., Cluster], long_clip: Path,
                                                          tmp_path: Path, page: Page) -> None:
    cluster = cluster_factory()
    cluster.add_user(*USER)
    page.goto(cluster.url + "/")
    screenshot(page, "login")
    page.fill("#login-username", USER[0])
    page.fill("#login-password", "not-the-password")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("wrong user name or password", ignore_case=True)
    log_in(page, *USER)
    expect(page.locator("#conn-state")).to_have_text("open", timeout=UI_S)
    expect(page.locator("#dashboard-link")).to_be_hidden()  # not an administrator
    expect(page.locator("#library-empty")).to_be_visible()

    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video at all\n" * 50)
    page.set_input_files("#file-input", str(not_a_video))
    refused = page.locator(".upload[data-state=error]")
    expect(refused).to_contain_text("HTTP 415", timeout=UI_S)
    expect(refused).to_contain_text("not a video", ignore_case=True)

    page.evaluate(RECORD_CHANGES)
    card = upload_through_picker(page, long_clip)
    expect(card.locator(".video-name")).to_have_text(long_clip.name)
    expect(card.locator(".meta")).to_contain_text("640×480")
    expect(card.locator(".meta")).to_contain_text("0:30")
    expect(card.locator("img.thumb")).to_have_js_property("complete", True)
    assert card.locator("img.thumb").evaluate("img => img.naturalWidth") > 0, "the thumbnail loads"

    card.locator(".resize-preset").select_option("320x240")
    card.locator(".resize-submit").click()
    resize = card.locator(".job[data-type=resize]")
    expect(resize).to_have_count(1, timeout=UI_S)
    job_id = resize.get_attribute("data-job-id") or ""
    expect(resize).to_have_attribute("data-state", "completed", timeout=JOB_S)
    expect(resize.locator("progress")).to_have_js_property("value", 100)
    moving = [float(v) for v in seen(page, job_id, "data-progress") if 0 < float(v) < 100]
    assert moving, "the progress bar moved between 0 and 100"
    assert "running" in seen(page, job_id, "data-state")
    download = resize.locator("a.download")
    expect(download).to_have_attribute("href", re.compile(r"type=resize&dimensions=320x240"))
    answer = page.request.get(cluster.url + (download.get_attribute("href") or ""))
    assert answer.status == 200 and answer.headers["content-type"].startswith("video/")

    card.locator(".hls-submit").click()  # the renditions that fit a 480p source: 240p and 360p
    hls = card.locator(".job[data-type=hls]")
    expect(hls).to_have_attribute("data-state", "completed", timeout=JOB_S)
    with page.expect_response(lambda r: r.url.endswith("/master.m3u8")) as playlist:
        hls.locator(".play-hls").click()
    assert playlist.value.status == 200
    video = card.locator("video.hls-video")
    expect(video).to_have_attribute("data-hls", "attached", timeout=UI_S)
    expect(video).to_have_attribute("data-levels", "2", timeout=UI_S)  # hls.js parsed the master playlist
    assert video.evaluate("v => v.src").startswith("blob:"), "hls.js feeds the element through MediaSource"
    screenshot(page, "app")

    page.set_viewport_size(NARROW)
    expect(card.locator(".resize-submit")).to_be_visible()
    assert_fits(page, "the app at 390 px")
    screenshot(page, "app-390")

    page.click("#logout")
    expect(page.locator("#login-section")).to_be_visible()
    expect(page.locator("#conn-state")).to_have_text("offline")
    assert page.request.get(cluster.url + "/api/user").status == 401
    log_in(page, *USER)
    page.goto(cluster.url + "/dashboard")
    expect(page.locator("#admin-only")).to_be_visible(timeout=UI_S)
    expect(page.locator("#admin-only")).to_contain_text("administrators only")
    expect(page.locator("#dash")).to_be_hidden()
    screenshot(page, "dashboard-non-admin")


def test_a_crashing_job_fails_its_retries_then_is_retried_from_the_dead_letters(
        cluster_factory: Callable[..., Cluster], clip: Path, tmp_path: Path, page: Page) -> None:
    cluster = cluster_factory(extra=["--ffmpeg", str(crashing_ffmpeg(tmp_path))])
    page.goto(cluster.url + "/")
    log_in(page, *ADMIN)
    expect(page.locator("#dashboard-link")).to_be_visible()
    expect(page.locator("#conn-state")).to_have_text("open", timeout=UI_S)
    page.evaluate(RECORD_CHANGES)
    card = drop_file(page, clip)
    card.locator(".resize-preset").select_option("custom")
    card.locator(".resize-width").fill("161")
    card.locator(".resize-height").fill("120")
    card.locator(".resize-submit").click()
    expect(card.locator(".card-message")).to_contain_text("must be even")  # checked before asking
    card.locator(".resize-width").fill("160")
    card.locator(".resize-submit").click()
    job = card.locator(".job[data-type=resize]")
    expect(job).to_have_attribute("data-state", "dead", timeout=JOB_S)
    job_id = job.get_attribute("data-job-id") or ""
    assert "delayed" in seen(page, job_id, "data-state"), "the failed attempts were shown before it gave up"
    expect(job).to_have_attribute("data-failures", "4")
    expect(job.locator(".job-error")).to_contain_text("SIGSEGV")
    expect(job.locator(".retry-job")).to_be_visible()
    screenshot(page, "app-dead-job")

    page.goto(cluster.url + "/dashboard")
    expect(page.locator("#conn-state")).to_have_text("open", timeout=UI_S)
    dead = page.locator(f'#dead-letter .dead-job[data-job-id="{job_id}"]')
    expect(dead).to_be_visible(timeout=UI_S)
    expect(dead.locator(".attempts > li")).to_have_count(4)
    expect(dead).to_contain_text("SIGSEGV")
    expect(dead.locator("pre.stderr").first).to_contain_text("simulated crash")
    expect(page.locator('.count[data-state="dead"] .value')).to_have_text("1")
    screenshot(page, "dashboard-dead-letter")

    dead.locator(f'.retry-job[data-job-id="{job_id}"]').click()
    requeued = page.locator(f'#event-log .event[data-event="job:queued"][data-job-id="{job_id}"]')
    expect(requeued.first).to_be_visible(timeout=UI_S)
    expect(page.locator("#dead-message")).to_contain_text(f"Retried {job_id}")
    # it crashes again, four times, and is back among the dead letters
    again = page.locator(f'#event-log .event[data-event="job:permanent-failure"][data-job-id="{job_id}"]')
    expect(again).to_have_count(1, timeout=JOB_S)
    expect(page.locator(f'#dead-letter .dead-job[data-job-id="{job_id}"][data-state="dead"]')).to_be_visible(
        timeout=UI_S)


def test_the_dashboard_shows_each_types_queue_and_pauses_one(cluster_factory: Callable[..., Cluster], clip: Path,
                                                              page: Page) -> None:
    cluster = cluster_factory(extra=["--job-policies", "hls:concurrency=1"])
    video_id = cluster.upload(clip)
    page.goto(cluster.url + "/dashboard")
    log_in(page, *ADMIN)
    resize = page.locator('#queue-types tr[data-type="resize"]')
    expect(resize).to_have_attribute("data-paused", "false", timeout=UI_S)
    expect(page.locator('#queue-types tr[data-type="hls"] [data-column="concurrency"]')).to_have_text("1")
    expect(resize.locator('[data-column="concurrency"]')).to_have_text("no limit")

    resize.locator(".pause-type").click()
    expect(resize).to_have_attribute("data-paused", "true", timeout=UI_S)
    expect(resize.locator(".type-state")).to_have_text("paused")
    expect(page.locator("#queue-state")).to_have_text("running")  # the whole queue still runs
    assert page.request.get(cluster.url + "/api/queue/stats/resize").json()["paused"] is True
    waiting = cluster.resize(video_id, 160, 120).json()["jobId"]
    with cluster.client() as client:
        client.patch("/api/video/extract-audio", json={"videoId": video_id})
    audio = page.locator('#queue-types tr[data-type="extract-audio"] [data-column="completed"]')
    expect(audio).to_have_text("1", timeout=JOB_S)
    expect(resize.locator('[data-column="waiting"]')).to_have_text("1", timeout=UI_S)
    screenshot(page, "dashboard-type-paused")

    resize.locator(".resume-type").click()
    expect(resize).to_have_attribute("data-paused", "false", timeout=UI_S)
    expect(resize.locator('[data-column="completed"]')).to_have_text("1", timeout=JOB_S)
    expect(resize.locator('[data-column="waiting"]')).to_have_text("0")
    assert cluster.job(waiting)["state"] == "completed"


def test_the_dashboard_pauses_and_resumes_the_queue(cluster_factory: Callable[..., Cluster], clip: Path,
                                                    page: Page) -> None:
    cluster = cluster_factory()
    video_id = cluster.upload(clip)
    first = cluster.resize(video_id, 160, 120).json()["jobId"]
    page.goto(cluster.url + "/dashboard")
    log_in(page, *ADMIN)
    expect(page.locator("#conn-state")).to_have_text("open", timeout=UI_S)
    expect(page.locator("#queue-state")).to_have_text("running", timeout=UI_S)
    for role in ("primary", "web", "executor"):
        expect(page.locator(f'#processes tr[data-role="{role}"]').first).to_be_visible(timeout=UI_S)
    expect(page.locator('.count[data-state="completed"] .value')).to_have_text("1", timeout=JOB_S)
    expect(page.locator(f'#jobs-table tr[data-job-id="{first}"][data-state="completed"]')).to_be_visible()
    expect(page.locator("#chart-jobs svg rect.bar")).to_have_count(1, timeout=UI_S)
    expect(page.locator("#chart-runtime svg circle.dot")).to_have_count(1)

    page.click("#queue-pause")
    expect(page.locator("#queue-state")).to_have_text("paused")
    assert page.request.get(cluster.url + "/api/queue/stats").json()["paused"] is True
    waiting = cluster.resize(video_id, 320, 180).json()["jobId"]
    row = page.locator(f'#jobs-table tr[data-job-id="{waiting}"]')
    expect(row).to_have_attribute("data-state", "queued", timeout=UI_S)
    expect(page.locator('.count[data-state="queued"] .value')).to_have_text("1")
    expect(page.locator('#event-log .event[data-event="queue:paused"]')).to_have_count(1)
    doomed = cluster.convert(video_id, "webm").json()["jobId"]
    page.locator(f'#jobs-table .cancel-job[data-job-id="{doomed}"]').click()
    expect(page.locator(f'#jobs-table tr[data-job-id="{doomed}"]')).to_have_attribute("data-state", "cancelled")
    expect(page.locator('.count[data-state="cancelled"] .value')).to_have_text("1")
    expect(page.locator('.count[data-state="queued"] .value')).to_have_text("1")
    screenshot(page, "dashboard-paused")

    page.click("#queue-resume")
    expect(page.locator("#queue-state")).to_have_text("running")
    assert page.request.get(cluster.url + "/api/queue/stats").json()["paused"] is False
    expect(row).to_have_attribute("data-state", "completed", timeout=JOB_S)
    expect(page.locator('.count[data-state="completed"] .value')).to_have_text("2")
    expect(page.locator('.count[data-state="queued"] .value')).to_have_text("0")

    page.select_option("#filter-state", "completed")
    page.fill("#filter-video", video_id)
    page.click("#jobs-filter button[type=submit]")
    expect(page.locator("#jobs-table tbody tr")).to_have_count(2)
    page.select_option("#filter-type", "convert")
    expect(page.locator("#jobs-table tbody tr")).to_have_count(0)
    expect(page.locator("#jobs-empty")).to_be_visible()
    page.select_option("#filter-state", "cancelled")
    expect(page.locator(f'#jobs-table tbody tr[data-job-id="{doomed}"]')).to_have_count(1)
    page.select_option("#filter-type", "")
    page.select_option("#filter-state", "")
    expect(page.locator("#jobs-table tbody tr")).to_have_count(3)
    screenshot(page, "dashboard")

    page.set_viewport_size(NARROW)
    expect(page.locator("#queue-pause")).to_be_visible()
    assert_fits(page, "the dashboard at 390 px")
    screenshot(page, "dashboard-390")


def test_the_live_events_page_is_behind_login_and_survives_a_dropped_connection(
        cluster: Cluster, long_clip: Path, page: Page) -> None:
    video_id = cluster.upload(long_clip)
    page.goto(cluster.url + "/websocket-demo.html")
    log_in(page, *ADMIN)
    expect(page.locator("#conn-state")).to_have_text("open", timeout=UI_S)
    page.fill("#video-id", video_id)
    page.click("#subscribe")
    expect(page.locator("#subscriptions")).to_contain_text(video_id)
    expect(page.locator("#status-log")).to_contain_text(f"Subscribed to video {video_id}")

    job_id = cluster.resize(video_id, 320, 240).json()["jobId"]
    completed = page.locator(f'.event[data-event="job:completed"][data-job-id="{job_id}"]')
    expect(completed).to_have_count(1, timeout=JOB_S)
    for name in ("job:queued", "job:started"):
        expect(page.locator(f'.event[data-event="{name}"][data-job-id="{job_id}"]')).to_have_count(1)
    progress = page.locator(f'.progress-row[data-job-id="{job_id}"]')
    expect(progress).to_have_count(1)
    expect(progress).to_have_attribute("data-progress", "100")
    colour = "el => getComputedStyle(el).borderLeftColor"
    queued = page.locator(f'.event[data-event="job:queued"][data-job-id="{job_id}"]')
    assert completed.evaluate(colour) != queued.evaluate(colour), "events are colour-coded"
    expect(page.locator('#counters [data-event="job:completed"]')).to_have_text("job:completed: 1")

    page.click("#pause")  # the display stops; events are buffered and drawn on resume
    expect(page.locator("#pause")).to_have_attribute("aria-pressed", "true")
    second = cluster.resize(video_id, 160, 120).json()["jobId"]
    expect(page.locator('#counters [data-event="job:completed"]')).to_have_text("job:completed: 2", timeout=JOB_S)
    expect(page.locator(f'.event[data-job-id="{second}"]')).to_have_count(0)
    expect(page.locator("#paused-note")).to_contain_text("buffered")
    page.click("#pause")
    expect(page.locator(f'.event[data-event="job:completed"][data-job-id="{second}"]')).to_have_count(1)
    expect(page.locator(f'.event[data-event="job:queued"][data-job-id="{second}"]')).to_have_count(1)

    page.locator('.event-filter[value="job:progress"]').uncheck()
    expect(page.locator(".progress-row").first).to_be_hidden()
    expect(page.locator(".progress-row:visible")).to_have_count(0)
    expect(completed).to_be_visible()
    page.locator('.event-filter[value="job:progress"]').check()
    expect(page.locator(".progress-row:visible")).to_have_count(2)

    worker = page.locator("#worker-pid").inner_text()
    os.kill(int(worker), signal.SIGKILL)  # the cluster replaces it; the page reconnects and resumes
    expect(page.locator("#worker-pid")).not_to_have_text(worker, timeout=UI_S)
    expect(page.locator("#conn-state")).to_have_text("open")
    expect(page.locator("#status-log")).to_contain_text("Resumed after seq")
    third = cluster.resize(video_id, 256, 192).json()["jobId"]
    for name in ("job:queued", "job:started", "job:completed"):
        expect(page.locator(f'.event[data-event="{name}"][data-job-id="{third}"]')).to_have_count(1, timeout=JOB_S)
    screenshot(page, "websocket-demo")

    page.set_viewport_size(NARROW)
    expect(page.locator("#pause")).to_be_visible()
    assert_fits(page, "the live-events page at 390 px")
    screenshot(page, "websocket-demo-390")


def test_the_pages_ask_for_a_login_and_refuse_anonymous_sockets(cluster: Cluster, page: Page) -> None:
    for path in ("/", "/dashboard", "/websocket-demo.html"):
        page.goto(cluster.url + path)
        expect(page.locator("#login-section")).to_be_visible(timeout=UI_S)
        expect(page.locator("#conn-state")).to_have_text("offline")
    with pytest.raises(InvalidStatus) as refused:
        connect(cluster.ws_url, open_timeout=5)
    assert refused.value.response.status_code == 401
    assert httpx.get(cluster.url + "/vendor/hls.min.js", timeout=5).status_code == 200


def test_a_card_s_queue_position_moves_as_the_jobs_ahead_start(cluster_factory: Callable[..., Cluster],
                                                               long_clip: Path, clip: Path, page: Page) -> None:
    cluster = cluster_factory(executors=1)
    long_id, video_id = cluster.upload(long_clip), cluster.upload(clip)
    with cluster.client() as client:
        assert client.post("/api/queue/pause").status_code == 200
    ahead = cluster.convert(long_id, "webm").json()["jobId"]
    cluster.resize(video_id, 160, 120)
    last = cluster.resize(video_id, 320, 240).json()["jobId"]
    page.goto(cluster.url)
    log_in(page, *ADMIN)
    detail = page.locator(f'li.job[data-job-id="{last}"] .job-detail')
    expect(detail).to_contain_text("position 3 in the queue", timeout=UI_S)
    with cluster.client() as client:
        assert client.post("/api/queue/resume").status_code == 200
    expect(page.locator(f'li.job[data-job-id="{ahead}"]')).to_have_attribute("data-state", re.compile("running|completed"),
                                                                               timeout=JOB_S)
    # only a fresh look moves it: the page hears no event of a job that is still waiting
    expect(detail).to_contain_text(re.compile(r"position [12] in the queue"), timeout=UI_S)
    screenshot(page, "app-queue-position")
