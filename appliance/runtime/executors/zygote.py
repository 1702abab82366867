"""The warm fork server: ``python -m appliance.runtime.executors.zygote CONFIG_JSON``, started by ``LocalExecutor.start()``.

It imports the heavy libraries once, then forks one worker per spawn request received on a Unix SEQPACKET
socket (request JSON + the task's pipe, log and input fds via SCM_RIGHTS). The worker enters the sandbox and runs
the renderer; the zygote reaps it and reports ``{pid, status}`` so the executor can tell a signal death from a
clean exit. A separate interpreter rather than a fork of the server: the server is multi-threaded.

Imports are limited to the sandbox and renderers: this process never opens the appliance database.

Messages to the executor: ready {mechanism, preload_s, threads, preload_errors}; spawned {id, pid, uid};
spawn_failed {id, error}; exited {pid, status, cpu_s, maxrss_kb}.
"""
from __future__ import annotations

import importlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import BinaryIO, NoReturn

from appliance.runtime import sandbox
from appliance.runtime.sandbox import Limits
from renderers.base import JsonLinesReporter, RenderError
from renderers.registry import RegistryError, default_registry

MAX_REQUEST = 1 << 16


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")[:500]


def _close_fds_except(keep: set[int]) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    top = hard if hard != resource.RLIM_INFINITY else 1 << 20
    low = 0
    for fd in sorted(keep) + [top]:
        if fd > low:  # closerange(n, n) would become close_range(n, UINT_MAX) in CPython 3.11: close all
            os.closerange(low, fd)
        low = fd + 1


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_line(out: BinaryIO | None, message: dict) -> None:
    if out is None:
        return
    try:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()
    except OSError:
        pass  # the executor is gone; the exit status still tells the story


class Zygote:
    def __init__(self, sock: socket.socket, isolated: bool, sources: list[str]) -> None:
        self.sock, self.isolated, self.sources = sock, isolated, sources
        self.tasks: dict[int, int | None] = {}  # worker pid -> sandbox uid
        self.pid = os.getpid()
        self._wake_r, self._wake_w = os.pipe()

    # ---- serving ------------------------------------------------------------------------------------------
    def serve(self) -> None:
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ, "request")
        selector.register(self._wake_r, selectors.EVENT_READ, "child")
        while True:
            for key, _ in selector.select():
                if key.data == "child":
                    os.read(self._wake_r, 4096)
                elif not self._handle_request():
                    return self._shutdown()
            self._reap()

    def _send(self, message: dict) -> None:
        try:
            self.sock.send(json.dumps(message).encode())
        except OSError:
            pass  # the executor went away; the next recv sees EOF and shuts down

    def _handle_request(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_REQUEST, 8)
        except OSError:
            return False
        if not data:
            return False
        request = json.loads(data)
        try:
            if request.get("op") == "spawn" and len(fds) == 3:
                self._spawn(request, *fds)
            else:
                self._send({"type": "spawn_failed", "id": request.get("id"), "error": "bad request"})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _spawn(self, request: dict, pipe_fd: int, log_fd: int, input_fd: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            self._send({"type": "spawn_failed", "id": request["id"], "error": _one_line(exc)})
            return
        if pid == 0:
            Worker(self, request).run(pipe_fd, log_fd, input_fd)
        uid = sandbox.task_uid(pid) if self.isolated else None
        self.tasks[pid] = uid
        self._send({"type": "spawned", "id": request["id"], "pid": pid, "uid": uid})

    def _reap(self) -> None:
        while True:
            try:  # WNOWAIT: the worker stays a zombie, so its pid (and uid) cannot be reused during cleanup
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            self._finish(info.si_pid)

    def _finish(self, pid: int) -> None:
        tracked = pid in self.tasks
        uid = self.tasks.pop(pid, None)
        if tracked:
            self._kill_leftovers(pid, uid)
        _, status, usage = os.wait4(pid, 0)
        if tracked:  # untracked: an orphaned grandchild re-parented to us (subreaper)
            self._send({"type": "exited", "pid": pid, "status": status,
                        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "maxrss_kb": usage.ru_maxrss})

    def _kill_leftovers(self, pid: int, uid: int | None) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)  # grandchildren still in the task's process group
        except ProcessLookupError:
            pass
        if uid is not None:
            sandbox.kill_uid(uid)  # and any that left it with setsid()

    def _shutdown(self) -> None:
        for pid, uid in list(self.tasks.items()):
            self._kill_leftovers(pid, uid)
        deadline = time.monotonic() + 5
        while self.tasks and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.01)


