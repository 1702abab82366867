"""Test renderers: the only fakes allowed. They exercise the scheduler, the executor and the sandbox.

Each follows the renderer contract (renderers/base.py). ``hostile`` tries what untrusted scene code might try
and reports what happened instead of raising, so a test can assert on every outcome.
"""
from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from renderers.base import RenderError, Reporter


def _done(**meta) -> dict:
    return {"files": {}, "meta": meta}


def noop(task_input: dict, workdir: Path, report: Reporter) -> dict:
    """Writes out.txt; with ``imports`` it times each import (0 when the zygote preloaded it)."""
    report.progress(1.0, "done")
    timings = {}
    for name in task_input.get("imports", []):
        started = time.perf_counter()
        importlib.import_module(name)
        timings[name] = round(time.perf_counter() - started, 4)
    (workdir / "out.txt").write_text("noop\n")
    if task_input.get("symlink_to"):  # hostile: try to get a link to another file published
        (workdir / "out.txt").unlink()
        (workdir / "out.txt").symlink_to(task_input["symlink_to"])
    name = task_input.get("result_name", "out.txt")  # hostile: a name outside the workdir
    return {"files": {"out": name}, "meta": {"pid": os.getpid(), "import_s": timings}}


def sleep(task_input: dict, workdir: Path, report: Reporter) -> dict:
    """Sleeps ``seconds``, progress every 0.1 s; ``child`` starts a grandchild ``sleep`` (``escape``: in its
    own session, out of the task's process group) and logs its pid."""
    seconds = float(task_input.get("seconds", 1.0))
    if task_input.get("child"):
        child = subprocess.Popen(["sleep", "600"], start_new_session=bool(task_input.get("escape")))
        report.log(f"child pid {child.pid}")
    steps = max(1, round(seconds / 0.1))
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        report.progress(step / steps, "sleeping")
    return _done(slept=seconds)


def encode(task_input: dict, workdir: Path, report: Reporter) -> dict:
    """Holds its encoder grant ``hold`` seconds and records what it saw: its GPU (CUDA_VISIBLE_DEVICES), whether
    it holds an NVENC session, the GPU device nodes in its sandbox, and when it ran (wall clock, so tests can
    count overlaps). With ``frames`` it encodes ``video.mp4`` (128x96, 10 fps) as the movie compositor does:
    h264_nvenc when granted, libx264 when not or when NVENC fails."""
    import ffmpeg

    from renderers import ffmpeg as ff

    started = time.time()
    time.sleep(float(task_input.get("hold", 0)))
    files = {}
    frames = int(task_input.get("frames", 0))
    if frames:
        video = ffmpeg.input("testsrc=size=128x96:rate=10", f="lavfi").video.filter("trim", end_frame=frames)
        audio = ffmpeg.input("anullsrc=r=48000:cl=stereo", f="lavfi", t=frames / 10).audio

        def build(encoder: str):
            return ff.h264_aac_output(video, audio, workdir / "video.mp4", fps=10, preset="veryfast", encoder=encoder)
        ff.encode_with_fallback(build, frames / 10, lambda fraction: report.progress(fraction, "encoding"),
                                workdir / "ffmpeg.log")
        files["video"] = "video.mp4"
    devices = sorted(name for name in os.listdir("/dev") if name.startswith("nvidia"))
    return {"files": files, "meta": {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "devices": devices,
                                     "nvenc": os.environ.get("RENDER_NVENC") == "1", "start": started,
                                     "end": time.time(), **ff.encoder_meta()}}


def fail(task_input: dict, workdir: Path, report: Reporter) -> dict:
    raise RenderError(task_input.get("message", "the test renderer failed"))


def crash(task_input: dict, workdir: Path, report: Reporter) -> dict:
    """``signal``: kill ourselves with it; ``exit_code``: exit without a result; ``exception``: raise it."""
    report.log("about to crash")
    if "signal" in task_input:
        os.kill(os.getpid(), signal.Signals[task_input["signal"]])
        time.sleep(5)  # a caught or ignored signal must not turn into a success
    if "exit_code" in task_input:
        os._exit(int(task_input["exit_code"]))
    raise RuntimeError(task_input.get("exception", "boom"))


