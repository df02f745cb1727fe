"""Media on S3 (issue 12, item 4): a real cluster against moto's S3 server, started here on a free port.

boto3 is never mocked: the cluster's processes and these tests talk HTTP to the same moto server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from cluster.media import find_ffmpeg
from tests.harness import ROOT, Cluster, EventClient, free_port, generate_clip, wait_until

pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
PREFIX = "media"
EXPIRY_S = 120


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 in this process, on 127.0.0.1 only; it records requests (in order) when asked."""
    recording = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    previous = {name: os.environ.get(name) for name in ("MOTO_RECORDER_FILEPATH",)}
    os.environ["MOTO_RECORDER_FILEPATH"] = str(recording)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def s3(s3_server: str) -> Iterator[Any]:
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    yield client
    client.close()


@pytest.fixture(scope="module")
def bucket(s3: Any) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    keys = [{"Key": o["Key"]} for o in s3.list_objects_v2(Bucket=name).get("Contents", [])]
    if keys:
        s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    s3.delete_bucket(Bucket=name)


@pytest.fixture(scope="module")
def s3_cluster(tmp_path_factory: pytest.TempPathFactory, s3_server: str, bucket: str) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("s3cluster")
    cluster = Cluster(root / "data", workers=1, executors=1, env=CREDENTIALS, extra=[
        "--storage", f"s3://{bucket}/{PREFIX}", "--s3-endpoint", s3_server, "--s3-url-expiry-s", str(EXPIRY_S),
        "--scratch-dir", str(root / "scratch")])
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        cluster.kill_leftovers()


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real video of ~14 MiB (noise does not compress): more than one 8 MiB part."""
    path = tmp_path_factory.mktemp("clips") / "big.mp4"
    subprocess.run([find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4", "-f", "lavfi", "-i",
                    "sine=duration=4", "-vf", "noise=alls=100:allf=t+u", "-c:v", "libx264", "-preset", "ultrafast",
                    "-qp", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], check=True, timeout=120)
    assert path.stat().st_size > 9 * 1024 * 1024
    return path


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clip(tmp_path_factory.mktemp("clips") / "wide.mp4", seconds=4, size="640x360")


@pytest.fixture
def ws(s3_cluster: Cluster) -> Iterator[EventClient]:
    client = EventClient(s3_cluster.ws_url, s3_cluster.token)
    yield client
    client.close()


def keys(s3: Any, bucket: str, prefix: str = PREFIX) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def multipart_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def scratch_temp_files(cluster: Cluster) -> list[Path]:
    return [p for p in (cluster.data_dir.parent / "scratch" / ".tmp").iterdir()]


def run_job(cluster: Cluster, ws: EventClient, method: str, path: str, timeout_s: float = 90, **kwargs: Any,
            ) -> dict[str, Any]:
    with cluster.client() as client:
        response = client.request(method, path, **kwargs)
    assert response.status_code == 202, response.text
    job_id = response.json()["jobId"]
    return ws.wait_event("job:completed", job_id, timeout_s=timeout_s)["data"]


def test_an_upload_streams_to_s3_by_parts_and_leaves_no_multipart_upload(
        s3_cluster: Cluster, s3: Any, bucket: str, big_clip: Path) -> None:
    video_id = s3_cluster.upload(big_clip)
    stored = keys(s3, bucket, f"{PREFIX}/{video_id}")
    assert stored == [f"{PREFIX}/{video_id}/original.mp4", f"{PREFIX}/{video_id}/thumbnail.jpg"]
    head = s3.head_object(Bucket=bucket, Key=f"{PREFIX}/{video_id}/original.mp4", ChecksumMode="ENABLED")
    assert head["ContentLength"] == big_clip.stat().st_size
    assert "-" in head["ETag"], "a multipart object's ETag ends in -<parts>"
    assert head.get("ChecksumCRC32"), "each part carried its CRC32, so the object has a checksum of its parts"
    assert multipart_uploads(s3, bucket) == []
    assert not (s3_cluster.data_dir / "storage" / video_id).exists(), "nothing of it on local disk"
    assert scratch_temp_files(s3_cluster) == []


def test_resize_convert_and_hls_put_their_outputs_in_s3_master_last(
        s3_cluster: Cluster, s3: Any, bucket: str, s3_server: str, wide_clip: Path, ws: EventClient) -> None:
    video_id = s3_cluster.upload(wide_clip)
    video_prefix = f"{PREFIX}/{video_id}"
    resized = run_job(s3_cluster, ws, "PUT", "/api/video/resize", json={"videoId": video_id, "width": 160,
                                                                         "height": 90})
    converted = run_job(s3_cluster, ws, "PUT", "/api/video/convert", params={"videoId": video_id},
                        json={"format": "mkv"})
    httpx.post(f"{s3_server}/moto-api/recorder/reset-recording")
    httpx.post(f"{s3_server}/moto-api/recorder/start-recording")
    try:
        ladder = run_job(s3_cluster, ws, "POST", "/api/video/hls", params={"videoId": video_id},
                         json={"renditions": [240, 360]})
    finally:
        httpx.post(f"{s3_server}/moto-api/recorder/stop-recording")
    recording = httpx.get(f"{s3_server}/moto-api/recorder/download-recording").text
    assert resized["result"]["file"] == "160x90.mp4" and converted["result"]["file"] == "converted.mkv"
    stored = keys(s3, bucket, video_prefix)
    for name in ("160x90.mp4", "converted.mkv", "hls/master.m3u8", "hls/240p/index.m3u8", "hls/360p/index.m3u8",
                 "hls/240p/seg_000.ts"):
        assert f"{video_prefix}/{name}" in stored
    assert [k for k in keys(s3, bucket) if "/.runs/" in k] == [], "nothing left under run-scoped keys"
    assert [r["height"] for r in ladder["result"]["renditions"]] == [240, 360]
    # moto's threads append entries whole but their newlines apart: read the request lines, in order
    puts = [urlparse(url).path for method, url in re.findall(r'"method": "(\w+)", "url": "([^"]+)"', recording)
            if method == "PUT" and f"/{video_id}/" in url]
    final_puts = [p for p in puts if "/.runs/" not in p]
    run_puts = [p for p in puts if "/.runs/" in p]
    assert final_puts[-1].endswith("/hls/master.m3u8") and len(final_puts) > 4
    assert run_puts[-1].endswith("/hls/master.m3u8"), "uploaded last, and made visible last"
    assert max(puts.index(p) for p in run_puts) < puts.index(final_puts[0]), "visible only once all is uploaded"
    assert scratch_temp_files(s3_cluster) == []
    assert list((s3_cluster.data_dir.parent / "scratch" / "runs").iterdir()) == [], "scratch removed after each job"


def test_downloads_redirect_to_short_lived_presigned_urls(
        s3_cluster: Cluster, s3: Any, bucket: str, clip: Path, ws: EventClient) -> None:
    video_id = s3_cluster.upload(clip)
    with s3_cluster.client() as client:
        response = client.get("/get-video-asset", params={"videoId": video_id, "type": "original"})
        missing = client.get("/get-video-asset", params={"videoId": video_id, "type": "audio"})
    assert response.status_code == 302 and response.headers["cache-control"] == "no-store"
    location = response.headers["location"]
    url = urlparse(location)
    query = parse_qs(url.query)
    assert url.path.endswith(f"/{bucket}/{PREFIX}/{video_id}/original.mp4")
    assert query["X-Amz-Expires"] == [str(EXPIRY_S)] and "X-Amz-Signature" in query
    assert query["response-content-disposition"] == ['attachment; filename="clip.mp4"'], "named after the upload"
    served = httpx.get(location, timeout=30)  # no session: the URL alone grants it
    assert served.status_code == 200 and served.content == clip.read_bytes()
    assert missing.status_code == 404 and "location" not in missing.headers


def test_hls_plays_through_the_cluster_playlists_served_segments_redirected(
        s3_cluster: Cluster, wide_clip: Path, ws: EventClient) -> None:
    video_id = s3_cluster.upload(wide_clip)
    run_job(s3_cluster, ws, "POST", "/api/video/hls", params={"videoId": video_id}, json={"renditions": [240]})
    with s3_cluster.client() as client:
        master = client.get(f"/hls/{video_id}/master.m3u8")
        playlist = client.get(f"/hls/{video_id}/240p/index.m3u8")
        segment = next(line for line in playlist.text.splitlines() if line.endswith(".ts"))
        redirected = client.get(f"/hls/{video_id}/240p/{segment}")
        escapes = client.get(f"/hls/{video_id}/..%2Foriginal.mp4")
        absent = client.get(f"/hls/{video_id}/nope.m3u8")
    assert master.status_code == 200 and master.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert "240p/index.m3u8" in master.text
    assert redirected.status_code == 302
    assert parse_qs(urlparse(redirected.headers["location"]).query)["X-Amz-Expires"] == [str(EXPIRY_S)]
    assert escapes.status_code == 404 and absent.status_code == 404
    played = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-headers",
         f"Authorization: Bearer {s3_cluster.token}\r\n", "-i", f"{s3_cluster.url}/hls/{video_id}/master.m3u8",
         "-map", "0:v:0", "-f", "null", "-"], capture_output=True, text=True, timeout=120, check=False)
    assert played.returncode == 0, played.stderr


def test_an_upload_whose_extension_lies_is_stored_under_the_probed_format(
        s3_cluster: Cluster, s3: Any, bucket: str, clip: Path) -> None:
    video_id = s3_cluster.upload(clip, name="clip.mkv")  # an mp4 inside
    assert keys(s3, bucket, f"{PREFIX}/{video_id}") == [f"{PREFIX}/{video_id}/original.mp4",
                                                        f"{PREFIX}/{video_id}/thumbnail.jpg"]
    assert multipart_uploads(s3, bucket) == []


def test_a_cancelled_job_leaves_no_run_keys_and_no_scratch(
        s3_cluster: Cluster, s3: Any, bucket: str, long_clip: Path, ws: EventClient) -> None:
    video_id = s3_cluster.upload(long_clip)
    with s3_cluster.client() as client:
        job_id = client.post("/api/video/hls", params={"videoId": video_id}).json()["jobId"]
        ws.wait_event("job:progress", job_id, timeout_s=60)
        assert client.delete(f"/api/jobs/{job_id}").status_code == 200
    ws.wait_event("job:cancelled", job_id)
    runs = s3_cluster.data_dir.parent / "scratch" / "runs"
    wait_until(lambda: list(runs.iterdir()) == [], 20, "the job's scratch dir to go")
    assert [k for k in keys(s3, bucket, f"{PREFIX}/{video_id}") if "/hls/" in k] == []
    wait_until(lambda: [k for k in keys(s3, bucket) if "/.runs/" in k] == [], 20, "the run's keys to go")


def test_another_users_asset_is_404_before_any_redirect(s3_cluster: Cluster, clip: Path) -> None:
    video_id = s3_cluster.upload(clip)
    s3_cluster.add_user("mallory", "mallory-password")
    token = s3_cluster.login("mallory", "mallory-password")
    with s3_cluster.client(token) as client:
        asset = client.get("/get-video-asset", params={"videoId": video_id, "type": "original"})
        segment = client.get(f"/hls/{video_id}/240p/seg_000.ts")
    for response in (asset, segment):
        assert response.status_code == 404 and "location" not in response.headers


def test_an_upload_the_client_breaks_off_leaves_nothing(s3_cluster: Cluster, s3: Any, bucket: str) -> None:
    before = keys(s3, bucket)
    declared, sent = 40 * 1024 * 1024, 20 * 1024 * 1024  # past two parts: two went to S3 already
    with socket.create_connection(("127.0.0.1", s3_cluster.port), timeout=10) as sock:
        sock.sendall((f"POST /api/upload-video HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                      f"{s3_cluster.token}\r\nfilename: broken.mp4\r\nContent-Length: {declared}\r\n\r\n").encode())
        chunk = os.urandom(1024 * 1024)
        for _ in range(sent // len(chunk)):
            sock.sendall(chunk)
        wait_until(lambda: multipart_uploads(s3, bucket), 20, "the upload's parts to reach S3")
    wait_until(lambda: multipart_uploads(s3, bucket) == [], 20, "the multipart upload to be aborted")
    wait_until(lambda: scratch_temp_files(s3_cluster) == [], 20, "the temp file to go")
    assert keys(s3, bucket) == before


def test_a_refused_upload_leaves_nothing(s3_cluster: Cluster, s3: Any, bucket: str) -> None:
    before = keys(s3, bucket)
    with s3_cluster.client() as client:
        response = client.post("/api/upload-video", content=os.urandom(20 * 1024 * 1024),
                               headers={"filename": "noise.mp4"})
    assert response.status_code == 415 and "not a video" in response.json()["error"]
    assert multipart_uploads(s3, bucket) == []
    assert keys(s3, bucket) == before
    assert scratch_temp_files(s3_cluster) == []


def test_deleting_a_video_removes_its_objects(s3_cluster: Cluster, s3: Any, bucket: str, clip: Path,
                                              ws: EventClient) -> None:
    video_id = s3_cluster.upload(clip)
    run_job(s3_cluster, ws, "PUT", "/api/video/resize", json={"videoId": video_id, "width": 160, "height": 120})
    assert len(keys(s3, bucket, f"{PREFIX}/{video_id}")) == 3
    with s3_cluster.client() as client:
        assert client.delete(f"/api/videos/{video_id}").status_code == 200
    assert keys(s3, bucket, f"{PREFIX}/{video_id}") == []


@pytest.mark.parametrize("case", ["missing bucket", "unreachable endpoint", "no credentials"])
def test_an_unusable_bucket_stops_the_primary_at_start(tmp_path: Path, s3_server: str, case: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}" if case == "unreachable endpoint" else s3_server
    env = {**os.environ, **CREDENTIALS}
    if case == "no credentials":
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.pop(name)
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
                   AWS_EC2_METADATA_DISABLED="true")
    cluster = Cluster(tmp_path / "data", extra=["--storage", f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x",
                                                "--s3-endpoint", endpoint])
    started = subprocess.run([sys.executable, str(ROOT / "run_cluster.py"), *cluster.args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    expected = {"missing bucket": "does not exist", "unreachable endpoint": "cannot reach",
                "no credentials": "no S3 credentials"}[case]
    assert started.returncode != 0
    assert expected in started.stderr, started.stderr
    assert "cluster started" not in started.stderr


class PartDroppingProxy:
    """A TCP proxy in front of moto that drops the first `drops` part uploads (closes the connection
    before any answer), as a network fault would. One request per connection (``Connection: close``),
    so that every request is seen."""

    def __init__(self, target: str, drops: int) -> None:
        self._target = urlparse(target)
        self.drops = drops
        self.dropped = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(65536)
                if not data:
                    return
                head += data
            if b"partNumber=" in head.split(b"\r\n", 1)[0] and self.dropped < self.drops:
                self.dropped += 1
                return
            head = head.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
            with socket.create_connection((self._target.hostname, self._target.port)) as upstream:
                upstream.sendall(head)
                pump = threading.Thread(target=_pipe, args=(client, upstream), daemon=True)
                pump.start()
                _pipe(upstream, client)
                pump.join(10)

    def close(self) -> None:
        self._server.close()
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(10)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def dropping_storage(s3_server: str, bucket: str, tmp_path: Path, request: pytest.FixtureRequest,
                     monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, PartDroppingProxy]]:
    from cluster.s3_storage import S3Storage, make_client
    from cluster.storage import StorageSettings

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)

    proxy = PartDroppingProxy(s3_server, drops=request.param)
    settings = StorageSettings("s3", bucket, f"faults-{uuid.uuid4().hex[:8]}", proxy.url)
    storage = S3Storage(settings, tmp_path / "scratch")
    storage.client.close()
    storage.client = make_client(settings, max_attempts=1)  # no botocore retry: the part retry is ours alone
    storage.prepare()
    yield storage, proxy
    storage.close()
    proxy.close()


async def _upload_through(storage: Any, size: int) -> str:
    sink = storage.upload_sink("mp4")
    try:
        chunk = os.urandom(1024 * 1024)
        for _ in range(size // len(chunk)):
            await sink.write(chunk)
        await sink.finish()
        thumbnail = storage.new_temp(".jpg")
        thumbnail.write_bytes(b"jpeg")
        await sink.commit("mp4", thumbnail)
    except BaseException:
        await sink.abort()
        raise
    return str(storage.original(sink.video_id, "mp4"))


@pytest.mark.parametrize("dropping_storage", [2], indirect=True)
def test_a_failed_part_is_retried_with_back_off(dropping_storage: tuple[Any, PartDroppingProxy], s3: Any,
                                                bucket: str) -> None:
    storage, proxy = dropping_storage
    key = asyncio.run(_upload_through(storage, 20 * 1024 * 1024))
    assert proxy.dropped == 2
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == 20 * 1024 * 1024
    assert multipart_uploads(s3, bucket) == []


@pytest.mark.parametrize("dropping_storage", [1000], indirect=True)
def test_a_part_that_keeps_failing_aborts_the_upload(dropping_storage: tuple[Any, PartDroppingProxy], s3: Any,
                                                     bucket: str) -> None:
    from cluster.storage import StorageError

    storage, proxy = dropping_storage
    with pytest.raises(StorageError, match="part upload failed after 4 attempts"):
        asyncio.run(_upload_through(storage, 20 * 1024 * 1024))
    assert proxy.dropped >= 4
    assert multipart_uploads(s3, bucket) == []
    assert keys(s3, bucket, storage.settings.prefix) == []
    assert list((storage.root / ".tmp").iterdir()) == []


@pytest.mark.parametrize("dropping_storage", [0], indirect=True)
def test_the_local_copy_is_gone_before_s3_assembles_the_upload(dropping_storage: tuple[Any, PartDroppingProxy],
                                                               s3: Any, bucket: str) -> None:
    storage, _ = dropping_storage
    copies_at_completion: list[list[str]] = []
    storage.assembling_client.meta.events.register(
        "before-call.s3.CompleteMultipartUpload", lambda **_: copies_at_completion.append(
            [p.name for p in storage.temp_dir.iterdir() if not p.name.endswith(".jpg.part")]))
    key = asyncio.run(_upload_through(storage, 20 * 1024 * 1024))
    assert copies_at_completion == [[]], "the upload's local copy was still there while S3 assembled it"
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == 20 * 1024 * 1024


def test_backoff_of_a_failed_part_grows_and_is_capped() -> None:
    from cluster.s3_storage import backoff_s

    assert [backoff_s(n) for n in range(6)] == [0.2, 0.4, 0.8, 1.6, 3.2, 3.2]




def test_a_remote_executor_works_through_s3_with_no_shared_filesystem(
        tmp_path: Path, s3_server: str, s3: Any, bucket: str, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_remote import RemoteHost, add_key, free_port_block, job_state, wait_joined

    for name, value in CREDENTIALS.items():  # the remote host's own credentials (the primary hands out none)
        monkeypatch.setenv(name, value)
    port = free_port_block()
    cluster = Cluster(tmp_path / "data", workers=1, executors=0, env=CREDENTIALS, extra=[
        "--storage", f"s3://{bucket}/remote", "--s3-endpoint", s3_server, "--remote-bind", f"tcp://127.0.0.1:{port}"])
    host = RemoteHost(f"tcp://127.0.0.1:{port}", tmp_path / "unused.cert", tmp_path / "host.log")
    try:
        cluster.start()
        host = RemoteHost(f"tcp://127.0.0.1:{port}", add_key(cluster.data_dir, "s3host"), tmp_path / "host.log")
        host.start()
        wait_joined(cluster, 1)
        video_id = cluster.upload(clip)
        job_id = cluster.resize(video_id, 160, 120).json()["jobId"]
        wait_until(lambda: job_state(cluster, job_id) == "completed", 90, "the remote executor's resize")
        stored = keys(s3, bucket, "remote")
        assert f"remote/{video_id}/160x120.mp4" in stored, stored
        assert not [key for key in stored if "/.runs/" in key], "its run keys were published and removed"
        assert "is not on this host" not in host.output(), "it needed no mounted storage dir"
    finally:
        host.stop()
        cluster.stop()
        cluster.kill_leftovers()
