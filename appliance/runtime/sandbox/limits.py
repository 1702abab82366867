"""A task's limits, its uid and its environment: what the worker applies after building the sandbox."""
from __future__ import annotations

import ctypes
import os
import resource
import signal
from dataclasses import dataclass, replace
from pathlib import Path

from appliance.runtime.sandbox.kernel import PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, libc, prctl

# uid = base + worker pid: unique on the host while the worker lives (the zygote cleans up by uid before it
# reaps the pid), so two executors on one machine never share a uid. Above systemd's container range
# (524288-1879048191) and below 2^31 for any pid_max (at most 2^22).
UID_BASE = 2_000_000_000


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 3600
    mem_mb: int = 4096  # address space on top of the preloaded image, and the task's memory cgroup
    wall_seconds: float = 600.0
    fsize_mb: int = 4096
    nofile: int = 1024
    nproc: int = 256  # processes and threads: RLIMIT_NPROC of the task uid and the cgroup's pids.max
    cpu: float = 1.0  # admitted CPU slots: the cgroup's CPU weight is proportional to it
    # the CPU weight's share of ``cpu`` (0 < weight <= 1): below 1 for a task whose job waits for a longer sibling
    # task anyway, so that the sibling gets the cores first (scheduler.SLACK_WEIGHT)
    weight: float = 1.0
    disk_mb: int = 4096  # growth of the workdir while the task runs
    log_mb: int = 16  # the task's log; past it one "[log truncated]" line and nothing more


LIMITS_KEY = "_limits"  # where an operator's task carries its lowered limits in its input (no dialect writes it)
LOWERABLE = ("cpu_seconds", "mem_mb", "wall_seconds", "fsize_mb", "nproc", "disk_mb", "log_mb")


def lowered(limits: Limits, wanted: object) -> Limits:
    """``limits`` with the fields ``wanted`` names set lower (never higher): an operator's tasks (the admin API's
    ``limits``, `appliance doctor --attack`) may be held tighter than the settings, never looser."""
    if not isinstance(wanted, dict):
        return limits
    lower = {k: v for k, v in wanted.items() if k in LOWERABLE and type(v) in (int, float)
             and 0 < v < getattr(limits, k)}
    return replace(limits, **lower) if lower else limits


def task_uid(pid: int) -> int:
    return UID_BASE + pid


def drop_privileges(uid: int) -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    for cap in range(64):  # empty the bounding set too, so nothing can regain a capability
        if libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            break  # EINVAL past the last capability this kernel knows
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from root to non-zero: permitted/effective capabilities are cleared


def _status_mb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    return 0


def preloaded_mb() -> int:
    """Anonymous memory a fork of this process starts with: the most it can copy-on-write into its cgroup."""
    return _status_mb("RssAnon")


def apply_limits(limits: Limits, *, own_uid: bool) -> None:
    """own_uid: NPROC counts every process of the real uid, so it is only meaningful for a per-task uid."""
    mb = 1024 * 1024
    # The preloaded image is inherited copy-on-write, so the budget is on top of what the fork starts with.
    address_space = (_status_mb("VmSize") + limits.mem_mb) * mb
    table = {resource.RLIMIT_CPU: (limits.cpu_seconds, limits.cpu_seconds + 1),  # SIGXCPU, then SIGKILL
             resource.RLIMIT_AS: (address_space, address_space),
             resource.RLIMIT_FSIZE: (limits.fsize_mb * mb, limits.fsize_mb * mb),
             resource.RLIMIT_NOFILE: (limits.nofile, limits.nofile),
             resource.RLIMIT_CORE: (0, 0)}
    if own_uid:
        table[resource.RLIMIT_NPROC] = (limits.nproc, limits.nproc)
    for which, value in table.items():
        resource.setrlimit(which, value)


def task_environment(workdir: Path, isolated: bool) -> dict[str, str]:
    """No inherited variables: whatever secrets the server's environment holds stay out of the task."""
    tmp = "/tmp" if isolated else os.environ.get("TMPDIR", "/tmp")
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": tmp, "LANG": "C.UTF-8",
            "XDG_CACHE_HOME": f"{tmp}/.cache" if isolated else f"{workdir}/.cache",
            "TEXMFVAR": f"{tmp}/texmf-var" if isolated else f"{workdir}/.texmf-var",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1"}


def kill_uid(uid: int) -> None:
    """SIGKILL every process of a task uid, including ones that left the process group (setsid).

    kill(-1) as that uid reaches exactly its processes and is atomic against fork. Called by the single-threaded
    zygote before it reaps the worker, so the uid (base + worker pid) cannot have been reused yet.
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
