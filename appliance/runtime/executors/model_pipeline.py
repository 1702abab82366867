"""The loaded model parent (issue #23): a fork of the warm model parent (model_parent.py) that holds one img2img
model's pipeline loaded on the CPU. That model's CPU tasks fork from it, so a task pays neither the imports nor
the load (for SD 1.5 in float32 the load is about 11 s: docs/models.md).

The warm parent starts one as it hands over a CPU task of a model that no loaded parent holds. It never waits
for the load: that task, and the model's tasks until this one says ``loaded``, fork from the warm parent
itself. It reads the model from the task's own input (a memfd, read with pread so the worker still reads it
whole) and staged files: each opened at once, with O_NOFOLLOW and as the server's uid when the zygote serves
another uid (the launcher), so root reads nothing the server could not. Only safetensors folders get this far:
the registry never takes a pickle, and loading says ``use_safetensors`` and ``local_files_only``
(renderers/image/img2img.py). One model at a time: another model's CPU task replaces it. A model whose float32
weights exceed ``WARM_MB`` is not kept. A task granted a GPU never uses it, because CUDA needs the weights on
the card and cannot survive a fork.

The pipeline is used by tasks, never run here: each task forks from the same pristine objects (copy-on-write;
inference writes no weights). It spawns as the warm parent does: a child forks the worker and exits, so the
worker is the zygote's. It stays single-threaded (checked after the load: it exits otherwise, and the warm
parent forks the model's tasks itself) and dies with the warm parent.

Messages to the warm parent: loaded {sha256, load_s, rss_mb}; failed {error}; spawned {pid}; spawn_failed {error}.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from appliance.errors import one_line
from appliance.runtime import sandbox
from appliance.runtime.executors.task_worker import fork_peer, peer_message

if TYPE_CHECKING:
    from appliance.runtime.executors.zygote import Zygote

WARM_MB = 4096  # the most float32 weights a loaded parent keeps (it holds them while it lives)
MAX_INPUT = 16 << 20  # a task input larger than this is no img2img task's
REPLY_S = 10.0  # a fork answers in milliseconds
MAX_MESSAGE = 1 << 16
KEPT_OUT = "onnxruntime"  # kept out of the warm parents (diffusers would import it: a thread), let back into tasks
SHA256 = re.compile(r"^[0-9a-f]{64}$")
STAGED = re.compile(r"^img2img\.\d+(\.[A-Za-z0-9]{1,12})?$")  # registry.folder_for_task's staged names


def model_of(request: dict[str, Any], fds: list[int]) -> dict[str, Any] | None:
    """The img2img model a CPU task will run ({sha256, files, size, workdir}), from its input memfd (pread: the
    worker still reads it from the start); None for a task granted a GPU, another renderer, or anything odd."""
    env = request.get("env")
    if request.get("renderer") != "image.img2img" or len(fds) < 3 or not isinstance(request.get("workdir"), str):
        return None
    if isinstance(env, dict) and env.get("CUDA_VISIBLE_DEVICES"):
        return None  # a GPU task loads onto its card itself
    try:
        size = os.fstat(fds[2]).st_size
        spec = json.loads(os.pread(fds[2], size, 0))["model"] if 0 < size <= MAX_INPUT else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(spec, dict) or spec.get("device") not in ("any", None):
        return None
    files, sha256, weights = spec.get("files"), spec.get("sha256"), spec.get("size")
    if not (isinstance(sha256, str) and SHA256.match(sha256) and isinstance(weights, int) and isinstance(files, dict)
            and files and all(isinstance(r, str) and isinstance(s, str) and STAGED.match(s) and _relative(r)
                              for r, s in files.items())):
        return None
    return {"sha256": sha256, "files": files, "size": weights, "workdir": request["workdir"]}


def _relative(rel: str) -> bool:
    parts = rel.split("/")
    return 0 < len(rel) <= 200 and all(p not in ("", ".", "..") for p in parts)


def fits(model: dict[str, Any], warm_mb: int = WARM_MB) -> bool:
    """Whether its float32 weights (twice a float16 folder, as generative.py plans its RAM) fit ``warm_mb``."""
    return 2 * int(model["size"]) <= warm_mb << 20


class LoadedParent:
    """The warm parent's side of one loaded parent."""

    def __init__(self, zygote: Zygote, model: dict[str, Any]) -> None:
        self.pid, self.sock = fork_peer(lambda sock: _load_and_serve(zygote, sock, model))
        self.sha256 = str(model["sha256"])
        self.ready = False
        self.error: str | None = None

    def poll(self) -> bool:
        """Whether it has said ``loaded`` (read without waiting); ``error`` once it failed or exited."""
        while not self.ready and self.error is None:
            message = peer_message(self.sock, MAX_MESSAGE, "it exited")
            if message is None:
                break
            if message.get("type") == "loaded":
                self.ready = True
                print(f"[model parent] {self.sha256[:12]} kept loaded ({message.get('load_s')} s, "
                      f"RSS {message.get('rss_mb')} MB)", flush=True)
            else:
                self.error = str(message.get("error"))
        return self.ready

    def spawn(self, request: dict[str, Any], fds: list[int]) -> int | None:
        """The worker's pid, or None when it could not (the caller forks the task itself and drops this one).
        None only when nothing was forked: a reply it did not give within REPLY_S is a kill, then None."""
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
        except OSError:
            return None
        try:
            self.sock.settimeout(REPLY_S)
            data = self.sock.recv(MAX_MESSAGE)
        except OSError:
            data = b""
        finally:
            self.sock.settimeout(None)
        message = json.loads(data) if data else {}
        pid = message.get("pid")
        return pid if message.get("type") == "spawned" and isinstance(pid, int) and pid > 1 else None

    def kill(self) -> None:
        self.sock.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _load_and_serve(zygote: Zygote, sock: socket.socket, model: dict[str, Any]) -> NoReturn:
    from appliance.runtime.executors.task_worker import _close_fds_except, _flush_std

    code = 0
    try:
        sandbox.set_parent_death_signal()  # dies with the warm parent
        _close_fds_except({0, 1, 2, sock.fileno()})
        started = time.perf_counter()
        try:
            _load(model, zygote.owner_uid)
        except Exception as exc:  # noqa: BLE001 - the model's tasks fork from the warm parent instead
            say(sock, {"type": "failed", "error": f"not loaded: {one_line(exc)}"})
            raise SystemExit(0) from None
        gc.collect()
        gc.freeze()
        threads = len(os.listdir("/proc/self/task"))
        if threads != 1:
            say(sock, {"type": "failed", "error": f"{threads} threads after the load: forking is unsafe"})
            raise SystemExit(0)
        with open("/proc/self/status") as status:
            rss = next((int(line.split()[1]) >> 10 for line in status if line.startswith("VmRSS:")), 0)
        say(sock, {"type": "loaded", "sha256": model["sha256"], "load_s": round(time.perf_counter() - started, 3),
                    "rss_mb": rss})
        while True:
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 8)
            if not data:
                break
            try:
                _flush_std()
                say(sock, {"type": "spawned", "pid": fork_worker(zygote, json.loads(data), fds, sock)})
            except Exception as exc:  # noqa: BLE001 - this spawn fails; the warm parent forks it instead
                say(sock, {"type": "spawn_failed", "error": one_line(exc)})
            finally:
                for fd in fds:
                    os.close(fd)
    except SystemExit:
        pass
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)


