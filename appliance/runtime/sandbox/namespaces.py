"""The task's private view of the system: mount/pid/net/ipc/uts namespaces and a new root.

The new root is a tmpfs holding read-only binds of an allowlist (system dirs, the Python prefix, the
``appliance``/``renderers`` packages) at their own paths, the task's workdir read-write at the fixed path
``/task`` (its own loop-mounted filesystem, taskfs.py, or a bind of the host workdir where none can be made), a
private /tmp, a minimal /dev and a fresh /proc; then pivot_root. Everything else (the data dir, the database,
other tasks' workdirs, the checkout) is simply not in the new root, and no path of the data dir shows in the
task's cwd, environment, /etc/passwd or (with its own filesystem) /proc/self/mountinfo.

The PID namespace applies to the caller's children only: the caller stays a host process (its pid is what the
server and the zygote know), its first child becomes pid 1 of the task and mounts /proc (``mount_proc``), so
the task sees only its own processes.
"""
from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from appliance.runtime.sandbox import taskfs
from appliance.runtime.sandbox.kernel import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUTS,
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    check,
    libc,
    mount,
    pivot_root,
    unshare,
)

# /etc is not bound whole: only what tools inside need (ld.so, fonts, TeX, alternatives, Python's
# sitecustomize). passwd/group/hosts are written fresh so no host account or secret shows.
ETC_ALLOW = ("alternatives", "fonts", "texmf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl",
             "ca-certificates", "localtime", "timezone", "mime.types", "magic", "magic.mime", "papersize",
             "libpaper.d", "ghostscript", "ImageMagick-6", "nsswitch.conf", "locale.alias", "python3",
             f"python3.{sys.version_info.minor}")
SYSTEM_ALLOW = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/var/lib/texmf",
                "/var/cache/fontconfig", "/var/lib/ghostscript")
DEV_NODES = ("null", "zero", "full", "random", "urandom")
GPU_SHARED_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")  # with /dev/nvidiaN
NAMESPACES = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS


# ---- the allowlist --------------------------------------------------------------------------------------------
def readonly_sources(extra: Iterable[Path | str] = ()) -> list[str]:
    """Absolute paths bound read-only at the same path, computed once by the zygote."""
    import appliance
    import renderers

    packages = [os.path.dirname(os.path.abspath(str(m.__file__))) for m in (appliance, renderers)]
    prefixes = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    wanted = [*SYSTEM_ALLOW, *(f"/etc/{name}" for name in ETC_ALLOW), *sorted(prefixes), *packages,
              *(os.path.abspath(p) for p in extra)]
    seen: list[str] = []
    for path in wanted:
        if os.path.lexists(path) and path not in seen:
            seen.append(path)
    return seen


