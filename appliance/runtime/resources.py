"""Capacity measured at start: physical cores, memory and NVIDIA GPUs; config overrides each figure.

A GPU's NVENC and NVDEC capacity is probed, never taken from a table: data-centre GPUs (H100, H200) report
encoder capacity through NVML and ship ``libnvidia-encode.so`` but have no encoder at all, and the session
limit of consumer cards changes between driver releases. So at start, per GPU, one ffmpeg process opens k
``h264_nvenc`` encoders at once (every output's encoder is opened before the first frame), for k = 1 up to
``nvenc_probe_max``; the largest k that opens is the GPU's session count, 0 when one does not (the reason kept).
NVDEC: one frame decoded with ``h264_cuvid``. ``GpuPool`` hands those slots to tasks.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from appliance.settings import Settings, SettingsError

PROBE_TIMEOUT_S = 30
_SOURCE = ["-f", "lavfi", "-i", "color=size=256x256:rate=1"]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mb: int
    nvenc_sessions: int = 0
    nvdec: bool = False
    compute_slots: int = 1
    # How each figure was found: "probed", "probe failed: <first stderr line>", "config", …
    nvenc_reason: str = "not probed"
    nvdec_reason: str = "not probed"
    # A GPU of a Dask worker (executor = "dask"): the worker's address and the GPU's index there. ``index`` is
    # then the appliance's own number for it, unique across the cluster; "" / None: a GPU of this machine.
    worker: str = ""
    local_index: int | None = None

    @property
    def device(self) -> int:
        """The index the GPU has on the machine it is in (what CUDA_VISIBLE_DEVICES and /dev/nvidiaN name)."""
        return self.index if self.local_index is None else self.local_index

    def describe(self) -> str:
        """One line for `appliance doctor`, e.g. "GPU 0 NVIDIA H200: NVENC 0 (h264_nvenc failed: …)"."""
        where = f" (GPU {self.device} of worker {self.worker})" if self.worker else ""
        return (f"GPU {self.index}{where} {self.name}: {self.memory_mb} MB, {self.compute_slots} compute slot(s), "
                f"NVENC {self.nvenc_sessions} ({self.nvenc_reason}), NVDEC {'yes' if self.nvdec else 'no'} "
                f"({self.nvdec_reason})")

    def as_json(self) -> dict[str, Any]:
        found = {"index": self.index, "name": self.name, "memoryMb": self.memory_mb,
                 "computeSlots": self.compute_slots, "nvencSessions": self.nvenc_sessions,
                 "nvencReason": self.nvenc_reason, "nvdec": self.nvdec, "nvdecReason": self.nvdec_reason}
        return {**found, "worker": self.worker, "localIndex": self.device} if self.worker else found

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Gpu:
        """A GPU as ``as_json`` wrote it (a Dask worker's inventory, sent to the appliance)."""
        return cls(index=int(data["index"]), name=str(data["name"]), memory_mb=int(data["memoryMb"]),
                   nvenc_sessions=int(data["nvencSessions"]), nvdec=bool(data["nvdec"]),
                   compute_slots=int(data["computeSlots"]), nvenc_reason=str(data["nvencReason"]),
                   nvdec_reason=str(data["nvdecReason"]))


@dataclass(frozen=True)
class Capacity:
    cpu: float
    mem_mb: int
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)

    @property
    def gpu(self) -> int:
        return len(self.gpus)

    @property
    def gpu_slots(self) -> int:
        """Tasks that may hold a GPU's compute at once, over all GPUs."""
        return sum(g.compute_slots for g in self.gpus)

    @property
    def nvenc(self) -> int:
        return sum(g.nvenc_sessions for g in self.gpus)

    def as_json(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memMb": self.mem_mb, "gpu": self.gpu, "gpuSlots": self.gpu_slots,
                "nvencSessions": self.nvenc, "gpus": [g.as_json() for g in self.gpus]}


