"""One ffmpeg run: machine-readable progress, a timeout that kills, no orphan when we die."""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import signal
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from cluster import media
from cluster.protocol import TIMEOUT_ERROR

STDERR_TAIL_LINES = 20
ProgressCallback = Callable[[float, float | None, float | None], None]


@dataclass(frozen=True)
class FfmpegResult:
    returncode: int
    timed_out: bool
    stderr_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        """What went wrong, for everyone: the stderr tail (paths, the command's details) is for administrators."""
        if self.timed_out:
            return TIMEOUT_ERROR
        if self.returncode < 0:
            return f"ffmpeg crashed (signal {signal.Signals(-self.returncode).name})"
        return f"ffmpeg exited with code {self.returncode}"


def _die_with_us(argv: list[str]) -> list[str]:
    """Have the kernel SIGKILL ffmpeg if this executor dies, even by SIGKILL."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


async def run_ffmpeg(argv: list[str], duration_s: float, timeout_s: float,
                     on_progress: ProgressCallback) -> FfmpegResult:
    process = await asyncio.create_subprocess_exec(
        *_die_with_us(argv), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True,  # its own group, so the kill reaches its children
    )
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    readers = asyncio.gather(_read_progress(process, duration_s, on_progress), _read_stderr(process, tail))
    try:
        await asyncio.wait_for(asyncio.shield(readers), timeout_s)
        returncode = await process.wait()
        timed_out = False
    except TimeoutError:
        returncode = await _kill(process)
        timed_out = True
    except BaseException:
        await _kill(process)
        raise
    finally:
        readers.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await readers
    return FfmpegResult(returncode, timed_out, " | ".join(tail))


async def _read_progress(process: asyncio.subprocess.Process, duration_s: float,
                         on_progress: ProgressCallback) -> None:
    parser = media.ProgressParser()
    assert process.stdout is not None
    async for raw in process.stdout:
        progress = parser.feed(raw.decode(errors="replace"))
        if progress is not None:
            on_progress(media.percent(progress, duration_s), progress.speed, media.eta_seconds(progress, duration_s))


async def _read_stderr(process: asyncio.subprocess.Process, tail: collections.deque[str]) -> None:
    assert process.stderr is not None
    async for raw in process.stderr:
        line = raw.decode(errors="replace").strip()
        if line:
            tail.append(line)


async def _kill(process: asyncio.subprocess.Process) -> int:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return await process.wait()
