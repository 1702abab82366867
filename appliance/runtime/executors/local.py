"""The local executor: one task in one sandboxed OS process, forked by a warm zygote.

The scheduler sees the executor seam (``base.Executor``): ``submit(spec, on_message) -> TaskHandle``. Here that
means: a fresh workdir under ``work/``, input artifacts linked into it, a fork of the warm zygote, messages
read from the worker's pipe on a thread of its own, and — after a successful exit — the output files taken
into the artifact store and the workdir removed, all on that thread (never on the server's event loop).
``spawn(run, on_message)`` is the lower level: one process in a given workdir. The worker processes never
touch the database: they report through their pipe and their workdir.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import one_line
from appliance.runtime import intake, sandbox, tasklog
from appliance.runtime.artifacts import Artifacts
from appliance.runtime.executors.base import OnMessage, TaskSpec
from appliance.runtime.executors.forkserver import ZygoteClient
from appliance.runtime.sandbox import Limits
from appliance.runtime.verify import declared

__all__ = ["Limits", "LocalExecutor", "LocalRun", "TaskHandle", "TaskSpec"]

log = logging.getLogger(__name__)
# (renderer, task input, role -> the server's copy of the output) -> a reason to refuse the result, or None
Verifier = Callable[[str, dict, dict[str, Path]], "str | None"]
PROGRESS_EVERY_S = 0.1
LOG_LINES_CAP = 1 << 20
MAX_LINE = 16 << 20  # a worker that writes a larger message without a newline is broken or hostile


@dataclass(frozen=True)
class LocalRun:
    """One process of the local executor: a task in a workdir on this machine."""
    task_id: str
    renderer: str
    input: dict
    workdir: Path
    log_path: Path
    limits: Limits
    env: dict[str, str] = field(default_factory=dict)  # added to the sandbox's environment (TaskSpec.device_env)
    gpu: int | None = None  # its device nodes are bound into the sandbox only when granted


class TaskHandle:
    """One running task. ``kill`` is safe from any thread and at any time; the first reason wins."""

    def __init__(self, spec: LocalRun, on_message: OnMessage) -> None:
        self.task_id, self.pid, self.uid = spec.task_id, 0, None
        self.remote_kill: Callable[[int], None] | None = None  # via the launcher's zygote (another uid's worker)
        self._spec, self._on_message = spec, on_message
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._spawned = threading.Event()
        self._spawn_error: str | None = None
        self._reason: str | None = None
        self._exit: dict | None = None  # the zygote's "exited" report, or {"lost": True}
        self._ended: dict | None = None  # the worker's word that the task's processes are gone, with a result
        self._result: dict | None = None
        self._has_result = False
        self._error: str | None = None
        self._wake_r, self._wake_w = os.pipe()
        self.done = threading.Event()  # set after the exit message was delivered
        self._progress_at = 0.0  # when progress was last passed on
        self._progress: dict | None = None  # the latest progress not yet passed on
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

    def _exited(self, report: dict) -> None:
        with self._lock:  # the reader closes the wake pipe under this lock, never between these two lines
            if self._exit is None and self._wake_w >= 0:
                self._exit = report
                os.write(self._wake_w, b"x")

    def _close_wake_pipe(self) -> None:
        with self._lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def _deliver(self, message: dict) -> None:
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
        message = {"type": "exit", "ok": False, "error": f"executor error: {one_line(exc)}"}
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
        _progress(handle, message)
    elif kind == "log":
        _log_line(handle, str(message.get("text", ""))[:2000])
    elif kind == "ended" and handle.remote_kill is None:
        _ended(handle, message)


def _ended(handle: TaskHandle, message: dict) -> None:
    """The worker reaped the task's init after a result (task_worker.Worker._all_gone_with_a_result): finish now."""
    try:
        report = {"status": 0, "cpu_s": float(message["cpu_s"]), "maxrss_kb": int(message["maxrss_kb"])}
    except (KeyError, TypeError, ValueError):
        return  # not the worker's word after all: wait for the zygote's report
    with handle._lock:
        if handle._exit is None:
            handle._ended = report


def _progress(handle: TaskHandle, message: dict) -> None:
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


