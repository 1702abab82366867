"""One server per data dir: an exclusive lock taken before the database is touched.

A second `appliance serve` on the same data dir used to run crash recovery on the live database (re-queueing a
rendering job, which then rendered twice and was billed twice) before it failed to bind its port. Now it stops
at once, naming the server that holds the lock. The lock is the kernel's (flock), so it is released when the
holder exits in any way, SIGKILL included — a stale lock file never blocks a restart.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from appliance.errors import ApplianceError


class DataDirBusy(ApplianceError):
    status, code = 409, "DATA_DIR_BUSY"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "appliance.lock"
        self._fd: int | None = None

    def acquire(self, owner: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DataDirBusy(f"data dir {self.path.parent} is in use by {holder}; stop it first "
                              "or give this server another --data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{owner} (pid {os.getpid()})".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
