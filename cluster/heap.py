"""The C heap under Python (glibc's malloc): handing free memory back to the system.

Python's small objects live in its own pools; what goes through malloc is the large buffers (upload
parts, row batches). Elsewhere than glibc (musl, macOS) these do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_free_memory() -> None:
    """Return the heap's free pages (``malloc_trim``): after reading a million rows, tens of MiB."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def map_large_blocks(threshold: int) -> None:
    """Blocks of ``threshold`` bytes or more get their own mapping, given back to the system when freed.
    glibc otherwise raises its threshold to the largest block freed (up to 32 MiB), and a stream of 8 MiB
    upload parts then fragments the heap: RSS grows well past the parts in flight."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, threshold)
