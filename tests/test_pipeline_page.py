"""The app's card shows a pipeline's stages live and lets its owner approve a stage waiting for review
(a real headless Chromium against a real cluster)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from tests.harness import Cluster
from tests.test_pages import JOB_S, UI_S, USER, log_in, page, screenshot  # noqa: F401 - page is a fixture
from tests.test_pipelines import start


def open_card(cluster_factory: Callable[..., Cluster], clip: Path,
              page: Page) -> tuple[Cluster, str, str, Locator]:  # noqa: F811
    """Alice's cluster with one video of hers, its card shown in the app (the live socket open): the
    cluster, alice's token, the video, its card."""
    cluster = cluster_factory(workers=1)
    cluster.add_user(*USER)
    alice = cluster.login(*USER)
    video_id = cluster.upload(clip, token=alice)
    page.goto(cluster.url + "/")
    log_in(page, *USER)
    expect(page.locator("#conn-state")).to_have_text("open", timeout=UI_S)
    card = page.locator(f".video-card[data-video-id='{video_id}']")
    expect(card).to_be_visible(timeout=UI_S)
    return cluster, alice, video_id, card


def test_a_card_shows_its_pipeline_live_and_its_owner_approves_the_review(
        cluster_factory: Callable[..., Cluster], clip: Path, page: Page) -> None:  # noqa: F811
    cluster, alice, video_id, card = open_card(cluster_factory, clip, page)
    pipeline_id = start(cluster, video_id, [
        {"type": "resize", "width": 160, "height": 120, "review": True}, {"type": "extract-audio"}], alice)
    pipeline = card.locator(f".pipeline[data-pipeline-id='{pipeline_id}']")
    expect(pipeline).to_be_visible(timeout=UI_S)  # from pipeline:started, without a reload
    stages = pipeline.locator(".stage")
    expect(stages).to_have_count(2)
    expect(stages.nth(0)).to_contain_text("resize 160×120")
    expect(stages.nth(0).locator(".stage-review")).to_have_text("review")

    expect(pipeline).to_have_attribute("data-state", "review", timeout=JOB_S)
    expect(stages.nth(0)).to_have_attribute("data-state", "completed")
    expect(stages.nth(1)).to_have_attribute("data-state", "pending")
    expect(pipeline.locator(".pipeline-state")).to_have_text("waiting for your approval")
    screenshot(page, "pipeline-review")
    approve = pipeline.locator(".approve-stage")
    expect(approve).to_contain_text("extract-audio")
    approve.click()

    expect(pipeline).to_have_attribute("data-state", "completed", timeout=JOB_S)
    expect(stages.nth(1)).to_have_attribute("data-state", "completed")
    expect(pipeline.locator(".approve-stage")).to_have_count(0)
    expect(card.locator(".card-message")).to_contain_text("Approved resize 160×120")
    screenshot(page, "pipeline-completed")


def test_its_owner_cancels_a_pipeline_from_the_card(
        cluster_factory: Callable[..., Cluster], clip: Path, page: Page) -> None:  # noqa: F811
    cluster, alice, video_id, card = open_card(cluster_factory, clip, page)
    pipeline_id = start(cluster, video_id, [
        {"type": "extract-audio", "review": True}, {"type": "resize", "width": 160, "height": 120}], alice)
    pipeline = card.locator(f".pipeline[data-pipeline-id='{pipeline_id}']")
    expect(pipeline).to_have_attribute("data-state", "review", timeout=JOB_S)
    cancel = pipeline.locator(".cancel-pipeline")
    page.once("dialog", lambda dialog: dialog.dismiss())
    cancel.click()  # dismissed: nothing happens
    expect(pipeline).to_have_attribute("data-state", "review")
    page.once("dialog", lambda dialog: dialog.accept())
    cancel.click()

    expect(pipeline).to_have_attribute("data-state", "cancelled", timeout=UI_S)
    expect(pipeline.locator(".cancel-pipeline")).to_have_count(0)
    expect(pipeline.locator(".approve-stage")).to_have_count(0)
    expect(card.locator(".card-message")).to_contain_text("Pipeline cancelled")
    with cluster.client(alice) as client:
        shown = client.get(f"/api/pipelines/{pipeline_id}").json()
    assert shown["state"] == "cancelled" and [s["state"] for s in shown["stages"]] == ["completed", "pending"]
    screenshot(page, "pipeline-cancelled")
