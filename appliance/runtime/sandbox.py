"""The sandbox a task's worker process enters right after the zygote forks it (ARCHITECTURE.md, "Sandbox").

Full mode (root, namespaces available): new mount/net/ipc/uts namespaces; a new root on a tmpfs holding read-only
binds of an allowlist (system dirs, the Python prefix, the ``appliance``/``renderers`` packages) at their own
paths, the task workdir read-write, a private /tmp, a minimal /dev and a fresh /proc (hidepid=2); pivot_root;
then rlimits, no_new_privs, an empty capability bounding set and a per-task uid. Everything else (the data dir,
the database, other tasks' workdirs, the checkout) is simply not in the new root.

Fallback (not root, or namespaces refused): rlimits only, and the mechanism string says so.

Stdlib only: the zygote imports this module and must stay free of the server's modules.
"""
from __future__ import annotations

import ctypes
import os
import platform
import resource
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

FULL = ("namespaces(mount,net,ipc,uts) + pivot_root into a read-only allowlist + per-task uid (2000000000+pid)"
        " + no capabilities + no_new_privs + rlimits")
NOT_ROOT = "rlimits only (no isolation: run as root for the full sandbox)"
DISABLED = "rlimits only (sandbox disabled)"

# uid = base + worker pid: unique on the host while the worker lives (the zygote cleans up by uid before it
# reaps the pid), so two executors on one machine never share a uid. Above systemd's container range
# (524288-1879048191) and below 2^31 for any pid_max (at most 2^22).
UID_BASE = 2_000_000_000

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x04000000, 0x08000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 24, 36, 38
# glibc has no pivot_root wrapper; the syscall number depends on the architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

# /etc is not bound whole: only what tools inside need (ld.so, fonts, TeX, alternatives, Python's
# sitecustomize). passwd/group/hosts are written fresh so no host account or secret shows.
ETC_ALLOW = ("alternatives", "fonts", "texmf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl",
             "ca-certificates", "localtime", "timezone", "mime.types", "magic", "magic.mime", "papersize",
             "libpaper.d", "ghostscript", "ImageMagick-6", "nsswitch.conf", "locale.alias", "python3",
             f"python3.{sys.version_info.minor}")
SYSTEM_ALLOW = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/var/lib/texmf",
                "/var/cache/fontconfig", "/var/lib/ghostscript")
DEV_NODES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 3600
    mem_mb: int = 4096
    wall_seconds: float = 600.0
    fsize_mb: int = 4096
    nofile: int = 1024
    nproc: int = 256


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    ret = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(ret, f"mount {source} on {target}")


