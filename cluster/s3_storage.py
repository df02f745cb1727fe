"""Media in S3 through boto3: the layout of `cluster.storage` under ``<prefix>/``.

Uploads stream in by multipart (`MultipartWriter`: memory bounded by the part size and the parts in
flight); an executor works on local copies in its scratch dir (`S3Storage.workspace`) and puts its
outputs under run-scoped keys ``<prefix>/.runs/<run_id>/<videoId>/...`` (`save_outputs`), and only there.
The primary, when it accepts the run (primary/run_files.py), has `publish_run` copy them to their final
keys (a directory's index file, an HLS master playlist, last) and delete them; `discard_run` deletes
those of a run it refused or gave up on, and `listed_runs` finds the runs whose keys nobody removed. All run keys live under
one prefix, so finding them costs a listing of the runs, not of every video. Downloads are presigned URLs.

boto3 is blocking: every call runs in this storage's thread pool. A transfer that is cancelled is told
to stop (a `threading.Event` it checks between chunks) and awaited, so no thread writes into a
directory after its owner removed it. Credentials come from boto3's usual chain on each host.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import re
import secrets
import shutil
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from cluster.logs import get_logger
from cluster.storage import Layout, LocalStorage, StorageError, StorageSettings, content_type, discard

PART_SIZE = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 3  # per upload: with the part being filled, ~32 MiB of body in memory at most
PART_ATTEMPTS = 4  # our own retries of a part, beyond botocore's retries of each request
# Each part carries its CRC32, which S3 checks, and the object gets a checksum of its parts' (as boto3's
# upload_file does). We compute it and send it as a plain header: botocore would send a checksum of its
# own making in an aws-chunked trailer over HTTPS, which some S3-compatible servers refuse.
CHECKSUM_ALGORITHM = "CRC32"
S3_MAX_ATTEMPTS = 5  # botocore's "standard" retry mode: back-off with jitter on throttling and 5xx
POOL_THREADS = 16
CHECK_CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 60.0
# S3 answers a CompleteMultipartUpload or a copy only when the object is assembled: minutes for a big one
# on a slow server. A shorter timeout would retry a call that has in fact succeeded.
ASSEMBLY_READ_TIMEOUT_S = 900.0
COPY_OBJECT_LIMIT = 5 * 1024**3  # copy_object's limit; larger objects go by boto3's managed (multipart) copy
DOWNLOAD_CHUNK = 1024 * 1024
STALE_UPLOAD_S = 24 * 3600.0  # a multipart upload older than this at start belongs to no live writer
RUNS_DIR = ".runs"  # never a video id (those are alphanumeric)
RUNS_LISTED = 1000  # run ids one sweep looks at (one page of a listing): its cost is bounded
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

T = TypeVar("T")
log = get_logger()


class StorageUnavailable(RuntimeError):
    """The bucket cannot be used: said once, at start."""


class Stopped(Exception):
    """A transfer told to stop (its job was cancelled)."""


def make_client(settings: StorageSettings, *, connect_timeout_s: float = 5.0, max_attempts: int = S3_MAX_ATTEMPTS,
                read_timeout_s: float = READ_TIMEOUT_S) -> Any:
    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout_s, read_timeout=read_timeout_s, max_pool_connections=POOL_THREADS,
        signature_version="s3v4",
        # checksums only where S3 demands them: S3-compatible servers differ on the newer ones
        request_checksum_calculation="when_required", response_checksum_validation="when_required",
        # an endpoint of our own (an IP, a host without wildcard DNS) takes the bucket in the path
        s3={"addressing_style": "path"} if settings.endpoint else None,
    )
    return boto3.session.Session().client("s3", endpoint_url=settings.endpoint or None,
                                          region_name=settings.region or None, config=config)


def check_bucket(settings: StorageSettings) -> None:
    """One head_bucket with a short connect timeout; `StorageUnavailable` saying what is wrong."""
    client = make_client(settings, connect_timeout_s=CHECK_CONNECT_TIMEOUT_S, max_attempts=2)
    where = f"s3://{settings.bucket}" + (f" at {settings.endpoint}" if settings.endpoint else "")
    try:
        client.head_bucket(Bucket=settings.bucket)
    except NoCredentialsError as e:
        raise StorageUnavailable(f"no S3 credentials found for {where}: set AWS_ACCESS_KEY_ID and "
                                 "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (boto3's usual chain)") from e
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            raise StorageUnavailable(f"the bucket {where} does not exist") from e
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise StorageUnavailable(f"access to {where} denied: check the S3 credentials") from e
        raise StorageUnavailable(f"{where} refused: {code or e}") from e
    except BotoCoreError as e:  # EndpointConnectionError, ConnectTimeoutError...
        raise StorageUnavailable(f"cannot reach {where}: {e}") from e


def backoff_s(attempt: int) -> float:
    """The wait before retry number `attempt` (0-based) of a failed part: 0.2 s doubling, capped at 3.2 s."""
    return min(0.2 * 2**attempt, 3.2)


def _is_missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound")


class S3Storage(Layout):
    is_remote = True

    def __init__(self, settings: StorageSettings, scratch: Path) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.root = scratch  # local: upload temp files and job workspaces, never media of record
        self.temp_dir = scratch / ".tmp"
        self.client = make_client(settings)
        self.assembling_client = make_client(settings, read_timeout_s=ASSEMBLY_READ_TIMEOUT_S)  # completes, copies
        self._pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="s3")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()
        self.assembling_client.close()

    def prepare(self) -> None:
        for directory in (self.root, self.temp_dir, self.root / "runs"):
            directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._sweep_scratch()

    def video_dir(self, video_id: str) -> PurePosixPath:  # type: ignore[override]
        return PurePosixPath(self.settings.prefix or ".", self.check_video_id(video_id))

    def runs_dir(self) -> PurePosixPath:
        return PurePosixPath(self.settings.prefix or ".", RUNS_DIR)

    def run_root(self, run_id: str) -> PurePosixPath:
        """Every key one run wrote is under here."""
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"bad run id {run_id!r}")
        return self.runs_dir() / run_id

    def run_dir(self, video_id: str, run_id: str) -> PurePosixPath:
        """The run's keys of a video's files: ``run_dir(v, r) / name`` becomes ``video_dir(v) / name``."""
        return self.run_root(run_id) / self.check_video_id(video_id)

    def new_temp(self, suffix: str = "") -> Path:
        return self.temp_dir / f"{os.getpid()}-{secrets.token_hex(8)}{suffix}.part"

    def upload_sink(self, ext: str) -> S3UploadSink:
        return S3UploadSink(self, ext)

    # --- downloads ---------------------------------------------------------------

    async def exists(self, key: PurePosixPath) -> bool:
        def head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=str(key))
            except ClientError as e:
                if _is_missing(e):
                    return False
                raise
            return True

        return await self.call(head)

    async def read_bytes(self, key: PurePosixPath) -> bytes | None:
        """A small object (a playlist) whole; None if there is none."""
        def read() -> bytes | None:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=str(key))["Body"].read()
            except ClientError as e:
                if _is_missing(e):
                    return None
                raise

        return await self.call(read)

    def presigned_url(self, key: PurePosixPath, download_name: str | None = None) -> str:
        params = {"Bucket": self.bucket, "Key": str(key), "ResponseContentType": content_type(key)}
        if download_name:
            params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'
        return self.client.generate_presigned_url("get_object", Params=params,
                                                  ExpiresIn=max(1, round(self.settings.url_expiry_s)))

    # --- removal -----------------------------------------------------------------

    def remove_video(self, video_id: str) -> None:
        """Every object under the video's prefix (its runs' keys are elsewhere: its jobs' cancellation and the
        sweep delete them). Blocking: call it in a thread.
        The video is gone from the store by then: objects S3 would not delete are logged, not raised."""
        try:
            self._delete_keys([o["Key"] for o in self._list(self.video_dir(video_id))])
        except (BotoCoreError, ClientError) as e:
            log.error("S3 objects of a deleted video not removed", prefix=str(self.video_dir(video_id)), error=str(e))

    def sweep_partials(self, older_than_s: float = STALE_UPLOAD_S) -> int:
        """At the primary's start, when no run is running: delete every run's keys, and abort the multipart
        uploads under the prefix older than `older_than_s` (left by web workers that died mid-upload; a live
        one aborts its own). Local scratch is swept by `prepare`."""
        runs = [o["Key"] for o in self._list(self.runs_dir())]
        self._delete_keys(runs)
        return len(runs) + self._abort_stale_uploads(older_than_s)

    def _abort_stale_uploads(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        prefix = f"{self.settings.prefix}/" if self.settings.prefix else ""
        stale = [u for page in self.client.get_paginator("list_multipart_uploads").paginate(
                     Bucket=self.bucket, Prefix=prefix)
                 for u in page.get("Uploads", []) if u["Initiated"].timestamp() < cutoff]
        for upload in stale:
            with contextlib.suppress(ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        return len(stale)

    # --- executors -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def workspace(self, video_id: str, run_id: str, source_fmt: str) -> AsyncIterator[LocalStorage]:
        """A local storage holding the job's input, removed afterwards; on failure or cancellation
        the run's keys go too."""
        run_id = run_id or secrets.token_hex(16)
        work = LocalStorage(self.root / "runs" / f"{os.getpid()}-{run_id}")
        work.prepare()
        source = work.original(video_id, source_fmt)
        try:
            source.parent.mkdir(parents=True, exist_ok=True)
            # a missing original leaves no file: the job says "source missing"
            await self.transfer(functools.partial(self._get_file, self.original(video_id, source_fmt), source))
            yield work
        except BaseException:
            with contextlib.suppress(StorageError, ValueError):
                await self.transfer(functools.partial(self.discard_run, video_id, run_id))
            raise
        finally:
            await asyncio.get_running_loop().run_in_executor(self._pool, shutil.rmtree, work.root, True)

    async def save_outputs(self, work: LocalStorage, video_id: str, run_id: str, output: Path,
                           last: str | None = None) -> None:
        """Put the job's output under the run's keys, never the final ones: the primary publishes them if it
        accepts the run. A directory output (an HLS ladder, a storyboard) goes file by file, its `last` file
        (the one naming the others) after every other."""
        local_dir, run_dir = work.video_dir(video_id), self.run_dir(video_id, run_id)
        files = _files(output) if last is not None else [output]
        final = output / last if last is not None else output

        def put(path: Path) -> Callable[[threading.Event], None]:
            return functools.partial(self._put_file, path, run_dir / path.relative_to(local_dir).as_posix())

        await self.transfers([put(p) for p in files if p != final])
        await self.transfer(put(final))

    def publish_run(self, video_id: str, run_id: str, name: str, last: str | None = None,
                    stop: threading.Event | None = None) -> int:
        """Copy the run's output `name` (a file, or with `last` a directory, under the video's dir) to its
        final keys, then delete every key of the run; the number of objects published. Blocking.

        Only `name` is published, whatever else the run wrote. A directory's `last` file is copied after
        the others, then the files of an older version of the directory not in this one are removed.
        FileNotFoundError when the run's output is not there."""
        run_dir, video_dir = self.run_dir(video_id, run_id), self.video_dir(video_id)
        if last is None:
            objects = [o for o in self._list(run_dir) if o["Key"] == f"{run_dir}/{name}"]
        else:
            objects = list(self._list(run_dir / name))
        if last is not None and not any(o["Key"] == f"{run_dir}/{name}/{last}" for o in objects):
            objects = []  # without its index file a directory is not complete
        if not objects:
            raise FileNotFoundError(f"output missing: the run's {name} is not in storage")
        final = {o["Key"]: f"{video_dir}/{o['Key'][len(str(run_dir)) + 1:]}" for o in objects}
        index = f"{video_dir}/{name}/{last}" if last is not None else None
        first = [o for o in objects if final[o["Key"]] != index]
        then = [o for o in objects if final[o["Key"]] == index]
        with ThreadPoolExecutor(8, thread_name_prefix="s3-publish") as pool:
            for batch in (first, then):
                list(pool.map(lambda o: self._copy(o, final[o["Key"]], stop), batch))
        if last is not None:
            kept = set(final.values())
            self._delete_keys([o["Key"] for o in self._list(video_dir / name) if o["Key"] not in kept])
        self.discard_run(video_id, run_id)
        return len(objects)

    def discard_run(self, video_id: str | None, run_id: str, stop: threading.Event | None = None) -> int:
        """Delete whatever a run put under its keys (of any video); the number of keys deleted. Blocking."""
        keys = [o["Key"] for o in self._list(self.run_root(run_id))]
        self._delete_keys(keys)
        return len(keys)

    def listed_runs(self, after: str = "") -> tuple[list[str], str]:
        """The ids of runs with keys in storage, in order: at most `RUNS_LISTED` of them past `after`, in
        one request whatever the bucket holds; and where the next listing goes on ("": from the start).
        Blocking."""
        runs_dir = str(self.runs_dir())
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{runs_dir}/", Delimiter="/",
                                             MaxKeys=RUNS_LISTED,
                                             # past every key of `after` ("~" sorts after the characters of a video id)
                                             **({"StartAfter": f"{runs_dir}/{after}/~"} if after else {}))
        runs = [p["Prefix"][len(runs_dir) + 1:].rstrip("/") for p in listed.get("CommonPrefixes", [])]
        more = bool(listed.get("IsTruncated")) and bool(runs)
        return [run_id for run_id in runs if _RUN_ID.fullmatch(run_id)], runs[-1] if more else ""

    # --- calls in the pool ------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A short blocking call in the pool; boto3's errors become `StorageError`."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except (BotoCoreError, ClientError) as e:
            raise StorageError(f"S3 call failed: {e}") from e

    async def transfer(self, call: Callable[[threading.Event], T]) -> T:
        return (await self.transfers([call]))[0]

    async def transfers(self, calls: list[Callable[[threading.Event], T]]) -> list[T]:
        """Blocking calls in the pool, each given one stop event: set when one fails or the caller is
        cancelled, and every call is awaited before this returns or raises."""
        if not calls:
            return []
        loop, stop = asyncio.get_running_loop(), threading.Event()
        futures = [loop.run_in_executor(self._pool, call, stop) for call in calls]
        try:
            _, pending = await asyncio.wait(futures, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait(futures)
            _exceptions(futures)
            raise
        if pending:
            stop.set()
            await asyncio.wait(pending)
        errors = _exceptions(futures)
        if errors:
            error = next((e for e in errors if not isinstance(e, Stopped)), errors[0])
            if isinstance(error, (BotoCoreError, ClientError)):
                raise StorageError(f"S3 transfer failed: {error}") from error
            raise error
        return [f.result() for f in futures]

    def run_in_pool(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # --- blocking helpers (in the pool) -----------------------------------------------------

    def _list(self, directory: PurePosixPath) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{directory}/"):
            yield from page.get("Contents", [])

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def _copy(self, listed: dict[str, Any], key: str, stop: threading.Event | None) -> None:
        if stop is not None and stop.is_set():
            raise Stopped
        source = {"Bucket": self.bucket, "Key": listed["Key"]}
        if listed["Size"] < COPY_OBJECT_LIMIT:
            self.assembling_client.copy_object(CopySource=source, Bucket=self.bucket, Key=key)
        else:
            self.assembling_client.copy(source, self.bucket, key)

    def _get_file(self, key: PurePosixPath, path: Path, stop: threading.Event) -> bool:
        """Download `key` to `path`, retrying a broken stream; False if there is no such object."""
        for attempt in range(PART_ATTEMPTS):
            try:
                return self._get_file_once(key, path, stop)
            except (BotoCoreError, OSError) as e:
                if attempt == PART_ATTEMPTS - 1 or stop.is_set():
                    raise
                log.warning("S3 download failed: retrying", key=str(key), error=str(e), attempt=attempt + 1)
                stop.wait(backoff_s(attempt))
        return False  # not reached

    def _get_file_once(self, key: PurePosixPath, path: Path, stop: threading.Event) -> bool:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=str(key))["Body"]
        except ClientError as e:
            if _is_missing(e):
                return False
            raise
        with contextlib.closing(body), open(path, "wb") as out:
            for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                if stop.is_set():
                    raise Stopped
                out.write(chunk)
        return True

    def _put_file(self, path: Path, key: PurePosixPath, stop: threading.Event) -> None:
        """Upload a local file: in one request, or by parts if it is larger than one part."""
        if stop.is_set():
            raise Stopped
        extra = {"ContentType": content_type(key)}
        if path.stat().st_size <= PART_SIZE:
            with open(path, "rb") as source:
                self.client.put_object(Bucket=self.bucket, Key=str(key), Body=source, **extra)
            return
        upload_id = self.start_upload(str(key))
        try:
            parts = []
            with open(path, "rb") as source:
                while data := source.read(PART_SIZE):
                    if stop.is_set():
                        raise Stopped
                    parts.append(self.upload_part(str(key), upload_id, len(parts) + 1, data))
            self.complete_upload(str(key), upload_id, parts)
        except BaseException:
            self.abort_upload(str(key), upload_id)
            raise

    def start_upload(self, key: str) -> str:
        """A new multipart upload of ``key``, whose parts carry checksums; its upload id."""
        return self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type(
            PurePosixPath(key)), ChecksumAlgorithm=CHECKSUM_ALGORITHM)["UploadId"]

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes | bytearray) -> dict[str, Any]:
        """One part, retried with back-off: botocore retries each request, we retry the part. The part as
        `complete_upload` names it."""
        checksum = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        for attempt in range(PART_ATTEMPTS):
            try:
                answer = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                 PartNumber=number, Body=data, ChecksumCRC32=checksum)
                return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32": checksum}
            except (BotoCoreError, ClientError) as e:
                if attempt == PART_ATTEMPTS - 1:
                    raise
                log.warning("S3 part upload failed: retrying", key=key, part=number, error=str(e),
                            attempt=attempt + 1)
                time.sleep(backoff_s(attempt))
        raise AssertionError("not reached")

    def complete_upload(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        """Make the object of the parts `upload_part` answered (in any order). Blocking."""
        self.assembling_client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": sorted(parts, key=lambda part: part["PartNumber"])})

    def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError) as e:  # the sweep at the primary's start aborts it later
            log.warning("S3 multipart upload not aborted", key=key, error=str(e))

    def _sweep_scratch(self) -> None:
        """Remove what processes of this host that died left in the scratch dir (named by their pid)."""
        for path in [*self.temp_dir.glob("*.part"), *(self.root / "runs").iterdir()]:
            pid = path.name.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                discard(path)


