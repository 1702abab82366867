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

Reuse (renderers/manim_segments.py): a whole-scene task, and each range task of a split, is given the pieces of
the same user's latest renders of the same scene class at the same frame (``reuse``: their videos staged as
``reuse_N.mp4`` input artifacts, and each one's piece index; a split render's ranges are such renders, one
segment each), so an edited scene draws only the animations whose address changed. The videos of at most
MAX_SOURCES renders, each adding addresses the newer ones lack, MAX_SOURCE_BYTES in all. The staged pieces are no
part of the cache key: the video is the same with or without them. The pipeline plans once the job exists
(``deferred``), as the job's user is found through it.
"""
from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from appliance.runtime.artifacts import Artifacts
from appliance.settings import Settings
from appliance.store import ids, pieces
from appliance.store.jobs import TaskDef
from appliance.store.rows import Link
from renderers import manim_split, manim_split_model

FIELDS = ("code", "className", "width", "height", "fps")
# The renderer's outputs, by version: cached results of an older version lack an output (2: image.png) and are
# never reused.
OUTPUTS_VERSION = 2
MAX_WORKERS = 16  # the default never plans more range tasks than this, however many cores the box has
MAX_SOURCES = 3  # earlier renders staged for reuse (each video is copied into the task's filesystem)
MAX_SOURCE_BYTES = 256 << 20


class PieceFinder:
    """The earlier renders a task may reuse pieces of: read from the database (its own read-only connection, as
    planning runs in a worker thread), staged from the artifact store."""

    def __init__(self, db_path: Path, artifacts: Artifacts) -> None:
        self.db_path, self.artifacts = db_path, artifacts

    def reuse(self, job_id: str, task_input: dict[str, Any]) -> dict[str, Any]:
        """The task input's additions: ``artifacts`` (reuse_N.mp4 -> digest) and ``reuse`` (the indexes)."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        try:
            user_id = pieces.user_of(conn, job_id)
            renders = pieces.recent_renders(conn, user_id, task_input) if user_id else []
        finally:
            conn.close()
        staged: dict[str, str] = {}
        sources: list[dict[str, Any]] = []
        known: set[str] = set()
        jobs: set[str] = set()
        total = 0
        for render in renders:
            addresses = {p[0] for p in render.pieces if isinstance(p, list) and p and isinstance(p[0], str)}
            if (len(jobs) >= MAX_SOURCES and render.job not in jobs) or not addresses - known \
                    or not self.artifacts.has(render.video):
                continue
            size = self.artifacts.path(render.video).stat().st_size
            if total + size > MAX_SOURCE_BYTES:
                continue
            name = f"reuse_{len(sources)}.mp4"
            staged[name], total = render.video, total + size
            source: dict[str, Any] = {"video": name, "pieces": render.pieces}
            if render.stills is not None and all(self.artifacts.has(d) for d in render.stills):
                # its exact last frame's stills: a render ending on its last piece copies them, draws no frame
                source["image"], source["thumbnail"] = name[:-4] + ".png", name[:-4] + ".jpg"
                staged[source["image"]], staged[source["thumbnail"]] = render.stills
            sources.append(source)
            known |= addresses
            jobs.add(render.job)
        return {"artifacts": staged, "reuse": {"sources": sources}} if sources else {}


class ManimPipeline:
    untrusted = True  # the scene is a stranger's code: refused where the sandbox is missing

    def __init__(self, min_animations: int = 12, max_workers: int = 1,
                 free_slots: Callable[[], float] | None = None, finder: PieceFinder | None = None) -> None:
        """max_workers 0: the model decides, on the CPU slots ``free_slots()`` says are free at submit;
        N >= 2: split up to N ways, forced; 1: never split. ``finder``: earlier renders' pieces to reuse."""
        self.min_animations, self.max_workers = min_animations, max_workers
        self.free_slots = free_slots or (lambda: float(MAX_WORKERS))
        self.finder = finder
        self.deferred = finder is not None  # the job must exist for its user to be known

    @classmethod
    def from_settings(cls, settings: Settings, free_slots: Callable[[], float]) -> ManimPipeline:
        finder = PieceFinder(settings.db_path, Artifacts(settings.data_dir / "artifacts"))
        return cls(settings.manim_split_min_animations, max(0, settings.manim_split_max_workers), free_slots,
                   finder)

    def plan(self, payload: dict[str, Any]) -> list[TaskDef]:
        """payload: code, className, width, height, fps; job_id (a split DAG's tasks name each other)."""
        task_input = {k: payload[k] for k in FIELDS}
        workers, cores = self.workers_for(task_input)
        if workers < 2 or "job_id" not in payload:
            key = cache_key(task_input)  # before the reuse inputs: they change how, never what, it renders
            if self.finder is not None and "job_id" in payload:
                task_input.update(self.finder.reuse(str(payload["job_id"]), task_input))
            return [TaskDef(renderer="manim", name="render", cpu=1.0, mem_mb=1024, input=task_input,
                            cache_key=key)]
        reuse = self.finder.reuse(str(payload["job_id"]), task_input) if self.finder is not None else {}
        return split_tasks(payload["job_id"], task_input, workers, self.min_animations, cores=cores,
                           force=self.max_workers >= 2, reuse=reuse)

    def workers_for(self, task_input: dict[str, Any]) -> tuple[int, int]:
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


def split_tasks(job_id: str, task_input: dict[str, Any], workers: int, min_animations: int, *, cores: int | None = None,
                force: bool = True, reuse: dict[str, Any] | None = None) -> list[TaskDef]:
    """plan (task 0) -> ``workers`` ranges (tasks 1..workers) -> assemble (the last task, the job's result).
    ``cores``: the free CPU slots the plan's model is given (default: ``workers``); ``force``: split without
    asking the model; ``reuse``: PieceFinder's additions, given to every range (none to the plan, which draws
    nothing; no part of any cache key)."""
    cores = workers if cores is None else cores
    # the plan, and so each range, depends on the split code's format, the worker count, the free cores the
    # model was given, whether it was asked, and the threshold
    key = (f"{cache_key(task_input)}-split{manim_split.PLAN_FORMAT}w{workers}c{cores}{'f' if force else ''}"
           f"m{min_animations}")
    plan_link: Link = {"task": ids.task_id(job_id, 0), "file": "plan", "as": manim_split.PLAN_FILE}
    split = {"workers": workers, "minAnimations": min_animations, "cores": cores, "force": force}
    tasks = [TaskDef(renderer="manim.plan", name="render", cpu=1.0, mem_mb=1024, cache_key=f"{key}-plan",
                     input={**task_input, "split": split})]
    for index in range(workers):
        tasks.append(TaskDef(renderer="manim.range", name=f"range {index + 1}/{workers}", cpu=1.0, mem_mb=1024,
                             depends_on=[0], cache_key=f"{key}-range{index}",
                             input={**task_input, **(reuse or {}), "split": {"index": index, "workers": workers},
                                    "link_inputs": [plan_link]}))
    captions: Link = {"task": ids.task_id(job_id, 0), "file": "captions", "as": "captions.vtt"}
    links: list[Link] = [plan_link, captions]
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


def cache_key(task_input: dict[str, Any]) -> str:
    """Same scene, same frame, same Manim version: the same video."""
    parts = [task_input["code"], task_input["className"], f"{task_input['width']}x{task_input['height']}",
             str(task_input["fps"]), metadata.version("manim"), f"outputs{OUTPUTS_VERSION}"]
    return "manim-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()
