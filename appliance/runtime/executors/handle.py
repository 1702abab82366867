"""One running task of the local executor, seen from the server: ``TaskHandle``, and the reader thread that
forwards the worker's messages, enforces the wall-clock limit and turns the zygote's report into the one exit
message.

The zygote client (forkserver.py) moves a handle through its public transitions — ``spawned``,
``spawn_failed``, ``exited`` — and the executor (local.py) starts its reader with ``watch``; the handle's own
state is touched only here.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import one_line
from appliance.runtime import tasklog
from appliance.runtime.executors.base import (
    ExitMessage,
    Message,
    OnMessage,
    ProgressMessage,
    Usage,
    failed,
    progress_of,
)
from appliance.runtime.sandbox import Limits

log = logging.getLogger("appliance.runtime.executors.local")
PROGRESS_EVERY_S = 0.1
LOG_LINES_CAP = 1 << 20
MAX_LINE = 16 << 20  # a worker that writes a larger message without a newline is broken or hostile


@dataclass(frozen=True)
class LocalRun:
    """One process of the local executor: a task in a workdir on this machine."""
    task_id: str
    renderer: str
    input: dict[str, Any]
    workdir: Path
    log_path: Path
    limits: Limits
    env: dict[str, str] = field(default_factory=dict)  # added to the sandbox's environment (TaskSpec.device_env)
    gpu: int | None = None  # its device nodes are bound into the sandbox only when granted


class TaskHandle:
    """One running task. ``kill`` is safe from any thread and at any time; the first reason wins."""

    def __init__(self, spec: LocalRun, on_message: OnMessage) -> None:
        self.task_id, self.pid = spec.task_id, 0
        self.uid: int | None = None
        self.remote_kill: Callable[[int], None] | None = None  # via the launcher's zygote (another uid's worker)
        self._spec, self._on_message = spec, on_message
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._spawned = threading.Event()
        self._spawn_error: str | None = None
        self._reason: str | None = None
        self._exit: dict[str, Any] | None = None  # the zygote's "exited" report, or {"lost": True}
        self._ended: dict[str, Any] | None = None  # the worker's word that the task's processes are gone, with a result
        self._result: dict[str, Any] | None = None
        self._has_result = False
        self._error: str | None = None
        self._wake_r, self._wake_w = os.pipe()
        self.done = threading.Event()  # set after the exit message was delivered
        self._progress_at = 0.0  # when progress was last passed on
        self._progress: ProgressMessage | None = None  # the latest progress not yet passed on
        self._log_bytes = 0

    def kill(self, reason: str = "cancelled") -> None:
        with self._lock:
            if self._exit is not None or self._ended is not None or self._reason is not None or not self.pid:
                return  # (after "ended" the worker may be reaped any moment: its pid is no longer ours to kill)
            self._reason = reason
            if self.remote_kill is not None:
                self.remote_kill(self.pid)
                return
            # The pid itself too: a worker killed before its setsid() has no group yet (and no children).
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError):  # exited meanwhile: its report is on the way
                    kill(self.pid, signal.SIGKILL)

    # ---- transitions, by the zygote client (forkserver.py) ---------------------------------------------------
    def spawned(self, pid: int, uid: int | None, remote_kill: Callable[[int], None] | None) -> None:
        """The zygote forked the worker: from now on ``kill`` reaches it."""
        self.pid, self.uid, self.remote_kill = pid, uid, remote_kill
        self._spawned.set()

    def spawn_failed(self, error: str) -> None:
        self._spawn_error = error
        self._spawned.set()

    def wait_spawned(self, timeout: float) -> bool:
        """True once the zygote answered (spawned or spawn_failed); False after ``timeout`` seconds without."""
        return self._spawned.wait(timeout)

    @property
    def spawn_error(self) -> str | None:
        return self._spawn_error

    def exited(self, report: dict[str, Any]) -> None:
        """The zygote reaped the worker (its status and usage), or lost it ({"lost": True})."""
        with self._lock:  # the reader closes the wake pipe under this lock, never between these two lines
            if self._exit is None and self._wake_w >= 0:
                self._exit = report
                os.write(self._wake_w, b"x")

    # ---- the executor's side (local.py) -----------------------------------------------------------------------
    def watch(self, pipe_r: int) -> None:
        """Start the reader thread on the worker's pipe (it closes ``pipe_r`` and delivers the exit message)."""
        threading.Thread(target=_watch, args=(self, pipe_r), name=f"task-{self.task_id}", daemon=True).start()

    def close_wake_pipe(self) -> None:
        """A spawn that failed before the reader started: the pipe the reader would have closed."""
        self._close_wake_pipe()

    def _close_wake_pipe(self) -> None:
        with self._lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def _deliver(self, message: Message) -> None:
        try:
            self._on_message(message)
        except Exception:  # a broken callback must not kill the task's reader
            log.exception("on_message failed for task %s", self.task_id)