class MultipartWriter:
    """An object written part by part as its bytes arrive, made only by `complete`.

    At most one part is being filled and `PARTS_IN_FLIGHT` are uploading, whatever the size. A body
    smaller than one part is kept and put in one request at `complete`, so nothing exists in S3
    before then. `abort` leaves neither an object nor a multipart upload.
    """

    def __init__(self, storage: S3Storage, key: str) -> None:
        self._storage = storage
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._in_flight: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._parts: list[dict[str, Any]] = []
        self._started: list[asyncio.Future[dict[str, Any]]] = []

    async def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= PART_SIZE:
            await self._send_part()

    async def flush(self) -> None:
        """The whole body is in: every part uploaded (the last one too), the object not yet made."""
        if self._upload_id is not None and self._buffer:
            await self._send_part()
        while self._in_flight:
            await self._collect()

    async def complete(self) -> None:
        storage, key = self._storage, self._key
        extra = {"ContentType": content_type(PurePosixPath(key))}
        if self._upload_id is None:
            await storage.call(storage.client.put_object, Bucket=storage.bucket, Key=key, Body=bytes(self._buffer),
                               **extra)
        else:
            await self.flush()
            try:
                await storage.call(storage.complete_upload, key, self._upload_id, self._parts)
            except StorageError:
                # A retried complete fails (NoSuchUpload) when the first attempt succeeded unseen: the key
                # is new (a fresh video id), so an object under it is this upload's.
                if not await storage.exists(PurePosixPath(key)):
                    raise
            self._upload_id = None
        self._buffer = bytearray()

    async def abort(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is None:
            return
        if self._started:  # a part still uploading could otherwise land after the abort
            await asyncio.wait(self._started)
            _exceptions(self._started)
        await self._storage.run_in_pool(self._storage.abort_upload, self._key, self._upload_id)
        self._upload_id = None

    async def _send_part(self) -> None:
        storage = self._storage
        if self._upload_id is None:
            self._upload_id = await storage.call(storage.start_upload, self._key)
        while len(self._in_flight) >= PARTS_IN_FLIGHT:
            await self._collect()
        number = len(self._started) + 1
        data, self._buffer = self._buffer, bytearray()  # handed over, not copied
        future = storage.run_in_pool(storage.upload_part, self._key, self._upload_id, number, data)
        self._in_flight.append(future)
        self._started.append(future)

    async def _collect(self) -> None:
        try:
            self._parts.append(await self._in_flight.popleft())
        except (BotoCoreError, ClientError) as e:
            raise StorageError(f"S3 part upload failed after {PART_ATTEMPTS} attempts: {e}") from e


class S3UploadSink:
    """An upload's body, written at once to a local temp file (for the probe and the thumbnail) and to
    S3 by multipart; `commit` makes the object (and puts the thumbnail), `abort` leaves nothing."""

    def __init__(self, storage: S3Storage, ext: str) -> None:
        self.video_id = secrets.token_hex(8)
        self.path = storage.new_temp()
        self._storage = storage
        self._ext = ext
        self._writer = MultipartWriter(storage, str(storage.original(self.video_id, ext)))
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by finish or abort

    async def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        await self._writer.write(chunk)

    async def finish(self) -> None:
        self._file.close()
        await self._writer.flush()

    async def commit(self, fmt: str, thumbnail: Path) -> None:
        storage = self._storage
        # The local copy has served the probe and the thumbnail: it goes before S3 assembles the object,
        # which for a large one takes seconds (measured on this 2-core VM with moto: the 1 GiB of page
        # cache it held made that assembly take twice as long, 6 s instead of 3 s).
        size = self.path.stat().st_size
        self.path.unlink(missing_ok=True)
        await storage.transfer(functools.partial(storage._put_file, thumbnail, storage.thumbnail(self.video_id)))
        await self._writer.complete()
        if fmt != self._ext:  # the extension said mp4, the probe says otherwise: the key follows the probe
            listed = {"Key": str(storage.original(self.video_id, self._ext)), "Size": size}
            await storage.call(storage._copy, listed, str(storage.original(self.video_id, fmt)), None)
            await storage.call(storage._delete_keys, [listed["Key"]])
        thumbnail.unlink(missing_ok=True)

    async def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)
        await self._writer.abort()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def _exceptions(futures: list[asyncio.Future[Any]]) -> list[BaseException]:
    """The exceptions of finished futures, retrieved (so none is reported as never retrieved)."""
    return [e for f in futures if f.done() and not f.cancelled() and (e := f.exception()) is not None]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
