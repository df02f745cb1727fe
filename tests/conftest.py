from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.browser import chromium
from tests.harness import Cluster, EventClient, generate_clip


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s, 320x240, with audio."""
    return generate_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long enough that a job runs for a while and reports progress several times."""
    return generate_clip(tmp_path_factory.mktemp("clips") / "long.mp4", seconds=30, size="640x480")


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    clusters: list[Cluster] = []

    def make(**kwargs: Any) -> Cluster:
        data_dir = tmp_path / f"data{len(clusters)}"
        cluster = Cluster(data_dir, **kwargs)
        clusters.append(cluster)
        return cluster.start()

    yield make
    for cluster in clusters:
        cluster.stop()
        cluster.kill_leftovers()


@pytest.fixture
def cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory()


@pytest.fixture
def ws_factory() -> Iterator[Callable[..., EventClient]]:
    """``ws_factory(cluster)``: a WebSocket client logged in as the administrator (or with ``token``);
    ``since``: it resumes from there, in its URL."""
    clients: list[EventClient] = []

    def make(cluster: Cluster, token: str | None = None, since: int | None = None) -> EventClient:
        client = EventClient(cluster.ws_url, cluster.token if token is None else token, since)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module that asks for it."""
    with chromium() as opened:
        yield opened
