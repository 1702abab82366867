"""Manim code scene -> one ``manim`` task (Kodisc's render endpoint; later the hot folder's ``*.py``)."""
from __future__ import annotations

import hashlib
from importlib import metadata

from appliance.store.jobs import TaskDef


class ManimPipeline:
    deferred = False
    untrusted = True  # the scene is a stranger's code: refused where the sandbox is missing

    def plan(self, payload: dict) -> list[TaskDef]:
        """payload: code, className, width, height, fps."""
        task_input = {k: payload[k] for k in ("code", "className", "width", "height", "fps")}
        return [TaskDef(renderer="manim", name="render", cpu=1.0, mem_mb=1024, input=task_input,
                        cache_key=cache_key(task_input))]


def cache_key(task_input: dict) -> str:
    """Same scene, same frame, same Manim version: the same video."""
    parts = [task_input["code"], task_input["className"], f"{task_input['width']}x{task_input['height']}",
             str(task_input["fps"]), metadata.version("manim")]
    return "manim-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()