def _mount_plan(sources: Sequence[str], workdir: str, own_fs: bool) -> list[tuple[str, str, str]]:
    """(path inside, kind, detail) sorted so a parent is mounted before anything below it."""
    inside = taskfs.INSIDE
    plan = [("/tmp", "tmpfs", "mode=1777"), ("/dev", "dev", ""), ("/proc", "dir", ""),
            (inside, "taskfs" if own_fs else "rw", workdir)]
    for path in sources:
        top = path.rstrip("/")
        if inside.startswith(top + "/") or path == inside or path.startswith(inside + "/"):
            raise ValueError(f"the read-only path {path} and the task's workdir {inside} overlap")
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
    mount(f"/proc/self/fd/{fd}", target, None, MS_BIND)
    mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def _make_dev(root: str, fds: dict[str, int]) -> None:
    dev = root + "/dev"
    _mountpoint(dev, True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=1m")
    for name in DEV_NODES:
        _bind(fds[f"/dev/{name}"], f"{dev}/{name}", False, MS_NOSUID | MS_NOEXEC)
    for path in fds:  # a granted GPU's nodes (gpu_nodes); there are none in fds without a grant
        if path.startswith("/dev/nvidia"):
            _bind(fds[path], root + path, False, MS_NOSUID | MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm", 0o1777)
    mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=64m")


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


def _populate(root: str, plan: list[tuple[str, str, str]], fds: dict[str, int], tmp_mb: int,
              own: tuple[taskfs.TaskFs, int] | None) -> None:
    ro = MS_RDONLY | MS_NOSUID | MS_NODEV
    for path, kind, detail in plan:
        target = root + path
        if kind == "taskfs" and own is not None:
            _mountpoint(target, True)
            own[0].mount(target)
            taskfs.copy_inputs(own[1], target, fds[detail])
        elif kind == "link":
            _mountpoint(os.path.dirname(target), True)
            os.symlink(detail, target)
        elif kind in ("ro", "rw"):
            is_dir = stat.S_ISDIR(os.fstat(fds[detail]).st_mode)  # the path itself may be shadowed by now
            _bind(fds[detail], target, is_dir, ro if kind == "ro" else MS_NOSUID | MS_NODEV)
        elif kind == "tmpfs":  # RAM-backed, so capped: its pages are charged to the task's memory cgroup too
            _mountpoint(target, True)
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"{detail},size={tmp_mb}m")
        elif kind == "dev":
            _make_dev(root, fds)
        elif kind == "dir":
            _mountpoint(target, True)


def _pivot(root: str) -> None:
    os.chdir(root)
    pivot_root(b".", b".")
    # pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only the new root.
    check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def gpu_nodes(gpu: int | None) -> list[str]:
    """The device nodes of a task granted GPU ``gpu`` (those that exist); none without a grant. The driver
    numbers /dev/nvidiaN in PCI bus order, as nvidia-smi numbers its index."""
    if gpu is None:
        return []
    return [p for p in (f"/dev/nvidia{gpu}", *(f"/dev/{n}" for n in GPU_SHARED_NODES)) if os.path.exists(p)]


def enter(workdir: Path, uid: int, sources: Sequence[str], tmp_mb: int = 512,
          expect: tuple[int, int] | None = None, gpu: int | None = None, disk_mb: int | None = None,
          max_files: int = 0, template: taskfs.Template | None = None) -> int | None:
    """As root in a single-threaded, freshly forked child: switch to the sandboxed view of the filesystem, with
    the workdir at ``taskfs.INSIDE``.

    /proc stays an empty mountpoint until the first child (pid 1 of the new PID namespace) calls mount_proc.
    ``expect``: the workdir's (st_dev, st_ino) as the launcher checked it; the bind (and the chown) use exactly
    that directory, so a server that swaps the path meanwhile gets an error, not root acting elsewhere.
    ``disk_mb``: give the task a filesystem of its own (taskfs.py) of that many MB and ``max_files`` files, the
    staged inputs copied in; the host workdir is then not in the new root at all, and an open descriptor of it
    is returned (the worker copies the outputs and the live preview there). None: bind the host workdir, the
    quota is measured (quota.py). A filesystem that cannot be made falls back to the bind, saying why on stderr.
    ``template``: the zygote's fresh filesystem for this task's size (taskfs.Template), copied instead of a mkfs
    here; one too small for the inputs staged meanwhile is not used.
    """
    work = os.path.abspath(workdir)
    host = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    own: tuple[taskfs.TaskFs, int] | None = None
    try:
        if expect is not None and (os.fstat(host).st_dev, os.fstat(host).st_ino) != expect:
            raise RuntimeError(f"the workdir {work} changed after it was checked")
        if disk_mb is not None:  # before unshare: a mkfs must not become pid 1 of the task's PID namespace
            size, count = taskfs.input_bytes(host)
            image, files = taskfs.sizing(disk_mb, size, max_files + count + taskfs.INODE_SLACK)
            given = template if template is not None and template.fits(image, files) else None
            try:
                own = (taskfs.TaskFs(os.path.dirname(work), image, files, uid, given), host)
            except OSError as exc:
                print(f"[worker] no filesystem of its own ({exc}): the disk quota is measured", file=sys.stderr)
        _enter(work, uid, sources, tmp_mb, expect, gpu, own)
    except BaseException:
        os.close(host)
        raise
    finally:
        if own is not None:
            own[0].close()  # mounted (the mount holds the device now) or failed (the close detaches it)
    if own is None:
        os.close(host)
        _chown_tree(taskfs.INSIDE, uid)
        return None
    os.fchown(host, uid, uid)  # the worker, as the task's uid, writes the outputs back here
    return host


def _enter(work: str, uid: int, sources: Sequence[str], tmp_mb: int, expect: tuple[int, int] | None,
           gpu: int | None, own: tuple[taskfs.TaskFs, int] | None) -> None:
    plan = _mount_plan(sources, work, own is not None)
    unshare(NAMESPACES)
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks back to the host
    # Opened after unshare: a bind source must be a mount of our own namespace.
    paths = [d for _, kind, d in plan if kind in ("ro", "rw", "taskfs")] + [f"/dev/{n}" for n in DEV_NODES] \
        + gpu_nodes(gpu)
    fds = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in paths}
    if expect is not None and (os.fstat(fds[work]).st_dev, os.fstat(fds[work]).st_ino) != expect:
        raise RuntimeError(f"the workdir {work} changed after it was checked")
    root = "/tmp"  # any directory: it is only a mountpoint in our private namespace
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    _populate(root, plan, fds, tmp_mb, own)
    _write_etc(root, uid, taskfs.INSIDE)
    for fd in fds.values():
        os.close(fd)
    check(libc.sethostname(b"sandbox", 7), "sethostname")
    _pivot(root)


def mount_proc() -> None:
    """In pid 1 of the task's PID namespace (a proc mount shows the namespace of the process that mounts it)."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")


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
