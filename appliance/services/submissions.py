"""NewJobs for the operator's own entry points — the admin API's `appliance render` and the hot folder: a Movie
JSON document or a Manim scene file for a named user, without a dialect's billing or shapes."""
from __future__ import annotations

import ast
from typing import Any

from appliance.errors import ApplianceError
from appliance.services.jobs import NewJob
from appliance.services.pipelines import movie as movie_pipeline

# The frames of Kodisc's presets of the same names.
FRAMES = {"low": (854, 480, 15), "medium": (1280, 720, 30), "high": (1920, 1080, 30)}


def movie_job(*, job_id: str, dialect: str, user_id: str, movie: object, request: dict[str, Any],
              cpu_slots: float) -> NewJob:
    """The movie pipeline for a validated movie (ApplianceError INVALID_MOVIE_JSON naming the field), with up to
    three scenes rendering at once."""
    try:
        normalized = movie_pipeline.validate(movie)
    except movie_pipeline.SpecError as exc:
        raise ApplianceError(f"movie.{exc}", code="INVALID_MOVIE_JSON") from None
    workers = max(1, min(3, movie_pipeline.scene_count(normalized), int(cpu_slots)))
    return NewJob(job_id=job_id, dialect=dialect, user_id=user_id, kind="movie", payload={"movie": normalized},
                  request=request, max_parallel=workers)


def scene_job(*, job_id: str, dialect: str, user_id: str, code: str, class_name: str, quality: str,
              request: dict[str, Any]) -> NewJob:
    """The manim pipeline: one scene class of ``code`` at a preset frame."""
    if quality not in FRAMES:
        raise ApplianceError(f"quality must be one of: {', '.join(FRAMES)}")
    width, height, fps = FRAMES[quality]
    return NewJob(job_id=job_id, dialect=dialect, user_id=user_id, kind="manim", request=request,
                  payload={"code": code, "className": class_name, "width": width, "height": height, "fps": fps})


def scene_class(code: str, stem: str) -> str:
    """The file's only Scene subclass; with several, the one named like the file."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise ApplianceError(f"the scene file does not parse: {exc.msg} (line {exc.lineno})") from None
    scenes: list[str] = []
    for node in tree.body:  # a subclass of a scene class defined earlier in the file counts too
        if isinstance(node, ast.ClassDef) and any(_base_name(b).endswith("Scene") or _base_name(b) in scenes
                                                  for b in node.bases):
            scenes.append(node.name)
    if len(scenes) == 1:
        return scenes[0]
    if not scenes:
        raise ApplianceError("no Scene subclass in the file (class MyScene(Scene): ...)")
    if stem in scenes:
        return stem
    raise ApplianceError(f"several scenes ({', '.join(scenes)}): name the file after the one to render, "
                         f"e.g. {scenes[0]}.py")


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):  # manim.Scene
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""
