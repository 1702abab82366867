"""One task's worker: forked by the zygote (``zygote.py``), it confines itself (cgroup, namespaces, uid) and
supervises the task's init and renderer (``sandbox/relay.py``), then reports the outcome on the server's pipe.

Split from the zygote, which only forks, reaps and reports: everything here runs in the forked child.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from appliance.errors import one_line
from appliance.runtime import intake, sandbox
from appliance.runtime.artifacts import safe_name
from appliance.runtime.executors.live_mirror import LiveMirror
from appliance.runtime.sandbox import Limits, seccomp, taskfs
from appliance.runtime.sandbox.quota import MAX_FILES, CappedLog, DiskWatch, FsWatch
from appliance.runtime.sandbox.relay import STATUS, Relay, write_line
from appliance.runtime.verify import declared
from renderers.base import JsonLinesReporter, RenderError
from renderers.registry import RegistryError, default_registry

if TYPE_CHECKING:
    from appliance.runtime.executors.zygote import Zygote

PREVIEW_NAME = "preview.jpg"  # renderers/preview.py's NAME (not imported: it imports Pillow)
PREVIEW_MAX = 2 << 20  # the dashboard serves none larger (api/dashboard/views.py)


def _setup_failed(out: BinaryIO | None, exc: BaseException) -> int:
    """A worker or renderer that could not even start its task: the traceback to the log, one line to the
    server, exit status 71."""
    traceback.print_exc()
    write_line(out, {"type": "error", "error": f"worker setup failed: {one_line(exc)}"})
    return 71


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


class Worker:
    """The forked child (see appliance/runtime/sandbox/__init__.py for the three processes of a task):
    cgroup and sandbox as root, then the task's init and renderer, then the relay. ``os._exit``; never returns."""

    def __init__(self, zygote: Zygote, request: dict[str, Any], spare: bool = False, in_cgroup: bool = False) -> None:
        self.zygote, self.request = zygote, request
        self.spare, self.in_cgroup = spare, in_cgroup  # what a spare did while it waited (see Spare)
        self.limits = Limits(**request["limits"])
        self.workdir = Path(request["workdir"])
        self.uid = sandbox.task_uid(os.getpid()) if zygote.isolated else None
        self.oom_fd: int | None = None
        self.cpu_fd: int | None = None  # the cgroup's CPU counter: the task's CPU time, all processes together
        # With a filesystem of its own (sandbox/taskfs.py): the host workdir, where the outputs and the live
        # preview go, and the task's filesystem; never inherited by the task (its processes close every fd).
        self.host_fd: int | None = None
        self.task_fd: int | None = None
        self.preview: tuple[int, int, int] | None = None  # (inode, mtime, size) of the preview last mirrored
        self.live = LiveMirror()  # a Manim render's live segments (executors/live_mirror.py)
        self.template: taskfs.Template | None = None  # the zygote's fresh filesystem for this task's size

    def run(self, pipe_fd: int, log_fd: int, input_fd: int, template_fd: int | None = None) -> NoReturn:
        code, out = 70, None
        try:
            sizes = self.request.get("template")
            if template_fd is not None and isinstance(sizes, list) and len(sizes) == 2:
                self.template = taskfs.Template(template_fd, int(sizes[0]), int(sizes[1]))
            self._detach(pipe_fd, log_fd, input_fd)
            out = os.fdopen(pipe_fd, "wb")
            if self.zygote.refusal:
                write_line(out, {"type": "error", "error": self.zygote.refusal})
                code = 78
            else:
                task_input = json.loads(_read_all(input_fd))
                os.close(input_fd)
                self._confine()
                code = self._supervise(task_input, out)
        except BaseException as exc:
            code = _setup_failed(out, exc)
        finally:
            _flush_std()
            os._exit(code)

    def _detach(self, pipe_fd: int, log_fd: int, input_fd: int) -> None:
        if not self.spare:  # a spare did this while it waited
            own_session()
        devnull = os.open("/dev/null", os.O_RDONLY)
        for src, dst in ((devnull, 0), (log_fd, 1), (log_fd, 2)):
            os.dup2(src, dst)
        # Drops the zygote's socket above all: a task must never be able to ask for another spawn.
        _close_fds_except({0, 1, 2, pipe_fd, input_fd, *([self.template.fd] if self.template else [])})
        os.set_inheritable(pipe_fd, False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)

    def _confine(self) -> None:
        """As root (when the zygote is): the task's cgroup, then the namespaces and the new root."""
        try:
            self._confine_as_root()
        finally:
            if self.template is not None:  # copied (or not needed): nothing of the task may ever hold it
                self.template.close()
                self.template = None

    def _confine_as_root(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cgroups = self.zygote.cgroups
        if cgroups is not None:
            name = cgroup_name(self.zygote.pid, os.getpid())
            if self.in_cgroup:  # a spare made and joined it while it waited: the limits, before anything runs
                cgroups.limit(name, self.limits, sandbox.preloaded_mb())
            else:
                cgroups.create(name, self.limits, sandbox.preloaded_mb())
            self.oom_fd = os.open(cgroups.oom_counter(name), os.O_RDONLY | os.O_CLOEXEC)
            counter = cgroups.cpu_counter(name)
            self.cpu_fd = os.open(counter, os.O_RDONLY | os.O_CLOEXEC) if counter else None
        if not self.spare:
            protect_from_oom_killer()
        if self.uid is not None:
            tmp_mb = min(self.limits.fsize_mb, self.limits.mem_mb)
            expect = self.request.get("expect")
            own_fs = self.zygote.taskfs is None
            self.host_fd = sandbox.enter(self.workdir, self.uid, self.zygote.sources, tmp_mb,
                                         expect=(expect[0], expect[1]) if expect else None,
                                         gpu=_granted_gpu(self.request),
                                         disk_mb=self.limits.disk_mb if own_fs else None, max_files=MAX_FILES,
                                         template=self.template)
            self.workdir = Path(taskfs.INSIDE)  # what the task sees: no host path
            if self.host_fd is not None:
                self.task_fd = os.open(self.workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        os.chdir(self.workdir)

    def _supervise(self, task_input: dict[str, Any], out: BinaryIO) -> int:
        disk = (FsWatch(str(self.workdir), self.limits.disk_mb, tick=self._mirror_preview)
                if self.task_fd is not None else DiskWatch(str(self.workdir), self.limits.disk_mb))
        messages, output, status = os.pipe(), os.pipe(), os.pipe()
        _flush_std()
        init = os.fork()
        if init == 0:
            out.close()  # the server's pipe stays with the worker alone
            self._init(task_input, messages[1], output[1], status[1])
        for fd in (messages[1], output[1], status[1]):
            os.close(fd)
        if self.uid is not None:
            sandbox.drop_privileges(self.uid)
        sandbox.set_dumpable(False)  # the task's uid cannot open our /proc entries (fds, memory)
        sandbox.set_parent_death_signal()  # after the uid change, which clears it
        if os.getppid() != self.zygote.pid:
            raise RuntimeError("the zygote exited while the worker started")
        log = CappedLog(2, self.limits.log_mb)
        weight = f" cpu weight {self.limits.weight:g} (a longer task of its job goes first)" \
            if self.limits.weight < 1 else ""
        log.write(f"[worker] task {self.request['task_id']} renderer {self.request['renderer']} pid {os.getpid()}"
                  f" uid {os.getuid()}{weight}\n".encode())
        relay = Relay(out, messages[0], output[0], status[0], log, disk, self.oom_fd, self.limits.mem_mb,
                      cpu=(self.cpu_fd, self.limits.cpu_seconds) if self.cpu_fd is not None else None)
        relay.run(lambda: _kill(init))
        os.waitpid(init, 0)  # and with it every process of the task: its PID namespace died with its init
        if isinstance(disk, FsWatch) and relay.reason is None and disk.exceeded():
            # Full at exit, before the filesystem goes: a task that hit ENOSPC and exited at once failed on its
            # quota, whatever its error says (the relay's last look came before its last processes were gone).
            relay.reason = disk.error()
        if self.task_fd is not None:
            self._mirror_preview()  # the last live segments: written after the last tick
            self._take_back(relay)
        return self._conclude(relay, out)

    # ---- the task's own filesystem: what leaves it, by descriptor ---------------------------------------------
    def _take_back(self, relay: Relay) -> None:
        """Copy the result's declared files from the task's filesystem into the host workdir, where the server
        takes them in (runtime/intake.py) as it always did; a link, FIFO or other non-file fails the task with
        intake's reason. ``copy_back: all`` (a bare ``spawn``): every plain file at the top as well. Nothing of
        the task runs any more, so nothing can swap a file meanwhile; the filesystem goes with this process."""
        final = relay.final
        result = final.get("result") if final is not None and final["type"] == "result" else None
        files = result.get("files") if isinstance(result, dict) and relay.reason is None else None
        names = [n for n in declared(self.request["renderer"], files).values() if isinstance(n, str)] \
            if isinstance(files, dict) else []
        try:
            for name in dict.fromkeys(names):
                try:
                    safe_name(name)
                except ValueError:
                    continue  # the server refuses the result with the reason
                self._copy_back(name)
        except intake.Refused as exc:
            relay.final = {"type": "error", "error": str(exc)}
        except OSError as exc:
            relay.final = {"type": "error", "error": f"could not take the outputs out: {one_line(exc)}"}
        if self.request.get("copy_back") == "all":
            assert self.task_fd is not None
            device = os.fstat(self.task_fd).st_dev  # not a large input bound in from the host workdir
            for entry in os.scandir(self.task_fd):
                if entry.name not in names and entry.is_file(follow_symlinks=False) \
                        and entry.stat(follow_symlinks=False).st_dev == device:
                    with contextlib.suppress(OSError):  # Refused included: what it is not, it is not copied
                        self._copy_back(entry.name)

    def _copy_back(self, name: str, dest: str | None = None, max_bytes: int | None = None) -> None:
        assert self.task_fd is not None and self.host_fd is not None
        dest = dest or name
        with contextlib.suppress(FileNotFoundError):  # e.g. the staged input of that name: only our link goes
            os.unlink(dest, dir_fd=self.host_fd)
        intake.copy_out(self.task_fd, name, self.host_fd, dest, 0o644, max_bytes)

    def _mirror_preview(self) -> None:
        """The live frame (renderers/preview.py) into the host workdir, where the dashboard reads it: when it
        changed, a plain file of at most PREVIEW_MAX, replaced atomically. And the live segments of a Manim
        render, as they finish (executors/live_mirror.py)."""
        assert self.task_fd is not None and self.host_fd is not None
        self.live.tick(self.task_fd, self.host_fd)
        try:
            info = os.stat(PREVIEW_NAME, dir_fd=self.task_fd, follow_symlinks=False)
            seen = (info.st_ino, info.st_mtime_ns, info.st_size)
            if seen == self.preview or info.st_size > PREVIEW_MAX:
                return
            self._copy_back(PREVIEW_NAME, f".{PREVIEW_NAME}.tmp", PREVIEW_MAX)
            os.rename(f".{PREVIEW_NAME}.tmp", PREVIEW_NAME, src_dir_fd=self.host_fd, dst_dir_fd=self.host_fd)
            self.preview = seen
        except OSError:  # Refused included: a preview never fails a task
            pass

    def _conclude(self, relay: Relay, out: BinaryIO) -> int:
        """Pass on the renderer's outcome: its result or error line, and its exit code or death by signal."""
        status = relay.status
        if relay.reason is not None or status is None:
            write_line(out, {"type": "error", "error": relay.reason or "the task's init process died"})
            return 1
        if os.WIFSIGNALED(status):  # die the same way, so the server tells a crash or a limit from an exit
            sig = os.WTERMSIG(status)
            _flush_std()
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            return 128 + sig
        if relay.final is not None:
            write_line(out, self._worded(relay.final))
        if self._all_gone_with_a_result(relay, status):
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # init and the renderer, both reaped
            write_line(out, {"type": "ended", "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                             "maxrss_kb": usage.ru_maxrss})
        return os.WEXITSTATUS(status)

    def _worded(self, final: dict[str, Any]) -> dict[str, Any]:
        """A task that failed on ENOSPC in its own filesystem failed on its disk quota: say so. (Blocks it held
        in a file it deleted are free again once it exited, so the watch may not have seen the filesystem full.)
        Not when the task's /tmp (its memory's) is the full one."""
        error = final.get("error")
        if self.task_fd is None or final["type"] != "error" or "No space left on device" not in str(error):
            return final
        with contextlib.suppress(OSError):
            tmp = os.statvfs("/tmp")
            if tmp.f_bavail * tmp.f_frsize < 1 << 20:
                return final
        return {**final, "error": f"disk quota exceeded (limit {self.limits.disk_mb} MB): {error}"}

    def _all_gone_with_a_result(self, relay: Relay, status: int) -> bool:
        """The renderer exited 0 with a result and every process of the task is gone: its PID namespace died
        with its init, which we reaped. Saying so ("ended") lets the server take in the outputs now rather than
        after this process's teardown and the zygote's reaping (about 20 ms). Not without the namespace (a task
        could leave a process behind), nor for the launcher's tasks (the workdir is given back at the reaping),
        nor on any failure (the zygote's report tells the cause: a signal, the OOM killer)."""
        return (self.uid is not None and self.zygote.owner_uid is None and os.WIFEXITED(status)
                and os.WEXITSTATUS(status) == 0 and relay.final is not None and relay.final["type"] == "result")

    # ---- the task's init: pid 1 of its PID namespace -------------------------------------------------------------
    def _init(self, task_input: dict[str, Any], messages: int, output: int, status: int) -> NoReturn:
        code = 1
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)  # pid 1 ignores default-action signals from its namespace
            if self.uid is not None:
                sandbox.mount_proc()
            renderer = os.fork()
            if renderer == 0:
                os.close(status)
                self._renderer(task_input, messages, output)
            _close_fds_except({0, 1, 2, status})
            if self.uid is not None:
                sandbox.drop_privileges(self.uid)
            sandbox.set_dumpable(False)
            sandbox.set_parent_death_signal()
            while True:  # orphans of the task re-parent to us: reap them until the renderer itself exits
                pid, wait_status = os.wait()
                if pid == renderer:
                    break
            os.write(status, STATUS.pack(wait_status))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)  # and, as pid 1, takes whatever the task left running with it

    # ---- the renderer: the untrusted code runs here ---------------------------------------------------------------
    def _renderer(self, task_input: dict[str, Any], messages: int, output: int) -> NoReturn:
        code, out = 70, None
        try:
            os.dup2(output, 1)
            os.dup2(output, 2)
            _close_fds_except({0, 1, 2, messages})
            os.set_inheritable(messages, False)  # subprocesses (latex, ffmpeg) must not hold it open
            out = os.fdopen(messages, "wb")
            sandbox.set_oom_score_adj(500)  # first in line for the OOM killer; raising needs no privilege
            sandbox.apply_limits(self.limits, own_uid=self.uid is not None)
            if self.uid is not None:
                sandbox.drop_privileges(self.uid)
            sandbox.set_parent_death_signal()
            if seccomp.supported():
                seccomp.install()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.environ.clear()
            os.environ.update(sandbox.task_environment(self.workdir, self.uid is not None))
            os.environ.update(_device_env(self.request))  # the GPU grant: CUDA_VISIBLE_DEVICES, RENDER_NVENC
            tempfile.tempdir = None  # the zygote may have cached its own; use TMPDIR from now on
            code = self._render(task_input, out)
        except BaseException as exc:
            code = _setup_failed(out, exc)
        finally:
            _flush_std()
            os._exit(code)

    def _render(self, task_input: dict[str, Any], out: BinaryIO) -> int:
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
            line = json.dumps({"type": "error", "error": one_line(exc)})
        out.write(line.encode() + b"\n")
        out.flush()
        return 0


def _granted_gpu(request: dict[str, Any]) -> int | None:
    gpu = request.get("gpu")
    return gpu if isinstance(gpu, int) and not isinstance(gpu, bool) and gpu >= 0 else None


def _device_env(request: dict[str, Any]) -> dict[str, str]:
    """Only the grant's own variables pass: a request cannot set anything else in the task's environment."""
    env = request.get("env")
    allowed = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "RENDER_NVENC")
    return {k: str(env[k]) for k in allowed if isinstance(env, dict) and k in env}


def own_session() -> None:
    """Its own session and process group (cancel and timeout kill the whole group), the zygote's signal
    handling undone."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def protect_from_oom_killer() -> None:
    """The OOM killer picks from the task, never its supervisor (needs CAP_SYS_RESOURCE)."""
    try:
        sandbox.set_oom_score_adj(-1000)
    except OSError:
        pass  # the renderer raises its own score instead


def cgroup_name(zygote_pid: int, worker_pid: int) -> str:
    return f"appliance-{zygote_pid}-{worker_pid}"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def fork_peer(serve: Callable[[socket.socket], NoReturn]) -> tuple[int, socket.socket]:
    """A forked child that the caller talks to over one SOCK_SEQPACKET pair: (its pid, the caller's end). The
    child closes the caller's end and runs ``serve`` with its own, never returning; buffered output is flushed
    first, so neither side writes it twice. The zygote's spare worker and the warm model parents are made so."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    _flush_std()
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        ours.close()
        serve(theirs)
    theirs.close()
    return pid, ours


def peer_message(sock: socket.socket, limit: int, exited: str) -> dict[str, Any] | None:
    """The next message a ``fork_peer`` child sent, read without waiting: None when there is none yet;
    ``{"type": "failed", "error": ...}`` when it exited (``exited``) or its socket failed."""
    try:
        data = sock.recv(limit, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError as exc:
        return {"type": "failed", "error": one_line(exc)}
    return json.loads(data) if data else {"type": "failed", "error": exited}


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
