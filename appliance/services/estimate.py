"""How long a render will take, before and while it runs, learnt from this box's own history (issue #22 part 3).

Before: a job's *work* is read from its payload — the pixels it has to produce, roughly: a Manim scene's
animations (counted from its source, about a second each) times its frame size and rate; a movie's seconds times
its frame size and rate; a RenderCAD still's pixels; an image→video's frames — and its render seconds are fitted
against the features of the last finished, rendered (not cached) jobs of the same family on this box, by least
squares (``fit``: features dropped while too few jobs support them, then a refit without the outliers; with
three jobs, seconds proportional to the work). The fit is redone whenever the family's history changes. With
fewer than ``MIN_HISTORY`` such jobs there is no quote (``None``): a guess from nothing would be a number without a
meaning.

While it runs: the job's progress p (0..1) and its elapsed seconds e give an extrapolation e / p, which is noisy
early (start-up, a plan task, an encoder that lags the drawing) and good late; the quote is the reverse. The
predicted total is their blend, ``total = (1 - w) * max(quote, e) + w * e / p``, each weighted by the inverse of
its expected squared error (``blend_weight``): the quote's is its fit's spread on its own history, the
extrapolation's EXTRAPOLATION_NOISE * (1 - p) / p (measured by ``make bench``'s eta section: e / p alone at 10 %
is off by a median 57 %). So the quote leads early and the extrapolation late, and a family whose fit is poor
hands over sooner. The ETA is ``total - e``. Without a quote the extrapolation alone, once p is 5 % or more.

Credits follow the job's own price: a per-render-second rate (Kodisc, ViralSync, admin) times the quoted
seconds, rounded up as the ledger rounds, or a fixed price (RenderCAD).
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from appliance.store import history, jobs
from appliance.store.db import loads, parse_iso
from appliance.store.rows import JobRow

MIN_HISTORY = 3  # finished jobs of a pipeline before it is quoted
EXTRAPOLATION_NOISE = 0.06  # elapsed / progress is off by about this times (1 - p) / p (0.57 at p = 10 %)
AUX_WEIGHT = 0.3  # an assemble or plan task's work against a render task's, for the ETA's progress
MIN_SPREAD = 0.05  # a fit is never trusted closer than this, however well it matched its own history
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
    seconds: float  # expected render seconds (started to completed, as billed)
    basis: int  # the finished jobs of the family it was fitted on
    spread: float = 0.0  # the fit's median relative error on those jobs
    start: float = 0.0  # the part of it that does not grow with the work (start-up, planning, assembly)

    def credits(self, rate: float | None, charge: int | None) -> int | None:
        if charge is not None:
            return charge
        return None if rate is None else math.ceil(self.seconds * rate)


def family_of(kind: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(family, the payload the family reads) of a job, or None (test renderers, several admin tasks)."""
    if kind == "tasks":
        tasks = payload.get("tasks") if isinstance(payload, dict) else None
        if isinstance(tasks, list) and len(tasks) == 1 and isinstance(tasks[0], dict) \
                and tasks[0].get("renderer") == "manim" and isinstance(tasks[0].get("input"), dict):
            return "manim", tasks[0]["input"]
        return None
    return (kind, payload) if kind in FAMILIES else None


def features_of(family: str, payload: dict[str, Any], parallel: int | None = None) -> list[float] | None:
    """What a job of ``family`` has to render, read from its payload, as the numbers its time is fitted on; the
    last is always the work (megapixel-frames; a still: megapixels). None when the payload says too little.
    - manim: [animations, work]: each animation costs a little on its own (Manim sets it up, the encoder is
      flushed), and every frame's pixels cost;
    - movie: [scenes, work], each over the scenes rendered at once (the job's ``max_parallel``): a scene task's
      start costs, its pixels cost, and up to ``max_parallel`` scenes render side by side;
    - RenderCAD: [work]; gif: [] (a GIF is made from a video of bounded length: a constant)."""
    try:
        if family == "manim":
            from renderers.manim_split import animation_estimate

            code = str(payload["code"])
            animations = animation_estimate(code) or code.count(".play(") + code.count(".wait(") or 1
            work = animations * MANIM_ANIMATION_S * payload["fps"] * payload["width"] * payload["height"] / 1e6
            return [float(animations), work]
        if family == "movie":
            movie, at_once = payload["movie"], max(1, int(parallel or 1))
            seconds = sum(float(scene.get("duration") or 0) for scene in movie["scenes"])
            work = seconds * movie["fps"] * movie["width"] * movie["height"] / 1e6
            return [len(movie["scenes"]) / min(at_once, len(movie["scenes"]) or 1), work / at_once]
        if family == "image":
            return [IMAGE_SIZES[payload["settings"]["quality"]] ** 2 / 1e6]
        if family == "video":
            width, height = VIDEO_SIZES[payload["settings"]["resolution"]]
            return [float(payload["settings"]["duration"]) * VIDEO_FPS * width * height / 1e6]
        if family == "gif":
            return []
    except (AttributeError, KeyError, TypeError, ValueError, ZeroDivisionError):  # another shape: no work
        return None
    return None


