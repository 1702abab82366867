"""The warm model parent (issue #23): a fork of the zygote that has imported torch, diffusers and transformers,
from which model tasks (``image.img2img``) fork, so a task no longer pays those imports. In this machine's
sandbox a tiny img2img task took 8.9–10.2 s from its start to its first denoising step, nearly all imports.
Forked from a parent with the imports done it takes 0.36 s (docs/models.md, scripts/model_warm_figures.py).

Life: the zygote forks it on the first model task. That task forks cold while the parent imports, and so does
any task before the parent says ``ready``. The parent lives while model tasks come: the zygote closes its
socket after ``idle_s`` without one (the next forks cold and starts a new parent), and it dies with the zygote
(parent-death signal; the zygote's shutdown closes its socket and reaps it).

Spawning: the zygote sends a spawn request with the task's fds. The parent forks a child that forks the worker
and exits at once, so the worker is re-parented to the zygote, which is a child subreaper. The zygote reaps it,
reads its rusage, and kills its uid and cgroup, exactly as for a worker it forked itself. The child writes the
worker's pid back first, and the zygote reads it before it reaps again, so a worker that ends at once is never
an untracked orphan. The worker (task_worker.py) confines itself exactly as any other: the same cgroup,
namespaces, uid and limits. Only its memory starts with the imports in it (copy-on-write).

Forking is safe only while the parent has one thread, which it checks: it refuses to serve otherwise. The thread
caps of childenv.py keep torch's pools unstarted; onnxruntime is kept out of the parent (diffusers imports it
during a load when it can, and it starts a thread) and let back in for the task. CUDA is never initialised here,
because it cannot survive a fork: a task granted a GPU initialises it itself. A CPU task of the model most
recently asked for forks from a second parent that holds its pipeline loaded (model_pipeline.py, ``Loaded``).

Messages, parent to zygote: ready {threads, preload_s}; failed {error}; spawned {pid}; spawn_failed {error}.
"""
from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, NoReturn

from appliance.errors import one_line
from appliance.runtime import sandbox
from appliance.runtime.executors.model_pipeline import KEPT_OUT, LoadedParent, fits, fork_worker, model_of, say
from appliance.runtime.executors.task_worker import fork_peer, peer_message

if TYPE_CHECKING:
    from appliance.runtime.executors.zygote import Zygote

MODEL_RENDERERS = frozenset({"image.img2img"})  # never model.check: an ONNX check needs onnxruntime preloaded-free
IDLE_S = 600.0  # the zygote closes an unused parent after this (about 0.5 GB of imports held meanwhile)
LOADED_IDLE_S = 120.0  # the loaded parent (a model's float32 weights) goes after this without the model's task
LOADED_CHECK_S = 10.0  # how often the warm parent looks
REPLY_S = 30.0  # a fork answers in milliseconds; past this the parent is taken for hung and killed
MAX_REQUEST = 1 << 16


