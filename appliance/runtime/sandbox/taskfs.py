"""Per-task storage whose limit the kernel enforces: a fresh ext4 on a loop device, inside the task's own mount
namespace only.

Why this shape (issue #17 item 3; the measured quota in quota.py let a task overshoot by what it wrote in half a
second, and needed root to find deleted-but-open files):
- **ext4 on a loop device, not a tmpfs.** A tmpfs's pages are memory: a 4 GB disk quota would have to be 4 GB of
  the task's memory cgroup (or escape it as shmem charged elsewhere), and a render's intermediate files belong on
  disk. ext4 counts blocks and inodes itself: ``fallocate``, sparse files (only written blocks count), files
  deleted but still open (their blocks stay used until the last close) and an inode flood all hit ENOSPC at the
  image's size or its ``-N`` inode count, with nothing to measure or race.
- **The image has no name.** It is an ``O_TMPFILE`` in the work root (the data dir's disk, where the workdir was),
  sparse, handed to the loop device with ``LO_FLAGS_AUTOCLEAR`` and closed: the device then holds the only
  reference. mkfs: no journal (the image dies with the task), ``-m 0``, ``lazy_itable_init`` plus the mount
  option ``noinit_itable`` (the inode tables of a fresh sparse file are zeros already: no background zeroing
  writes them). The mount has ``nobarrier`` (a flush would fsync the image: 10 ms at the mount, 13 ms at the end).
- **mkfs once per size, not once per task.** The zygote (root, long-lived) runs mkfs once per (image size,
  inodes) into a sealed memfd of the image's size, a ``Template`` (about 60 KB of written blocks for 512 MB and
  20,000 inodes), and hands its descriptor to the worker with each request; the worker copies the written
  extents into the task's image (0.1 ms) and gives the root directory to the task's uid after the mount, in
  place of a mkfs of its own (3.9 ms from the preloaded worker, 1.9 ms from a bare interpreter). Inputs are
  rounded up to ``INPUT_STEP`` and inodes to ``FILES_STEP`` (``sizing``) so that tasks share templates: the
  image then has that much more room, which the quota's watch (quota.FsWatch, statvfs) does not give the task.
  Every task's filesystem has the template's UUID and directory hash seed: they are mounted in private
  namespaces, never by UUID, and a task can reach no other task's files to collide with. The seal (no write,
  no resize) keeps a worker, or anything that got its descriptor, from changing what later tasks mount.
- **Mounted only in the task's mount namespace** (by its worker, as root, after ``unshare(CLONE_NEWNS)``), at the
  fixed path ``INSIDE``, ``nodev,nosuid,noexec``. Nothing in the host's (or the launcher's systemd) namespace ever
  sees the mount, so no exit path has anything to unmount: when the last process of the namespace exits (the
  worker; success, failure, timeout, cancel, a killed server or zygote alike) the kernel drops the mount, the
  last close of the loop device clears it (autoclear) and that frees the unnamed image. No leaked loop device,
  no image left on disk, nothing for a restart to sweep.
- **The server keeps its plain workdir** (data_dir/work/<task>) as the exchange: inputs are staged there, copied
  into the task's filesystem by the worker before the task starts (so they cost the task no quota: the image is
  that much larger; an input over COPY_MAX, such as a model's weights, is bound read-only instead, and its
  line in the task's mountinfo names its path under the data dir), and the worker copies the result's files
  back out, by descriptor, once every process of the task is gone, and mirrors the live ``preview.jpg`` while
  it runs (executors/task_worker.py).

Where a loop mount cannot be made (no /dev/loop-control, not root, no mkfs.ext4, no ext4) ``unavailable`` says
why, the zygote's probe reports it, and the measured quota (quota.py) stays in force; ``task_fs = "off"``
(APPLIANCE_TASK_FS) forces that fallback. Stdlib only.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import struct
import subprocess
import time
from collections import OrderedDict
from typing import NamedTuple

from appliance.runtime.intake import copy_fd
from appliance.runtime.sandbox.kernel import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REMOUNT, mount

INSIDE = "/task"  # the workdir as every task sees it: no host path (its workdir's, the data dir's) shows
LOOP_CONTROL = "/dev/loop-control"
LOOP_CTL_GET_FREE, LOOP_CONFIGURE = 0x4C82, 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
INODE_SIZE = 256
INODE_SLACK = 16  # the root, lost+found and ext4's reserved inodes
MOUNT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC
# nobarrier: no cache flush reaches the loop device, which would fsync the image on the host's disk (10 ms at the
# mount and at the end of every task) for a filesystem nobody needs after a crash.
MOUNT_DATA = "noinit_itable,nobarrier,errors=remount-ro"
MKFS_TIMEOUT_S = 30
COPY_MAX = 16 << 20  # a larger input is bound read-only, not copied (copy_inputs)
_MB = 1 << 20
# ENOSPC leaves up to ~2 MB free here (ext4's allocation watermark and preallocation): a filesystem with less than
# FULL_BYTES free is full, and the image has room for FULL_BYTES beyond the quota (image_bytes), so a full one
# means the task went past its quota, never that it failed short of it.
FULL_BYTES = 4 * _MB
INPUT_STEP = COPY_MAX  # sizing: inputs rounded up to this, so that tasks with inputs share a template
FILES_STEP = 1024  # and inodes to this
TEMPLATES_KEPT = 8  # per zygote, least recently used dropped: each costs its written blocks in memory
OFF_REASON = "task_fs = off"  # the setting that forces the measured quota, as doctor shows it


def mkfs_path() -> str | None:
    return shutil.which("mkfs.ext4", path="/usr/sbin:/sbin:/usr/bin:/bin")


def unavailable() -> str | None:
    """None when a per-task loop filesystem can be made here; else why not (the measured quota then applies)."""
    if os.geteuid() != 0:
        return "not root"
    if not os.path.exists(LOOP_CONTROL):
        return f"no {LOOP_CONTROL} (load the loop module, or give the appliance the device)"
    if mkfs_path() is None:
        return "no mkfs.ext4 (install e2fsprogs)"
    try:
        with open("/proc/filesystems") as f:
            if not any(line.split()[-1:] == ["ext4"] for line in f):
                return "the kernel has no ext4"
    except OSError as exc:
        return f"cannot read /proc/filesystems: {exc.strerror}"
    return None


def image_bytes(disk_mb: int, input_bytes: int, files: int) -> int:
    """An image whose free space after mkfs is at least ``disk_mb`` plus the inputs: ext4 takes its inode tables,
    a block and inode bitmap and group descriptor per 128 MB group, and keeps min(2 %, 16 MB) in reserve."""
    want = disk_mb * _MB + input_bytes
    groups = want // (128 * _MB) + 1
    return want + files * INODE_SIZE + min(want // 50, 16 * _MB) + groups * 8192 + FULL_BYTES + 2 * _MB


def sizing(disk_mb: int, input_bytes: int, files: int) -> tuple[int, int]:
    """(image bytes, inodes) of a task's filesystem, rounded up (``INPUT_STEP``, ``FILES_STEP``) so that tasks
    with a few inputs share the zygote's template."""
    inputs = -(-input_bytes // INPUT_STEP) * INPUT_STEP
    files = -(-files // FILES_STEP) * FILES_STEP
    return image_bytes(disk_mb, inputs, files), files


def _loop_config(backing_fd: int) -> bytes:
    # struct loop_config {u32 fd; u32 block_size; struct loop_info64 info (232 bytes); u64 reserved[8]}; in
    # loop_info64 lo_flags is the fourth u32 after five u64s (offset 52).
    info = bytearray(232)
    struct.pack_into("=I", info, 52, LO_FLAGS_AUTOCLEAR)
    return struct.pack("=II", backing_fd, 0) + bytes(info) + bytes(64)


def _attach(backing_fd: int) -> tuple[int, str]:
    """A free loop device bound to ``backing_fd`` with autoclear: (an open fd of it, its path)."""
    control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(16):  # another process may take the free device between the two calls: ask again
            number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
            path = f"/dev/loop{number}"
            for _wait in range(50):  # a device just added appears in devtmpfs a moment later
                if os.path.exists(path):
                    break
                time.sleep(0.002)
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, LOOP_CONFIGURE, _loop_config(backing_fd))
                return fd, path
            except OSError as exc:
                os.close(fd)
                if exc.errno != errno.EBUSY:
                    raise
        raise OSError(errno.EBUSY, "no free loop device after 16 tries")
    finally:
        os.close(control)


def _mkfs(fd: int, files: int) -> None:
    mkfs = mkfs_path()
    if mkfs is None:
        raise OSError(errno.ENOENT, "mkfs.ext4 not found")
    options = "lazy_itable_init=1,nodiscard,root_owner=0:0"  # the task's uid gets the root at the mount
    proc = subprocess.run([mkfs, "-q", "-F", "-N", str(files), "-I", str(INODE_SIZE), "-m", "0",
                           "-O", "^has_journal,^resize_inode", "-E", options, f"/proc/self/fd/{fd}"],
                          pass_fds=[fd], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=MKFS_TIMEOUT_S, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"})
    if proc.returncode != 0:
        raise OSError(errno.EIO, f"mkfs.ext4 failed: {(proc.stderr or proc.stdout).strip()[:300]}")


SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class Template(NamedTuple):
    """A fresh ext4 of ``size`` bytes and ``files`` inodes in a sealed memfd (``fd``): what mkfs wrote, once."""

    fd: int
    size: int
    files: int

    @classmethod
    def make(cls, size: int, files: int) -> Template:
        # In memory: mkfs's closing fsync on the disk cost 12-25 ms here, in a memfd nothing.
        fd = os.memfd_create("taskfs-template", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            _mkfs(fd, files)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, size, files)

    def fits(self, size: int, files: int) -> bool:
        return self.size >= size and self.files >= files

    def close(self) -> None:
        os.close(self.fd)


class Templates:
    """The zygote's templates by (size, inodes), the ``TEMPLATES_KEPT`` most recently used."""

    def __init__(self) -> None:
        self.made: OrderedDict[tuple[int, int], Template] = OrderedDict()

    def get(self, size: int, files: int) -> Template:
        key = (size, files)
        if key in self.made:
            self.made.move_to_end(key)
            return self.made[key]
        self.made[key] = Template.make(size, files)
        while len(self.made) > TEMPLATES_KEPT:
            self.made.popitem(last=False)[1].close()
        return self.made[key]


class TaskFs:
    """A fresh, empty ext4 on a loop device, not yet mounted: a copy of ``template`` (made for this task when
    None). ``close`` after mounting: the mount then holds the device, and its end clears it."""

    def __init__(self, image_dir: str, size: int, files: int, owner: int, template: Template | None = None) -> None:
        own = Template.make(size, files) if template is None else None
        source = own or template
        assert source is not None
        self.owner = owner
        try:
            backing = os.open(image_dir, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
            try:
                copy_fd(source.fd, backing)  # sparse: only what mkfs and the task write takes disk
                self.fd, self.device = _attach(backing)
            finally:
                os.close(backing)  # the loop device holds the image now; nothing else can reach it
        finally:
            if own is not None:
                own.close()

    def mount(self, target: str) -> None:
        mount(self.device, target, "ext4", MOUNT_FLAGS, MOUNT_DATA)
        os.chown(target, self.owner, self.owner)  # the root of a template is root's

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def input_bytes(dir_fd: int) -> tuple[int, int]:
    """(bytes, count) of the regular files directly in the staging workdir that copy_inputs will copy."""
    total = count = 0
    for entry in os.scandir(dir_fd):
        if entry.is_file(follow_symlinks=False):
            size = entry.stat(follow_symlinks=False).st_size
            total += (size + 4095) // 4096 * 4096 if size <= COPY_MAX else 0
            count += 1
    return total, count


def copy_inputs(src_fd: int, dest: str, bindable_fd: int) -> None:
    """As root: each regular file directly in the staging workdir into the task's filesystem, owned by root and
    read-only (the task may read an input, delete it from its own directory, never change it). Up to COPY_MAX a
    copy (the image is that much larger: inputs cost no quota); a larger one (a model's weights: GBs) is bound
    read-only instead of copied for every task. ``bindable_fd``: the same directory opened in the task's mount
    namespace (a bind source must be a mount of it)."""
    for entry in os.scandir(src_fd):
        if not entry.is_file(follow_symlinks=False):
            continue
        target = os.path.join(dest, entry.name)
        if entry.stat(follow_symlinks=False).st_size > COPY_MAX:
            source = os.open(entry.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=bindable_fd)
            try:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
                mount(f"/proc/self/fd/{source}", target, None, MS_BIND)
                mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MOUNT_FLAGS)
            finally:
                os.close(source)
            continue
        src = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_fd)
        try:
            out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444)
            try:
                copy_fd(src, out)  # intake's kernel-side copy (read/write where the kernel refuses)
            finally:
                os.close(out)
        finally:
            os.close(src)
