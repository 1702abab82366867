"""What the zygote's warm model parents hold in memory, as the scheduler counts it (issue #23: the scheduler
accounts a warm worker's memory).

The warm parents (executors/model_parent.py, model_pipeline.py) live in the zygote, outside every task's cgroup:
the imports parent (torch, diffusers: about 0.5 GB) from the first model task until ``idle_s`` after the last one
started, and the loaded parent (one CPU model's float32 weights, twice its float16 folder) until
``LOADED_IDLE_S`` after the last CPU task of that model started. Nothing a task's ``mem_mb`` covers: a task
forked from them shares those pages and is charged only what it writes. So admission counts them as held
memory beside the running tasks, for as long as the zygote keeps them, by the zygote's own rules, from the
tasks the scheduler started; no message crosses from the zygote. The figure is an upper bound: a parent that
refused to serve, or a model too large to keep, holds less.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from appliance.runtime.executors.model_parent import IDLE_S, LOADED_IDLE_S, MODEL_RENDERERS
from appliance.runtime.executors.model_pipeline import WARM_MB, fits

IMPORTS_MB = 512  # the imports parent's resident size (measured 464-478 MB: docs/models.md)


class WarmMemory:
    def __init__(self, idle_s: float = IDLE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s, self.clock = idle_s, clock
        self.imports_until = 0.0
        self.loaded: tuple[str, int, float] | None = None  # (model sha256, MB held, until)

    def started(self, renderer: str, task_input: dict[str, Any], gpu: int | None) -> None:
        """A task started on this machine: a model task keeps the parents alive (and a CPU one loads its model)."""
        if renderer not in MODEL_RENDERERS or self.idle_s <= 0:
            return
        now = self.clock()
        self.imports_until = now + self.idle_s
        model = task_input.get("model")
        if gpu is None and isinstance(model, dict) and isinstance(model.get("size"), int) \
                and isinstance(model.get("sha256"), str) and fits(model, WARM_MB):
            self.loaded = (model["sha256"], 2 * model["size"] >> 20, now + LOADED_IDLE_S)

    def held_mb(self) -> int:
        now = self.clock()
        held = IMPORTS_MB if now < self.imports_until else 0
        if self.loaded is not None and now < self.loaded[2]:
            held += self.loaded[1]
        return held
