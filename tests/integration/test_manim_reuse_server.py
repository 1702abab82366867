"""Piece reuse through a real server (appliance/services/pipelines/manim.py): a Kodisc render, then the same scene
with one temporary text edited, draws one animation and copies the rest from the user's own earlier video; the
admin job view says so (``reuse``) while the Kodisc job object stays as documented; another user's render of the
same scene reuses nothing; the staged pieces leave the task's cache key as it was."""
from __future__ import annotations

import json
import subprocess
import time

import httpx
import numpy as np
import pytest

from tests.conftest import PYTHON, ROOT
from tests.integration.test_dashboard import PASSWORD, signed_in
from tests.integration.test_manim_reuse import MIN_PSNR, frames

SCENE = """\
from manim import *

class Steps(Scene):
    def construct(self):
        title = Text("Steps").to_edge(UP)
        self.play(FadeIn(title))
        shapes = VGroup()
        for i in range(3):
            shape = Square(color=BLUE).scale(0.4).shift(LEFT * 3 + RIGHT * 2 * i)
            self.play(Create(shape))
            shapes.add(shape)
        note = Text({note!r}).to_edge(DOWN)
        self.play(FadeIn(note), rate_func=there_and_back)
        self.remove(note)
        self.play(shapes.animate.shift(UP))
"""
KODISC_FIELDS = ["jobId", "endpoint", "status", "createdAt", "completedAt", "durationMs", "creditsCost",
                 "metadata", "result", "error"]


@pytest.fixture
def kodisc(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2"})
    for name in ("ada", "bob"):
        server.cli("users", "create", name, "--credits", "500")
        setattr(server, name, {"Authorization": f"Bearer {server.new_key(name, 'kodisc')['key']}"})
    return server


def render(server, auth: dict, note: str) -> tuple[dict, dict]:
    """Submit at low quality and wait: (the Kodisc job object, the admin job view)."""
    body = {"code": SCENE.format(note=note), "className": "Steps", "quality": "low"}
    job_id = httpx.post(f"{server.url}/api/v2/render", headers=auth, json=body).json()["jobId"]
    deadline = time.time() + 120
    while time.time() < deadline:
        job = httpx.get(f"{server.url}/api/v2/render/{job_id}", headers=auth).json()
        if job["status"] in ("completed", "failed"):
            assert job["status"] == "completed", job
            return job, server.job(job_id)
        time.sleep(0.2)
    raise AssertionError(f"{job_id} did not finish")


def test_an_edited_scene_reuses_the_users_own_pieces_only(kodisc, tmp_path) -> None:
    first, first_view = render(kodisc, kodisc.ada, "one")
    assert first_view["reuse"] == {"pieces": 6, "reusedPieces": 0, "secondsSaved": 0.0}
    edited, view = render(kodisc, kodisc.ada, "two")
    assert view["reuse"]["pieces"] == 6 and view["reuse"]["reusedPieces"] == 5
    assert view["reuse"]["secondsSaved"] > 0
    # the dashboard's job page says the same
    subprocess.run([PYTHON, "-m", "appliance.cli", "operator", "add", "ops", "--data-dir", str(kodisc.data_dir)],
                   input=PASSWORD + "\n", text=True, check=True, cwd=ROOT, env=kodisc.env, capture_output=True)
    dashboard, _ = signed_in(kodisc)
    assert dashboard.get(f"/dashboard/api/jobs/{edited['jobId']}").json()["job"]["reuse"] == view["reuse"]
    assert list(edited) == KODISC_FIELDS and list(edited["result"]) == list(first["result"])
    task_input = json.loads(kodisc.query("select input from tasks where job_id = ?", (edited["jobId"],))[0][0])
    # the first render's video, staged, and its stills (exact: drawn), which the edited render, ending on a copied
    # piece, takes as they are
    assert list(task_input["artifacts"]) == ["reuse_0.mp4", "reuse_0.png", "reuse_0.jpg"]
    assert task_input["reuse"]["sources"][0]["image"] == "reuse_0.png"
    for role in ("image", "thumbnail"):
        assert httpx.get(edited["result"][role]).content == httpx.get(first["result"][role]).content
    # the cache key is the scene's alone: the edit back to "one" is a whole cache hit, reuse inputs or not
    again, again_view = render(kodisc, kodisc.ada, "one")
    assert [t["cached"] for t in again_view["tasks"]] == [True]
    # what was copied decodes to what a render from nothing gives
    other, other_view = render(kodisc, kodisc.bob, "two")
    assert other_view["reuse"]["reusedPieces"] == 0  # bob never gets ada's pixels
    bob_input = json.loads(kodisc.query("select input from tasks where job_id = ?", (other["jobId"],))[0][0])
    assert "reuse" not in bob_input and "artifacts" not in bob_input
    videos = []
    for name, job in (("ada", edited), ("bob", other)):
        (tmp_path / f"{name}.mp4").write_bytes(httpx.get(job["result"]["video"]).content)
        videos.append(frames(tmp_path / f"{name}.mp4"))
    assert len(videos[0]) == len(videos[1])
    errors = [float(((a.astype(float) - b.astype(float)) ** 2).mean()) for a, b in zip(*videos, strict=True)]
    assert all(10 * np.log10(255**2 / e) >= MIN_PSNR for e in errors if e)
    for role in ("image", "thumbnail"):  # and the copied stills are those bob's render drew
        assert httpx.get(edited["result"][role]).content == httpx.get(other["result"][role]).content
