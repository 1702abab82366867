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
    """Kernel-side copy (a reflink where the filesystem has them), read/write where it refuses."""
    try:
        while os.copy_file_range(src, out, COPY_CHUNK):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    os.lseek(src, 0, os.SEEK_SET)
    os.lseek(out, 0, os.SEEK_SET)
    os.ftruncate(out, 0)
    with open(src, "rb", closefd=False) as reader, open(out, "wb", closefd=False) as writer:
        shutil.copyfileobj(reader, writer, COPY_CHUNK)


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a file"


def discard(staging: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(staging)
