"""Verification out of the server's hands: decoders run in a process of their own, unprivileged, with limits.

A task's outputs are a stranger's bytes, and checking them means running demuxers and decoders (PyAV, Pillow) on
them: a decoder bug must not run as the server's user (root, without the launcher). So the server keeps a few
long-lived verifier processes (``python -m appliance.runtime.verifier``, started by fork+exec: the server is
multi-threaded) and sends each the open descriptors of the outputs it took (``runtime/intake.py``) with the task's
renderer and input — or of a client's upload (RenderCAD's finalize) — and the verifier answers with a reason or
nothing. It never receives a path.

A verifier (as root) imports everything a check needs, then leaves the network namespace for an empty one and
the host's filesystem for an empty root of its own (a read-only tmpfs with nothing in it: the descriptors it is
sent are all it can read, so a decoder exploit finds no file to read, not even a world-readable one), drops to a
uid of its own (``VERIFIER_UID``, outside the task uid range), sets no_new_privs and the tasks' seccomp filter,
and runs under rlimits: 4 GB of address space, no file it could write, few descriptors. Without root it keeps
the server's uid and filesystem and gets the rest. A verification that takes longer than ``timeout_s`` kills
its verifier (a new one starts) and refuses the output; so does a verifier that dies. Long-lived, so a check
costs a message, not a process start.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

UID = 1_999_999_999  # below UID_BASE (task uids are UID_BASE + pid): never a task's, never a person's
MAX_MESSAGE = 1 << 20
ADDRESS_SPACE = 4 << 30


class Verifier:
    """``verifier(renderer, task_input, files) -> reason | None``, safe from any thread."""

    def __init__(self, processes: int = 2, timeout_s: float = 60) -> None:
        self.timeout_s = timeout_s
        self._slots: queue.Queue[_Process | None] = queue.Queue()
        for _ in range(processes):
            self._slots.put(None)  # started on first use
        self._all: list[_Process] = []
        self._lock = threading.Lock()

    def __call__(self, renderer: str, task_input: dict[str, Any], files: dict[str, Path]) -> str | None:
        """A task's outputs (role -> the server's copy): None, or why they are refused."""
        roles = list(files)
        return self._ask({"op": "outputs", "renderer": renderer, "input": task_input,
                          "files": [[r, files[r].name] for r in roles]}, [files[r] for r in roles])

    def image(self, path: Path, formats: list[str], max_pixels: int) -> str | None:
        """A client's picture: None, "unreadable" or "too_many_pixels" (verify.image_problem); a verifier that
        does not answer makes it "unreadable"."""
        answer = self._ask({"op": "image", "formats": formats, "max_pixels": max_pixels}, [path])
        return answer if answer in (None, "too_many_pixels") else "unreadable"

    def _ask(self, request: dict[str, Any], paths: list[Path]) -> str | None:
        proc = self._slots.get()
        try:
            if proc is None or not proc.alive():
                proc = self._start()
            return proc.ask(request, paths, self.timeout_s)
        except _Broken as exc:
            if proc is not None:
                proc.kill()
            proc = None
            return str(exc)
        finally:
            self._slots.put(proc)

    def warm(self) -> None:
        """Start every verifier now (each imports PyAV, ~0.3 s), not on the first task's output."""
        started = []
        while not self._slots.empty():
            proc = self._slots.get()
            started.append(proc if proc is not None and proc.alive() else self._start())
        for proc in started:
            self._slots.put(proc)

    def _start(self) -> _Process:
        proc = _Process()
        with self._lock:
            self._all = [p for p in self._all if p.alive()] + [proc]
        return proc

    def close(self) -> None:
        with self._lock:
            for proc in self._all:
                proc.kill()
            self._all = []


class _Broken(Exception):
    """The verifier did not answer: the output is refused with this reason."""


