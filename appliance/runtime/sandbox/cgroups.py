"""One cgroup per task: memory (children and tmpfs pages included), pids and CPU weight; v2 or v1.

The zygote finds where task cgroups can go (``Cgroups.find``, once); the worker, still root and before it
enters the sandbox, creates its own cgroup and moves itself in, so everything the task starts is inside; the
zygote reads the OOM counter, kills what is left and removes the cgroup once the worker is reaped.

v2: the unified hierarchy allows processes only in leaves, so task cgroups are siblings of the zygote's cgroup
(its parent normally has the controllers enabled already, e.g. system.slice under systemd), or children of it
when it is the root. v1: a child of the zygote's cgroup in each of the memory, pids and cpu hierarchies.
"""
from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass

from appliance.runtime.sandbox.limits import Limits

REQUIRED = ("memory", "pids")
# Memory a task may use beyond its budget: the preloaded interpreter pages its processes copy on write
# (measured per fork) plus this much for the worker's own supervisor processes and kernel objects.
SLACK_MB = 64
NAME = re.compile(r"appliance-(\d+)-(\d+)$")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _mounts() -> tuple[str | None, dict[str, str]]:
    """(the cgroup2 mount point, {v1 controller: its mount point})."""
    unified: str | None = None
    v1: dict[str, str] = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _, point, fstype, options = line.split()[:4]
            if fstype == "cgroup2":
                unified = unified or point
            elif fstype == "cgroup":
                for option in options.split(","):
                    v1.setdefault(option, point)
    return unified, v1


def _own_paths() -> dict[str, str]:
    """{controller or "" for v2: this process's cgroup path}."""
    paths = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _enable_v2(directory: str) -> bool:
    """True when task cgroups under ``directory`` get memory and pids (enabling them where allowed)."""
    try:
        enabled = _read(f"{directory}/cgroup.subtree_control").split()
        if not set(REQUIRED) <= set(enabled):
            _write(f"{directory}/cgroup.subtree_control", " ".join(f"+{c}" for c in REQUIRED))
        if "cpu" not in enabled:
            try:
                _write(f"{directory}/cgroup.subtree_control", "+cpu")
            except OSError:
                pass  # CPU weight is a nicety; memory and pids are the limits
        return True
    except OSError:
        return False  # e.g. EBUSY: processes live there, so it cannot hand controllers down


