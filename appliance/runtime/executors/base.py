"""The executor seam: what the scheduler asks of any engine that runs tasks (local zygote today, Dask next).

An executor gets a ``TaskSpec`` — the renderer, its JSON input, its input artifacts (file name -> digest) and
its limits — and reports messages in order through ``on_message``: progress and log lines, then exactly one
``{"type": "exit", "ok": ..., "result": {...}, "outputs": {name: digest}}``. Output files come back as
artifacts already taken into the appliance's artifact store, so nothing on the scheduler's side depends on
where the task ran. ``key`` is unique per attempt, so a remote engine never confuses a retry with the first try.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance.runtime.sandbox import Limits

OnMessage = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TaskSpec:
    task_id: str
    renderer: str
    input: dict[str, Any]
    limits: Limits
    inputs: dict[str, str] = field(default_factory=dict)  # name in the workdir -> artifact digest
    attempt: int = 1
    mem_mb: int = 0  # the task's memory request, as admitted (a remote engine asks its workers for it)
    gpu: int | None = None  # the GPU granted by the scheduler (its nvidia-smi index); None: no GPU
    nvenc: bool = False  # one NVENC session on that GPU is this task's
    gpu_compute: bool = False  # one compute slot of that GPU is this task's (else the grant is for NVENC only)

    @property
    def key(self) -> str:
        return f"{self.task_id}#{self.attempt}"

    def device_env(self) -> dict[str, str]:
        """The grant as the task's environment (renderers/encoder.py reads it): only its GPU is visible, by the
        index nvidia-smi shows (PCI bus order); RENDER_NVENC=1 when it holds an NVENC session."""
        env = {"CUDA_VISIBLE_DEVICES": "" if self.gpu is None else str(self.gpu), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        return {**env, "RENDER_NVENC": "1"} if self.nvenc and self.gpu is not None else env


class TaskHandle(Protocol):
    task_id: str
    pid: int

    def kill(self, reason: str = "cancelled") -> None: ...


class Executor(Protocol):
    @property
    def mechanism(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def submit(self, spec: TaskSpec, on_message: OnMessage) -> TaskHandle: ...

    def cancel(self, task_id: str, reason: str = "cancelled") -> None: ...