# ---- the reader/watchdog thread of one task -------------------------------------------------------------------
def _watch(handle: TaskHandle, pipe_r: int) -> None:
    try:
        _pump(handle, pipe_r)
        message = _final_message(handle)
    except Exception as exc:  # never leave the caller without its exit message
        log.exception("reader of task %s failed", handle.task_id)
        message = failed(f"executor error: {one_line(exc)}")
    finally:
        os.close(pipe_r)
        handle._close_wake_pipe()
    _note_in_log(handle, message)
    tasklog.trim(handle._spec.log_path)
    if handle._progress is not None:
        handle._deliver(handle._progress)
    handle._deliver(message)
    handle.done.set()


def _pump(handle: TaskHandle, pipe_r: int) -> None:
    """Forward messages until the zygote reports the exit; enforce the wall-clock limit meanwhile."""
    os.set_blocking(pipe_r, False)
    poller = select.poll()
    poller.register(pipe_r, select.POLLIN)
    poller.register(handle._wake_r, select.POLLIN)
    wall = handle._spec.limits.wall_seconds
    deadline, buf, pipe_open = handle._started + wall, bytearray(), True
    while handle._exit is None and handle._ended is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 and handle._reason is None:
            handle.kill(f"timed out after {wall:g} s")
        timeout = None if handle._reason is not None else max(0.0, remaining) * 1000
        for fd, _ in poller.poll(timeout):
            if fd == handle._wake_r:
                os.read(fd, 64)
            elif pipe_open and not _read_available(handle, pipe_r, buf):
                poller.unregister(pipe_r)
                pipe_open = False
    if pipe_open:  # what the worker wrote just before it exited; escaped holders of the pipe are not awaited
        _read_available(handle, pipe_r, buf)


def _read_available(handle: TaskHandle, fd: int, buf: bytearray) -> bool:
    """Read until the pipe would block; False at end of file."""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        buf += chunk
        if b"\n" in chunk:  # split only then: a large result arrives in many chunks
            *lines, rest = buf.split(b"\n")
            buf[:] = rest
            for line in lines:
                _handle_line(handle, bytes(line))
        if len(buf) > MAX_LINE:
            buf.clear()
            handle.kill("protocol error: a worker message over 16 MB")


def _handle_line(handle: TaskHandle, raw: bytes) -> None:
    try:
        message = json.loads(raw)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        message = {"type": "log", "text": raw.decode(errors="replace")[:2000]}
    kind = message.get("type")
    if kind == "result":
        handle._result, handle._has_result = message.get("result"), True
    elif kind == "error":
        handle._error = str(message.get("error"))
    elif kind == "progress":
        checked = progress_of(message)  # the worker's line, as it sent it: only a number in 0..1 goes on
        if checked is not None:
            _progress(handle, checked)
    elif kind == "log":
        _log_line(handle, str(message.get("text", ""))[:2000])
    elif kind == "ended" and handle.remote_kill is None:
        _ended(handle, message)