@dataclass(frozen=True)
class Cgroups:
    version: int
    parents: dict[str, str]  # v2: {"": directory}; v1: {controller: directory}

    @classmethod
    def find(cls) -> Cgroups | None:
        if os.geteuid() != 0:
            return None
        try:
            unified, v1 = _mounts()
            own = _own_paths()
        except (OSError, ValueError):
            return None
        if unified and set(REQUIRED) <= set(_read_quiet(f"{unified}/cgroup.controllers").split()):
            path = own.get("", "/")
            candidates = ([os.path.dirname(path.rstrip("/")) or "/"] if path.rstrip("/") else []) + [path]
            for candidate in candidates:
                directory = os.path.normpath(unified + candidate)
                if _enable_v2(directory):
                    return cls(2, {"": directory})
        if all(c in v1 and c in own for c in REQUIRED):
            wanted = [c for c in (*REQUIRED, "cpu", "cpuacct") if c in v1 and c in own]
            parents = {c: os.path.normpath(v1[c] + own[c]) for c in wanted}
            if all(os.access(d, os.W_OK) for d in parents.values()):
                return cls(1, parents)
        return None

    def describe(self) -> str:
        if self.version == 2:
            return f"cgroup v2 under {self.parents['']}"
        return f"cgroup v1 ({', '.join(self.parents)}) under {self.parents['memory']}"

    def dirs(self, name: str) -> dict[str, str]:
        return {c: f"{parent}/{name}" for c, parent in self.parents.items()}

    # ---- in the worker, as root ------------------------------------------------------------------------------
    def create(self, name: str, limits: Limits, preloaded_mb: int, join: bool = True) -> None:
        """Create the task's cgroup with its limits and move the calling process into it."""
        for directory in self.dirs(name).values():
            os.mkdir(directory, 0o755)
        self.limit(name, limits, preloaded_mb)
        if join:
            self.join(name)

    def prepare(self, name: str) -> None:
        """Create the cgroup and move the calling process into it, limits to follow (``limit``) before the task
        runs: a spare worker does this while it waits, because the move costs up to ~14 ms (an RCU grace
        period of the kernel's cgroup lock) when it happens on a task's start."""
        for directory in self.dirs(name).values():
            os.mkdir(directory, 0o755)
        self.join(name)

    def join(self, name: str) -> None:
        for directory in self.dirs(name).values():
            _write(f"{directory}/cgroup.procs", str(os.getpid()))

    def limit(self, name: str, limits: Limits, preloaded_mb: int) -> None:
        """The task's limits on its cgroup: memory (children and tmpfs pages), pids, CPU weight."""
        memory = (limits.mem_mb + preloaded_mb + SLACK_MB) << 20
        pids = limits.nproc + 2  # the worker and the namespace's init come on top of the task's own
        dirs = self.dirs(name)
        share = limits.cpu * limits.weight
        if self.version == 2:
            d = dirs[""]
            settings = [("memory.max", memory), ("pids.max", pids), ("memory.swap.max", 0),
                        ("memory.oom.group", 1), ("cpu.weight", max(1, min(10000, round(100 * share))))]
        else:
            d = dirs["memory"]
            settings = [("memory.limit_in_bytes", memory), ("memory.memsw.limit_in_bytes", memory),
                        (f"{dirs['pids']}/pids.max", pids)]
            if "cpu" in dirs:
                settings.append((f"{dirs['cpu']}/cpu.shares", max(2, round(1024 * share))))
        for file, value in settings:
            path = file if file.startswith("/") else f"{d}/{file}"
            try:
                _write(path, str(value))
            except OSError:
                if file in ("memory.max", "memory.limit_in_bytes") or file.endswith("pids.max"):
                    raise
                # optional knobs (swap, oom.group, cpu) exist only where the kernel and its settings have them

    def cpu_counter(self, name: str) -> str | None:
        """The file that counts the CPU time of every process of the task (v2 ``cpu.stat`` usage_usec, v1
        ``cpuacct.usage`` in ns), or None where v1 has no cpuacct hierarchy."""
        dirs = self.dirs(name)
        if self.version == 2:
            return f"{dirs['']}/cpu.stat"
        return f"{dirs['cpuacct']}/cpuacct.usage" if "cpuacct" in dirs else None

    def pids(self, name: str) -> list[int]:
        """The host pids of the task's processes (the worker among them)."""
        dirs = self.dirs(name)
        main = dirs["" if self.version == 2 else "pids"]
        return [int(p) for p in _read_quiet(f"{main}/cgroup.procs").split()]

    def oom_counter(self, name: str) -> str:
        """The file whose ``oom_kill N`` line counts the task's OOM kills."""
        dirs = self.dirs(name)
        return f"{dirs['']}/memory.events" if self.version == 2 else f"{dirs['memory']}/memory.oom_control"

    # ---- in the zygote -----------------------------------------------------------------------------------------
    def oom_kills(self, name: str) -> int:
        return parse_oom_kills(_read_quiet(self.oom_counter(name)))

    def kill(self, name: str) -> None:
        """SIGKILL everything left in the task's cgroup (the worker's process group and uid are killed too)."""
        dirs = self.dirs(name)
        main = dirs["" if self.version == 2 else "memory"]
        if self.version == 2 and os.path.exists(f"{main}/cgroup.kill"):
            try:
                _write(f"{main}/cgroup.kill", "1")
                return
            except OSError:
                pass
        for _ in range(10):  # a process may fork while we kill; pids are host pids (the zygote's namespace)
            pids = [int(p) for p in _read_quiet(f"{main}/cgroup.procs").split()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def remove(self, name: str) -> bool:
        """rmdir the task's cgroup(s); False while a dying process still holds one (try again later)."""
        done = True
        for directory in self.dirs(name).values():
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done

    def sweep(self, zygote_pid: int) -> None:
        """Remove task cgroups a dead zygote left behind (its processes are gone with it)."""
        for parent in self.parents.values():
            try:
                names = os.listdir(parent)
            except OSError:
                continue
            for name in names:
                match = NAME.match(name)
                if match and int(match.group(1)) != zygote_pid and not _alive(int(match.group(1))):
                    self.kill(name)
                    time.sleep(0.01)
                    self.remove(name)


def parse_cpu_seconds(text: str) -> float:
    """CPU seconds from ``cpu.stat`` (usage_usec) or ``cpuacct.usage`` (nanoseconds)."""
    match = re.search(r"^usage_usec (\d+)$", text, re.MULTILINE)
    if match:
        return int(match.group(1)) / 1e6
    text = text.strip()
    return int(text) / 1e9 if text.isdigit() else 0.0


def parse_oom_kills(text: str) -> int:
    match = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _read_quiet(path: str) -> str:
    try:
        return _read(path)
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
