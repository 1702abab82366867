"""The privileged launcher: ``appliance launcher --socket PATH --user NAME``, the only part that runs as root.

The task sandbox needs root (namespaces, cgroups, a per-task uid); the HTTP server does not. Installed as a
service (appliance-launcher.service), the launcher listens on a Unix SEQPACKET socket; the server, running as
the unprivileged ``appliance`` user with ``launcher_socket`` set, connects to it instead of spawning its zygote.

For each connection the launcher checks the peer's uid with SO_PEERCRED (only the allowed user's uid; anyone
else gets one ``refused`` message and the socket closed), reads one message ``{preload, start_timeout_s}`` and
hands the connected socket to a fresh zygote (``python -m appliance.runtime.executors.zygote``), which then
speaks the usual zygote protocol on it. What the server cannot choose: the sandbox is always on, unsandboxed
runs are always refused (they would run as root), no extra read-only paths, and every workdir must be a
directory the server's uid owns directly under the data dir's ``work/`` (``check_workdir``); when a task ends,
its workdir is given back to that uid (``give_back``), so the server can take in the outputs and remove it.

Stdlib only: the zygote imports ``check_workdir`` and ``give_back``.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from appliance.runtime.childenv import child_env

MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
HELLO_TIMEOUT_S = 10
MAX_ZYGOTES = 8  # one per server connection; a server restarts its zygote now and then, never runs eight


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket, as the kernel recorded it."""
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    return uid


# ---- workdirs: the server names a path; root acts on it only after checking it -----------------------------------
def _open_nofollow(path: str, flags: int) -> int:
    """Open an absolute path component by component, refusing a symlink anywhere on the way."""
    parts = [p for p in path.split("/") if p]
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            mode = flags if last else os.O_PATH | os.O_DIRECTORY
            nxt = os.open(part, mode | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def check_workdir(workdir: str, work_root: str, owner_uid: int) -> tuple[int, int]:
    """(st_dev, st_ino) of a task's workdir, after checking that it is a real directory owned by the server's
    uid directly under ``work_root`` (itself resolved by the launcher); ValueError otherwise."""
    if os.path.dirname(workdir) != work_root or os.path.normpath(workdir) != workdir or workdir.endswith("/."):
        raise ValueError(f"workdir {workdir!r} is not directly under {work_root}")
    try:
        fd = _open_nofollow(workdir, os.O_PATH | os.O_DIRECTORY)
    except OSError as exc:
        raise ValueError(f"workdir {workdir!r} is not a plain directory: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner_uid:
        raise ValueError(f"workdir {workdir!r} is not owned by uid {owner_uid}")
    return info.st_dev, info.st_ino


def give_back(workdir: str, expect: tuple[int, int], owner_uid: int) -> None:
    """After the task's processes are gone: the workdir and all it holds back to the server's uid.

    Directory fds and follow_symlinks=False throughout, so nothing the task left (a symlink, a renamed
    directory) can turn root's chown onto a file outside the workdir."""
    try:
        top = _open_nofollow(workdir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # already removed
    try:
        info = os.fstat(top)
        if (info.st_dev, info.st_ino) != expect:
            return  # not the directory the task had
        os.fchown(top, owner_uid, owner_uid)
        for _dir, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for name in dirnames + filenames:
                with contextlib.suppress(OSError):
                    os.chown(name, owner_uid, owner_uid, dir_fd=dirfd, follow_symlinks=False)
    finally:
        os.close(top)


# ---- the service ----------------------------------------------------------------------------------------------
class Launcher:
    def __init__(self, socket_path: Path, allowed_uid: int, work_root: Path, allowed_gid: int | None = None) -> None:
        self.socket_path, self.allowed_uid = socket_path, allowed_uid
        self.allowed_gid = allowed_gid
        self.work_root = os.path.realpath(work_root)
        self.children: list[subprocess.Popen[bytes]] = []

    def listen(self) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.bind(str(self.socket_path))
        # The file mode is a first fence (the appliance group); SO_PEERCRED is the check that counts.
        if self.allowed_gid is not None and os.geteuid() == 0:
            os.chown(self.socket_path, 0, self.allowed_gid)
        os.chmod(self.socket_path, 0o660 if self.allowed_gid is not None else 0o666)
        sock.listen(16)
        return sock

    def serve(self, sock: socket.socket) -> None:
        sock.settimeout(1.0)  # wake now and then to reap zygotes whose server went away
        while True:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                conn = None
            if conn is not None:
                with conn:
                    self._admit(conn)
            self.children = [c for c in self.children if c.poll() is None]

    def _admit(self, conn: socket.socket) -> None:
        uid = peer_uid(conn)
        if uid != self.allowed_uid:
            _log(f"refused a connection from uid {uid} (only uid {self.allowed_uid} may connect)")
            _send(conn, {"type": "refused", "error": f"uid {uid} may not use this launcher"})
            return
        self.children = [c for c in self.children if c.poll() is None]
        if len(self.children) >= MAX_ZYGOTES:  # each preloads Manim: a runaway client must not exhaust memory
            _log(f"refused uid {uid}: {MAX_ZYGOTES} zygotes are running already")
            _send(conn, {"type": "refused", "error": f"{MAX_ZYGOTES} zygotes are running already"})
            return
        conn.settimeout(HELLO_TIMEOUT_S)
        try:
            hello = json.loads(conn.recv(1 << 16) or b"null")
        except (OSError, ValueError):
            hello = None
        preload = hello.get("preload") if isinstance(hello, dict) else None
        if not isinstance(preload, list) or not all(isinstance(m, str) and MODULE_NAME.match(m) for m in preload):
            _send(conn, {"type": "refused", "error": "bad hello: expected {preload: [module names]}"})
            return
        conn.settimeout(None)
        # task_fs "off" (the server's setting) only trades the kernel's disk quota for the measured one
        task_fs = "off" if hello.get("task_fs") == "off" else "auto"
        idle = hello.get("model_warm_idle_s")  # how long the warm model parent waits: a number, bounded
        idle = float(min(max(idle, 0), 86400)) if type(idle) in (int, float) and idle == idle else 600.0
        config = {"fd": conn.fileno(), "preload": preload[:64], "sandbox": True, "allow_unsandboxed": False,
                  "extra_readonly": [], "work_root": self.work_root, "owner_uid": uid, "task_fs": task_fs,
                  "model_warm_idle_s": idle}
        child = subprocess.Popen([sys.executable, "-m", "appliance.runtime.executors.zygote", json.dumps(config)],
                                 pass_fds=[conn.fileno()], env=child_env(), cwd="/", stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        self.children.append(child)
        _log(f"zygote {child.pid} started for uid {uid}")

    def close(self, sock: socket.socket) -> None:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        for child in self.children:  # their servers see EOF and start fresh zygotes on the next launcher
            with contextlib.suppress(ProcessLookupError):
                child.terminate()


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.send(json.dumps(message).encode())


def _log(text: str) -> None:
    print(f"appliance launcher: {text}", file=sys.stderr, flush=True)


def run(socket_path: Path, allowed_uid: int, work_root: Path, allowed_gid: int | None = None) -> int:
    if os.geteuid() != 0:
        _log("not root: the sandbox would be refused for every task (run it as root, see appliance-launcher.service)")
    launcher = Launcher(socket_path, allowed_uid, work_root, allowed_gid)
    sock = launcher.listen()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _log(f"listening on {socket_path} for uid {allowed_uid}; workdirs under {launcher.work_root}")
    try:
        launcher.serve(sock)
    except KeyboardInterrupt:
        pass
    finally:
        launcher.close(sock)
    return 0