class _Process:
    def __init__(self) -> None:
        from appliance.runtime.childenv import child_env  # the short, secret-free environment

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        self.proc = subprocess.Popen([sys.executable, "-m", "appliance.runtime.verifier", str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], env=child_env(), cwd="/",
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
        theirs.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ask(self, request: dict[str, Any], paths: list[Path], timeout_s: float) -> str | None:
        fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in paths]
        try:
            self.sock.settimeout(timeout_s)
            try:
                socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
                answer = self.sock.recv(MAX_MESSAGE)
            except TimeoutError:
                raise _Broken(f"output verification took over {timeout_s:g} s") from None
            except OSError as exc:
                raise _Broken(f"output verification failed ({type(exc).__name__})") from None
        finally:
            for fd in fds:
                os.close(fd)
        if not answer:
            raise _Broken("output verification failed (the verifier died)")
        problem = json.loads(answer).get("problem")
        return None if problem is None else str(problem)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.sock.close()


# ---- the verifier process -------------------------------------------------------------------------------------
def confine() -> None:
    """No network, no filesystem, its own uid, no new privileges, the tasks' seccomp filter, rlimits."""
    from appliance.runtime.sandbox import kernel, seccomp

    if os.geteuid() == 0:
        kernel.unshare(kernel.CLONE_NEWNET | kernel.CLONE_NEWNS)  # an empty network, a private mount table
        _empty_root(kernel)
        os.setgroups([])
        os.setresgid(UID, UID, UID)
        os.setresuid(UID, UID, UID)
    kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
    for limit, value in ((resource.RLIMIT_AS, ADDRESS_SPACE), (resource.RLIMIT_FSIZE, 0),
                         (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    if seccomp.supported():
        seccomp.install()


def _empty_root(kernel) -> None:  # noqa: ANN001 - the sandbox's kernel module
    """pivot_root into an empty read-only tmpfs (in our private mount namespace: the host's mounts stay)."""
    kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
    flags = kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC
    kernel.mount("tmpfs", "/tmp", "tmpfs", flags, "mode=0555,size=16k")
    os.chdir("/tmp")
    kernel.pivot_root(b".", b".")
    kernel.check(kernel.libc.umount2(b".", kernel.MNT_DETACH), "umount old root")
    os.chdir("/")
    kernel.mount(None, "/", None, kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY | flags)


def serve(sock: socket.socket) -> None:
    from appliance.runtime.verify import image_problem, verify_open

    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 16)
        except OSError:
            return
        if not data:
            return
        handles = [os.fdopen(fd, "rb") for fd in fds]
        try:
            request = json.loads(data)
            if request["op"] == "image":
                problem = image_problem(handles[0], list(request["formats"]), int(request["max_pixels"]))
            else:
                files = {role: (name, handle) for (role, name), handle in zip(request["files"], handles,
                                                                              strict=True)}
                problem = verify_open(request["renderer"], request["input"], files)
        except Exception as exc:  # noqa: BLE001 - a malformed request is refused, the verifier lives on
            problem = f"cannot be verified ({type(exc).__name__})"
        finally:
            for handle in handles:
                handle.close()
        sock.send(json.dumps({"problem": problem}).encode())


def _preload() -> None:
    """Every module of PyAV and Pillow (both import some lazily, e.g. ``av.subtitles`` for a file with a
    subtitle stream), Pillow's format plugins and the checks: imported while there is a filesystem."""
    import importlib
    import pkgutil

    import av
    import PIL
    import PIL.Image

    import appliance.runtime.verify  # noqa: F401

    for package in (av, PIL):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if module.name.rsplit(".", 1)[-1] in ("__main__", "report"):  # commands that print, not libraries
                continue
            with contextlib.suppress(Exception):  # optional GUI bindings (ImageTk, ImageQt) and the like
                importlib.import_module(module.name)
    PIL.Image.init()


def main(argv: list[str]) -> None:
    sock = socket.socket(fileno=int(argv[0]))
    # Everything a check runs is loaded before the limits and the empty root, once: every check then costs a
    # message, and nothing is looked up on a filesystem the verifier no longer has.
    _preload()
    confine()
    serve(sock)


if __name__ == "__main__":
    main(sys.argv[1:])
