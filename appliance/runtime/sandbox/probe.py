"""What sandbox a new executor gets here: the mechanism string, each layer active or missing, and whether
untrusted code may run at all."""
from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from appliance.runtime.sandbox import seccomp, taskfs
from appliance.runtime.sandbox.cgroups import Cgroups
from appliance.runtime.sandbox.kernel import CLONE_NEWNS, CLONE_NEWUSER, MS_PRIVATE, MS_REC, libc, mount, unshare
from appliance.runtime.sandbox.limits import Limits, drop_privileges, task_uid
from appliance.runtime.sandbox.namespaces import enter, mount_proc, readonly_sources

FULL = ("namespaces(mount,pid,net,ipc,uts) + pivot_root into a read-only allowlist + per-task uid (2000000000+pid)"
        " + seccomp + no capabilities + no_new_privs + rlimits")
NOT_ROOT = "rlimits only (no isolation: run as root for the full sandbox)"
DISABLED = "rlimits only (sandbox disabled)"
ROOT_FIX = "run the appliance as root on a kernel with mount, PID and network namespaces (sandbox = true)"


def untrusted_allowed(mechanism: str, allow_unsandboxed: bool) -> str | None:
    """None when untrusted code may run under ``mechanism``, else a one-line refusal naming the fix."""
    if mechanism == FULL or allow_unsandboxed:
        return None
    why = "the sandbox is disabled (sandbox = false)" if mechanism == DISABLED else f"no sandbox here: {mechanism}"
    fix = "set sandbox = true" if mechanism == DISABLED else ROOT_FIX.split(" (")[0]
    return (f"refusing to run untrusted code unsandboxed ({why}); {fix}, or set allow_unsandboxed = true"
            " (APPLIANCE_ALLOW_UNSANDBOXED=true) to accept the risk")


# ---- the trial, in a forked child of a single-threaded process ------------------------------------------------
def _in_child(trial, *args) -> str:
    """Run ``trial(*args)`` in a forked child; '' when it succeeded, else what went wrong."""
    errors_r, errors_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(errors_r)
        code = 1
        try:
            trial(*args)
            code = 0
        except BaseException as exc:
            os.write(errors_w, repr(exc).encode())
        finally:
            os._exit(code)
    os.close(errors_w)
    with os.fdopen(errors_r, "rb") as f:
        error = f.read().decode(errors="replace").strip()
    _, status = os.waitpid(pid, 0)
    return "" if os.waitstatus_to_exitcode(status) == 0 else error or f"status {status}"


def _denied_by_seccomp() -> None:
    """A new user namespace needs no privilege, so only the filter can refuse it here (or a kernel setting)."""
    if libc.unshare(CLONE_NEWUSER) == 0 or ctypes.get_errno() != errno.EPERM:
        raise RuntimeError("unshare(CLONE_NEWUSER) was not refused after the seccomp filter")


def _task_trial(uid: int) -> None:
    """pid 1 of the new PID namespace: /proc, no privileges, seccomp, and nothing else visible."""
    mount_proc()
    drop_privileges(uid)
    if seccomp.supported():
        seccomp.install()
        _denied_by_seccomp()
    with open("/proc/self/status") as f:
        if "CapEff:\t0000000000000000" not in f.read():
            raise RuntimeError("capabilities survived the uid change")
    if [p for p in os.listdir("/proc") if p.isdigit()] != ["1"]:
        raise RuntimeError("other processes are visible in the task's PID namespace")


def _sandbox_trial(work: str, sources: Sequence[str]) -> None:
    uid = task_uid(os.getpid())
    enter(Path(work), uid, sources, 1)
    error = _in_child(_task_trial, uid)
    if error:
        raise RuntimeError(error)


def probe_here(extra: Iterable[Path | str] = ()) -> str:
    """Try the full sandbox in a forked child of this (single-threaded) process; return the mechanism."""
    if os.geteuid() != 0:
        return NOT_ROOT
    sources = readonly_sources(extra)
    work = tempfile.mkdtemp(prefix="sandbox-probe-")
    try:
        error = _in_child(_sandbox_trial, work, sources)
    finally:
        os.rmdir(work)
    return FULL if not error else f"rlimits only (no isolation: the namespace sandbox failed here: {error})"


def _taskfs_trial(work: str) -> None:
    """A 1 MB task filesystem in a private mount namespace: a write past it must end in ENOSPC."""
    fs = taskfs.TaskFs(work, *taskfs.sizing(1, 0, 64), 0)
    try:
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        fs.mount(work)
    finally:
        fs.close()
    fd = os.open(os.path.join(work, "fill"), os.O_WRONLY | os.O_CREAT, 0o600)
    written = 0
    try:
        while written < 64 << 20:
            written += os.write(fd, bytes(1 << 20))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    if written >= 64 << 20:
        raise RuntimeError("64 MB fitted in a 1 MB task filesystem")


