"""How long a render will take, before and while it runs, learnt from this box's own history (issue #22 part 3).

Before: a job's *work* is read from its payload — the pixels it has to produce, roughly: a Manim scene's
animations (counted from its source, about a second each) times its frame size and rate; a movie's seconds times
its frame size and rate; a RenderCAD still's pixels; an image→video's frames — and its render seconds are fitted
against the work of the last finished, rendered (not cached) jobs of the same pipeline on this box:
``seconds = a + b * work`` by Theil–Sen (the median of the pairwise slopes, then the median intercept), which a
few odd jobs do not pull. With fewer than ``MIN_HISTORY`` such jobs there is no quote (``None``): a guess from
nothing would be a number without a meaning.

While it runs: the job's progress p (0..1) and its elapsed seconds e give an extrapolation e / p, which is noisy
early (start-up, a plan task) and good late; the quote is the reverse. The predicted total is their blend,
``total = (1 - w) * max(quote, e) + w * e / p`` with ``w = sqrt(p)`` (the quote alone before any progress, the
extrapolation alone at the end, and already a third of the weight at 10 %), and the ETA is ``total - e``.
Without a quote the extrapolation alone, once p is 5 % or more.

Credits follow the job's own price: a per-render-second rate (Kodisc, ViralSync, admin) times the quoted
seconds, rounded up as the ledger rounds, or a fixed price (RenderCAD).
"""
from __future__ import annotations

import json
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlite_utils

from appliance.store import history
from appliance.store.db import parse_iso

MIN_HISTORY = 3  # finished jobs of a pipeline before it is quoted
REFIT_S = 30.0  # a pipeline's fit is reused this long (a quote per job read must not scan the history each time)
MANIM_ANIMATION_S = 1.0  # Manim's default run_time and wait: the seconds of video one animation makes
IMAGE_SIZES = {"standard": 1024, "4k": 4096}  # RenderCAD image.php qualities (pipelines/image.QUALITIES)
VIDEO_SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}  # video.php resolutions (pipelines/image_video)
VIDEO_FPS = 24
# a family: jobs whose render times are comparable, and the pipelines (jobs.kind) they come from; `appliance
# render scene.py` submits a Manim scene as an admin job of kind "tasks" with one manim task
FAMILIES = {"manim": ("manim", "tasks"), "movie": ("movie",), "image": ("image",), "video": ("video",),
            "gif": ("gif",)}


@dataclass(frozen=True)
class Quote:
    seconds: float  # expected render seconds (submit to completed, on an idle box)
    basis: int  # the finished jobs of the pipeline it was fitted on

    def credits(self, rate: float | None, charge: int | None) -> int | None:
        if charge is not None:
            return charge
        return None if rate is None else math.ceil(self.seconds * rate)


def family_of(kind: str, payload: dict) -> tuple[str, dict] | None:
    """(family, the payload the family reads) of a job, or None (test renderers, several admin tasks)."""
    if kind == "tasks":
        tasks = payload.get("tasks") if isinstance(payload, dict) else None
        if isinstance(tasks, list) and len(tasks) == 1 and isinstance(tasks[0], dict) \
                and tasks[0].get("renderer") == "manim" and isinstance(tasks[0].get("input"), dict):
            return "manim", tasks[0]["input"]
        return None
    return (kind, payload) if kind in FAMILIES else None


def work_of(kind: str, payload: dict) -> float | None:
    """Megapixel-frames (a still: megapixels) a job of family ``kind`` has to render, read from its payload;
    None when the payload says too little."""
    try:
        if kind == "manim":
            from renderers.manim_split import animation_estimate

            code = str(payload["code"])
            animations = animation_estimate(code) or code.count(".play(") + code.count(".wait(") or 1
            seconds = animations * MANIM_ANIMATION_S
            return seconds * payload["fps"] * payload["width"] * payload["height"] / 1e6
        if kind == "movie":
            movie = payload["movie"]
            seconds = sum(float(scene.get("duration") or 0) for scene in movie["scenes"])
            return seconds * movie["fps"] * movie["width"] * movie["height"] / 1e6
        if kind == "image":
            return IMAGE_SIZES[payload["settings"]["quality"]] ** 2 / 1e6
        if kind == "video":
            width, height = VIDEO_SIZES[payload["settings"]["resolution"]]
            return float(payload["settings"]["duration"]) * VIDEO_FPS * width * height / 1e6
        if kind == "gif":
            return 1.0
    except (AttributeError, KeyError, TypeError, ValueError):  # a payload of another shape: no work
        return None
    return None