# ---- detection ------------------------------------------------------------------------------------------------
def detect_gpus(nvidia_smi: str | None = None) -> tuple[Gpu, ...]:
    """GPUs as nvidia-smi lists them (index, name, memory); no NVENC/NVDEC yet (see probe_gpu)."""
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
    gpus = []
    for line in out.stdout.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():  # anything else (a warning line) is not a GPU
            try:
                gpus.append(Gpu(int(parts[0]), parts[1], int(float(parts[2]))))
            except ValueError:
                continue
    return tuple(gpus)


def _first_line(text: str) -> str:
    """The first stderr line that says something (ffmpeg's banner is off), for the reason shown."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines or ["no output"])[0][:200]


def _run_probe(cmd: list[str]) -> tuple[bool, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {PROBE_TIMEOUT_S} s"
    except OSError as exc:
        return False, f"cannot run {cmd[0]}: {exc.strerror or exc}"
    return proc.returncode == 0, "" if proc.returncode == 0 else _first_line(proc.stderr)


def nvenc_command(exe: str, index: int, sessions: int) -> list[str]:
    """One ffmpeg process that opens ``sessions`` NVENC encoders on GPU ``index`` at once (one frame each)."""
    outputs: list[str] = []
    for _ in range(sessions):
        outputs += ["-map", "0:v", "-frames:v", "1", "-c:v", "h264_nvenc", "-gpu", str(index), "-f", "null", "-"]
    return [exe, "-hide_banner", "-nostdin", "-loglevel", "error", *_SOURCE, *outputs]


def probe_nvenc(exe: str, index: int, cap: int) -> tuple[int, str]:
    """(sessions, reason): the most encoders (up to ``cap``) that open at once; 0 and why when one does not."""
    ok, why = _run_probe(nvenc_command(exe, index, 1))
    if not ok:
        return 0, f"h264_nvenc failed: {why}"
    best = 1
    for k in range(2, cap + 1):  # the first refusal is the driver's (or the chip's) session limit
        ok, why = _run_probe(nvenc_command(exe, index, k))
        if not ok:
            return best, f"probed: {k} sessions refused ({why})"
        best = k
    return best, f"probed: {best} session(s) open at once (probe cap nvenc_probe_max={cap})"


def probe_nvdec(exe: str, index: int) -> tuple[bool, str]:
    """Whether one H.264 frame decodes with NVDEC (h264_cuvid) on GPU ``index``."""
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        return False, "ffmpeg missing: no sample to decode"
    with tempfile.TemporaryDirectory(prefix="nvdec-probe-") as tmp:
        sample = str(Path(tmp) / "sample.h264")
        made, why = _run_probe([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", *_SOURCE,
                                "-frames:v", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "h264", sample])
        if not made:
            return False, f"could not make a sample: {why}"
        ok, why = _run_probe([exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-c:v", "h264_cuvid",
                              "-gpu", str(index), "-i", sample, "-f", "null", "-"])
    return ok, "probed: h264_cuvid decodes" if ok else f"h264_cuvid failed: {why}"


def probe_gpu(gpu: Gpu, settings: Settings) -> Gpu:
    """The GPU with its NVENC/NVDEC figures: from config where set, else from the probe."""
    exe = settings.encoder_probe or shutil.which("ffmpeg") or "ffmpeg"
    if settings.nvenc_sessions >= 0:
        sessions, why = settings.nvenc_sessions, "config nvenc_sessions"
    elif settings.nvenc_probe_max <= 0:
        sessions, why = 0, "not probed (nvenc_probe_max = 0)"
    else:
        sessions, why = probe_nvenc(exe, gpu.index, settings.nvenc_probe_max)
    nvdec, nvdec_why = probe_nvdec(exe, gpu.index)
    return replace(gpu, nvenc_sessions=sessions, nvenc_reason=why, nvdec=nvdec, nvdec_reason=nvdec_why,
                   compute_slots=max(0, settings.gpu_compute_slots))


def parse_overrides(text: str) -> dict[int, dict[str, int]]:
    """``gpu_overrides``: "INDEX:key=value,key=value;INDEX:…" with keys nvenc_sessions, nvdec (0/1),
    compute_slots, memory_mb — e.g. "0:nvenc_sessions=0;1:nvenc_sessions=2,compute_slots=2"."""
    keys = ("nvenc_sessions", "nvdec", "compute_slots", "memory_mb")
    result: dict[int, dict[str, int]] = {}
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        index, _, pairs = entry.partition(":")
        try:
            values = {k.strip(): int(v) for k, v in (pair.split("=", 1) for pair in pairs.split(",") if pair.strip())}
            gpu = int(index)
        except ValueError:
            raise SettingsError(f"gpu_overrides: cannot read {entry!r} (INDEX:key=value,…)") from None
        unknown = set(values) - set(keys)
        if unknown or any(v < 0 for v in values.values()):
            raise SettingsError(f"gpu_overrides: {entry!r}: keys are {', '.join(keys)}, values ≥ 0")
        result[gpu] = values
    return result


def _override(gpu: Gpu, values: dict[str, int]) -> Gpu:
    changes: dict[str, Any] = {}
    if "nvenc_sessions" in values:
        changes.update(nvenc_sessions=values["nvenc_sessions"], nvenc_reason="config gpu_overrides")
    if "nvdec" in values:
        changes.update(nvdec=bool(values["nvdec"]), nvdec_reason="config gpu_overrides")
    if "compute_slots" in values:
        changes["compute_slots"] = values["compute_slots"]
    if "memory_mb" in values:
        changes["memory_mb"] = values["memory_mb"]
    return replace(gpu, **changes)


def measure(settings: Settings, *, gpus: bool = True) -> Capacity:
    """This machine's capacity; ``gpus=False`` skips GPU detection (an appliance whose tasks run on a Dask
    cluster grants the workers' GPUs, never its own)."""
    cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    cpu = float(settings.cpu_slots or cores)
    total_mb = psutil.virtual_memory().total // (1024 * 1024)
    mem = settings.memory_mb or max(256, total_mb - settings.memory_reserve_mb)
    return Capacity(cpu=cpu, mem_mb=int(mem), gpus=measure_gpus(settings) if gpus else ())


