"""The renderer contract shared by every renderer module.

A renderer is ``render(task_input: dict, workdir: Path, report: Reporter) -> dict``:
- ``task_input`` is plain JSON (already validated and normalised by the dialect adapter);
- ``workdir`` is the task's own directory, the only place it may write;
- ``report`` streams progress and log lines back to the scheduler;
- the return value is JSON: ``{"files": {"<role>": "<name relative to workdir>"}, "meta": {...}}``.

A failure the user can act on raises ``RenderError`` with a one-line message; anything else is a crash.
"""
from __future__ import annotations

from typing import Protocol


class RenderError(Exception):
    """A render failed for a reason the job's owner can read and act on (one line)."""


class Reporter(Protocol):
    def progress(self, fraction: float, phase: str | None = None) -> None: ...

    def log(self, text: str) -> None: ...


class NullReporter:
    """A reporter that records what it is told; for direct calls and tests."""

    def __init__(self) -> None:
        self.fractions: list[float] = []
        self.lines: list[str] = []

    def progress(self, fraction: float, phase: str | None = None) -> None:
        self.fractions.append(fraction)

    def log(self, text: str) -> None:
        self.lines.append(text)


class JsonLinesReporter:
    """Writes progress/log messages as JSON lines to a binary stream (the worker's pipe)."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._last = -1.0

    def _send(self, message: dict) -> None:
        import json

        self._stream.write(json.dumps(message).encode() + b"\n")
        self._stream.flush()

    def progress(self, fraction: float, phase: str | None = None) -> None:
        fraction = max(0.0, min(1.0, float(fraction)))
        if fraction < self._last:
            return  # progress never goes backwards
        self._last = fraction
        self._send({"type": "progress", "fraction": round(fraction, 4), "phase": phase})

    def log(self, text: str) -> None:
        self._send({"type": "log", "text": str(text)[:2000]})