def work_of(family: str, payload: dict[str, Any]) -> float | None:
    """Megapixel-frames (a still: megapixels) a job of ``family`` has to render; None when unknown."""
    features = features_of(family, payload)
    return None if features is None else (features[-1] if features else 1.0)


@dataclass(frozen=True)
class Fit:
    """seconds = intercept + sum(coef * feature), and the fit's median relative error on its own history."""
    intercept: float
    coef: tuple[float, ...]
    spread: float
    basis: int

    def predict(self, features: list[float]) -> float:
        used = features[len(features) - len(self.coef):] if self.coef else []
        return max(0.1, self.intercept + sum(c * f for c, f in zip(self.coef, used, strict=True)))


def fit(points: list[tuple[list[float], float]]) -> Fit:
    """Least squares of seconds on the features, with the leading features dropped while there are too few
    points for them (at least two per unknown) or while one gets a negative weight (more of anything never
    takes less time), then once more without the points 3 median deviations off (a job slowed by other work)."""
    import numpy as np

    def solve(rows: list[tuple[list[float], float]], width: int) -> tuple[float, tuple[float, ...]]:
        while True:
            if width == 0:
                # too few jobs for an intercept (or a weight came out negative): the render time proportional
                # to the work, the median of the jobs' seconds per unit of it, which two jobs already give
                ratios = [y / f[-1] for f, y in rows if f and f[-1] > 0]
                if ratios and all(f for f, _ in rows):
                    return 0.0, (float(np.median(ratios)),)
                return float(np.median([y for _, y in rows])), ()
            x = np.array([[1.0, *f[len(f) - width:]] for f, _ in rows])
            y = np.array([y for _, y in rows])
            solution = np.linalg.lstsq(x, y, rcond=None)[0]
            if len(rows) >= 2 * (width + 1) and all(c >= 0 for c in solution[1:]):
                return float(solution[0]), tuple(float(c) for c in solution[1:])
            width -= 1

    width = min(len(f) for f, _ in points)
    intercept, coef = solve(points, width)
    model = Fit(intercept, coef, 0.0, len(points))
    residuals = [y - model.predict(f) for f, y in points]
    deviation = float(np.median(np.abs(residuals))) or 1e-9
    kept = [p for p, r in zip(points, residuals, strict=True) if abs(r) <= 3 * deviation] or points
    intercept, coef = solve(kept, len(coef))
    model = Fit(intercept, coef, 0.0, len(points))
    spread = float(np.median([abs(y - model.predict(f)) / y for f, y in points if y > 0]))
    return Fit(intercept, coef, spread, len(points))


def blend_weight(spread: float, p: float) -> float:
    """The extrapolation's weight against the quote's at progress p: inverse-variance weighting."""
    quote = max(spread, MIN_SPREAD) ** 2
    extrapolation = (EXTRAPOLATION_NOISE * (1 - p) / p) ** 2
    return quote / (quote + extrapolation)


