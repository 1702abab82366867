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
from typing import Any, Literal, Protocol, Required, TypedDict

from appliance.runtime.sandbox import Limits


class ProgressMessage(TypedDict):
    """How far the renderer says it is (0..1), and its phase ("rendering", "encoding", ...)."""
    type: Literal["progress"]
    fraction: float
    phase: str


class Usage(TypedDict):
    cpu_s: float
    max_rss_mb: float


class ExitMessage(TypedDict, total=False):
    """The attempt ended, exactly once. ok: ``result`` (the renderer's JSON, with ``files``: role -> name) and
    ``outputs`` (name -> artifact digest, taken in by the executor); not ok: ``error``, and ``retry`` where the
    executor lost the attempt through no fault of the task (a Dask worker or the local zygote died under it),
    with ``salvaged`` where the executor kept what the attempt had finished (runtime/resume.py, local only: never
    from a message that crossed a network)."""
    type: Required[Literal["exit"]]
    ok: Required[bool]
    result: dict[str, Any]
    outputs: dict[str, str]
    error: str
    retry: bool
    salvaged: dict[str, Any]
    usage: Usage


Message = ProgressMessage | ExitMessage
OnMessage = Callable[[Message], None]


def failed(error: str, *, retry: bool = False) -> ExitMessage:
    message: ExitMessage = {"type": "exit", "ok": False, "error": error}
    if retry:
        message["retry"] = True
    return message


def progress_of(raw: dict[str, Any]) -> ProgressMessage | None:
    """A progress line as a worker sent it, checked: None unless its fraction is a number in 0..1."""
    try:
        fraction = float(raw.get("fraction", 0.0))
    except (TypeError, ValueError):
        return None
    if fraction != fraction:  # NaN
        return None
    return {"type": "progress", "fraction": min(1.0, max(0.0, fraction)), "phase": str(raw.get("phase") or "")[:40]}


def exit_of(raw: dict[str, Any]) -> ExitMessage:
    """An exit message that crossed a process or a network (a Dask worker's), reduced to the fields it may carry,
    each of the right type; an ok message without a result object is a failure."""
    if raw.get("ok") is True and isinstance(raw.get("result"), dict):
        message: ExitMessage = {"type": "exit", "ok": True, "result": raw["result"]}
    else:
        message = failed(str(raw.get("error") or "task failed")[:4000], retry=raw.get("retry") is True)
    usage = raw.get("usage")
    if isinstance(usage, dict):
        try:
            message["usage"] = {"cpu_s": float(usage["cpu_s"]), "max_rss_mb": float(usage["max_rss_mb"])}
        except (KeyError, TypeError, ValueError):
            pass
    return message


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