def memhog(task_input: dict, workdir: Path, report: Reporter) -> dict:
    """Allocates ``mb`` MiB and touches every page, then holds it ``hold`` seconds."""
    size = int(task_input.get("mb", 100)) << 20
    block = bytearray(size)
    for offset in range(0, size, 4096):
        block[offset] = 1
    report.progress(1.0, "allocated")
    time.sleep(float(task_input.get("hold", 0)))
    return _done(mb=size >> 20)


def spin(task_input: dict, workdir: Path, report: Reporter) -> dict:
    """Burns ``seconds`` of CPU time."""
    seconds = float(task_input.get("seconds", 1.0))
    while time.process_time() < seconds:
        sum(range(10_000))
    return _done(cpu_s=round(time.process_time(), 2))


# ---- hostile --------------------------------------------------------------------------------------------------
def _attempt(action) -> object:
    try:
        result = action()
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"
    return "ok" if result is None else result


def _connect(address: tuple[str, int]) -> None:
    with socket.create_connection(address, timeout=3):
        pass


def _forkbomb(limit: int) -> dict:
    """Forks sleeping children until the kernel refuses (or ``limit``), then kills and reaps them all."""
    children: list[int] = []
    error = ""
    while len(children) < limit:
        try:
            pid = os.fork()
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return {"forked": len(children), "error": error}


def _membomb() -> dict:
    chunks: list[bytearray] = []
    error = ""
    try:
        while len(chunks) < 1 << 14:  # 1 TiB: a limit must stop us long before
            chunk = bytearray(64 << 20)
            chunk[::4096] = b"\x01" * len(range(0, len(chunk), 4096))
            chunks.append(chunk)
    except MemoryError as exc:
        error = f"MemoryError: {exc}"
    allocated = len(chunks) * 64
    chunks.clear()
    return {"allocated_mb": allocated, "error": error}


def _exec(argv: list[str], timeout: float) -> dict:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return {"returncode": proc.returncode, "stdout": proc.stdout[-8000:], "stderr": proc.stderr[-8000:]}


def _childhog(children: int, mb: int, hold: float) -> dict:
    """``children`` forked children each touch ``mb`` MiB and hold it ``hold`` seconds; their exit statuses."""
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            try:
                block = bytearray(mb << 20)
                block[::4096] = b"\x01" * len(range(0, len(block), 4096))
                time.sleep(hold)
            finally:
                os._exit(0)
        pids.append(pid)
    return {"statuses": [os.waitpid(pid, 0)[1] for pid in pids]}


def _fill(path: Path, mb: int, pause: float) -> dict:
    """Writes ``mb`` MiB into ``path``, 1 MiB at a time, sleeping ``pause`` between writes."""
    written, chunk = 0, b"x" * (1 << 20)
    try:
        with open(path, "wb") as f:
            while written < mb:
                f.write(chunk)
                f.flush()
                written += 1
                time.sleep(pause)
    except OSError as exc:
        return {"written_mb": written, "error": f"{type(exc).__name__}: {exc}"}
    return {"written_mb": written, "error": ""}