def _ended(handle: TaskHandle, message: dict[str, Any]) -> None:
    """The worker reaped the task's init after a result (task_worker.Worker._all_gone_with_a_result): finish now."""
    try:
        report = {"status": 0, "cpu_s": float(message["cpu_s"]), "maxrss_kb": int(message["maxrss_kb"])}
    except (KeyError, TypeError, ValueError):
        return  # not the worker's word after all: wait for the zygote's report
    with handle._lock:
        if handle._exit is None:
            handle._ended = report


def _progress(handle: TaskHandle, message: ProgressMessage) -> None:
    """Coalesced: at most PROGRESS_EVERY_S apart, the latest wins — 200,000 lines on the pipe become a few
    callbacks on the server's event loop."""
    now = time.monotonic()
    if now - handle._progress_at >= PROGRESS_EVERY_S:
        handle._progress_at, handle._progress = now, None
        handle._deliver(message)
    else:
        handle._progress = message


def _log_line(handle: TaskHandle, text: str) -> None:
    """Renderer log lines go to the task's log file, capped so a flood cannot fill the disk."""
    if handle._log_bytes > LOG_LINES_CAP:
        return
    line = text.rstrip("\n") + "\n"
    handle._log_bytes += len(line)
    if handle._log_bytes > LOG_LINES_CAP:
        line = "[executor] further log lines dropped (over 1 MB)\n"
    try:
        with open(handle._spec.log_path, "a") as f:
            f.write(line)
    except OSError:
        pass


def _final_message(handle: TaskHandle) -> ExitMessage:
    report = handle._exit or handle._ended or {"lost": True}
    if handle._reason is not None:
        return _failure(handle._reason, report)
    if report.get("lost"):
        if handle._has_result:
            return _success(handle._result, report)
        if handle._error:
            return _failure(handle._error, report)
        # the appliance's own fork server died (the task's uid cannot signal it): no fault of the task, which
        # the scheduler runs again (as after a crash of the server), resuming what it had finished
        return _with_usage(failed("worker lost: the zygote process died", retry=True), report)
    status = report["status"]
    if os.WIFSIGNALED(status):
        return _failure(_signal_error(os.WTERMSIG(status), report, handle._spec.limits), report)
    code = os.WEXITSTATUS(status)
    if code == 0 and handle._has_result:
        return _success(handle._result, report)
    return _failure(handle._error or f"worker exited with status {code} without a result", report)


def _signal_error(sig: int, report: dict[str, Any], limits: Limits) -> str:
    if report.get("killed_by") == "memory":  # the task's memory cgroup recorded an OOM kill
        return f"memory limit exceeded (limit {limits.mem_mb} MB)"
    if report.get("killed_by") == "disk":  # the zygote saw deleted-but-open files past the disk quota
        return f"disk quota exceeded (limit {limits.disk_mb} MB)"
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and report.get("cpu_s", 0) >= limits.cpu_seconds):
        return f"cpu time limit exceeded (limit {limits.cpu_seconds} s)"
    if sig == signal.SIGXFSZ:
        return f"file size limit exceeded (limit {limits.fsize_mb} MB)"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    return f"worker crashed ({name})"


def _with_usage(message: ExitMessage, report: dict[str, Any]) -> ExitMessage:
    if "cpu_s" in report:
        usage: Usage = {"cpu_s": report["cpu_s"], "max_rss_mb": round(report["maxrss_kb"] / 1024, 1)}
        message["usage"] = usage
    return message


def _success(result: Any, report: dict[str, Any]) -> ExitMessage:
    """The renderer's result; one that is not a JSON object names no files (as local._take_outputs says)."""
    if not isinstance(result, dict):
        return _failure("renderer returned no result files", report)
    return _with_usage({"type": "exit", "ok": True, "result": result}, report)


def _failure(error: str, report: dict[str, Any]) -> ExitMessage:
    return _with_usage(failed(error), report)


def _note_in_log(handle: TaskHandle, message: ExitMessage) -> None:
    outcome = "ok" if message["ok"] else message.get("error", "")
    try:
        with open(handle._spec.log_path, "a") as f:
            f.write(f"[executor] task {handle.task_id} exit: {outcome}\n")
    except OSError:
        pass
