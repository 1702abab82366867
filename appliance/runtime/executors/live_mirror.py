"""A render's live stream (renderers/manim_live.py), mirrored out of the task's own filesystem into the host
workdir as it grows: the task's worker calls ``LiveMirror.tick`` with preview.jpg's, every half second, and once
more when the task has ended (executors/task_worker.py). The dashboard serves the host copy (api/dashboard/live.py)
and a re-queued attempt resumes from it (renderers/manim_segments.py's reuse, runtime/scheduler.py's recover).

Everything in the task's ``live/`` folder is written by untrusted code, so only what the index names is copied,
and only as it should be: the folder and each file opened without following a link, a regular file, names of the
exact form ``init.mp4`` / ``segNNNNN.m4s``, listed in order from 0, each file at most MAX_FILE bytes and all
together at most MAX_TOTAL (counted as read, not as stat says: a file that grows while it is copied is cut off
and refused), at most MAX_SEGMENTS of them. A segment is copied once, when the index first lists it (the renderer
never rewrites one). The host's ``index.json`` is written here, not copied: rebuilt from the validated fields of
the segments mirrored so far. Whatever is refused stops the mirror for the rest of the task; it never fails a task.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from typing import Any

LIVE_DIR = "live"  # renderers/manim_live.py's LIVE_DIR (not imported: renderers pull in numpy)
INDEX = "index.json"
INIT = "init.mp4"
SEGMENT = re.compile(r"seg(\d{5})\.m4s")
MAX_INDEX = 1 << 20
MAX_FILE = 64 << 20
MAX_TOTAL = 1 << 30
MAX_SEGMENTS = 5000
OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CODEC = re.compile(r"avc1\.[0-9a-f]{6}")
ADDRESS = re.compile(r"[0-9a-f]{1,128}")


class Refused(Exception):
    """What the task wrote is not a live stream: the mirror stops."""


def read_bounded(dir_fd: int, name: str, limit: int) -> bytes:
    """A regular file's bytes, never through a link, at most ``limit`` (more is Refused, whatever stat said)."""
    try:
        fd = os.open(name, OPEN, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise Refused(f"{name} is a link or a socket") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"{name} is not a regular file")
        if info.st_size > limit:
            raise Refused(f"{name} is over {limit} bytes")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise Refused(f"{name} grew over {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_atomic(dir_fd: int, name: str, data: bytes) -> None:
    tmp = f".{name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def clean_index(raw: bytes) -> dict[str, Any]:
    """The task's index, its fields checked one by one (a forged one gives nothing but a refusal)."""
    try:
        index = json.loads(raw)
    except (ValueError, RecursionError):
        raise Refused("the index is not JSON") from None
    if not isinstance(index, dict) or not isinstance(index.get("segments"), list):
        raise Refused("the index has no segments")
    fps, codec = index.get("fps"), index.get("codec")
    if type(fps) is not int or not 1 <= fps <= 240 or not isinstance(codec, str) or not CODEC.fullmatch(codec):
        raise Refused("the index's fps or codec is malformed")
    if index.get("init") != INIT or len(index["segments"]) > MAX_SEGMENTS:
        raise Refused("the index names another init segment, or too many segments")
    segments, start = [], 0
    for number, seg in enumerate(index["segments"]):
        if not isinstance(seg, dict):
            raise Refused("a segment is not an object")
        name, frames, address, ms = seg.get("name"), seg.get("frames"), seg.get("address"), seg.get("ms")
        match = SEGMENT.fullmatch(name) if isinstance(name, str) else None
        if match is None or int(match.group(1)) != number:
            raise Refused(f"segment {number} is misnamed")
        if type(frames) is not int or not 1 <= frames <= 1 << 24 or type(ms) is not int or ms < 0 or not (
                address is None or isinstance(address, str) and ADDRESS.fullmatch(address)):
            raise Refused(f"segment {number}'s fields are malformed")
        segments.append({"name": name, "piece": number, "frames": frames, "start": start,
                         "duration": round(frames / fps, 6), "address": address, "ms": ms,
                         "reused": seg.get("reused") is True})
        start += frames
    return {"fps": fps, "codec": codec, "init": INIT, "done": index.get("done") is True, "segments": segments}


class LiveMirror:
    """The state of one task's mirror: what was copied, how much, and whether it stopped."""

    def __init__(self) -> None:
        self.copied: list[dict[str, Any]] = []
        self.total = 0
        self.seen: tuple[int, int, int] | None = None
        self.stopped: str | None = None

    def tick(self, task_fd: int, host_fd: int) -> None:
        if self.stopped is not None:
            return
        try:
            self._tick(task_fd, host_fd)
        except Refused as exc:
            self.stopped = str(exc)
        except OSError:  # not there yet, or a race with the renderer's rename: the next tick sees
            pass

    def _tick(self, task_fd: int, host_fd: int) -> None:
        try:
            src = os.open(LIVE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=task_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Refused("live is not a folder") from None
            return  # no live stream (yet)
        try:
            info = os.stat(INDEX, dir_fd=src, follow_symlinks=False)
            seen = (info.st_ino, info.st_mtime_ns, info.st_size)
            if seen == self.seen:
                return
            index = clean_index(read_bounded(src, INDEX, MAX_INDEX))
            self.seen = seen
            new = index["segments"][len(self.copied):]
            dst = self._host_dir(host_fd)
            try:
                if not self.copied:
                    self._copy(src, INIT, dst)
                for segment in new:
                    self._copy(src, segment["name"], dst)
                    self.copied.append(segment)
                write_atomic(dst, INDEX, json.dumps({**index, "segments": self.copied}).encode())
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def _copy(self, src: int, name: str, dst: int) -> None:
        data = read_bounded(src, name, min(MAX_FILE, MAX_TOTAL - self.total))
        self.total += len(data)
        write_atomic(dst, name, data)

    @staticmethod
    def _host_dir(host_fd: int) -> int:
        try:
            os.mkdir(LIVE_DIR, 0o755, dir_fd=host_fd)
        except FileExistsError:
            pass
        return os.open(LIVE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=host_fd)