def _spam(mb: int) -> dict:
    """Writes ``mb`` MiB of numbered lines to stderr (the task's log)."""
    line = "spam " * 20 + "\n"
    for n in range((mb << 20) // (len(line) + 8)):
        sys.stderr.write(f"{n:07d} {line}")
    sys.stderr.flush()
    return {"lines": n + 1}


def _pipes(forge: bool) -> dict:
    """Every pipe this task can reach: its own fds and those of every process it can see in /proc. With
    ``forge``, writes a garbage line and a forged error line into each (what a scene would try)."""
    found: dict[str, list[int]] = {}
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if target.startswith("pipe:"):
                found.setdefault(target, []).append(int(pid))
                if forge:
                    _attempt(lambda p=f"/proc/{pid}/fd/{name}": _forge(p))
    return {"pipes": sorted(found), "pids": sorted({int(p) for p in os.listdir("/proc") if p.isdigit()})}


def _forge(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b'FORGED-RAW-LINE\n{"type": "error", "error": "FORGED-ERROR"}\n')
    finally:
        os.close(fd)


def _syscalls() -> dict:
    """What the kernel answers to namespace, mount, ptrace, keyring and bpf calls; and whether threads, fork
    and subprocesses still work."""
    import ctypes
    import errno
    import platform
    import threading

    libc = ctypes.CDLL(None, use_errno=True)
    x86 = platform.machine() == "x86_64"
    numbers = {"clone3": 435, "ptrace": 101 if x86 else 117, "keyctl": 250 if x86 else 219,
               "bpf": 321 if x86 else 280, "perf_event_open": 298 if x86 else 241,
               "userfaultfd": 323 if x86 else 282, "setns": 308 if x86 else 268}

    def call(ret: int) -> str:
        return "ok" if ret >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

    outcome = {"unshare(NEWUSER)": call(libc.unshare(0x10000000)), "unshare(NEWNS)": call(libc.unshare(0x20000)),
               "mount": call(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))}
    outcome.update({name: call(libc.syscall(number, 0, 0, 0, 0, 0)) for name, number in numbers.items()})
    outcome["clone(NEWUSER)"] = call(libc.syscall(56 if x86 else 220, 0x10000000 | 17, 0, 0, 0, 0))
    threads = []
    thread = threading.Thread(target=lambda: threads.append("ok"))
    thread.start()
    thread.join()
    outcome["thread"] = threads[0] if threads else "failed"
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    outcome["fork"] = f"exit {os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}"
    outcome["subprocess"] = subprocess.run(["sh", "-c", "echo ok | cat"], capture_output=True, text=True).stdout.strip()
    return outcome


def hostile(task_input: dict, workdir: Path, report: Reporter) -> dict:
    """``action``: connect (``port``), read/write/listdir (``path``), forkbomb (``limit``), membomb, exec
    (``argv``, ``timeout``), childhog (``children``, ``mb``, ``hold``), fill (``path``, ``mb``, ``pause``),
    spam (``mb``), pipes (``forge``), syscalls. The outcome is in ``meta.outcome``."""
    action = task_input["action"]
    if action == "connect":
        targets = [("127.0.0.1", int(task_input.get("port", 80))), ("1.1.1.1", 443)]
        outcome: object = {f"{host}:{port}": _attempt(lambda a=(host, port): _connect(a)) for host, port in targets}
    elif action == "read":
        outcome = _attempt(lambda: Path(task_input["path"]).read_text()[:8000])
    elif action == "write":
        outcome = _attempt(lambda: Path(task_input["path"]).write_text("pwned\n") and None)
    elif action == "listdir":
        outcome = _attempt(lambda: sorted(os.listdir(task_input["path"])))
    elif action == "forkbomb":
        outcome = _forkbomb(int(task_input.get("limit", 10_000)))
    elif action == "membomb":
        outcome = _membomb()
    elif action == "exec":
        outcome = _exec(list(task_input["argv"]), float(task_input.get("timeout", 120)))
    elif action == "childhog":
        outcome = _childhog(int(task_input["children"]), int(task_input["mb"]), float(task_input.get("hold", 3)))
    elif action == "fill":
        outcome = _fill(workdir / task_input.get("path", "fill.bin"), int(task_input["mb"]),
                        float(task_input.get("pause", 0)))
    elif action == "spam":
        outcome = _spam(int(task_input["mb"]))
    elif action == "pipes":
        outcome = _pipes(bool(task_input.get("forge")))
    elif action == "syscalls":
        outcome = _syscalls()
    else:
        raise RenderError(f"unknown hostile action {action!r}")
    return _done(action=action, outcome=outcome)


def flood(task_input: dict, workdir: Path, report: Reporter) -> dict:
    """Floods the result channel: ``lines`` progress messages and as many log lines, as fast as it can."""
    lines = int(task_input.get("lines", 200_000))
    for n in range(lines):
        report.progress(n / lines, "flooding")
        report.log(f"flood line {n} " + "x" * 80)
    return _done(lines=lines)
