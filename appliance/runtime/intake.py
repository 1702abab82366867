"""Outputs are taken, never opened by path.

A task's workdir belongs to untrusted code until the task is over, and what it leaves there is a claim: a name in
its result may be a symbolic link to a host file, a FIFO that blocks whoever opens it, a socket or a device. The
server (often root) therefore never follows a task's path. Each claimed output is opened relative to the workdir's
own descriptor with ``O_NOFOLLOW | O_NONBLOCK`` (a link fails, a FIFO opens without waiting for a writer), checked
with ``fstat`` to be a regular file, and copied by descriptor into a staging folder the server owns. Everything
after that — verification, the artifact store — reads the server's copy, which nothing else can change.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

from appliance.runtime.artifacts import safe_name

OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
COPY_CHUNK = 8 << 20


class Refused(ValueError):
    """An output that is not a plain file in the workdir: the task's result is refused with this reason."""


def take(workdir: Path, names: dict[str, str], staging: Path) -> dict[str, Path]:
    """Copy each claimed output (role -> file name in ``workdir``) into ``staging``; role -> the copy's path.

    ``staging`` is created here, owned by the caller and private (0700); the caller removes it."""
    staging.mkdir(mode=0o700)
    dir_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        taken: dict[str, Path] = {}
        copies: dict[str, Path] = {}  # one copy per file name, however many roles claim it
        for role, name in names.items():
            name = safe_name(name)
            if name not in copies:
                copy_out(dir_fd, name, staging_fd, name, 0o600)
                copies[name] = staging / name
            taken[role] = copies[name]
        return taken
    finally:
        os.close(dir_fd)
        os.close(staging_fd)


def copy_out(dir_fd: int, name: str, dest_fd: int, dest_name: str, mode: int = 0o644,
             max_bytes: int | None = None) -> None:
    """Copy the regular file ``name`` of ``dir_fd`` (never a link, FIFO, socket or device: Refused) to a new file
    ``dest_name`` of ``dest_fd``. Also the task's worker's way out of the task's own filesystem
    (executors/task_worker.py), so both sides refuse alike. ``max_bytes``: a larger file is Refused."""
    try:
        src = os.open(name, OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(f"renderer output {name} is a symbolic link") from None
        if exc.errno == errno.ENXIO:  # open(2) of a Unix socket
            raise Refused(f"renderer output {name} is not a regular file (a socket)") from None
        if exc.errno == errno.ENOENT:
            raise Refused(f"renderer output {name} is missing") from None
        raise Refused(f"renderer output {name} cannot be opened ({errno.errorcode.get(exc.errno or 0, exc.errno)})") \
            from None
    try:
        info = os.fstat(src)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"renderer output {name} is not a regular file ({_kind(info.st_mode)})")
        if max_bytes is not None and info.st_size > max_bytes:
            raise Refused(f"renderer output {name} is over {max_bytes} bytes")
        out = os.open(dest_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                      dir_fd=dest_fd)
        try:
            copy_fd(src, out)
        finally:
            os.close(out)
    finally:
        os.close(src)


def copy_fd(src: int, out: int) -> None:
    """Copy ``src`` into the empty ``out``: its data extents, kernel-side (a reflink where the filesystem has
    them), read/write where the kernel refuses. Holes stay holes: a task's sparse file of gigabytes of apparent
    size (``ftruncate``) costs its blocks on the host too, never gigabytes of zeros written and read."""
    size = os.fstat(src).st_size
    position = 0
    while position < size:
        try:
            start = os.lseek(src, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole from here
                break
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            start = position  # no SEEK_DATA here: all of it is data
        end = min(size, _hole_after(src, start, size))
        _copy_range(src, out, start, end)
        position = end
    os.ftruncate(out, size)  # a trailing hole


def _hole_after(fd: int, start: int, size: int) -> int:
    try:
        return os.lseek(fd, start, os.SEEK_HOLE)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return size
        raise


def _copy_range(src: int, out: int, start: int, end: int) -> None:
    offset = start
    try:
        while offset < end:
            copied = os.copy_file_range(src, out, min(COPY_CHUNK, end - offset), offset, offset)
            if copied == 0:  # the file shrank under us: what is left reads as nothing
                return
            offset += copied
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while offset < end:
        chunk = os.pread(src, min(COPY_CHUNK, end - offset), offset)
        if not chunk:
            return
        written = 0
        while written < len(chunk):
            written += os.pwrite(out, chunk[written:], offset + written)
        offset += len(chunk)


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a file"


def discard(staging: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(staging)
