"""A long Manim scene split into animation ranges rendered by parallel tasks, joined without re-encoding.

The split render is compared with the single render of the same scene (``python -m renderers manim``): same
frame count, same duration, same captions, and decoded frames within FRAME_TOLERANCE (mean absolute difference
per 8-bit channel value; the two differ only by the lossy encoder's choices around the range boundaries).
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from appliance.services.pipelines.manim import ManimPipeline
from renderers.manim_split import FRAME_TOLERANCE, animation_estimate, choose_ranges, decide, split_refusal
from renderers.manim_split_model import MARGIN, may_win
from tests.bench.split import LONG

REPO = Path(__file__).resolve().parents[2]
EIGHT = '''from manim import *

class Eight(Scene):
    def construct(self):
        square = Square(color=BLUE)
        self.play(Create(square), run_time=0.5)
        for i in range(6):
            self.play(square.animate.shift(RIGHT * 0.3).rotate(0.4), run_time=0.45, subcaption=f"step {i}")
        self.add_subcaption("done", duration=0.5)
        self.wait(0.55)
'''
RANDOM = EIGHT.replace("class Eight", "import random\n\nclass Eight").replace(
    "RIGHT * 0.3", "RIGHT * random.random()")
SHORT_LOOP = EIGHT.replace("range(6)", "range(1)")  # 3 animations, counted from the source: below the threshold
HELPER = '''from manim import *

class Eight(Scene):
    def step(self, square):
        self.play(square.animate.shift(RIGHT * 0.3), run_time=0.3)

    def construct(self):
        square = Square()
        self.play(Create(square), run_time=0.3)
        self.step(square)
        self.wait(0.3)
'''  # play() in a helper: how often is unknown from the source, so the plan task counts (3: one range)
STILL = HELPER.replace("""        square = Square()
        self.play(Create(square), run_time=0.3)
        self.step(square)
        self.wait(0.3)