def _final_message(handle: TaskHandle) -> dict:
    report = handle._exit or handle._ended or {"lost": True}
    if handle._reason is not None:
        return _failure(handle._reason, report)
    if report.get("lost"):
        if handle._has_result:
            return {"type": "exit", "ok": True, "result": handle._result}
        return _failure(handle._error or "worker lost: the zygote process died", report)
    status = report["status"]
    if os.WIFSIGNALED(status):
        return _failure(_signal_error(os.WTERMSIG(status), report, handle._spec.limits), report)
    code = os.WEXITSTATUS(status)
    if code == 0 and handle._has_result:
        return {"type": "exit", "ok": True, "result": handle._result, **_usage(report)}
    return _failure(handle._error or f"worker exited with status {code} without a result", report)


def _signal_error(sig: int, report: dict, limits: Limits) -> str:
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


def _usage(report: dict) -> dict:
    if "cpu_s" not in report:
        return {}
    return {"usage": {"cpu_s": report["cpu_s"], "max_rss_mb": round(report["maxrss_kb"] / 1024, 1)}}


def _failure(error: str, report: dict) -> dict:
    return {"type": "exit", "ok": False, "error": error, **_usage(report)}


def _note_in_log(handle: TaskHandle, message: dict) -> None:
    outcome = "ok" if message["ok"] else message["error"]
    try:
        with open(handle._spec.log_path, "a") as f:
            f.write(f"[executor] task {handle.task_id} exit: {outcome}\n")
    except OSError:
        pass


