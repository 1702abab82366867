"""The warm zygote, seen from the server: starts ``python -m appliance.runtime.executors.zygote`` (or, with
``launcher_socket`` set, connects to the privileged launcher, which starts one for this connection: see
appliance/runtime/launcher.py), sends it spawn and kill requests (with the task's file descriptors) over a Unix
SEQPACKET socket, and hands each report — spawned, spawn failed, exited — to the task's handle."""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

from appliance.runtime.childenv import child_env

if TYPE_CHECKING:
    from appliance.runtime.executors.handle import TaskHandle


class ZygoteClient:
    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, TaskHandle] = {}
        self.live: dict[int, TaskHandle] = {}
        self._alive = False
        self.proc: subprocess.Popen[bytes] | RemoteZygote  # the local child, or the launcher's zygote seen remotely

    @property
    def remote(self) -> bool:
        return bool(self._config.get("launcher_socket"))

    def start(self, timeout: float = 300) -> dict[str, Any]:
        ours = self._connect(timeout) if self.remote else self._spawn_child()
        ours.settimeout(timeout)
        data = b""
        for _ in range(2):  # a launcher that refused us with our hello unread reports ECONNRESET before its answer
            try:
                data = ours.recv(1 << 16)
                break
            except ConnectionResetError:
                continue
            except OSError:
                break
        if not data:
            self.proc.kill()
            ours.close()
            raise RuntimeError(f"the zygote did not start (exit status {self.proc.wait()})")
        ready = json.loads(data)
        if ready.get("type") == "refused":
            ours.close()
            raise RuntimeError(f"the launcher at {self._config['launcher_socket']} refused: {ready.get('error')}")
        ours.settimeout(None)
        self.sock, self._alive = ours, True
        if self.remote:
            self.proc = RemoteZygote(self, int(ready.get("pid", 0)))
        self._reader = threading.Thread(target=self._dispatch, name="zygote-reader", daemon=True)
        self._reader.start()
        return ready

    def _spawn_child(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = json.dumps({**self._config, "fd": theirs.fileno()})
        self.proc = subprocess.Popen([sys.executable, "-m", "appliance.runtime.executors.zygote", config],
                                     pass_fds=[theirs.fileno()],
                                     env=child_env(), cwd="/", stdin=subprocess.DEVNULL, start_new_session=True)
        theirs.close()
        return ours

    def _connect(self, timeout: float) -> socket.socket:
        """The launcher's socket; it must be root's (a socket anyone else bound would be an impostor)."""
        path = str(self._config["launcher_socket"])
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                  struct.calcsize("3i")))
            if uid != 0:
                raise RuntimeError(f"the launcher at {path} runs as uid {uid}, not root: refusing it")
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused: its answer is waiting
                sock.send(json.dumps({"preload": self._config["preload"],
                                      "task_fs": self._config.get("task_fs", "auto"),
                                      "model_warm_idle_s": self._config.get("model_warm_idle_s", 600.0)}).encode())
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"cannot reach the launcher at {path} ({exc.strerror or exc}): start it with "
                               "`systemctl start appliance-launcher` or unset launcher_socket") from None
        except BaseException:
            sock.close()
            raise
        self.proc = RemoteZygote(self, 0)
        return sock

    def kill(self, pid: int) -> None:
        """Kill a task's worker through the zygote: the server may not signal it itself (another uid)."""
        with self._send_lock, contextlib.suppress(OSError):
            self.sock.send(json.dumps({"op": "kill", "pid": pid}).encode())

    @property
    def alive(self) -> bool:
        return self._alive and self.proc.poll() is None

    def spawn(self, request: dict[str, Any], fds: list[int], handle: TaskHandle) -> None:
        request_id = next(self._ids)
        with self._send_lock:
            self._pending[request_id] = handle
            try:
                socket.send_fds(self.sock, [json.dumps({**request, "id": request_id}).encode()], fds)
            except OSError as exc:
                self._pending.pop(request_id, None)
                raise RuntimeError(f"the zygote is gone: {exc}") from exc
        if not handle.wait_spawned(self._config.get("start_timeout_s", 60)):
            self._pending.pop(request_id, None)
            self.proc.kill()  # hung: the next spawn starts a fresh zygote
            raise RuntimeError("spawn failed: no answer from the zygote (it was restarted)")
        if handle.spawn_error:
            raise RuntimeError(f"spawn failed: {handle.spawn_error}")

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
            handle.spawn_failed("the zygote died")
        for handle in list(self.live.values()):
            handle.exited({"lost": True})

    def _on_report(self, report: dict[str, Any]) -> None:
        kind = report.get("type")
        if kind in ("spawned", "spawn_failed"):
            handle = self._pending.pop(report["id"], None)
            if handle is None:  # spawn() gave up waiting: nobody would watch this worker
                if kind == "spawned":  # the zygote reaps it and kills whatever it started
                    self._kill_worker(report["pid"])
                return
            if kind == "spawned":  # registered here, before the exit report that may follow at once
                self.live[report["pid"]] = handle
                handle.spawned(report["pid"], report["uid"], self.kill if self.remote else None)
            else:
                handle.spawn_failed(report["error"])
        elif kind == "exited":
            handle = self.live.pop(report["pid"], None)
            if handle is not None:
                handle.exited(report)

    def _kill_worker(self, pid: int) -> None:
        if self.remote:
            self.kill(pid)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

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


class RemoteZygote:
    """The launcher's zygote, as far as the server can see it: it lives as long as the connection does."""

    def __init__(self, client: ZygoteClient, pid: int) -> None:
        self.client, self.pid = client, pid

    def poll(self) -> int | None:
        return None if self.client._alive else 0

    def kill(self) -> None:  # the zygote sees EOF, kills its tasks and exits
        with contextlib.suppress(OSError, AttributeError):
            self.client.sock.shutdown(socket.SHUT_RDWR)

    def wait(self, timeout: float | None = None) -> int:
        reader = getattr(self.client, "_reader", None)
        if reader is not None:
            reader.join(timeout)
            if reader.is_alive():
                raise subprocess.TimeoutExpired("zygote", timeout or 0)
        return 0