def theil_sen(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(a, b) of y = a + b x: the median of the pairwise slopes (b >= 0), the median intercept."""
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1:]
              if x2 != x1]
    b = max(0.0, statistics.median(slopes)) if slopes else 0.0
    return statistics.median(y - b * x for x, y in points), b


class Estimator:
    """Quotes and ETAs from the jobs this box finished. Thread-safe; the fits are cached per pipeline."""

    def __init__(self, db: sqlite_utils.Database, clock: Callable[[], float] = time.time) -> None:
        self.db, self.clock = db, clock
        self._fits: dict[str, tuple[float, tuple[float, float], int]] = {}  # kind -> (when, (a, b), basis)
        self._lock = threading.Lock()

    def quote(self, kind: str, payload: dict) -> Quote | None:
        """The render seconds a job of pipeline ``kind`` with this payload is expected to take here."""
        return self.explain(kind, payload)[0]

    def explain(self, kind: str, payload: dict) -> tuple[Quote | None, str]:
        """(the quote or None, its family or why there is none)."""
        found = family_of(kind, payload)
        if found is None:
            return None, "only Manim scenes, movies and RenderCAD jobs are estimated"
        family, data = found
        work = work_of(family, data)
        if work is None:
            return None, f"the {family} job says too little to estimate"
        fit = self._fit(family)
        if fit is None:
            return None, f"fewer than {MIN_HISTORY} finished {family} jobs on this box to learn from"
        (a, b), basis = fit
        return Quote(max(0.1, a + b * work), basis), family

    def forget(self) -> None:
        """Drop the cached fits (after a job finished, when the next quote should know it)."""
        with self._lock:
            self._fits.clear()

    def _fit(self, family: str) -> tuple[tuple[float, float], int] | None:
        with self._lock:
            cached = self._fits.get(family)
            if cached is not None and self.clock() - cached[0] < REFIT_S:
                return cached[1], cached[2]
        points = []
        for kind in FAMILIES[family]:
            for row in history.finished_renders(self.db, kind):
                try:
                    found = family_of(kind, json.loads(row["payload"]))
                except ValueError:
                    continue
                work = work_of(family, found[1]) if found is not None and found[0] == family else None
                if work is not None:
                    points.append((work, row["duration_ms"] / 1000))
        if len(points) < MIN_HISTORY:
            return None
        line = theil_sen(points[:400])  # pairwise slopes: bounded work
        with self._lock:
            self._fits[family] = (self.clock(), line, len(points))
        return line, len(points)

    def eta(self, job: dict, quote: Quote | None) -> dict | None:
        """For a queued or running job (a row of store.jobs): {"seconds_left", "finish_at", "total_s",
        "basis"}, or None when nothing can be said yet (no history and no progress, or a job that ended)."""
        if job["status"] not in ("queued", "running"):
            return None
        now = self.clock()
        started = job.get("started_at")
        elapsed = max(0.0, now - parse_iso(started)) if started and job["status"] == "running" else 0.0
        p = min(1.0, max(0.0, float(job.get("progress") or 0.0)))
        if quote is None and p < 0.05:
            return None
        if quote is None:
            total = elapsed / p
        elif p <= 0.0:
            total = max(quote.seconds, elapsed)
        else:
            w = math.sqrt(p)
            total = (1 - w) * max(quote.seconds, elapsed) + w * (elapsed / p)
        left = max(0.0, total - elapsed)
        return {"seconds_left": round(left, 1), "total_s": round(total, 1), "finish_at": round(now + left, 1),
                "basis": quote.basis if quote else 0}