class Estimator:
    """Quotes and ETAs from the jobs this box finished. Thread-safe; the fits are cached per family."""

    def __init__(self, db: sqlite_utils.Database, clock: Callable[[], float] = time.time) -> None:
        self.db, self.clock = db, clock
        self._fits: dict[str, tuple[tuple[int, str | None], Fit]] = {}  # family -> (its history's stamp, fit)
        self._lock = threading.Lock()

    def quote(self, kind: str, payload: dict[str, Any], parallel: int | None = None) -> Quote | None:
        """The render seconds a job of pipeline ``kind`` with this payload is expected to take here."""
        return self.explain(kind, payload, parallel)[0]

    def explain(self, kind: str, payload: dict[str, Any], parallel: int | None = None) -> tuple[Quote | None, str]:
        """(the quote or None, its family or why there is none). ``parallel``: the job's max_parallel."""
        found = family_of(kind, payload)
        if found is None:
            return None, "only Manim scenes, movies and RenderCAD jobs are estimated"
        family, data = found
        features = features_of(family, data, parallel)
        if features is None:
            return None, f"the {family} job says too little to estimate"
        model = self._fit(family)
        if model is None:
            return None, f"fewer than {MIN_HISTORY} finished {family} jobs on this box to learn from"
        seconds = model.predict(features)
        return Quote(seconds, model.basis, model.spread, min(seconds, max(0.0, model.intercept))), family

    def _fit(self, family: str) -> Fit | None:
        # refitted when the family's history changed (a job finished or went), not on a clock: a quote right
        # after a job ends already learns from it, and an unchanged history is never scanned twice
        stamp = history.stamp(self.db, FAMILIES[family])
        with self._lock:
            cached = self._fits.get(family)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        points = []
        for kind in FAMILIES[family]:
            for row in history.finished_renders(self.db, kind):
                try:
                    found = family_of(kind, json.loads(row["payload"]))
                except ValueError:
                    continue
                if found is not None and found[0] == family:
                    features = features_of(family, found[1], row["max_parallel"])
                    if features is not None:
                        points.append((features, row["duration_ms"] / 1000))
        if len(points) < MIN_HISTORY:
            return None  # not kept: the next finished job may be the one that makes a fit
        model = fit(points)
        with self._lock:
            self._fits[family] = (stamp, model)
        return model

    def for_job(self, job: JobRow) -> dict[str, Any] | None:
        """A queued or running job's ETA in the shape the admin API and the dashboard show ({secondsLeft,
        totalSeconds, finishAt (epoch seconds), basis}); None for a job that ended or where nothing is known."""
        if job["status"] not in ("queued", "running"):
            return None
        eta = self.eta(job, self.quote(job["kind"], loads(job["payload"], {}), job["max_parallel"]))
        return None if eta is None else {"secondsLeft": eta["seconds_left"], "totalSeconds": eta["total_s"],
                                         "finishAt": eta["finish_at"], "basis": eta["basis"]}

    def eta(self, job: JobRow, quote: Quote | None) -> dict[str, Any] | None:
        """For a queued or running job (a row of store.jobs): {"seconds_left", "finish_at", "total_s",
        "basis"}, or None when nothing can be said yet (no history and no progress, or a job that ended)."""
        if job["status"] not in ("queued", "running"):
            return None
        now = self.clock()
        started = job.get("started_at")
        elapsed = max(0.0, now - parse_iso(started)) if started and job["status"] == "running" else 0.0
        p = self._done(job, min(1.0, max(0.0, float(job.get("progress") or 0.0))))
        if quote is None and p < 0.05:
            return None
        if quote is None:
            total = elapsed / p
        elif p <= 0.0:
            total = max(quote.seconds, elapsed)
        else:
            # the start-up shows no progress: extrapolate only what came after it
            start = min(quote.start, elapsed)
            w = blend_weight(quote.spread, p)
            total = (1 - w) * max(quote.seconds, elapsed) + w * (start + (elapsed - start) / p)
        left = max(0.0, total - elapsed)
        return {"seconds_left": round(left, 1), "total_s": round(total, 1), "finish_at": round(now + left, 1),
                "basis": quote.basis if quote else 0}

    def _done(self, job: JobRow, progress: float) -> float:
        """The share of a job's rendering done, from what its tasks report. The job's own progress weighs its
        tasks by their expected work (``jobs.work_weights``: a movie's scenes by frames, video scenes more), and
        here a movie's assembly or a split scene's plan, a fraction of a render task's work, weighs AUX_WEIGHT of
        that too. A whole Manim render cannot know its length, so its progress is
        a curve of the video seconds drawn, RENDER_SHARE * t / (t + HORIZON) (renderers/manim_scene.py); read
        back into t, it is t over the seconds its animations make (the count the quote uses, MANIM_ANIMATION_S
        each)."""
        from renderers.manim_scene import ESTIMATE_HORIZON_S, RENDER_SHARE

        tasks = jobs.task_works(self.db, job["id"])
        if len(tasks) > 1:
            work = jobs.work_weights([t["work"] for t in tasks])
            weights = [(AUX_WEIGHT if t["renderer"].endswith((".assemble", ".plan")) else 1.0) * w
                       for t, w in zip(tasks, work, strict=True)]
            return sum(w * float(t["progress"] or 0.0) for w, t in zip(weights, tasks, strict=True)) / sum(weights)
        if job["kind"] not in FAMILIES["manim"] or not 0 < progress < RENDER_SHARE:
            return progress
        found = family_of(job["kind"], loads(job["payload"], {}))
        features = features_of(*found) if found is not None and found[0] == "manim" else None
        if not features:
            return progress
        drawn = ESTIMATE_HORIZON_S * progress / (RENDER_SHARE - progress)
        return RENDER_SHARE * min(1.0, drawn / (features[0] * MANIM_ANIMATION_S))
