"""A task's expected work (``WORK_KEY`` in its input): what the movie pipeline gives each scene, and how it weighs the
scene in its job's progress (the scheduler's CPU weight from it: tests/integration/test_thread_policy.py)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from appliance.services.pipelines.movie import VIDEO_FRAME_WORK, MoviePipeline, validate
from appliance.store.jobs import WORK_KEY, job_progress, work_weights

SEED = Path(__file__).resolve().parents[2] / "docs" / "viralsync-full-example.json"


def _row(progress: float, task_input: dict) -> dict:
    """A task's row as jobs.task_works reads it: its input's work extracted by SQLite's JSON functions."""
    db = sqlite3.connect(":memory:")
    work = db.execute(f"select json_extract(?, '$.{WORK_KEY}')", (json.dumps(task_input),)).fetchone()[0]
    return {"progress": progress, "work": work}


def test_the_seeds_scenes_get_their_frames_as_work_and_video_weighs_more():
    movie = validate(json.loads(SEED.read_text())["movie"])
    fetched = {layer["source"]: (".bin", f"{n:064x}") for n, layer in enumerate(
        layer for scene in movie["scenes"] for layer in scene["layers"] if "source" in layer)}
    tasks = MoviePipeline.__new__(MoviePipeline)._tasks("job_x", movie, fetched)
    assert [t.input.get(WORK_KEY) for t in tasks] == [180 * VIDEO_FRAME_WORK, 120, None]  # 6 s video, 4 s text


def test_work_weighs_the_job_progress():
    video, text, assemble = {WORK_KEY: 1440}, {WORK_KEY: 120}, {}
    # the text scene done first is a fifteenth of the job, not a third
    progress = job_progress([_row(0.0, video), _row(1.0, text), _row(0.0, assemble)])
    assert abs(progress - (120 / 780) / (1440 / 780 + 120 / 780 + 1)) < 1e-9
    assert job_progress([_row(1.0, video), _row(1.0, text), _row(1.0, assemble)]) == 1.0
    # without work, or with equal work, the plain mean as before
    assert job_progress([_row(1.0, {}), _row(0.0, {})]) == 0.5
    assert job_progress([_row(1.0, {WORK_KEY: 60}), _row(0.0, {WORK_KEY: 60})]) == 0.5
    assert job_progress([]) == 0.0
    # anything but a positive number is no work
    assert work_weights([True, "9", -3, 0, None, [5]]) == [1.0] * 6
