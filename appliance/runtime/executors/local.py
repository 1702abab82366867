"""The local executor: one task in one sandboxed OS process, forked by a warm zygote.

The scheduler sees the executor seam (``base.Executor``): ``submit(spec, on_message) -> TaskHandle``. Here that
means: a fresh workdir under ``work/``, input artifacts linked into it, a fork of the warm zygote, messages
read from the worker's pipe on a thread of its own, and — after a successful exit — the output files taken
into the artifact store and the workdir removed, all on that thread (never on the server's event loop).
``spawn(run, on_message)`` is the lower level: one process in a given workdir. The worker processes never
touch the database: they report through their pipe and their workdir.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from appliance.errors import one_line
from appliance.runtime import intake, resume, sandbox
from appliance.runtime.artifacts import Artifacts
from appliance.runtime.executors.base import ExitMessage, Message, OnMessage, TaskSpec, failed
from appliance.runtime.executors.forkserver import ZygoteClient
from appliance.runtime.executors.handle import LocalRun, TaskHandle
from appliance.runtime.sandbox import Limits
from appliance.runtime.verify import declared

__all__ = ["Limits", "LocalExecutor", "LocalRun", "TaskHandle", "TaskSpec"]

log = logging.getLogger(__name__)
# "auto": each task gets a filesystem of its own where one can be made (sandbox/taskfs.py); "off": the measured
# quota (sandbox/quota.py DiskWatch) for every task
TASK_FS = ("auto", "off")
# what health says of the sandbox while the warm worker is still starting through the root launcher
UNKNOWN_SANDBOX = "unknown until the launcher answers"
# (renderer, task input, role -> the server's copy of the output) -> a reason to refuse the result, or None
Verifier = Callable[[str, dict[str, Any], dict[str, Path]], "str | None"]


# ---- the executor ---------------------------------------------------------------------------------------------
class LocalExecutor:
    def __init__(self, *, preload: Sequence[str] = ("numpy", "PIL", "manim"), sandbox: bool = True,
                 extra_readonly: Sequence[Path] = (), data_dir: Path | None = None,
                 verify: Verifier | None = None, start_timeout_s: float = 60, allow_unsandboxed: bool = False,
                 launcher_socket: str = "", task_fs: str = "auto", model_warm_idle_s: float = 600.0) -> None:
        if task_fs not in TASK_FS:
            raise ValueError(f"task_fs must be one of: {', '.join(TASK_FS)}, got {task_fs!r}")
        self._config: dict[str, Any] = {
            "preload": list(preload), "sandbox": sandbox, "allow_unsandboxed": allow_unsandboxed, "task_fs": task_fs,
            "extra_readonly": [str(p) for p in extra_readonly], "start_timeout_s": start_timeout_s,
            "launcher_socket": launcher_socket,  # set: the zygote is the privileged launcher's (launcher.py)
            "model_warm_idle_s": model_warm_idle_s}
        self._root = data_dir
        self.artifacts = Artifacts(data_dir / "artifacts") if data_dir else None
        self._verify = verify
        self._handles: dict[str, TaskHandle] = {}
        self._lock = threading.Lock()
        self._zygote: ZygoteClient | None = None
        self._mechanism: str | None = None
        self.ready: dict[str, Any] = {}  # the zygote's ready report: mechanism, preload_s, threads, preload_errors

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
            return UNKNOWN_SANDBOX  # probing here, as another uid, would say NOT_ROOT
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

        def relay(message: Message) -> None:
            if message["type"] == "exit":
                message = self._stage_out(spec, workdir, message)
                self._handles.pop(spec.task_id, None)
            on_message(message)

        try:
            self.artifacts.stage_in(spec.inputs, workdir)
            handle = self.spawn(run, relay, copy_back="result")
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

    def _stage_out(self, spec: TaskSpec, workdir: Path, message: ExitMessage) -> ExitMessage:
        """On the task's reader thread: verify and take in the claimed outputs, then drop the workdir."""
        try:
            if message["ok"]:
                files, outputs = self._take_outputs(spec, workdir, message.get("result"))
                message = {**message, "result": {**message["result"], "files": files}, "outputs": outputs}
            elif message.get("retry") and spec.renderer == "manim" and self.artifacts and self._root:
                # the next attempt resumes from the pieces this one finished: kept before the workdir goes
                salvaged = resume.salvage(workdir, self._root / "tmp", self.artifacts)
                if salvaged is not None:
                    message = {**message, "salvaged": salvaged}
        except (OSError, ValueError) as exc:
            message = failed(str(exc) if isinstance(exc, ValueError) else f"renderer output missing: {one_line(exc)}")
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
    def spawn(self, spec: LocalRun, on_message: OnMessage, copy_back: str = "all") -> TaskHandle:
        """``copy_back``: what a task with a filesystem of its own (sandbox/taskfs.py) leaves in ``spec.workdir``
        when it ends: "result" the files its result declares (what submit takes in), "all" every plain file at
        the top of its workdir as well (a bare run's caller may read any)."""
        spec.workdir.mkdir(parents=True, exist_ok=True)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = TaskHandle(spec, on_message)
        pipe_r, pipe_w = os.pipe()
        sent = [pipe_w, os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644),
                _input_fd(spec.input)]
        request = {"op": "spawn", "task_id": spec.task_id, "renderer": spec.renderer,
                   "workdir": str(spec.workdir.absolute()), "limits": asdict(spec.limits), "env": spec.env,
                   "gpu": spec.gpu, "copy_back": copy_back}
        try:
            with self._lock:
                zygote = self._ensure_zygote()  # restarts a zygote that died
            zygote.spawn(request, sent, handle)
        except BaseException:
            os.close(pipe_r)
            handle.close_wake_pipe()
            raise
        finally:
            for fd in sent:
                os.close(fd)
        handle.watch(pipe_r)
        return handle


def _input_fd(task_input: dict[str, Any]) -> int:
    """The task input travels as a memfd: no size limit on the socket, nothing written to disk."""
    fd = os.memfd_create("task-input")
    os.write(fd, json.dumps(task_input).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
