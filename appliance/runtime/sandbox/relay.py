"""The worker's relay: what the task may say reaches the server's pipe only through here.

The renderer (untrusted code included) writes JSON lines on its own pipe and its output on another; the worker
reads both. Progress and log lines are rebuilt from their fields and forwarded at once; the last result or
error line is kept and passed on only once the renderer has exited; anything else is dropped. The output goes
to the log file up to its cap. Meanwhile the relay watches the workdir's growth and the cgroup's OOM counter
and kills the task (through its init) when either is over, with a readable reason.
"""
from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from appliance.runtime.sandbox.cgroups import parse_cpu_seconds, parse_oom_kills
from appliance.runtime.sandbox.quota import CappedLog, DiskWatch, FsWatch

MAX_LINE = 16 << 20  # as the server: a longer message without a newline is broken or hostile
STATUS = struct.Struct("=i")
DRAIN_S = 1.0  # after the renderer exited: what is still in the pipes (its leftovers die with its namespace)


def sanitize(raw: bytes) -> dict[str, Any] | None:
    """The message rebuilt from the fields the protocol knows, or None."""
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    kind = message.get("type")
    if kind == "progress":
        try:
            fraction = float(message.get("fraction"))  # type: ignore[arg-type]  # None: TypeError, refused
        except (TypeError, ValueError):
            return None
        phase = message.get("phase")
        return None if math.isnan(fraction) else {
            "type": "progress", "fraction": round(min(1.0, max(0.0, fraction)), 4),
            "phase": None if phase is None else str(phase)[:200]}
    if kind == "log":
        return {"type": "log", "text": str(message.get("text"))[:2000]}
    if kind == "result":
        return {"type": "result", "result": message.get("result")}
    if kind == "error":
        return {"type": "error", "error": str(message.get("error"))[:2000]}
    return None


def write_line(out: BinaryIO | None, message: dict[str, Any]) -> None:
    if out is None:
        return
    try:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()
    except OSError:
        pass  # the executor is gone; the exit status still tells the story


class Relay:
    """``run`` returns when the renderer's status arrived (or its init died) and the pipes are drained."""

    def __init__(self, out: BinaryIO, messages: int, output: int, status: int, log: CappedLog,
                 disk: DiskWatch | FsWatch | None, oom_fd: int | None, mem_mb: int, cpu: tuple[int, int] | None = None
                 ) -> None:
        self.out, self.log, self.disk, self.oom_fd, self.mem_mb = out, log, disk, oom_fd, mem_mb
        self.cpu = cpu  # (an fd of the cgroup's CPU counter, the task's CPU seconds): all its processes together
        self.fds = {messages: self._on_message, output: self.log.write, status: self._on_status}
        self.status_fd, self.buf, self.status_bytes = status, bytearray(), b""
        self.oom_base = self._oom_kills()
        self.final: dict[str, Any] | None = None  # the renderer's last result or error line
        self.reason: str | None = None  # why the relay killed the task
        self.status_done = False

    @property
    def status(self) -> int | None:
        """The renderer's wait status; None when its init died without reporting it."""
        return STATUS.unpack(self.status_bytes)[0] if len(self.status_bytes) == STATUS.size else None

    def run(self, kill_task: Callable[[], None]) -> None:
        poller = select.poll()
        for fd in self.fds:
            poller.register(fd, select.POLLIN)
        drain_until, killed = math.inf, False
        while self.fds and time.monotonic() < drain_until:
            for fd, _ in poller.poll(500 if drain_until == math.inf else 50):
                data = os.read(fd, 1 << 16)
                if data:
                    self.fds[fd](data)
                else:
                    poller.unregister(fd)
                    del self.fds[fd]
                    self.status_done |= fd == self.status_fd
            if self.status_done and drain_until == math.inf:
                drain_until = time.monotonic() + DRAIN_S
            if self.reason is None:
                self.reason = self._over_limit(final=False)
            if self.reason is not None and not killed:
                kill_task()
                killed = True
        self.reason = self.reason or self._over_limit(final=True)

    def _on_status(self, data: bytes) -> None:
        self.status_bytes += data
        self.status_done = len(self.status_bytes) >= STATUS.size

    def _on_message(self, data: bytes) -> None:
        self.buf += data
        if b"\n" in data:
            *lines, rest = self.buf.split(b"\n")
            self.buf[:] = rest
            for line in lines:
                message = sanitize(bytes(line))
                if message is None:
                    continue
                if message["type"] in ("result", "error"):
                    self.final = message
                else:
                    write_line(self.out, message)
        if len(self.buf) > MAX_LINE:
            self.buf.clear()
            self.reason = self.reason or "protocol error: a renderer message over 16 MB"

    def _oom_kills(self) -> int:
        if self.oom_fd is None:
            return 0
        try:
            return parse_oom_kills(os.pread(self.oom_fd, 4096, 0).decode(errors="replace"))
        except OSError:
            return 0

    def _over_limit(self, final: bool) -> str | None:
        if self._oom_kills() > self.oom_base:
            return f"memory limit exceeded (limit {self.mem_mb} MB)"
        if self.disk is not None and (final or self.disk.due()) and self.disk.exceeded():
            return self.disk.error()
        if self.cpu is not None and self._cpu_seconds() > self.cpu[1]:
            return f"cpu time limit exceeded (limit {self.cpu[1]} s)"  # every process of the task together
        return None

    def _cpu_seconds(self) -> float:
        assert self.cpu is not None
        try:
            return parse_cpu_seconds(os.pread(self.cpu[0], 4096, 0).decode(errors="replace"))
        except OSError:
            return 0.0
