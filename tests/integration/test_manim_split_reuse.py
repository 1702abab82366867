"""A split render's ranges reuse pieces (renderers/manim_split.py, appliance/services/pipelines/manim.py): each
``manim.range`` task is staged the same user's earlier renders, as the single task is, draws only the pieces
whose address it lacks and reports what it copied; a split render's ranges are reuse sources in turn, for split
and single renders alike. Splits are forced as in test_manim_split.py (2 workers, 4 animations at least)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from renderers.manim_split import FRAME_TOLERANCE
from tests.integration.test_manim_split import FPS, REPO, SPLIT_ENV, decoded, finish, single_render, submit, task_rows

NOTE = '''from manim import *

class Eight(Scene):
    def construct(self):
        square = Square(color=BLUE)
        self.play(Create(square), run_time=0.5)
        note = Text({note!r}).to_edge(DOWN)
        self.play(FadeIn(note), rate_func=there_and_back, run_time=0.5)
        self.remove(note)
        for i in range(6):
            self.play(square.animate.shift(RIGHT * 0.3), run_time=0.5)
'''


@pytest.fixture
def split_server(make_server):
    server = make_server(SPLIT_ENV)
    for user in ("ada", "bob"):
        server.cli("users", "create", user, "--credits", "1000")
    server.keys = {user: {"Authorization": f"Bearer {server.new_key(user, 'kodisc')['key']}"}
                   for user in ("ada", "bob")}
    return server


def render(server, user: str, code: str) -> tuple[dict, list[dict]]:
    server.auth = server.keys[user]
    job = finish(server, submit(server, code))
    assert job["status"] == "completed", job
    tasks = task_rows(server, job["jobId"])
    assert [t["renderer"] for t in tasks] == ["manim.plan", "manim.range", "manim.range", "manim.assemble"]
    return job, tasks


@pytest.mark.slow
def test_an_edited_split_render_draws_only_the_edited_animation(split_server, tmp_path: Path) -> None:
    server = split_server
    _, first = render(server, "ada", NOTE.format(note="one"))
    assert [t["result"]["reuse"]["reusedPieces"] for t in first[1:3]] == [0, 0]
    assert sum(len(t["result"]["pieces"]) for t in first[1:3]) == 8

    job, edited = render(server, "ada", NOTE.format(note="two"))
    ranges = edited[1:3]
    assert [t["result"]["reuse"]["pieces"] for t in ranges] == [len(t["result"]["pieces"]) for t in ranges]
    assert sum(t["result"]["reuse"]["reusedPieces"] for t in ranges) == 7  # all but the edited caption
    before = [p[0] for t in first[1:3] for p in t["result"]["pieces"]]
    after = [p[0] for t in ranges for p in t["result"]["pieces"]]
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [1]
    admin = server.job(job["jobId"])
    assert admin["reuse"]["pieces"] == 8 and admin["reuse"]["reusedPieces"] == 7

    # the same pictures as a single render of the edited scene, without reuse
    video = tmp_path / "split.mp4"
    video.write_bytes(httpx.get(job["result"]["video"]).content)
    ours, _ = decoded(video)
    theirs, _ = decoded(single_render(tmp_path, NOTE.format(note="two"), 854, 480) / "video.mp4")
    assert len(ours) == len(theirs) == edited[-1]["result"]["meta"]["frames"]
    worst = max(float(np.abs(a - b).mean()) for a, b in zip(ours, theirs, strict=True))
    assert worst <= FRAME_TOLERANCE, worst

    # another user's render of the very same scene reuses none of it
    _, other = render(server, "bob", NOTE.format(note="two"))
    assert [t["result"]["reuse"]["reusedPieces"] for t in other[1:3]] == [0, 0]

    # a single render reuses a split render's pieces: the ranges' segments as its sources
    single = whole_render(server, tmp_path / "whole", NOTE.format(note="one"), edited[1:3])
    assert single["reuse"]["reusedPieces"] == 7 and single["meta"]["frames"] == len(ours)


def whole_render(server, folder: Path, code: str, ranges: list[dict]) -> dict:
    """``python -m renderers manim`` at the split's frame, staged the ranges' segments and indexes as
    PieceFinder stages them."""
    work = folder / "work"
    (work / "tmp").mkdir(parents=True)
    sources = []
    for index, task in enumerate(ranges):
        digest = task["result"]["outputs"][task["result"]["files"]["video"]]
        shutil.copy(server.data_dir / "artifacts" / digest[:2] / digest, work / f"reuse_{index}.mp4")
        sources.append({"video": f"reuse_{index}.mp4", "pieces": task["result"]["pieces"]})
    task_input = {"code": code, "className": "Eight", "width": 854, "height": 480, "fps": FPS,
                  "reuse": {"sources": sources}}
    (folder / "input.json").write_text(json.dumps(task_input))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(work), "TMPDIR": str(work / "tmp"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "renderers", "manim", "input.json", "work"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["type"] == "result", f"{last}\n{proc.stderr[-3000:]}"
    return last["outputs"]
