"""The warm zygote, seen from the server: starts ``python -m appliance.runtime.executors.zygote``, sends it spawn
requests (with the task's file descriptors) over a Unix SEQPACKET socket, and hands each report — spawned,
spawn failed, exited — to the task's handle."""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.runtime.executors.local import TaskHandle

PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])


class ZygoteClient:
    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, TaskHandle] = {}
        self.live: dict[int, TaskHandle] = {}
        self._alive = False

    def start(self, timeout: float = 300) -> dict:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = json.dumps({**self._config, "fd": theirs.fileno()})
        self.proc = subprocess.Popen([sys.executable, "-m", "appliance.runtime.executors.zygote", config],
                                     pass_fds=[theirs.fileno()],
                                     env=_zygote_env(), cwd="/", stdin=subprocess.DEVNULL, start_new_session=True)
        theirs.close()
        ours.settimeout(timeout)
        try:
            data = ours.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self.proc.kill()
            raise RuntimeError(f"the zygote did not start (exit status {self.proc.wait()})")
        ours.settimeout(None)
        self.sock, self._alive = ours, True
        self._reader = threading.Thread(target=self._dispatch, name="zygote-reader", daemon=True)
        self._reader.start()
        return json.loads(data)

    @property
    def alive(self) -> bool:
        return self._alive and self.proc.poll() is None

    def spawn(self, request: dict, fds: list[int], handle: TaskHandle) -> None:
        request_id = next(self._ids)
        with self._send_lock:
            self._pending[request_id] = handle
            try:
                socket.send_fds(self.sock, [json.dumps({**request, "id": request_id}).encode()], fds)
            except OSError as exc:
                self._pending.pop(request_id, None)
                raise RuntimeError(f"the zygote is gone: {exc}") from exc
        if not handle._spawned.wait(self._config.get("start_timeout_s", 60)):
            self._pending.pop(request_id, None)
            self.proc.kill()  # hung: the next spawn starts a fresh zygote
            raise RuntimeError("spawn failed: no answer from the zygote (it was restarted)")
        if handle._spawn_error:
            raise RuntimeError(f"spawn failed: {handle._spawn_error}")

    def _dispatch(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            self._on_report(json.loads(data))
        self._alive = False
        for handle in list(self._pending.values()):
            handle._spawn_error = "the zygote died"
            handle._spawned.set()
        for handle in list(self.live.values()):
            handle._exited({"lost": True})

    def _on_report(self, report: dict) -> None:
        kind = report.get("type")
        if kind in ("spawned", "spawn_failed"):
            handle = self._pending.pop(report["id"], None)
            if handle is None:  # spawn() gave up waiting: nobody would watch this worker
                if kind == "spawned":  # the zygote reaps it and kills whatever it started
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(report["pid"], signal.SIGKILL)
                return
            if kind == "spawned":  # registered here, before the exit report that may follow at once
                handle.pid, handle.uid = report["pid"], report["uid"]
                self.live[handle.pid] = handle
            else:
                handle._spawn_error = report["error"]
            handle._spawned.set()
        elif kind == "exited":
            handle = self.live.pop(report["pid"], None)
            if handle is not None:
                handle._exited(report)

    def close(self, timeout: float = 10) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)  # EOF: the zygote kills what is left, reports, exits
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout)
        self.sock.close()


def _zygote_env() -> dict[str, str]:
    """A short, explicit environment: the server's secrets never reach the zygote or its workers."""
    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/"),
            "PYTHONPATH": path,
            # BLAS thread pools would make the zygote multi-threaded, and forking that is unsafe.
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