class Worker:
    """The forked child: sandbox, limits, renderer, one final line, ``os._exit``. Never returns."""

    def __init__(self, zygote: Zygote, request: dict) -> None:
        self.zygote, self.request = zygote, request
        self.limits = Limits(**request["limits"])
        self.workdir = Path(request["workdir"])

    def run(self, pipe_fd: int, log_fd: int, input_fd: int) -> NoReturn:
        code, out = 70, None
        try:
            self._detach(pipe_fd, log_fd, input_fd)
            out = os.fdopen(pipe_fd, "wb")
            task_input = json.loads(_read_all(input_fd))
            os.close(input_fd)
            self._confine()
            code = self._render(task_input, out)
        except BaseException as exc:
            traceback.print_exc()
            _write_line(out, {"type": "error", "error": f"worker setup failed: {_one_line(exc)}"})
            code = 71
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)

    def _detach(self, pipe_fd: int, log_fd: int, input_fd: int) -> None:
        os.setsid()  # own process group: cancel and timeout kill the whole group
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open("/dev/null", os.O_RDONLY)
        for src, dst in ((devnull, 0), (log_fd, 1), (log_fd, 2)):
            os.dup2(src, dst)
        # Drops the zygote's socket above all: a task must never be able to ask for another spawn.
        _close_fds_except({0, 1, 2, pipe_fd, input_fd})
        os.set_inheritable(pipe_fd, False)  # subprocesses (latex, ffmpeg) must not hold the pipe open
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)

    def _confine(self) -> None:
        uid = sandbox.task_uid(os.getpid()) if self.zygote.isolated else None
        self.workdir.mkdir(parents=True, exist_ok=True)
        if uid is not None:
            tmp_mb = min(self.limits.fsize_mb, self.limits.mem_mb)
            sandbox.enter(self.workdir, uid, self.zygote.sources, tmp_mb)
        os.chdir(self.workdir)
        sandbox.apply_limits(self.limits, own_uid=uid is not None)
        if uid is not None:
            sandbox.drop_privileges(uid)
        sandbox.set_parent_death_signal()  # after the uid change, which clears it
        if os.getppid() != self.zygote.pid:
            raise RuntimeError("the zygote exited while the worker started")
        os.environ.clear()
        os.environ.update(sandbox.task_environment(self.workdir, uid is not None))
        tempfile.tempdir = None  # the zygote may have cached its own; use TMPDIR from now on
        print(f"[worker] task {self.request['task_id']} renderer {self.request['renderer']} pid {os.getpid()}"
              f" uid {os.getuid()}", file=sys.stderr)

    def _render(self, task_input: dict, out: BinaryIO) -> int:
        reporter = JsonLinesReporter(out)
        try:
            result = default_registry().load(self.request["renderer"])(task_input, self.workdir, reporter)
            line = json.dumps({"type": "result", "result": result})
        except (RenderError, RegistryError) as exc:
            line = json.dumps({"type": "error", "error": str(exc).strip()})
        except MemoryError:
            line = json.dumps({"type": "error", "error": f"out of memory (limit {self.limits.mem_mb} MB)"})
        except SystemExit as exc:  # sys.exit() in a renderer: an exit without a result
            return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:
            traceback.print_exc()
            line = json.dumps({"type": "error", "error": _one_line(exc)})
        out.write(line.encode() + b"\n")
        out.flush()
        return 0


def _preload(modules: list[str]) -> list[str]:
    errors = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional library fails its tasks later, not the zygote
            errors.append(f"{name}: {_one_line(exc)}")
    return errors


def main(argv: list[str]) -> None:
    config = json.loads(argv[0])
    sock = socket.socket(fileno=config["fd"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop (it closes the socket)
    sandbox.set_child_subreaper()
    started = time.perf_counter()
    errors = _preload(list(config["preload"]))
    preload_s = time.perf_counter() - started
    if not config["sandbox"]:
        mechanism = sandbox.DISABLED
    else:
        mechanism = sandbox.probe_here(config["extra_readonly"])
    isolated = mechanism == sandbox.FULL
    sources = sandbox.readonly_sources(config["extra_readonly"]) if isolated else []
    threads = len(os.listdir("/proc/self/task"))  # forking is only safe while this stays 1
    sock.send(json.dumps({"type": "ready", "mechanism": mechanism, "preload_s": round(preload_s, 3),
                          "threads": threads, "preload_errors": errors}).encode())
    Zygote(sock, isolated, sources).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