def measure_gpus(settings: Settings) -> tuple[Gpu, ...]:
    """The GPUs nvidia-smi lists, probed (NVENC, NVDEC), limited by ``gpus`` and overridden by ``gpu_overrides``."""
    gpus = detect_gpus()
    if settings.gpus >= 0:
        gpus = gpus[: settings.gpus]
    overrides = parse_overrides(settings.gpu_overrides)
    return tuple(_override(probe_gpu(g, settings), overrides.get(g.index, {})) for g in gpus)


# ---- handing out GPU slots ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grant:
    """What one task may use: a GPU (its compute and/or one NVENC session on it), or nothing."""

    gpu: int | None = None
    compute: bool = False
    nvenc: bool = False


class GpuPool:
    """Per-GPU compute slots, NVENC sessions and GPU memory in use; the scheduler grants and releases, one grant
    per task.

    NVENC is a bonus, never a wait: a task that encodes gets a session where one is free and otherwise encodes
    with libx264, so a GPU without NVENC (or with every session taken) never holds a task back. Memory: a task
    that asks for compute says how much of the card it needs (``mem_mb``, its task input's ``gpu_mem_mb``: a
    studio model's weights and activations); it is granted a GPU only where that fits beside what the tasks
    already granted it hold (``Gpu.memory_mb`` minus their needs), so two models that together exceed a card
    never run on it at once. A need of 0 (a task that did not say) counts nothing but its slot.
    """

    def __init__(self, gpus: tuple[Gpu, ...]) -> None:
        self.gpus = {g.index: g for g in gpus}
        self._compute = {g.index: 0 for g in gpus}
        self._nvenc = {g.index: 0 for g in gpus}
        self._mem = {g.index: 0 for g in gpus}
        self._grants: dict[str, tuple[Grant, int]] = {}  # task id -> (its grant, the GPU memory it holds)
        self._lock = threading.Lock()

    def update(self, gpus: tuple[Gpu, ...]) -> None:
        """The GPUs changed (Dask workers joined or left): what running tasks hold on the GPUs that remain stays
        counted; a GPU that left takes its counts along (its tasks are lost with their worker)."""
        with self._lock:
            self.gpus = {g.index: g for g in gpus}
            self._compute = {i: self._compute.get(i, 0) for i in self.gpus}
            self._nvenc = {i: self._nvenc.get(i, 0) for i in self.gpus}
            self._mem = {i: self._mem.get(i, 0) for i in self.gpus}

    def copy(self) -> GpuPool:
        """A pool with the same GPUs and the same holdings, to try grants on (admission's pass plans the grants
        the scheduler then makes, in the same order, with the same rule)."""
        with self._lock:
            other = GpuPool(tuple(self.gpus.values()))
            other._compute, other._nvenc, other._mem = dict(self._compute), dict(self._nvenc), dict(self._mem)
            other._grants = dict(self._grants)
            return other

    def free_compute(self) -> int:
        return sum(self.gpus[i].compute_slots - used for i, used in self._compute.items())

    def free_memory(self, index: int) -> int:
        """MB of GPU ``index`` that no granted task holds (what nvidia-smi reported, less the grants' needs)."""
        return self.gpus[index].memory_mb - self._mem[index]

    def _fits(self, index: int, mem_mb: int) -> bool:
        gpu = self.gpus[index]
        return self._compute[index] < gpu.compute_slots and (mem_mb <= 0 or mem_mb <= self.free_memory(index))

    def can_grant(self, mem_mb: int = 0) -> bool:
        """Whether a compute grant needing ``mem_mb`` would find a GPU now."""
        with self._lock:
            return any(self._fits(i, mem_mb) for i in self.gpus)

    def could_ever_hold(self, mem_mb: int) -> bool:
        """Whether some GPU with compute slots is large enough for ``mem_mb`` when nothing else holds it."""
        return any(g.compute_slots > 0 and (mem_mb <= 0 or mem_mb <= g.memory_mb) for g in self.gpus.values())

    def grant(self, task_id: str, *, compute: bool = False, optional_compute: bool = False,
              nvenc: bool = False, mem_mb: int = 0) -> Grant:
        """``compute``: the task needs a GPU (admission checked one fits); ``optional_compute``: it can use one
        if one is free and fits, else it runs on the CPU; ``nvenc``: it encodes video and would take an NVENC
        session; ``mem_mb``: the GPU memory its compute needs."""
        with self._lock:
            gpu = None
            if compute or optional_compute:
                free = [i for i in self.gpus if self._fits(i, mem_mb)]
                # the GPU with an encoder free first, so a task that encodes gets both on one GPU
                free.sort(key=lambda i: (nvenc and self._nvenc[i] >= self.gpus[i].nvenc_sessions, self._compute[i]))
                gpu = free[0] if free else None
            session = False
            if nvenc:
                if gpu is not None:
                    session = self._nvenc[gpu] < self.gpus[gpu].nvenc_sessions
                else:
                    open_ = [i for i, used in self._nvenc.items() if used < self.gpus[i].nvenc_sessions]
                    open_.sort(key=lambda i: self._nvenc[i] - self.gpus[i].nvenc_sessions)
                    if open_:
                        gpu, session = open_[0], True
            grant = Grant(gpu=gpu, compute=gpu is not None and (compute or optional_compute), nvenc=session)
            held = max(0, mem_mb) if grant.compute else 0
            if grant.compute and grant.gpu is not None:
                self._compute[grant.gpu] += 1
                self._mem[grant.gpu] += held
            if grant.nvenc and grant.gpu is not None:
                self._nvenc[grant.gpu] += 1
            self._grants[task_id] = (grant, held)
            return grant

    def release(self, task_id: str) -> None:
        with self._lock:
            grant, held = self._grants.pop(task_id, (None, 0))
            if grant is None or grant.gpu not in self.gpus:  # no GPU, or one that has left since
                return
            if grant.compute:
                self._compute[grant.gpu] -= 1
                self._mem[grant.gpu] -= held
            if grant.nvenc:
                self._nvenc[grant.gpu] -= 1

    def in_use(self) -> dict[int, dict[str, int]]:
        with self._lock:
            return {i: {"compute": self._compute[i], "nvenc": self._nvenc[i]} for i in self.gpus}

    def memory_in_use(self) -> dict[int, int]:
        """MB of each GPU that granted tasks hold (their ``gpu_mem_mb``)."""
        with self._lock:
            return dict(self._mem)
