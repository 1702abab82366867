"""A seccomp filter for the code a task runs: a hand-written classic BPF program, installed with prctl.

Denied with EPERM: everything that creates or enters namespaces (``unshare -U -r`` would otherwise hand scene
code uid 0 with full capabilities in a new user namespace), mounts, keyrings, BPF, perf, ptrace and other ways
to reach another process's memory, kernel modules, kexec, swap, reboot, userfaultfd, io_uring. ``clone`` is
allowed unless its flags ask for a namespace, so fork and threads work; ``clone3`` passes its flags in memory,
which a filter cannot read, so it fails with ENOSYS and libc falls back to ``clone``. A system call of another
architecture (i386 through int 0x80, x32) kills the process: the numbers below would not mean the same.
"""
from __future__ import annotations

import ctypes
import errno
import platform
import struct

from appliance.runtime.sandbox.kernel import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_SECCOMP,
    check,
    libc,
    prctl,
)

# a BPF instruction before labels are resolved: (code, label if true, label if false, k)
Insn = tuple[int, str | None, str | None, int]

# name: (x86_64, aarch64), from asm/unistd_64.h and asm-generic/unistd.h
DENIED = {
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41),
    "chroot": (161, 51), "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430),
    "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218), "bpf": (321, 280),
    "perf_event_open": (298, 241), "ptrace": (101, 117), "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271), "process_madvise": (440, 440), "pidfd_getfd": (438, 438), "kcmp": (312, 272),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "init_module": (175, 105),
    "finit_module": (313, 273), "delete_module": (176, 106), "swapon": (167, 224), "swapoff": (168, 225),
    "reboot": (169, 142), "userfaultfd": (323, 282), "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264), "io_uring_setup": (425, 425), "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427), "acct": (163, 89), "quotactl": (179, 60), "syslog": (103, 116),
}
CLONE, CLONE3 = (56, 220), (435, 435)
NAMESPACE_FLAGS = (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC
                   | CLONE_NEWCGROUP)
ARCHES = {"x86_64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7)}  # column in the tables, AUDIT_ARCH_*
X32_SYSCALL_BIT = 0x40000000

# classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h)
LD_ABS_W, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
RET_KILL_PROCESS, RET_ERRNO, RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0 = 0, 4, 16  # struct seccomp_data; the low half of args[0] (little endian)
SECCOMP_MODE_FILTER = 2


def supported() -> bool:
    return platform.machine() in ARCHES


def program(machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions. Jumps are relative, so they are resolved from labels."""
    column, arch = ARCHES[machine or platform.machine()]
    # (code, label-if-true, label-if-false, k); None = fall through; "deny"/"nosys"/"clone" = the blocks below
    head: list[Insn] = [(LD_ABS_W, None, None, OFFSET_ARCH), (JEQ, None, "kill", arch),
                         (LD_ABS_W, None, None, OFFSET_NR)]
    if column == 0:
        head.append((JGE, "kill", None, X32_SYSCALL_BIT))
    head.append((JEQ, "nosys", None, CLONE3[column]))
    head.append((JEQ, "clone", None, CLONE[column]))
    head += [(JEQ, "deny", None, numbers[column]) for numbers in DENIED.values()]
    blocks: dict[str, list[Insn]] = {
        "allow": [(RET, None, None, RET_ALLOW)],
        "clone": [(LD_ABS_W, None, None, OFFSET_ARG0), (JSET, "deny", None, NAMESPACE_FLAGS),
                  (RET, None, None, RET_ALLOW)],
        "deny": [(RET, None, None, RET_ERRNO | errno.EPERM)],
        "nosys": [(RET, None, None, RET_ERRNO | errno.ENOSYS)],
        "kill": [(RET, None, None, RET_KILL_PROCESS)]}
    code: list[Insn] = list(head)
    labels: dict[str, int] = {}
    for name, block in blocks.items():
        labels[name] = len(code)
        code += block

    def offset(at: int, label: str | None) -> int:
        if label is None:
            return 0
        jump = labels[label] - at - 1
        assert 0 <= jump < 256, (label, jump)
        return jump

    return [(op, offset(i, jt), offset(i, jf), k) for i, (op, jt, jf, k) in enumerate(code)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Irreversible for this process and everything it starts. Needs no_new_privs (or CAP_SYS_ADMIN)."""
    instructions = program()
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in instructions)
    buf = ctypes.create_string_buffer(raw, len(raw))
    prog = _SockFprog(len(instructions), ctypes.cast(buf, ctypes.c_void_p))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    check(libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(prog), 0, 0),
          "prctl(PR_SET_SECCOMP)")
