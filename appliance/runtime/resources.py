"""Capacity measured at start: physical cores, memory, NVIDIA GPUs (nvidia-smi); config overrides each."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

import psutil

from appliance.settings import Settings


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mb: int
    nvenc_sessions: int


@dataclass(frozen=True)
class Capacity:
    cpu: float
    mem_mb: int
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)

    @property
    def gpu(self) -> int:
        return len(self.gpus)

    @property
    def nvenc(self) -> int:
        return sum(g.nvenc_sessions for g in self.gpus)

    def as_json(self) -> dict:
        return {"cpu": self.cpu, "memMb": self.mem_mb, "gpu": self.gpu, "nvencSessions": self.nvenc,
                "gpus": [{"index": g.index, "name": g.name, "memoryMb": g.memory_mb} for g in self.gpus]}


# Consumer NVIDIA cards are limited to a few concurrent NVENC sessions by the driver; data-centre cards
# are not. A conservative default that config can override per deployment.
NVENC_SESSIONS_PER_GPU = 3


def detect_gpus(nvidia_smi: str | None = None) -> tuple[Gpu, ...]:
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run([exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if out.returncode != 0:
        return ()
    return tuple(_parse_gpu_line(line) for line in out.stdout.splitlines() if line.strip())


def _parse_gpu_line(line: str) -> Gpu:
    index, name, memory = (part.strip() for part in line.split(","))
    return Gpu(int(index), name, int(float(memory)), NVENC_SESSIONS_PER_GPU)


def measure(settings: Settings) -> Capacity:
    cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    cpu = float(settings.cpu_slots or cores)
    total_mb = psutil.virtual_memory().total // (1024 * 1024)
    mem = settings.memory_mb or max(256, total_mb - settings.memory_reserve_mb)
    gpus = detect_gpus()
    if settings.gpus >= 0:
        gpus = gpus[: settings.gpus]
    return Capacity(cpu=cpu, mem_mb=int(mem), gpus=gpus)