class ModelParent:
    """The zygote's side of the warm parent: started, spawned from, and closed by the zygote only."""

    def __init__(self, zygote: Zygote, idle_s: float = IDLE_S) -> None:
        self.pid, self.sock = fork_peer(lambda sock: _serve(zygote, sock))
        self.ready = False
        self.idle_s = idle_s
        self.used_at = time.monotonic()
        self.error: str | None = None  # why it refused to serve (its "failed" message)

    def poll(self) -> bool:
        """Read what the parent said so far (``ready`` or ``failed``) without waiting; whether it is ready."""
        while not self.ready and self.error is None:
            message = peer_message(self.sock, MAX_REQUEST, "the model parent exited")
            if message is None:
                break
            if message.get("type") == "ready":
                self.ready = True
                print(f"[zygote] warm model parent {self.pid} ready: imports took {message.get('preload_s')} s",
                      file=sys.stderr, flush=True)
            else:
                self.error = str(message.get("error") or message)
        return self.ready

    def expired(self) -> bool:
        return time.monotonic() - self.used_at > self.idle_s

    def spawn(self, request: dict[str, Any], fds: list[int]) -> tuple[int | None, str | None]:
        """(the worker's pid, None), or (None, why). Why is None when nothing was sent (the caller may fork the
        task itself); a reason when the parent took the request and did not answer (the task must fail: a
        worker might exist)."""
        self.used_at = time.monotonic()
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
        except OSError:
            return None, None
        try:
            self.sock.settimeout(REPLY_S)
            data = self.sock.recv(MAX_REQUEST)
        except OSError as exc:
            return None, f"the model parent did not answer: {one_line(exc)}"
        finally:
            self.sock.settimeout(None)
        message = json.loads(data) if data else {"type": "spawn_failed", "error": "the model parent exited"}
        pid = message.get("pid")
        if message.get("type") == "spawned" and isinstance(pid, int) and pid > 1:
            return pid, None
        return None, str(message.get("error") or "the model parent failed the spawn")

    def close(self) -> None:
        """It sees end of file and exits; the zygote reaps it (any child's exit is its to reap)."""
        self.sock.close()

    def kill(self) -> None:
        self.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class WarmModels:
    """The zygote's warm model parent, if any: started by the first model task, closed after ``idle_s`` unused,
    replaced when it breaks; ``idle_s`` 0 (or a parent that refused to serve) makes every model task fork cold."""

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self.parent: ModelParent | None = None

    def spawn(self, zygote: Zygote, request: dict[str, Any], fds: list[int]) -> tuple[int | None, str | None]:
        """A model task's worker from the warm parent: (pid, None); (None, None) to fork it in the zygote, cold
        (no parent yet, so one is started; or it is still importing; or it refused to serve); (None, why) when
        the parent took the request and failed it (the spawn must fail: a worker may exist)."""
        parent = self.parent
        if parent is None:
            if self.idle_s > 0:
                try:
                    self.parent = ModelParent(zygote, self.idle_s)
                except OSError as exc:
                    print(f"[zygote] no warm model parent: {one_line(exc)}", file=sys.stderr, flush=True)
            return None, None
        if not parent.poll():
            if parent.error is not None:  # it refused (no torch, or threads): cold from now on, said once
                print(f"[zygote] warm model parent: {parent.error}", file=sys.stderr, flush=True)
                parent.kill()
                self.parent, self.idle_s = None, 0
            return None, None
        pid, failure = parent.spawn(request, fds)
        if failure is not None:
            print(f"[zygote] warm model parent: {failure}", file=sys.stderr, flush=True)
            parent.kill()  # a hung or broken parent is replaced by the next model task
            self.parent = None
        return pid, failure

    def wake_in(self, timeout: float | None) -> float | None:
        """The zygote's select timeout, shortened to wake when the parent has waited ``idle_s`` unused."""
        if self.parent is None:
            return timeout
        left = max(0.0, self.parent.used_at + self.parent.idle_s - time.monotonic()) + 0.1
        return left if timeout is None else min(timeout, left)

    def expire(self) -> None:
        if self.parent is not None and self.parent.expired():
            self.parent.close()  # it sees end of file and exits; the zygote reaps it as any child
            self.parent = None

    def reaped(self, pid: int) -> None:
        """A child of the zygote ended that was no task: if it was the parent (it died unasked), forget it."""
        if self.parent is not None and self.parent.pid == pid:
            self.parent.close()
            self.parent = None

    def close(self) -> None:
        """The zygote's end: the parent sees end of file; waited for, so nothing is left behind."""
        parent, self.parent = self.parent, None
        if parent is not None:
            parent.close()
            try:
                os.waitpid(parent.pid, 0)
            except ChildProcessError:
                pass


