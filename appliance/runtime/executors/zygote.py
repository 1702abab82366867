"""The warm fork server: ``python -m appliance.runtime.executors.zygote CONFIG_JSON``, started by
``LocalExecutor.start()``.

It imports the heavy libraries once, then forks one worker per spawn request received on a Unix SEQPACKET
socket (request JSON + the task's pipe, log and input fds via SCM_RIGHTS). The worker sets up the task's cgroup
and sandbox and runs the renderer in a child of its own (appliance/runtime/sandbox/__init__.py); the zygote reaps
the worker and reports ``{pid, status}`` so the executor can tell a signal death from a clean exit. A separate
interpreter rather than a fork of the server: the server is multi-threaded.

Imports are limited to the sandbox and renderers: this process never opens the appliance database.

Model tasks (``image.img2img``) fork from a second, warm parent instead, once it has imported torch and diffusers
(model_parent.py); their workers are re-parented here and handled as any other.

Config keys: fd, preload, sandbox, extra_readonly, allow_unsandboxed (default false: with the sandbox requested
but unavailable, every task fails with the reason instead of running as the server's user), task_fs ("auto": a
filesystem of its own per task where one can be made, sandbox/taskfs.py; "off": the measured quota),
model_warm_idle_s (how long the warm model parent waits unused; 0: none, model tasks fork cold); from the launcher
(appliance/runtime/launcher.py) also work_root and owner_uid: the server is another, unprivileged uid, so each
workdir is checked before root acts on it and given back to that uid when the task ends.

Requests: spawn {id, task_id, renderer, workdir, limits} with three fds; kill {pid} (a tracked worker only).

Messages to the executor: ready {mechanism, preload_s, threads, preload_errors, pid, layers}; spawned {id, pid, uid};
spawn_failed {id, error}; exited {pid, status, cpu_s, maxrss_kb, killed_by?} where killed_by is "memory" when
the task's memory cgroup recorded an OOM kill.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback
from typing import Any, NoReturn

from appliance.errors import one_line  # stdlib-only, like everything the zygote imports
from appliance.runtime import sandbox
from appliance.runtime.executors.model_parent import IDLE_S, MODEL_RENDERERS, WarmModels
from appliance.runtime.executors.task_worker import (
    Worker,
    _close_fds_except,
    _flush_std,
    cgroup_name,
    fork_peer,
    own_session,
    protect_from_oom_killer,
)
from appliance.runtime.launcher import check_workdir, give_back
from appliance.runtime.sandbox import Cgroups, taskfs
from appliance.runtime.sandbox.probe import taskfs_here
from appliance.runtime.sandbox.quota import MAX_FILES, hidden_bytes

MAX_REQUEST = 1 << 16
HIDDEN_EVERY_S = 0.5  # how often root looks for deleted-but-open files of running tasks (_check_hidden)


class UidKiller:
    """``sandbox.kill_uid`` run by a small helper process that the zygote forks before it preloads.

    kill_uid forks (to take the task's uid and kill(-1) as it); forked from the preloaded zygote that cost about
    14 ms at the end of every task (copying, then tearing down, the page tables of a few hundred MB), from this
    helper about 1 ms. The helper reads uids on a pipe only the zygote holds (workers close every fd they do not
    need), refuses any uid below UID_BASE (kill(-1) as root would kill everything), answers one byte per uid,
    and dies with the zygote. Should it die, the zygote kills the uid itself, as before.
    """

    def __init__(self) -> None:
        requests_r, self._requests = os.pipe()
        self._answers, answers_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            self._serve(requests_r, answers_w)
        os.close(requests_r)
        os.close(answers_w)

    @staticmethod
    def _serve(requests: int, answers: int) -> NoReturn:
        code = 0
        try:
            sandbox.set_parent_death_signal()
            _close_fds_except({0, 1, 2, requests, answers})
            while len(data := os.read(requests, 4)) == 4:
                uid = int.from_bytes(data, "little")
                if uid >= sandbox.UID_BASE:
                    sandbox.kill_uid(uid)
                os.write(answers, b"k")
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)

    def kill_uid(self, uid: int) -> None:
        try:
            os.write(self._requests, uid.to_bytes(4, "little"))
            if os.read(self._answers, 1) == b"k":
                return
        except OSError:
            pass
        sandbox.kill_uid(uid)  # the helper is gone: the slow way, never no way

    def close(self) -> None:
        """The helper sees end of file and exits (the zygote reaps it)."""
        os.close(self._requests)
        os.close(self._answers)


class Zygote:
    def __init__(self, sock: socket.socket, isolated: bool, sources: list[str], cgroups: Cgroups | None,
                 refusal: str | None, work_root: str | None = None, owner_uid: int | None = None,
                 killer: UidKiller | None = None, own_fs: str | None = "not probed",
                 model_warm_idle_s: float = IDLE_S) -> None:
        self.sock, self.isolated, self.sources, self.killer = sock, isolated, sources, killer
        self.taskfs = own_fs  # None: each task gets a filesystem of its own (sandbox/taskfs.py); else why not
        # one mkfs per (size, inodes), copied by each task's worker (taskfs.Template)
        self.templates = taskfs.Templates() if own_fs is None and isolated else None
        self.cgroups, self.refusal = cgroups, refusal
        self.work_root, self.owner_uid = work_root, owner_uid  # set when the server is another uid
        self.tasks: dict[int, int | None] = {}  # worker pid -> sandbox uid
        self.workdirs: dict[int, tuple[str, tuple[int, int]]] = {}  # worker pid -> checked workdir (launcher)
        self.watched: dict[int, tuple[int, int]] = {}  # worker pid -> (disk quota MB, workdir's device)
        self.killed: dict[int, str] = {}  # worker pid -> why the zygote killed it ("disk")
        self._hidden_at = 0.0
        self.unremoved: list[str] = []  # task cgroups a dying process still held when its worker was reaped
        self.pid = os.getpid()
        self._wake_r, self._wake_w = os.pipe()
        self.spare: Spare | None = None  # the next task's worker, forked and waiting (see Spare)
        self.models = WarmModels(model_warm_idle_s)  # model tasks fork from its parent once it is ready

    # ---- serving ------------------------------------------------------------------------------------------
    def serve(self) -> None:
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ, "request")
        selector.register(self._wake_r, selectors.EVENT_READ, "child")
        self._refill()
        while True:
            timeout = self.models.wake_in(HIDDEN_EVERY_S if self.watched else None)
            for key, _ in selector.select(timeout):
                if key.data == "child":
                    os.read(self._wake_r, 4096)
                elif not self._handle_request():
                    return self._shutdown()
            self._reap()
            self._check_hidden()
            self.models.expire()

    def _check_hidden(self) -> None:
        """Files a task deleted but keeps open are invisible to its worker's walk of the workdir (and the worker,
        the task's uid, cannot read a task process's /proc/PID/fd): root looks here, and a task whose hidden
        files alone pass its disk quota is killed (``killed_by: disk``)."""
        now = time.monotonic()
        if self.cgroups is None or now < self._hidden_at:
            return
        self._hidden_at = now + HIDDEN_EVERY_S
        for pid, (limit_mb, device) in list(self.watched.items()):
            name = cgroup_name(self.pid, pid)
            if hidden_bytes(self.cgroups.pids(name), set(), device) > limit_mb << 20:
                self.killed[pid] = "disk"
                del self.watched[pid]
                self.cgroups.kill(name)

    def _send(self, message: dict[str, Any]) -> None:
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
            elif request.get("op") == "kill" and not fds:
                self._kill(request.get("pid"))
            else:
                self._send({"type": "spawn_failed", "id": request.get("id"), "error": "bad request"})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _kill(self, pid: object) -> None:
        if isinstance(pid, int) and pid in self.tasks:  # never any other process of root's
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _spawn(self, request: dict[str, Any], pipe_fd: int, log_fd: int, input_fd: int) -> None:
        expect = None
        if self.work_root is not None and self.owner_uid is not None:
            try:  # the server is not root: root acts only on a workdir it has checked
                expect = check_workdir(str(request.get("workdir")), self.work_root, self.owner_uid)
            except ValueError as exc:
                self._send({"type": "spawn_failed", "id": request["id"], "error": str(exc)})
                return
            request = {**request, "expect": list(expect)}
        template = self._template(request, expect)
        if template is not None:
            request = {**request, "template": [template.size, template.files]}
        extra = [template.fd] if template is not None else []
        pid = None
        if request.get("renderer") in MODEL_RENDERERS:
            pid, failure = self.models.spawn(self, request, [pipe_fd, log_fd, input_fd, *extra])
            if failure is not None:  # the warm parent took it and did not answer: a worker may exist, so no retry
                self._send({"type": "spawn_failed", "id": request["id"], "error": failure})
                return
        if pid is None:
            spare, self.spare = self.spare, None
            pid = spare.pid if spare is not None and spare.hand_over(request, [pipe_fd, log_fd, input_fd, *extra]) \
                else None
        if pid is None:  # no spare (or it died): fork one now
            _flush_std()
            try:
                pid = os.fork()
            except OSError as exc:
                self._send({"type": "spawn_failed", "id": request["id"], "error": one_line(exc)})
                return
            if pid == 0:
                Worker(self, request).run(pipe_fd, log_fd, input_fd, *extra)
        uid = sandbox.task_uid(pid) if self.isolated else None
        self.tasks[pid] = uid
        with contextlib.suppress(OSError, KeyError, TypeError, ValueError):
            if self.taskfs is not None:  # the measured quota: hidden files are ours to count (_check_hidden)
                self.watched[pid] = (int(request["limits"]["disk_mb"]), os.stat(request["workdir"]).st_dev)
        if expect is not None:
            self.workdirs[pid] = (request["workdir"], expect)
        self._send({"type": "spawned", "id": request["id"], "pid": pid, "uid": uid})
        self._refill()  # while the task starts on another core

    def _template(self, request: dict[str, Any], expect: tuple[int, int] | None) -> taskfs.Template | None:
        """The fresh filesystem for this task's size (its quota, its staged inputs), made here on first use so
        that no worker runs mkfs; None (the worker then makes its own, or measures) when anything is off."""
        if self.templates is None:
            return None
        try:
            disk_mb = int(request["limits"]["disk_mb"])
            fd = os.open(str(request["workdir"]), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                if expect is not None and (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != expect:
                    return None  # the worker refuses it
                size, count = taskfs.input_bytes(fd)
            finally:
                os.close(fd)
            return self.templates.get(*taskfs.sizing(disk_mb, size, MAX_FILES + count + taskfs.INODE_SLACK))
        except (OSError, KeyError, TypeError, ValueError, subprocess.SubprocessError) as exc:
            print(f"[zygote] no template filesystem: {one_line(exc)}", file=sys.stderr, flush=True)
            return None

    def _refill(self) -> None:
        if self.spare is None:
            try:
                self.spare = Spare(self)
            except OSError:  # out of processes or memory: the next spawn forks for itself
                self.spare = None

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
        self.watched.pop(pid, None)
        killed_by = self.killed.pop(pid, None)
        if not tracked and self.spare is not None and self.spare.pid == pid:  # a spare that died unused
            self.spare.close()
            self.spare = None
        if not tracked:
            self.models.reaped(pid)
        if not tracked and self.cgroups is not None:  # a spare's (one that died unused, or at its handover)
            self.cgroups.remove(cgroup_name(self.pid, pid))
        if tracked:
            self._kill_leftovers(pid, uid)
        workdir = self.workdirs.pop(pid, None)
        if workdir is not None and self.owner_uid is not None:  # the server takes the outputs and removes it
            give_back(workdir[0], workdir[1], self.owner_uid)
        _, status, usage = os.wait4(pid, 0)
        if not tracked:  # an orphaned grandchild re-parented to us (subreaper)
            return
        report = {"type": "exited", "pid": pid, "status": status,
                  "cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "maxrss_kb": usage.ru_maxrss}
        if killed_by is not None:
            report["killed_by"] = killed_by
        if self.cgroups is not None:
            name = cgroup_name(self.pid, pid)
            if self.cgroups.oom_kills(name):
                report["killed_by"] = "memory"
            self.unremoved = [n for n in [*self.unremoved, name] if not self.cgroups.remove(n)]
        self._send(report)

    def _kill_leftovers(self, pid: int, uid: int | None) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)  # grandchildren still in the task's process group
        except ProcessLookupError:
            pass
        if uid is not None:
            (self.killer.kill_uid if self.killer else sandbox.kill_uid)(uid)  # and any that left it (setsid)
        if self.cgroups is not None:
            self.cgroups.kill(cgroup_name(self.pid, pid))  # and any the task's namespace did not take along

    def _shutdown(self) -> None:
        if self.spare is not None:  # it sees end of file and exits at once
            spare, self.spare = self.spare, None
            spare.close()
            try:
                os.waitpid(spare.pid, 0)
            except ChildProcessError:
                pass
            if self.cgroups is not None:
                self.cgroups.remove(cgroup_name(self.pid, spare.pid))
        self.models.close()  # its parent sees end of file (or dies with us: its parent-death signal)
        for pid, uid in list(self.tasks.items()):
            self._kill_leftovers(pid, uid)
        deadline = time.monotonic() + 5
        while self.tasks and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.01)


class Spare:
    """The next task's worker, forked ahead and waiting for its request on a socket of its own.

    A task's start used to pay for the fork of the preloaded zygote (~6 ms) and for joining its cgroup (0.2 ms,
    or ~14 ms when the kernel's cgroup lock waits for an RCU grace period); a spare does both while nothing
    waits for it, and the zygote forks the next spare once it has handed a request over. While it waits it
    holds nothing of the server's (the zygote's socket closed, no task fds) and dies with the zygote; its
    limits are written on its cgroup when the request arrives, before any of the task's code runs.
    """

    def __init__(self, zygote: Zygote) -> None:
        self.pid, self.sock = fork_peer(lambda sock: self._wait(zygote, sock))

    @staticmethod
    def _wait(zygote: Zygote, sock: socket.socket) -> NoReturn:
        code = 0
        try:
            sandbox.set_parent_death_signal()  # a spare never outlives its zygote
            own_session()
            _close_fds_except({0, 1, 2, sock.fileno()})  # the zygote's socket above all
            in_cgroup = Spare._prepare_cgroup(zygote)
            protect_from_oom_killer()
            data, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 4)
            sock.close()
            if data and len(fds) in (3, 4):  # the task's pipe, log and input, and a template (taskfs.Template)
                Worker(zygote, json.loads(data), spare=True, in_cgroup=in_cgroup).run(*fds)
        except BaseException:
            traceback.print_exc()
            code = 70
        finally:
            os._exit(code)  # end of file (the zygote stops) or a broken handover: the zygote reaps us

    @staticmethod
    def _prepare_cgroup(zygote: Zygote) -> bool:
        """Make and join the cgroup now; on failure the worker tries again for the task and reports why."""
        if zygote.cgroups is None:
            return False
        name = cgroup_name(zygote.pid, os.getpid())
        try:
            zygote.cgroups.prepare(name)
            return True
        except OSError:
            zygote.cgroups.remove(name)
            return False

    def hand_over(self, request: dict[str, Any], fds: list[int]) -> bool:
        """The request and the task's fds to the spare; False when it is gone (the caller forks instead)."""
        try:
            return socket.send_fds(self.sock, [json.dumps(request).encode()], fds) > 0
        except OSError:
            return False
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()


