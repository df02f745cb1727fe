"""The app page and the new kinds, in the headless browser: a card requests a storyboard and a preview
(POST /api/jobs), shows them when done, and the player's seek bar shows the storyboard's tiles."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.harness import Cluster, generate_clip
from tests.test_pages import (  # noqa: F401
    JOB_S,
    SCREENSHOTS,
    UI_S,
    USER,
    assert_fits,
    log_in,
    page,
    screenshot,
    upload_through_picker,
)


@pytest.fixture(scope="module")
def six_s_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clip(tmp_path_factory.mktemp("clips") / "six.mp4", seconds=6, size="320x240")


def test_a_card_requests_and_shows_a_storyboard_and_a_preview(cluster_factory: Callable[..., Cluster],
                                                              six_s_clip: Path, page: Page) -> None:  # noqa: F811
    cluster = cluster_factory()
    cluster.add_user(*USER)
    page.goto(cluster.url + "/")
    log_in(page, *USER)
    card = upload_through_picker(page, six_s_clip)
    expect(card.locator(".card-outputs")).to_be_hidden()

    card.locator(".storyboard-interval").select_option("2")
    card.locator(".storyboard-submit").click()
    card.locator(".preview-start").fill("1")
    card.locator(".preview-submit").click()
    for job_type in ("storyboard", "preview"):
        expect(card.locator(f".job[data-type={job_type}]")).to_have_attribute("data-state", "completed", timeout=JOB_S)
    expect(card.locator(".job[data-type=storyboard] .job-label")).to_have_text("Storyboard, a tile every 2 s")
    expect(card.locator(".job[data-type=storyboard] .job-detail")).to_contain_text("3 tiles of 160×120")

    sprite = card.locator("img.storyboard-img")
    preview = card.locator("img.preview-img")
    for image in (sprite, preview):
        expect(image).to_be_visible(timeout=UI_S)
        expect(image).to_have_js_property("complete", True)
    assert sprite.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [3 * 160, 120]
    assert preview.evaluate("img => img.naturalWidth") == 320, "the animated WebP decodes in the browser"
    expect(card.locator(".output-storyboard a.download")).to_have_text(["sprite.jpg", "storyboard.vtt"])

    card.locator(".thumbnail-at").fill("4")
    card.locator(".thumbnail-submit").click()
    expect(card.locator(".job[data-type=thumbnail]")).to_have_attribute("data-state", "completed", timeout=JOB_S)
    expect(card.locator("img.thumb")).to_have_attribute("src", re.compile(r"type=thumbnail&job="))

    card.locator(".hls-submit").click()
    hls = card.locator(".job[data-type=hls]")
    expect(hls).to_have_attribute("data-state", "completed", timeout=JOB_S)
    hls.locator(".play-hls").click()
    expect(card.locator("video.hls-video")).to_have_attribute("data-hls", "attached", timeout=UI_S)
    seek = card.locator("input.seek")
    expect(card.locator(".seek-wrap")).to_have_attribute("data-cues", "3", timeout=UI_S)
    width = seek.evaluate("s => s.getBoundingClientRect().width")
    seek.hover(position={"x": width * 0.5, "y": 5})  # 3 s: the second tile
    tip = card.locator(".seek-tip")
    expect(tip).to_be_visible(timeout=UI_S)
    expect(tip).to_have_attribute("data-tile", "160,0")
    assert "type=storyboard" in tip.evaluate("t => t.style.backgroundImage")
    loaded = page.evaluate("""(url) => new Promise((resolve) => {
      const img = new Image(); img.onload = () => resolve(img.naturalWidth); img.onerror = () => resolve(0);
      img.src = url; })""", tip.evaluate("t => t.style.backgroundImage.slice(5, -2)"))
    assert loaded == 3 * 160, "the VTT's sprite URL loads with the session cookie"
    screenshot(page, "app-storyboard-preview")
    page.set_viewport_size({"width": 390, "height": 844})
    assert_fits(page, "the card with its previews at 390 px")

