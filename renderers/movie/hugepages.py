"""``no_huge_pages``: a scene's ffmpeg processes run without transparent huge pages.

Why: x264 asks the kernel for huge pages for its large buffers (``madvise(MADV_HUGEPAGE)``; this machine's THP
mode is ``madvise``), and the kernel zeroes each 2 MB page whole on its first touch, whether x264 then uses all
of it or not. At 1080p that is ~200 MB per x264 instance (100 huge pages for the seed's video scene, 68 for a
15-frame stills encode: a fixed cost, whatever the frame count), and zeroing it took 0.15-0.3 s of kernel CPU
per scene on the project's VM: about as much as the whole x264 work of a short stills scene. Without huge pages
the kernel zeroes only the 4 KB pages that are touched. Only how memory is backed changes: the encoded bytes are
the same (the seed's video scene file was byte-identical both ways).

``PR_SET_THP_DISABLE`` is a process attribute that children inherit across fork and exec, so it is set on the
renderer's process for as long as a scene renders (every ffmpeg the scene starts gets it) and put back as it was
afterwards; scenes rendered at once in one process (threads) share one setting, restored when the last ends.
Where the kernel has no such prctl (before Linux 3.15) or refuses it, nothing changes.
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