def _preload(modules: list[str]) -> list[str]:
    errors = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional library fails its tasks later, not the zygote
            errors.append(f"{name}: {one_line(exc)}")
    return errors


def main(argv: list[str]) -> None:
    config = json.loads(argv[0])
    sock = socket.socket(fileno=config["fd"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop (it closes the socket)
    sandbox.set_child_subreaper()
    killer = UidKiller() if config["sandbox"] and os.geteuid() == 0 else None  # before the preload: small
    started = time.perf_counter()
    errors = _preload(list(config["preload"]))
    gc.freeze()  # the preloaded objects are never collected, so a worker's GC does not copy their pages
    preload_s = time.perf_counter() - started
    if not config["sandbox"]:
        mechanism = sandbox.DISABLED
    else:
        mechanism = sandbox.probe_here(config["extra_readonly"])
    isolated = mechanism == sandbox.FULL
    sources = sandbox.readonly_sources(config["extra_readonly"]) if isolated else []
    refusal = (sandbox.untrusted_allowed(mechanism, bool(config.get("allow_unsandboxed", False)))
               if config["sandbox"] else None)
    cgroups = Cgroups.find()
    if cgroups is not None:
        cgroups.sweep(os.getpid())
    threads = len(os.listdir("/proc/self/task"))  # forking is only safe while this stays 1
    # each layer as probed here, where tasks start: under the service this is the root launcher's zygote, whereas
    # a probe in the server (another, unprivileged uid) would find every layer missing
    own_fs = ("no namespace sandbox" if not isolated else taskfs.OFF_REASON if config.get("task_fs") == "off"
              else taskfs_here())
    layers = sandbox.layers_here(config["extra_readonly"], own_fs) if config["sandbox"] else []
    sock.send(json.dumps({"type": "ready", "mechanism": mechanism, "preload_s": round(preload_s, 3),
                          "threads": threads, "preload_errors": errors, "pid": os.getpid(),
                          "layers": layers}).encode())
    if killer is not None and not isolated:  # no task uids to kill
        killer.close()
        killer = None
    Zygote(sock, isolated, sources, cgroups, refusal, config.get("work_root"), config.get("owner_uid"),
           killer, own_fs, float(config.get("model_warm_idle_s", IDLE_S))).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
