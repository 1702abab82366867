"""Manim code scene -> one ``manim`` task, or for a long scene a split DAG (Kodisc's render endpoint; the hot
folder's ``*.py``).

Split (renderers/manim_split.py): ``manim.plan`` counts the animations and cuts them into ranges, ``workers``
``manim.range`` tasks draw one range each in parallel, ``manim.assemble`` joins the segments by stream copy and
publishes the same four outputs as the single task (video, thumbnail, captions, image). A scene is planned split
only when its source allows it
(``split_refusal``: no wall clock, no unseeded randomness, no per-frame state), it may play at least
``manim_split_min_animations`` animations (counted from its ``play``/``wait`` calls, ``for`` loops over
``range(N)`` multiplied; where the source cannot tell, e.g. a call in a helper or a ``while`` loop, the plan task
counts them by running the scene, and draws on one worker if they are too few) and the cost model
(renderers/manim_split_model.py) says a split could win on the CPU slots free now: never on 2 free slots, where
the x264 encoder of a whole render already uses both. The plan task then decides with the frames it counted.
``manim_split_max_workers`` = 0 (the default) asks the model, with one range task per free CPU slot (at most
MAX_WORKERS); N >= 2 splits every long scene into up to N ranges without asking it (a cluster whose cores the
slots do not show, tests); 1 never splits.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib import metadata

from appliance.settings import Settings
from appliance.store import ids
from appliance.store.jobs import TaskDef
from renderers import manim_split, manim_split_model

FIELDS = ("code", "className", "width", "height", "fps")
# The renderer's outputs, by version: cached results of an older version lack an output (2: image.png) and are
# never reused.
OUTPUTS_VERSION = 2
MAX_WORKERS = 16  # the default never plans more range tasks than this, however many cores the box has


class ManimPipeline:
    deferred = False
    untrusted = True  # the scene is a stranger's code: refused where the sandbox is missing

    def __init__(self, min_animations: int = 12, max_workers: int = 1,
                 free_slots: Callable[[], float] | None = None) -> None:
        """max_workers 0: the model decides, on the CPU slots ``free_slots()`` says are free at submit;
        N >= 2: split up to N ways, forced; 1: never split."""
        self.min_animations, self.max_workers = min_animations, max_workers
        self.free_slots = free_slots or (lambda: float(MAX_WORKERS))

    @classmethod
    def from_settings(cls, settings: Settings, free_slots: Callable[[], float]) -> ManimPipeline:
        return cls(settings.manim_split_min_animations, max(0, settings.manim_split_max_workers), free_slots)

    def plan(self, payload: dict) -> list[TaskDef]:
        """payload: code, className, width, height, fps; job_id (a split DAG's tasks name each other)."""
        task_input = {k: payload[k] for k in FIELDS}
        workers, cores = self.workers_for(task_input)
        if workers < 2 or "job_id" not in payload:
            return [TaskDef(renderer="manim", name="render", cpu=1.0, mem_mb=1024, input=task_input,
                            cache_key=cache_key(task_input))]
        return split_tasks(payload["job_id"], task_input, workers, self.min_animations, cores=cores,
                           force=self.max_workers >= 2)

    def workers_for(self, task_input: dict) -> tuple[int, int]:
        """The range tasks to plan (1: one ordinary task) and the free CPU slots the plan task's model is given."""
        code, forced = task_input["code"], self.max_workers >= 2
        if self.max_workers == 1 or manim_split.split_refusal(code):
            return 1, 1
        estimate = manim_split.animation_estimate(code)
        if estimate is not None and estimate < max(2, self.min_animations):
            return 1, 1
        cores = max(1, int(self.free_slots() + 1e-9))
        workers = self.max_workers if forced else min(MAX_WORKERS, cores)
        if not forced and (workers < 2 or not manim_split_model.may_win(
                int(task_input["width"]), int(task_input["height"]), workers, cores)):
            return 1, cores
        return (workers if estimate is None else min(workers, estimate)), cores


def split_tasks(job_id: str, task_input: dict, workers: int, min_animations: int, *, cores: int | None = None,
                force: bool = True) -> list[TaskDef]:
    """plan (task 0) -> ``workers`` ranges (tasks 1..workers) -> assemble (the last task, the job's result).
    ``cores``: the free CPU slots the plan's model is given (default: ``workers``); ``force``: split without
    asking the model."""
    cores = workers if cores is None else cores
    # the plan, and so each range, depends on the split code's format, the worker count, the free cores the
    # model was given, whether it was asked, and the threshold
    key = (f"{cache_key(task_input)}-split{manim_split.PLAN_FORMAT}w{workers}c{cores}{'f' if force else ''}"
           f"m{min_animations}")
    plan_link: dict[str, object] = {"task": ids.task_id(job_id, 0), "file": "plan", "as": manim_split.PLAN_FILE}
    split = {"workers": workers, "minAnimations": min_animations, "cores": cores, "force": force}
    tasks = [TaskDef(renderer="manim.plan", name="render", cpu=1.0, mem_mb=1024, cache_key=f"{key}-plan",
                     input={**task_input, "split": split})]
    for index in range(workers):
        tasks.append(TaskDef(renderer="manim.range", name=f"range {index + 1}/{workers}", cpu=1.0, mem_mb=1024,
                             depends_on=[0], cache_key=f"{key}-range{index}",
                             input={**task_input, "split": {"index": index, "workers": workers},
                                    "link_inputs": [plan_link]}))
    captions: dict[str, object] = {"task": ids.task_id(job_id, 0), "file": "captions", "as": "captions.vtt"}
    links: list[dict[str, object]] = [plan_link, captions]
    for index in range(workers):  # optional: a range the plan did not use returns no files
        task = ids.task_id(job_id, index + 1)
        links += [{"task": task, "file": "video", "as": manim_split.segment_name(index), "optional": True},
                  {"task": task, "file": "thumbnail", "as": manim_split.thumbnail_name(index), "optional": True},
                  {"task": task, "file": "image", "as": manim_split.image_name(index), "optional": True}]
    tasks.append(TaskDef(renderer="manim.assemble", name="assemble", cpu=0.5, mem_mb=300,
                         depends_on=list(range(workers + 1)), cache_key=f"{key}-assemble",
                         input={"width": task_input["width"], "height": task_input["height"],
                                "fps": task_input["fps"], "link_inputs": links}))
    return tasks


def cache_key(task_input: dict) -> str:
    """Same scene, same frame, same Manim version: the same video."""
    parts = [task_input["code"], task_input["className"], f"{task_input['width']}x{task_input['height']}",
             str(task_input["fps"]), metadata.version("manim"), f"outputs{OUTPUTS_VERSION}"]
    return "manim-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()
