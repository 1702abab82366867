"""Disk and log quotas, enforced by the task's worker (trusted, outside the task's PID namespace).

The workdir stays a normal directory that the server stages inputs into and reads outputs from, so its usage
is measured rather than capped by a filesystem: a walk every half second (less often when a walk is slow, so
a task with many files cannot make its worker spend its time walking), plus one when the task ends. Known gap:
a file the task deleted while keeping it open is not seen; RLIMIT_FSIZE and RLIMIT_NOFILE bound it.
"""
from __future__ import annotations

import os
import stat
import time

TRUNCATED = b"[log truncated]\n"


def usage_bytes(top: str) -> int:
    """Allocated bytes under ``top``, each inode once, symlinks never followed."""
    seen: set[tuple[int, int]] = set()
    total, stack = 0, [top]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except PermissionError:  # the task hid a directory from its own uid: the owner may open it again
            os.chmod(directory, 0o700, follow_symlinks=False)
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
            if stat.S_ISDIR(info.st_mode):
                stack.append(entry.path)
    return total


class DiskWatch:
    """How much the workdir grew since the task started, against ``limit_mb``."""

    def __init__(self, top: str, limit_mb: int) -> None:
        self.top, self.limit_mb = top, limit_mb
        self.baseline = usage_bytes(top)  # the staged inputs do not count
        self.next_at = time.monotonic() + 0.5

    def exceeded(self) -> bool:
        started = time.monotonic()
        try:
            grown = usage_bytes(self.top) - self.baseline
        except OSError:
            grown = 0  # e.g. a directory that vanished mid-walk: the next walk sees the truth
        spent = time.monotonic() - started
        self.next_at = time.monotonic() + max(0.5, 4 * spent)
        return grown > self.limit_mb << 20

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def error(self) -> str:
        return f"disk quota exceeded (limit {self.limit_mb} MB)"


class CappedLog:
    """Appends to the task's log file up to ``limit_mb``, then one "[log truncated]" line and nothing more."""

    def __init__(self, fd: int, limit_mb: int) -> None:
        self.fd, self.room, self.truncated = fd, max(0, limit_mb << 20), False

    def write(self, data: bytes) -> None:
        if self.truncated or not data:
            return
        if len(data) > self.room:
            data = data[:self.room]
            data = (data if data.endswith(b"\n") or not data else data + b"\n") + TRUNCATED
            self.truncated = True
        self.room -= len(data)
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            self.truncated = True  # the log file is gone or full: stop trying