def taskfs_here() -> str | None:
    """None when each task can get a loop-mounted filesystem of its own here (tried for real), else why not."""
    reason = taskfs.unavailable()
    if reason is not None:
        return reason
    work = tempfile.mkdtemp(prefix="taskfs-probe-")
    try:
        return _in_child(_taskfs_trial, work) or None
    finally:
        os.rmdir(work)


def disk_layer(reason: str | None) -> tuple[str, bool, str]:
    """The disk quota layer as ``doctor`` shows it: which quota is in force, and why not the kernel's."""
    if reason is None:
        return ("disk quota", True, f"kernel-enforced: each task's own ext4 on a loop device at {taskfs.INSIDE}"
                                    " (task_disk_mb of blocks, 20,000 files), nodev,nosuid,noexec, gone with the"
                                    " task; log capped (task_log_mb)")
    return ("disk quota", True, f"measured, not kernel-enforced ({reason}): workdir growth watched every 0.5 s,"
                                " so a task can overshoot by what it writes meanwhile; log capped (task_log_mb)")


def _cgroup_trial(cgroups: Cgroups) -> None:
    name = f"appliance-{os.getppid()}-{os.getpid()}"
    try:
        cgroups.create(name, Limits(mem_mb=64, nproc=8), 0, join=False)
    finally:
        cgroups.remove(name)


def _seccomp_trial() -> None:
    seccomp.install()
    _denied_by_seccomp()


def layers_here(extra: Iterable[Path | str] = (), disk: str | None = "probe") -> list[tuple[str, bool, str]]:
    """``disk``: taskfs_here()'s answer when the caller has it already."""
    mechanism = probe_here(extra)
    full = mechanism == FULL
    isolation = ("per-task mount, net, ipc and uts namespaces; pivot_root into a read-only allowlist" if full
                 else f"missing ({mechanism}): {ROOT_FIX}")
    found = []
    found.append(("mount/net namespaces", full, isolation))
    found.append(("PID namespace", full, "each task sees only its own processes" if full else ROOT_FIX))
    if seccomp.supported():
        error = _in_child(_seccomp_trial)
        found.append(("seccomp", not error, "namespace, mount, ptrace, bpf, keyring, module calls denied" if not error
                      else f"the filter failed here ({error}): needs a kernel with CONFIG_SECCOMP_FILTER"))
    else:
        found.append(("seccomp", False, f"no filter for {os.uname().machine}: only x86_64 and aarch64"))
    cgroups = Cgroups.find()
    error = _in_child(_cgroup_trial, cgroups) if cgroups else "no writable memory and pids controllers"
    active = f"{cgroups.describe() if cgroups else ''}: memory (with children and tmpfs), pids, cpu"
    fix = (f"missing ({error}): run as root with the memory and pids controllers"
           " (cgroup v2: delegate them to the appliance, e.g. systemd Delegate=yes)")
    found.append(("cgroup limits", not error, fix if error else active))
    found.append(disk_layer(("no namespace sandbox" if not full else taskfs_here()) if disk == "probe" else disk))
    found.append(("unprivileged uid", full, "per-task uid 2000000000+pid, no capabilities, no_new_privs" if full
                  else f"tasks run as the server's own user: {ROOT_FIX}"))
    return found


def probe(extra: Iterable[Path | str] = ()) -> str:
    """The mechanism a new executor would get; runs the trial in a fresh interpreter (safe from a threaded app)."""
    if os.geteuid() != 0:
        return NOT_ROOT
    out = _fresh("print(s.probe_here(sys.argv[1:]))", extra)
    return out if out is not None else "rlimits only (no isolation: sandbox probe failed)"


def layers(extra: Iterable[Path | str] = (), task_fs: str = "auto") -> list[tuple[str, bool, str]]:
    """Each sandbox layer: (name, active, detail when active or the fix when missing). A fresh interpreter.
    ``task_fs``: the setting; "off" forces the measured quota, and the disk layer says so."""
    disk = "probe" if task_fs != "off" else taskfs.OFF_REASON
    out = _fresh(f"print(json.dumps(s.layers_here(sys.argv[1:], {disk!r})))", extra)
    if out is None:
        return [("sandbox probe", False, "the probe failed to run: see `appliance doctor`")]
    return [tuple(layer) for layer in json.loads(out)]


def _fresh(statement: str, extra: Iterable[Path | str]) -> str | None:
    root = str(Path(__file__).resolve().parents[3])
    code = f"import json, sys, appliance.runtime.sandbox as s; {statement}"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": root, "PYTHONDONTWRITEBYTECODE": "1"}  # nothing into the checkout
    try:
        proc = subprocess.run([sys.executable, "-c", code, *map(str, extra)], capture_output=True, text=True,
                              env=env, cwd="/", timeout=60)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return proc.stdout.strip().splitlines()[-1]
