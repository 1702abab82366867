"""A task's log, kept small: what a failed render needs to be understood, never what a flood wrote.

The sandboxed worker writes its stderr straight into ``logs/<task>.log`` (an fd the server opened), so while it
runs only its file-size limit bounds the file. When the task ends the log is cut to its first ``HEAD`` and last
``TAIL`` bytes with a line that says how much was dropped: a job that fails in 0.1 s can no longer leave 16 MB
behind for 90 days. Logs go with their job's outputs (``DataDir.remove_job``, the retention sweep).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

HEAD = 64 * 1024
TAIL = 192 * 1024


def trim(path: Path, head: int = HEAD, tail: int = TAIL) -> None:
    """Cut the log to head + tail bytes if it is larger (never follows a link; quietly does nothing on error)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size <= head + tail:
                return
            first = os.pread(fd, head, 0)
            last = os.pread(fd, tail, size - tail)
        finally:
            os.close(fd)
        note = f"\n[executor] {size - head - tail} bytes of this log dropped (kept the first {head >> 10} KB " \
               f"and the last {tail >> 10} KB)\n".encode()
        staging = path.with_name(f".{path.name}.trim")
        staging.write_bytes(first + note + last)
        os.replace(staging, path)