def _load(model: dict[str, Any], owner_uid: int | None) -> None:
    """Open the staged files now (as the server's uid where it is another; never following a link), lay them out
    as the diffusers folder in a private directory of links to those open files, load, and keep the pipeline
    in the renderer's table. The task's workdir may go as soon as its task ends: the open files stay readable."""
    from renderers.image import img2img

    workdir, opened = model["workdir"], {}
    as_server = owner_uid is not None and os.geteuid() == 0
    if as_server:
        os.seteuid(int(owner_uid))  # type: ignore[arg-type]
    try:
        for rel, staged in model["files"].items():
            opened[rel] = os.open(os.path.join(workdir, staged), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    finally:
        if as_server:
            os.seteuid(0)
    folder = tempfile.mkdtemp(prefix="model-parent-")
    try:
        for rel, fd in opened.items():
            target = os.path.join(folder, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(f"/proc/{os.getpid()}/fd/{fd}", target)
        pipe, cls_name = img2img.load(Path(folder), "cpu")
        img2img.keep(str(model["sha256"]), pipe, cls_name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for fd in opened.values():
            os.close(fd)


def fork_worker(zygote: Zygote, request: dict[str, Any], fds: list[int], sock: socket.socket) -> int:
    """Fork a child that forks the worker and exits (the worker is the zygote's to reap); the worker's pid."""
    from appliance.runtime.executors.task_worker import Worker

    if len(fds) not in (3, 4):
        raise ValueError(f"a spawn carries 3 or 4 fds, not {len(fds)}")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        code = 0
        try:
            os.close(read)
            sock.close()
            worker = os.fork()
            if worker == 0:
                os.close(write)
                if sys.modules.get(KEPT_OUT, ...) is None:
                    del sys.modules[KEPT_OUT]  # the task may use onnxruntime (a thread of its own is fine there)
                Worker(zygote, request).run(*fds)  # confines itself, runs the task, never returns
            os.write(write, worker.to_bytes(4, "little"))
        except BaseException:
            traceback.print_exc()
            code = 70
        finally:
            os._exit(code)
    os.close(write)
    try:
        data = os.read(read, 4)
    finally:
        os.close(read)
        os.waitpid(child, 0)
    if len(data) != 4:
        raise OSError("the worker was not forked")
    return int.from_bytes(data, "little")


def say(sock: socket.socket, message: dict[str, Any]) -> None:
    try:
        sock.send(json.dumps(message).encode())
    except OSError:
        pass  # the zygote is gone: the next recv sees end of file