def _serve(zygote: Zygote, sock: socket.socket) -> NoReturn:
    """The parent: import, say ready, then fork a worker per request until end of file."""
    from appliance.runtime.executors.task_worker import _close_fds_except, _flush_std

    code = 0
    try:
        sandbox.set_parent_death_signal()  # never outlives the zygote
        signal.set_wakeup_fd(-1)  # the zygote's wake-up pipe and handlers are not ours
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        _close_fds_except({0, 1, 2, sock.fileno()})  # the zygote's socket above all
        started = time.perf_counter()
        sys.modules[KEPT_OUT] = None  # type: ignore[assignment]  # diffusers would import it: a thread
        try:
            from renderers.image import img2img

            img2img.offline_imports()  # the hub's settings are read at import: offline, as in a task
            img2img.preload()
        except Exception as exc:  # noqa: BLE001 - no torch here: model tasks fork cold, as before
            say(sock, {"type": "failed", "error": f"preload failed: {one_line(exc)}"})
            raise SystemExit(0) from None
        gc.freeze()
        threads = len(os.listdir("/proc/self/task"))
        if threads != 1:
            say(sock, {"type": "failed", "error": f"{threads} threads after the imports: forking is unsafe"})
            raise SystemExit(0)
        say(sock, {"type": "ready", "threads": threads, "preload_s": round(time.perf_counter() - started, 3)})
        loaded = Loaded(zygote)
        sock.settimeout(LOADED_CHECK_S)
        try:
            while True:
                try:
                    data, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 8)
                except TimeoutError:
                    loaded.expire()  # the weights are the larger hold: gone sooner than the imports
                    continue
                if not data:
                    break  # the zygote closed it (idle, or its own end)
                try:
                    _flush_std()
                    request = json.loads(data)
                    model = model_of(request, fds)
                    pid = loaded.spawn(model, request, fds) or fork_worker(zygote, request, fds, sock)
                    say(sock, {"type": "spawned", "pid": pid})
                    loaded.prepare(model)  # after the answer: the task never waits for a load
                except Exception as exc:  # noqa: BLE001 - this spawn fails, the parent goes on
                    say(sock, {"type": "spawn_failed", "error": one_line(exc)})
                finally:
                    for fd in fds:
                        os.close(fd)
        finally:
            loaded.close()
    except SystemExit:
        pass
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)


class Loaded:
    """The warm parent's loaded parent (model_pipeline.py), if any: one model at a time, never a model whose load
    failed (until this warm parent is replaced), never one too large to keep."""

    def __init__(self, zygote: Zygote) -> None:
        self.zygote = zygote
        self.parent: LoadedParent | None = None
        self.failed: set[str] = set()
        self.used_at = time.monotonic()

    def expire(self) -> None:
        """Drop the loaded parent once its model has had no task for LOADED_IDLE_S."""
        if self.parent is not None and time.monotonic() - self.used_at > LOADED_IDLE_S:
            self._drop()

    def spawn(self, model: dict[str, Any] | None, request: dict[str, Any], fds: list[int]) -> int | None:
        """The worker's pid when the loaded parent holds this CPU task's model and forked it; else None."""
        parent = self.parent
        if model is None or parent is None or parent.sha256 != model["sha256"]:
            return None
        self.used_at = time.monotonic()
        if not parent.poll():
            if parent.error is not None:
                print(f"[model parent] {parent.sha256[:12]}: {parent.error}", file=sys.stderr, flush=True)
                self.failed.add(parent.sha256)
                self._drop()
            return None
        pid = parent.spawn(request, fds)
        if pid is None:
            self._drop()  # broken: the warm parent forks this task, and the next of the model, itself
        return pid

    def prepare(self, model: dict[str, Any] | None) -> None:
        """Start loading this CPU task's model where no loaded parent holds it (replacing another model's)."""
        if model is None or model["sha256"] in self.failed or not fits(model):
            return
        if self.parent is not None and self.parent.sha256 == model["sha256"]:
            return
        self._drop()
        self.parent, self.used_at = LoadedParent(self.zygote, model), time.monotonic()

    def _drop(self) -> None:
        parent, self.parent = self.parent, None
        if parent is not None:
            parent.kill()

    def close(self) -> None:
        self._drop()