def _prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def set_child_subreaper() -> None:
    """Orphaned grandchildren of a task re-parent to the caller (the zygote), which reaps them."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    _prctl(PR_SET_PDEATHSIG, sig)


def task_uid(pid: int) -> int:
    return UID_BASE + pid


# ---- the allowlist --------------------------------------------------------------------------------------------
def readonly_sources(extra: Iterable[Path | str] = ()) -> list[str]:
    """Absolute paths bound read-only at the same path, computed once by the zygote."""
    import appliance
    import renderers

    packages = [os.path.dirname(os.path.abspath(m.__file__)) for m in (appliance, renderers)]
    prefixes = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    wanted = [*SYSTEM_ALLOW, *(f"/etc/{name}" for name in ETC_ALLOW), *sorted(prefixes), *packages,
              *(os.path.abspath(p) for p in extra)]
    seen: list[str] = []
    for path in wanted:
        if os.path.lexists(path) and path not in seen:
            seen.append(path)
    return seen


def _mount_plan(sources: Sequence[str], workdir: str) -> list[tuple[str, str, str]]:
    """(path inside, kind, detail) sorted so a parent is mounted before anything below it."""
    plan = [("/tmp", "tmpfs", "mode=1777"), ("/dev", "dev", ""), ("/proc", "proc", ""), (workdir, "rw", workdir)]
    for path in sources:
        if workdir.startswith(path.rstrip("/") + "/"):
            raise ValueError(f"workdir {workdir} lies inside the read-only path {path}: its siblings would show")
        if os.path.islink(path):  # e.g. /bin -> usr/bin on merged-/usr Debian
            plan.append((path, "link", os.readlink(path)))
        elif not any(path == p or path.startswith(p.rstrip("/") + "/") for p, kind, _ in plan if kind == "ro"):
            plan.append((path, "ro", path))
    return sorted(plan, key=lambda item: item[0].rstrip("/").count("/"))


# ---- building the new root ------------------------------------------------------------------------------------
def _mountpoint(target: str, is_dir: bool) -> None:
    if os.path.lexists(target):
        return
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if is_dir:
        os.mkdir(target, 0o755)
    else:
        open(target, "w").close()


def _bind(fd: int, target: str, is_dir: bool, flags: int) -> None:
    """Bind through /proc/self/fd, so a source hidden by an earlier mount (e.g. under /tmp) still binds."""
    _mountpoint(target, is_dir)
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def _make_dev(root: str, fds: dict[str, int]) -> None:
    dev = root + "/dev"
    _mountpoint(dev, True)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=1m")
    for name in DEV_NODES:
        _bind(fds[f"/dev/{name}"], f"{dev}/{name}", False, MS_NOSUID | MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm", 0o1777)
    _mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=64m")


def _write_etc(root: str, uid: int, home: str) -> None:
    etc = root + "/etc"
    os.makedirs(etc, 0o755, exist_ok=True)
    files = {"passwd": f"root:x:0:0:root:/root:/bin/false\nrender:x:{uid}:{uid}:render:{home}:/bin/false\n",
             "group": f"root:x:0:\nrender:x:{uid}:\n",
             "hosts": "127.0.0.1 localhost\n::1 localhost\n",
             "hostname": "sandbox\n"}
    for name, text in files.items():
        with open(f"{etc}/{name}", "w") as f:
            f.write(text)


def _populate(root: str, plan: list[tuple[str, str, str]], fds: dict[str, int], tmp_mb: int) -> None:
    ro = MS_RDONLY | MS_NOSUID | MS_NODEV
    for path, kind, detail in plan:
        target = root + path
        if kind == "link":
            _mountpoint(os.path.dirname(target), True)
            os.symlink(detail, target)
        elif kind in ("ro", "rw"):
            is_dir = stat.S_ISDIR(os.fstat(fds[detail]).st_mode)  # the path itself may be shadowed by now
            _bind(fds[detail], target, is_dir, ro if kind == "ro" else MS_NOSUID | MS_NODEV)
        elif kind == "tmpfs":
            _mountpoint(target, True)
            _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"{detail},size={tmp_mb}m")
        elif kind == "dev":
            _make_dev(root, fds)
        elif kind == "proc":
            _mountpoint(target, True)
            _mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")


def _pivot(root: str) -> None:
    os.chdir(root)
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(f"pivot_root: unknown syscall number on {platform.machine()}")
    _check(_libc.syscall(number, b".", b"."), "pivot_root")
    # pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only the new root.
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def enter(workdir: Path, uid: int, sources: Sequence[str], tmp_mb: int = 512) -> None:
    """As root in a single-threaded, freshly forked child: switch to the sandboxed view of the filesystem."""
    work = os.path.abspath(workdir)
    plan = _mount_plan(sources, work)
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks back to the host
    # Opened after unshare: a bind source must be a mount of our own namespace.
    paths = [d for _, kind, d in plan if kind in ("ro", "rw")] + [f"/dev/{n}" for n in DEV_NODES]
    fds = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in paths}
    root = "/tmp"  # any directory: it is only a mountpoint in our private namespace
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    _populate(root, plan, fds, tmp_mb)
    _write_etc(root, uid, work)
    for fd in fds.values():
        os.close(fd)
    _check(_libc.sethostname(b"sandbox", 7), "sethostname")
    _pivot(root)
    _chown_tree(work, uid)


def _chown_tree(top: str, uid: int) -> None:
    """Give the workdir and its contents (inputs, an earlier attempt's files) to this task's uid.

    Hard-linked files are left as they are: the inode may be shared with a stored output, which the task must
    not be able to alter. follow_symlinks=False: a planted link must not hand a host file to the task.
    """
    os.chown(top, uid, uid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            if not (stat.S_ISREG(info.st_mode) and info.st_nlink > 1):
                os.chown(path, uid, uid, follow_symlinks=False)


# ---- privileges and limits ------------------------------------------------------------------------------------
def drop_privileges(uid: int) -> None:
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    for cap in range(64):  # empty the bounding set too, so nothing can regain a capability
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            break  # EINVAL past the last capability this kernel knows
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from root to non-zero: permitted/effective capabilities are cleared


def _vm_size_mb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) // 1024
    return 0


def apply_limits(limits: Limits, *, own_uid: bool) -> None:
    """own_uid: NPROC counts every process of the real uid, so it is only meaningful for a per-task uid."""
    mb = 1024 * 1024
    # The preloaded image is inherited copy-on-write, so the budget is on top of what the fork starts with.
    address_space = (_vm_size_mb() + limits.mem_mb) * mb
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


# ---- probing --------------------------------------------------------------------------------------------------
def probe_here(extra: Iterable[Path | str] = ()) -> str:
    """Try the full sandbox in a forked child of this (single-threaded) process; return the mechanism."""
    if os.geteuid() != 0:
        return NOT_ROOT
    sources = readonly_sources(extra)
    work = tempfile.mkdtemp(prefix="sandbox-probe-")
    errors_r, errors_w = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            os.close(errors_r)
            _probe_child(work, sources, errors_w)
        os.close(errors_w)
        with os.fdopen(errors_r, "rb") as f:
            error = f.read().decode(errors="replace").strip()
        _, status = os.waitpid(pid, 0)
    finally:
        os.rmdir(work)
    if os.waitstatus_to_exitcode(status) == 0:
        return FULL
    return f"rlimits only (no isolation: the namespace sandbox failed here: {error or f'status {status}'})"


def _probe_child(work: str, sources: Sequence[str], errors: int) -> None:
    code = 1
    try:
        uid = task_uid(os.getpid())
        enter(Path(work), uid, sources, 1)
        drop_privileges(uid)
        with open("/proc/self/status") as f:
            if "CapEff:\t0000000000000000" in f.read():
                code = 0
            else:
                os.write(errors, b"capabilities survived the uid change")
    except BaseException as exc:
        os.write(errors, repr(exc).encode())
    finally:
        os._exit(code)


def probe(extra: Iterable[Path | str] = ()) -> str:
    """The mechanism a new executor would get; runs the trial in a fresh interpreter (safe from a threaded app)."""
    if os.geteuid() != 0:
        return NOT_ROOT
    root = str(Path(__file__).resolve().parents[2])
    code = "import sys, appliance.runtime.sandbox as s; print(s.probe_here(sys.argv[1:]))"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": root}
    proc = subprocess.run([sys.executable, "-c", code, *map(str, extra)], capture_output=True, text=True,
                          env=env, cwd="/", timeout=60)
    if proc.returncode != 0 or not proc.stdout.strip():
        return f"rlimits only (no isolation: sandbox probe failed: {proc.stderr.strip()[-200:]})"
    return proc.stdout.strip().splitlines()[-1]
