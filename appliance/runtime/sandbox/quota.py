"""Disk and log quotas, worded (and, where the kernel cannot, enforced) by the task's worker (trusted, outside the
task's PID namespace).

Where each task has a filesystem of its own (taskfs.py) the kernel enforces blocks and inodes, and ``FsWatch``
only tells, from statvfs, when the task went past its quota so the task fails with a readable reason.

Otherwise (``DiskWatch``, the fallback) the workdir is a bind of the host's, so its usage is measured rather
than capped by a filesystem: a walk every half second (less often when a walk is slow, so
a task with many files cannot make its worker spend its time walking), plus one when the task ends. What the
walk counts: allocated blocks (``fallocate`` included), each inode once, and the number of files (an inode
flood starves every other task of the filesystem's inodes). Files the task deleted but keeps open are invisible
to any walk: the zygote (root) counts those through ``/proc/PID/fd`` of the task's processes (``hidden_bytes``;
the worker, the task's uid, may not read another non-dumpable process's fds).
Not a kernel quota: between two walks a task can overshoot by what it writes in half a second.
"""
from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable

from appliance.runtime.sandbox.taskfs import FULL_BYTES

TRUNCATED = b"[log truncated]\n"


MAX_FILES = 20_000  # files (and folders) a task may create in its workdir


def usage(top: str) -> tuple[int, int, set[tuple[int, int]]]:
    """(allocated bytes, entries, the inodes seen) under ``top``: each inode once, symlinks never followed."""
    seen: set[tuple[int, int]] = set()
    total, count, stack = 0, 0, [top]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except PermissionError:  # the task hid a directory from its own uid: the owner may open it again
            os.chmod(directory, 0o700, follow_symlinks=False)
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        count += len(entries)
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
    return total, count, seen


def usage_bytes(top: str) -> int:
    return usage(top)[0]


def hidden_bytes(pids: list[int], seen: set[tuple[int, int]], device: int) -> int:
    """Blocks of files the task's processes hold open after deleting them (``/proc/PID/fd/N -> … (deleted)``)
    on the workdir's filesystem (``device``; the task's tmpfs /tmp is its memory's business), each inode once
    and none the walk already counted."""
    total = 0
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                if not os.readlink(path).endswith(" (deleted)"):
                    continue
                info = os.stat(path)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_dev == device and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def too_many_files(limit: int) -> str:
    return f"disk quota exceeded: too many files in the workdir (limit {limit})"


class FsWatch:
    """The task's own filesystem: the kernel stops it a little past ``limit_mb`` (the image's size) and
    ``max_files``; past the quota itself the relay kills the task with the reason. Blocks of deleted files still
    open count (the kernel frees them at the last close), and statvfs costs microseconds: asked on every wake of
    the relay. A full filesystem (taskfs.FULL_BYTES: ENOSPC can leave up to ~2 MB free) is past the quota too,
    whatever the count says: the image has that much room beyond it. ``tick`` is called at most every ``TICK_S``
    (the worker mirrors the live preview with it)."""

    TICK_S = 0.5

    def __init__(self, top: str, limit_mb: int, max_files: int = MAX_FILES,
                 tick: Callable[[], None] | None = None) -> None:
        self.top, self.limit_mb, self.max_files, self.tick = top, limit_mb, max_files, tick
        info = os.statvfs(self.top)
        self.base_bytes, self.base_files = self._used(info)  # the copied inputs do not count
        self.tick_at = time.monotonic() + self.TICK_S
        self.problem = ""

    @staticmethod
    def _used(info: os.statvfs_result) -> tuple[int, int]:
        return (info.f_blocks - info.f_bfree) * info.f_frsize, info.f_files - info.f_ffree

    def due(self) -> bool:
        return True

    def exceeded(self) -> bool:
        if self.tick is not None and time.monotonic() >= self.tick_at:
            self.tick_at = time.monotonic() + self.TICK_S
            self.tick()
        info = os.statvfs(self.top)
        used, files = self._used(info)
        if files - self.base_files > self.max_files or info.f_favail == 0:
            self.problem = too_many_files(self.max_files)
        elif used - self.base_bytes > self.limit_mb << 20 or info.f_bavail * info.f_frsize < FULL_BYTES:
            self.problem = f"disk quota exceeded (limit {self.limit_mb} MB)"
        return bool(self.problem)

    def error(self) -> str:
        return self.problem or f"disk quota exceeded (limit {self.limit_mb} MB)"


class DiskWatch:
    """How much the workdir grew since the task started, against ``limit_mb`` and ``max_files``."""

    def __init__(self, top: str, limit_mb: int, max_files: int = MAX_FILES) -> None:
        self.top, self.limit_mb, self.max_files = top, limit_mb, max_files
        self.baseline, self.files_baseline, _ = usage(top)  # the staged inputs do not count
        self.next_at = time.monotonic() + 0.5
        self.problem = ""

    def exceeded(self) -> bool:
        started = time.monotonic()
        try:
            total, files, _ = usage(self.top)
        except OSError:
            total, files = self.baseline, self.files_baseline  # e.g. a folder that vanished mid-walk: next walk
        spent = time.monotonic() - started
        self.next_at = time.monotonic() + max(0.5, 4 * spent)
        if files - self.files_baseline > self.max_files:
            self.problem = too_many_files(self.max_files)
        elif total - self.baseline > self.limit_mb << 20:
            self.problem = f"disk quota exceeded (limit {self.limit_mb} MB)"
        return bool(self.problem)

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def error(self) -> str:
        return self.problem or f"disk quota exceeded (limit {self.limit_mb} MB)"


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