""", """        self.add(Square(color=RED, fill_opacity=1))
""")  # the helper is never called: the plan counts no animation, and range 0 renders the still
SPLIT_ENV = {"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_MANIM_SPLIT_MIN_ANIMATIONS": "4",
             "APPLIANCE_MANIM_SPLIT_MAX_WORKERS": "2"}
FPS = 10


def decoded(path: Path) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24").astype(np.int16) for frame in container.decode(stream)]
        return frames, float(stream.duration * stream.time_base)


def single_render(tmp_path: Path, code: str, width: int, height: int) -> Path:
    """The reference: the same scene on one worker, the ordinary renderer in its own process."""
    work = tmp_path / "single"
    (work / "tmp").mkdir(parents=True)
    (tmp_path / "single.json").write_text(json.dumps({"code": code, "className": "Eight", "width": width,
                                                      "height": height, "fps": FPS}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(work), "TMPDIR": str(work / "tmp")}
    proc = subprocess.run([sys.executable, "-m", "renderers", "manim", "single.json", "single"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return work


def submit(server, code: str) -> str:
    body = {"code": code, "className": "Eight", "quality": "low", "fps": FPS}
    response = httpx.post(f"{server.url}/api/v2/render", json=body, headers=server.auth)
    assert response.status_code == 202, response.text
    return response.json()["jobId"]


def finish(server, job_id: str, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = httpx.get(f"{server.url}/api/v2/render/{job_id}", headers=server.auth).json()
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"{job_id} did not finish")


def task_rows(server, job_id: str) -> list[dict]:
    """The job's tasks as the server stored them (the admin API does not show a task's result)."""
    with sqlite3.connect(f"file:{server.data_dir / 'appliance.db'}?mode=ro", uri=True) as db:
        rows = db.execute("select renderer, result, cached from tasks where job_id = ? order by idx", (job_id,))
        return [{"renderer": r, "result": json.loads(res or "{}"), "cached": bool(c)} for r, res, c in rows]


@pytest.fixture
def split_server(make_server):
    server = make_server(SPLIT_ENV)
    server.cli("users", "create", "ada", "--credits", "1000")
    server.auth = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
    return server


@pytest.mark.slow
def test_a_kodisc_job_renders_split_and_matches_the_single_render(split_server, tmp_path):
    server = split_server
    job_ids = {name: submit(server, code) for name, code in
               (("split", EIGHT), ("random", RANDOM), ("helper", HELPER), ("still", STILL))}
    jobs = {name: finish(server, job_id) for name, job_id in job_ids.items()}
    assert all(job["status"] == "completed" for job in jobs.values()), jobs
    assert all(job["creditsCost"] >= 1 for job in jobs.values())  # billed like any Kodisc render

    tasks = task_rows(server, job_ids["split"])
    assert [t["renderer"] for t in tasks] == ["manim.plan", "manim.range", "manim.range", "manim.assemble"]
    frames = tasks[-1]["result"]["meta"]["frames"]
    assert tasks[0]["result"]["meta"] == {"animations": 8, "ranges": 2, "frames": frames}
    assert [t["result"]["meta"]["range"] for t in tasks[1:3]] == [[0, 4], [4, 8]]

    result = jobs["split"]["result"]
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    for role, name in (("video", "video.mp4"), ("thumbnail", "thumb.jpg"), ("captions", "captions.vtt"),
                       ("image", "image.png")):
        response = httpx.get(result[role])
        assert response.status_code == 200
        (split_dir / name).write_bytes(response.content)
    single = single_render(tmp_path, EIGHT, 854, 480)

    ours, duration = decoded(split_dir / "video.mp4")
    theirs, single_duration = decoded(single / "video.mp4")
    assert len(ours) == len(theirs) == frames
    assert abs(duration - single_duration) < 0.5 / FPS  # the same length, to within half a frame
    worst = max(float(np.abs(a - b).mean()) for a, b in zip(ours, theirs, strict=True))
    assert worst <= FRAME_TOLERANCE, worst
    assert (split_dir / "captions.vtt").read_text() == (single / "captions.vtt").read_text()
    assert "step 5" in (split_dir / "captions.vtt").read_text()
    assert (split_dir / "thumb.jpg").read_bytes() == (single / "thumb.jpg").read_bytes()  # the same last frame
    assert (split_dir / "image.png").read_bytes() == (single / "image.png").read_bytes()  # lossless, the same

    # a still through the split DAG: one range of the still's frames (1 s), its image as the single task's
    still = task_rows(server, job_ids["still"])
    assert [t["renderer"] for t in still] == ["manim.plan", "manim.range", "manim.range", "manim.assemble"]
    assert still[0]["result"]["meta"] == {"animations": 0, "ranges": 1, "frames": FPS}
    assert still[-1]["result"]["meta"]["frames"] == FPS and still[2]["result"]["files"] == {}
    single_still = single_render(tmp_path / "still", STILL, 854, 480)
    assert httpx.get(jobs["still"]["result"]["image"]).content == (single_still / "image.png").read_bytes()

    # unseeded randomness: one ordinary task; too few animations found by the plan: drawn on one worker
    assert [t["renderer"] for t in task_rows(server, job_ids["random"])] == ["manim"]
    short = task_rows(server, job_ids["helper"])
    assert short[0]["result"]["meta"]["ranges"] == 1 and short[2]["result"]["files"] == {}

    # the same request again is answered from the cache, every task of the split plan
    again = finish(server, submit(server, EIGHT))
    assert again["status"] == "completed"
    assert all(t["cached"] for t in task_rows(server, again["jobId"]))
    assert httpx.get(again["result"]["video"]).content == (split_dir / "video.mp4").read_bytes()


def test_the_rule_refuses_what_fast_forwarding_cannot_reproduce():
    assert split_refusal(EIGHT) is None
    assert "randomness" in split_refusal(RANDOM)
    assert split_refusal(RANDOM.replace("import random\n", "import random\nrandom.seed(7)\n")) is None
    assert "randomness" in split_refusal(EIGHT.replace("BLUE", "random_bright_color()"))
    assert "wall-clock" in split_refusal("import time\n" + EIGHT)
    assert "wall-clock" in split_refusal(EIGHT.replace("0.45", "datetime.now().second / 100"))
    assert "per-frame" in split_refusal(EIGHT.replace("self.wait(0.55)", "square.add_updater(lambda m, dt: m)"))
    assert "per-frame" in split_refusal(EIGHT + "\n    def tear_down(self):\n        self.wait()\n")
    assert "dynamic" in split_refusal(EIGHT.replace("Create(square)", "eval('Create')(square)"))
    assert split_refusal(EIGHT.replace("self.wait(0.55)", "self.time and self.wait(0.55)")) is None
    assert split_refusal(EIGHT.replace("square = Square", "square = always_redraw(lambda: Square)")) is None


def test_the_plan_counts_and_cuts_animations():
    assert animation_estimate(EIGHT) == 8  # for ... in range(6) multiplies
    assert animation_estimate(SHORT_LOOP) == 3 and animation_estimate(HELPER) is None
    assert animation_estimate(EIGHT.replace("for i in range(6)", "for i in steps")) is None
    assert animation_estimate(EIGHT.replace("for i in range(6)", "i = 0\n        while i < 6")) is None
    assert animation_estimate("class A:\n    def construct(self):\n        self.play(x)\n        self.wait()\n") == 2
    assert choose_ranges([1.0] * 8, 2, 4) == [(0, 4), (4, 8)]
    assert choose_ranges([1.0] * 3, 2, 4) == [(0, 3)]  # below the threshold: one range
    assert choose_ranges([10.0, 1, 1, 1, 1, 1], 2, 4) == [(0, 1), (1, 6)]
    assert choose_ranges([1.0] * 5, 8, 4) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    pipeline = ManimPipeline(min_animations=4, max_workers=2)
    payload = {"code": EIGHT, "className": "Eight", "width": 854, "height": 480, "fps": 10, "job_id": "j1"}
    assert [t.renderer for t in pipeline.plan(payload)] == ["manim.plan", "manim.range", "manim.range",
                                                           "manim.assemble"]
    assert [t.renderer for t in pipeline.plan({**payload, "code": RANDOM})] == ["manim"]
    assert [t.renderer for t in pipeline.plan({**payload, "code": SHORT_LOOP})] == ["manim"]
    assert [t.renderer for t in ManimPipeline(4, 1).plan(payload)] == ["manim"]  # max_workers 1: never split


def test_the_model_splits_only_where_it_predicts_a_gain():
    # a whole render keeps about 1.55 of 2 free cores busy: two ranges there gain less than the margin asks, at
    # any frame size; from 3 cores on, long scenes gain (each of two ranges gets 1.5 cores)
    assert not any(may_win(w, h, 2, 2) for w, h in ((640, 360), (854, 480), (1280, 720), (1920, 1080)))
    assert may_win(1280, 720, 8, 8) and may_win(1920, 1080, 3, 3) and may_win(640, 360, 3, 3)
    bench = [(15, False)] * 24  # make bench's scene: 24 animations of 15 frames at 1280x720
    task = {"width": 1280, "height": 720, "split": {"workers": 2, "minAnimations": 12, "cores": 2}}
    two = decide(bench, task)
    assert two.ranges == [(0, 24)] and two.split_s is not None and two.split_s > two.whole_s
    forced = decide(bench, {**task, "split": {**task["split"], "force": True}})
    assert forced.ranges == [(0, 12), (12, 24)] and forced.split_s == two.split_s
    many = decide(bench, {**task, "split": {**task["split"], "workers": 16, "cores": 16}})
    assert len(many.ranges) > 2 and many.split_s is not None and many.split_s < MARGIN * many.whole_s
    assert len({b - a for a, b in many.ranges}) == 1  # equal work, equal ranges
    # too short to pay for the plan, the starts and the assembly, however many cores
    short = decide([(3, False)] * 12, {**task, "split": {**task["split"], "workers": 16, "cores": 16}})
    assert short.ranges == [(0, 12)]
    # the pipeline asks the model at submit, with the CPU slots free then (the default: max_workers 0)
    payload = {"code": LONG, "className": "Long", "width": 1280, "height": 720, "fps": 30, "job_id": "j1"}
    assert [t.renderer for t in ManimPipeline(12, 0, lambda: 2.0).plan(payload)] == ["manim"]
    assert [t.renderer for t in ManimPipeline(12, 0, lambda: 16.0).plan({**payload, "code": RANDOM})] == ["manim"]
    assert [t.renderer for t in ManimPipeline(12, 0, lambda: 1.5).plan(payload)] == ["manim"]
    tasks = ManimPipeline(12, 0, lambda: 8.0).plan(payload)
    assert [t.renderer for t in tasks] == ["manim.plan"] + ["manim.range"] * 8 + ["manim.assemble"]
    assert tasks[0].input["split"] == {"workers": 8, "minAnimations": 12, "cores": 8, "force": False}
    # an explicit max_workers forces the split, whatever the free slots
    forced_tasks = ManimPipeline(12, 2, lambda: 2.0).plan(payload)
    assert forced_tasks[0].input["split"] == {"workers": 2, "minAnimations": 12, "cores": 2, "force": True}
