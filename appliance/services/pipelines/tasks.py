"""Explicit tasks (the admin API): a list of {renderer, input, name?, depends_on?, cpu?, mem_mb?, gpu?, limits?}.

``limits`` ({cpu_seconds, mem_mb, disk_mb, wall_seconds, nproc, fsize_mb, log_mb}) can only lower the
settings' task limits (``sandbox.limits.lowered``); it travels in the task's input under ``_limits``, a key no
dialect's pipeline writes.

Used by `appliance` operators and by the tests that drive the scheduler with the test renderers."""
from __future__ import annotations

from typing import Any

from appliance.errors import ApplianceError
from appliance.runtime.sandbox.limits import LIMITS_KEY
from appliance.store.jobs import TaskDef


class TasksPipeline:
    deferred = False

    def plan(self, payload: dict[str, Any]) -> list[TaskDef]:
        specs = payload.get("tasks")
        if not isinstance(specs, list) or not specs or not all(isinstance(s, dict) for s in specs):
            raise ApplianceError("tasks must be a non-empty list of objects")
        try:
            return [TaskDef(renderer=str(s["renderer"]), name=str(s.get("name", "")),
                            input={**dict(s.get("input", {})), **({LIMITS_KEY: s["limits"]} if "limits" in s else {})},
                            depends_on=[int(d) for d in s.get("depends_on", [])], cpu=float(s.get("cpu", 1.0)),
                            mem_mb=int(s.get("mem_mb", 256)), gpu=int(s.get("gpu", 0))) for s in specs]
        except (KeyError, TypeError, ValueError) as exc:
            raise ApplianceError(f"bad task definition: {exc}") from None
