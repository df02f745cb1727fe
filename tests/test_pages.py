"""The live-events page in a real headless Chromium (item 8)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.harness import ADMIN, ROOT, Cluster

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = ROOT / "test-output"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def test_demo_page_shows_a_job_live(cluster: Cluster, long_clip: Path, page: Page) -> None:
    video_id = cluster.upload(long_clip)
    login = page.request.post(cluster.url + "/api/login", data={"username": ADMIN[0], "password": ADMIN[1]})
    assert login.ok  # the session cookie is now the browser's
    page.goto(cluster.url + "/websocket-demo.html")
    expect(page.locator("#conn-state")).to_have_text("open", timeout=15_000)
    page.fill("#video-id", video_id)
    page.click("#subscribe")
    expect(page.locator("#subscriptions")).to_contain_text(video_id)
    job_id = cluster.resize(video_id, 320, 240).json()["jobId"]
    row = page.locator(f'.event[data-event="job:completed"][data-job-id="{job_id}"]')
    expect(row).to_have_count(1, timeout=60_000)
    for name in ("job:queued", "job:started"):
        expect(page.locator(f'.event[data-event="{name}"][data-job-id="{job_id}"]')).to_have_count(1)
    progress = page.locator(f'.progress-row[data-job-id="{job_id}"]')
    expect(progress).to_have_count(1)
    assert float(progress.get_attribute("data-progress") or 0) == 100
    completed_colour = row.evaluate("el => getComputedStyle(el).borderLeftColor || getComputedStyle(el).color")
    queued_colour = page.locator(f'.event[data-event="job:queued"][data-job-id="{job_id}"]').evaluate(
        "el => getComputedStyle(el).borderLeftColor || getComputedStyle(el).color")
    assert completed_colour != queued_colour, "events are colour-coded"
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "websocket-demo.png"), full_page=True)
