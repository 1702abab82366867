"""``no_huge_pages``: a video scene's ffmpeg runs without transparent huge pages.

Why: x264 asks the kernel for huge pages for its large buffers (``madvise(MADV_HUGEPAGE)``; this machine's THP
mode is ``madvise``): at 1080p ~200 MB of 2 MB pages per x264 instance (100 of them for the seed's video scene),
each zeroed whole on its first touch, and on a busy machine first compacted (direct compaction, in the faulting
thread). Without them the kernel zeroes only the 4 KB pages that are touched. The seed's 6 s video scene then
took 4.63 CPU-s instead of 4.85 (median of 4 interleaved in-process renders, lower in all 4). Only how memory is
backed changes: the encoded bytes are the same (that scene's file was byte-identical both ways).

Video scenes only: for a stills scene (one 15-frame x264 block at 1080p) the 4 KB faults cost more than the
huge pages save on a quiet machine (the bench's text+image scene via the API 0.69 -> 0.73 s, 5 of 5 pairs),
although with them its kernel time was bimodal (0.06 or 0.30-0.37 s) when memory was fragmented.

``PR_SET_THP_DISABLE`` is a process attribute that children inherit across fork and exec, so it is set on the
renderer's process while the scene's ffmpeg runs and put back as it was afterwards; scenes rendered at once in
one process (threads) share one setting, restored when the last ends. Where the kernel has no such prctl
(before Linux 3.15) or refuses it, nothing changes.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from collections.abc import Iterator

PR_SET_THP_DISABLE, PR_GET_THP_DISABLE = 41, 42

_lock = threading.Lock()
_users = 0
_before: int | None = None  # the setting to put back; None when it could not be read or set


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _prctl(option: int, value: int = 0) -> int:
    libc = _libc()
    prctl = getattr(libc, "prctl", None)
    return -1 if prctl is None else int(prctl(option, ctypes.c_ulong(value), 0, 0, 0))


@contextlib.contextmanager
def no_huge_pages() -> Iterator[None]:
    """Processes started inside the block (and this one) get no transparent huge pages."""
    global _users, _before
    with _lock:
        if _users == 0:
            before = _prctl(PR_GET_THP_DISABLE)
            _before = before if before >= 0 and _prctl(PR_SET_THP_DISABLE, 1) == 0 else None
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _before is not None:
                _prctl(PR_SET_THP_DISABLE, _before)
                _before = None