# ---- the executor ---------------------------------------------------------------------------------------------
class LocalExecutor:
    def __init__(self, *, preload: Sequence[str] = ("numpy", "PIL", "manim"), sandbox: bool = True,
                 extra_readonly: Sequence[Path] = (), data_dir: Path | None = None,
                 verify: Verifier | None = None, start_timeout_s: float = 60, allow_unsandboxed: bool = False,
                 launcher_socket: str = "") -> None:
        self._config: dict[str, Any] = {
            "preload": list(preload), "sandbox": sandbox, "allow_unsandboxed": allow_unsandboxed,
            "extra_readonly": [str(p) for p in extra_readonly], "start_timeout_s": start_timeout_s,
            "launcher_socket": launcher_socket}  # set: the zygote is the privileged launcher's (launcher.py)
        self._root = data_dir
        self.artifacts = Artifacts(data_dir / "artifacts") if data_dir else None
        self._verify = verify
        self._handles: dict[str, TaskHandle] = {}
        self._lock = threading.Lock()
        self._zygote: ZygoteClient | None = None
        self._mechanism: str | None = None
        self.ready: dict = {}  # the zygote's ready report: mechanism, preload_s, threads, preload_errors

    @property
    def zygote_pid(self) -> int | None:
        zygote = self._zygote
        return zygote.proc.pid if zygote is not None else None

    def layers(self) -> list[tuple[str, bool, str]] | None:
        """Each sandbox layer as the zygote probed it where tasks start (None before start())."""
        found = self.ready.get("layers")
        return None if found is None else [(str(name), bool(active), str(detail)) for name, active, detail in found]

    @property
    def mechanism(self) -> str:
        """The active sandbox; before start() what a start would get."""
        if self._mechanism is None and self._config["launcher_socket"]:
            return "unknown until the launcher answers"  # probing here, as another uid, would say NOT_ROOT
        if self._mechanism is None:
            enabled = self._config["sandbox"]
            self._mechanism = sandbox.probe(self._config["extra_readonly"]) if enabled else sandbox.DISABLED
        return self._mechanism

    def start(self) -> None:
        with self._lock:
            self._ensure_zygote()

    def _ensure_zygote(self) -> ZygoteClient:
        if self._zygote is not None and self._zygote.alive:
            return self._zygote
        if self._zygote is not None:
            log.warning("the zygote died (status %s); starting a new one", self._zygote.proc.poll())
            self._zygote.close(timeout=1)
        zygote = ZygoteClient(self._config)
        self.ready = zygote.start()
        self._zygote, self._mechanism = zygote, self.ready["mechanism"]
        if self.ready["threads"] != 1:
            log.warning("the zygote has %d threads after preloading; forking it is unsafe", self.ready["threads"])
        for error in self.ready["preload_errors"]:
            log.warning("preload failed: %s", error)
        return zygote

    def stop(self) -> None:
        with self._lock:
            zygote, self._zygote = self._zygote, None
        if zygote is None:
            return
        handles = list(zygote.live.values())
        for handle in handles:
            handle.kill("executor stopped")
        for handle in handles:
            handle.done.wait(5)
        zygote.close()

    # ---- the executor seam -----------------------------------------------------------------------------------
    def submit(self, spec: TaskSpec, on_message: OnMessage) -> TaskHandle:
        """Stage the inputs into a fresh workdir, run the task, stage its outputs out (see the module doc)."""
        assert self._root is not None and self.artifacts is not None, "submit() needs data_dir"
        workdir = self._root / "work" / spec.task_id
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        workdir.chmod(0o755)  # whatever the umask: the server reads the live preview once the task's uid owns it
        run = LocalRun(spec.task_id, spec.renderer, spec.input, workdir, self._root / "logs" / f"{spec.task_id}.log",
                       spec.limits, env=spec.device_env(), gpu=spec.gpu)

        def relay(message: dict) -> None:
            if message.get("type") == "exit":
                message = self._stage_out(spec, workdir, message)
                self._handles.pop(spec.task_id, None)
            on_message(message)

        try:
            self.artifacts.stage_in(spec.inputs, workdir)
            handle = self.spawn(run, relay)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        self._handles = {k: h for k, h in self._handles.items() if not h.done.is_set()}
        self._handles[spec.task_id] = handle
        return handle

    def cancel(self, task_id: str, reason: str = "cancelled") -> None:
        handle = self._handles.get(task_id)
        if handle is not None:
            handle.kill(reason)

    def _stage_out(self, spec: TaskSpec, workdir: Path, message: dict) -> dict:
        """On the task's reader thread: verify and take in the claimed outputs, then drop the workdir."""
        try:
            if message.get("ok"):
                files, outputs = self._take_outputs(spec, workdir, message.get("result"))
                message = {**message, "result": {**message["result"], "files": files}, "outputs": outputs}
        except (OSError, ValueError) as exc:
            message = {"type": "exit", "ok": False, "error": str(exc) if isinstance(exc, ValueError)
                       else f"renderer output missing: {one_line(exc)}"}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return message

    def _take_outputs(self, spec: TaskSpec, workdir: Path, result: object) -> tuple[dict[str, str], dict[str, str]]:
        """The declared outputs (role -> name), copied by descriptor (runtime/intake.py) and verified; returns
        them with each name's artifact digest. Undeclared roles are dropped here, before anything reads them."""
        files = result.get("files") if isinstance(result, dict) else None
        if not isinstance(files, dict) or not all(isinstance(n, str) for n in files.values()):
            raise ValueError("renderer returned no result files")
        files = declared(spec.renderer, files)
        staging = workdir.parent / f".{spec.task_id}.taken"
        intake.discard(staging)  # a leftover of a crash mid-take
        try:
            taken = intake.take(workdir, files, staging)
            if self._verify is not None:
                problem = self._verify(spec.renderer, spec.input, taken)
                if problem:
                    raise ValueError(problem)
            assert self.artifacts is not None
            return files, {files[role]: self.artifacts.put(path) for role, path in taken.items()}
        finally:
            intake.discard(staging)

    # ---- one process ------------------------------------------------------------------------------------------
    def spawn(self, spec: LocalRun, on_message: OnMessage) -> TaskHandle:
        spec.workdir.mkdir(parents=True, exist_ok=True)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = TaskHandle(spec, on_message)
        pipe_r, pipe_w = os.pipe()
        sent = [pipe_w, os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644),
                _input_fd(spec.input)]
        request = {"op": "spawn", "task_id": spec.task_id, "renderer": spec.renderer,
                   "workdir": str(spec.workdir.absolute()), "limits": asdict(spec.limits), "env": spec.env,
                   "gpu": spec.gpu}
        try:
            with self._lock:
                zygote = self._ensure_zygote()  # restarts a zygote that died
            zygote.spawn(request, sent, handle)
        except BaseException:
            os.close(pipe_r)
            handle._close_wake_pipe()
            raise
        finally:
            for fd in sent:
                os.close(fd)
        threading.Thread(target=_watch, args=(handle, pipe_r), name=f"task-{spec.task_id}", daemon=True).start()
        return handle


def _input_fd(task_input: dict) -> int:
    """The task input travels as a memfd: no size limit on the socket, nothing written to disk."""
    fd = os.memfd_create("task-input")
    os.write(fd, json.dumps(task_input).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
