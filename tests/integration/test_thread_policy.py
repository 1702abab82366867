"""Movie scene tasks share the cores: the thread budget the scheduler hands each scene task, and what it did; a
scene that a longer scene of its job outlasts anyway runs at a lower CPU weight.

Asserts on what each task received (its result's ``meta.threads``, read from the server's SQLite; its worker's
log line) and on the real output (the concatenated MP4 decodes in full), never on timing.
"""
from __future__ import annotations

import functools
import http.server
import json
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from appliance.runtime.scheduler import SLACK_WEIGHT, has_slack, scene_thread_budget
from renderers.base import RenderError
from renderers.ffmpeg import probe, video_stream
from renderers.movie.compose import render_scene

FPS = 15


def _movie(texts: list[str], concurrency: int) -> dict:
    scenes = [{"id": f"s{i}", "duration": 1, "bgColor": "#203040", "layers": [
        {"id": "t", "type": "text", "text": text, "startTime": 0, "duration": 1, "position": {"x": 10, "y": 10},
         "size": {"width": 300, "height": 60}, "fontSize": 24}]} for i, text in enumerate(texts)]
    return {"kind": "movie", "projectId": "p", "renderOptions": {"requestedConcurrency": concurrency},
            "movie": {"width": 640, "height": 360, "fps": FPS, "scenes": scenes}}


def _render(server, headers: dict, body: dict) -> dict:
    r = httpx.post(f"{server.url}/v1/render/jobs", json=body, headers=headers, timeout=30)
    assert r.status_code == 202, r.text
    job_id, deadline = r.json()["jobId"], time.time() + 180
    while time.time() < deadline:
        job = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        if job["status"] in ("done", "failed", "cancelled"):
            assert job["status"] == "done", job
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def _scene_threads(data_dir: Path, job_id: str) -> list[int]:
    """The ``threads`` each scene task of the job rendered with, in scene order (from its stored result)."""
    db = sqlite3.connect(data_dir / "appliance.db")
    try:
        rows = db.execute("select result from tasks where job_id = ? and renderer = 'movie.scene' order by idx",
                          (job_id,)).fetchall()
    finally:
        db.close()
    return [json.loads(result)["meta"]["threads"] for (result,) in rows]


def test_budget_rule():
    assert scene_thread_budget(cores=2, running=1, waiting=5) == 0  # alone: every core (ffmpeg's own choice)
    assert scene_thread_budget(cores=2, running=2, waiting=1) == 1  # beside another, more waiting: half
    assert scene_thread_budget(cores=16, running=4, waiting=9) == 4
    assert scene_thread_budget(cores=2, running=2, waiting=0) == 0  # the last scenes: nobody takes a freed core
    assert scene_thread_budget(cores=2, running=3, waiting=2) == 1  # never rounded down to "all"


@pytest.mark.slow
def test_scene_tasks_receive_their_share(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_PRELOAD": "PIL,numpy"})
    server.cli("users", "create", "ada")
    headers = {"x-api-key": server.new_key("ada", "viralsync")["key"]}

    alone = _render(server, headers, _movie(["alone"], concurrency=1))
    assert _scene_threads(server.data_dir, alone["jobId"]) == [0]

    # 4 scenes, 2 at a time: the first two start together while two more wait -> half the cores each;
    # the last one starts when nothing waits -> every core. (The third depends on when the first two end.)
    job = _render(server, headers, _movie([f"scene {i}" for i in range(4)], concurrency=2))
    threads = _scene_threads(server.data_dir, job["jobId"])
    assert threads[:2] == [1, 1] and threads[3] == 0 and threads[2] in (0, 1)

    # clips encoded with different thread counts still concatenate by stream copy into one whole movie
    out = server.data_dir / "outputs" / job["jobId"] / "output.mp4"
    stream = video_stream(probe(out))
    assert stream is not None and int(stream["nb_read_frames"]) == 4 * FPS


def test_threads_input_is_checked(tmp_path):
    scene = {"id": "s", "duration": 1, "layers": []}
    for bad in ("2", -1, 1.5, True, 10**6):
        with pytest.raises(RenderError, match="threads"):
            render_scene({"scene": scene, "width": 64, "height": 64, "fps": FPS, "threads": bad}, tmp_path, None)


@pytest.mark.slow
def test_sharing_off_gives_every_scene_all_cores(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_PRELOAD": "PIL,numpy",
                          "APPLIANCE_MOVIE_SCENE_THREAD_SHARING": "false"})
    server.cli("users", "create", "ada")
    headers = {"x-api-key": server.new_key("ada", "viralsync")["key"]}
    job = _render(server, headers, _movie([f"scene {i}" for i in range(3)], concurrency=2))
    assert _scene_threads(server.data_dir, job["jobId"]) == [0, 0, 0]


def test_slack_rule():
    assert has_slack(120, [1440]) and not has_slack(1440, [120])  # the text scene beside the video scene
    assert not has_slack(100, [100]) and not has_slack(100, [])  # equal work, or alone: full weight
    for odd in (None, True, "9", [5], 0, -3):  # a task without a positive number takes no part, either side
        assert not has_slack(odd, [1000]) and not has_slack(5, [odd])


@pytest.mark.slow
def test_a_scene_that_a_longer_scene_outlasts_runs_at_a_lower_cpu_weight(make_server, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15:duration=2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(media / "clip.mp4")],
                   check=True)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(media)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server = make_server({"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_PRELOAD": "PIL,numpy"})
    server.cli("users", "create", "ada")
    headers = {"x-api-key": server.new_key("ada", "viralsync")["key"]}

    def render(video_first: bool, concurrency: int) -> dict[str, str]:
        tag = f"{video_first} {concurrency}"  # scenes of their own each time: none comes from the scene cache
        body = _movie([f"the video's title ({tag})", f"a short text scene ({tag})"], concurrency=concurrency)
        body["movie"]["scenes"][0]["duration"] = 2
        body["movie"]["scenes"][0]["layers"].insert(0, {
            "id": "clip", "type": "video", "source": f"http://127.0.0.1:{httpd.server_address[1]}/clip.mp4",
            "role": "background", "mute": True, "startTime": 0, "duration": 2})
        order = ("video", "text") if video_first else ("text", "video")
        body["movie"]["scenes"] = body["movie"]["scenes"][::1 if video_first else -1]
        job = _render(server, headers, body)
        out = server.data_dir / "outputs" / job["jobId"] / "output.mp4"
        stream = video_stream(probe(out))
        assert stream is not None and int(stream["nb_read_frames"]) == 3 * FPS
        return {name: (server.data_dir / "logs" / f"{job['jobId']}.t{index:03d}.log").read_text()
                for index, name in enumerate((*order, "assemble"))}

    try:
        for video_first in (True, False):  # started before it, or ready to start beside it: the text scene waits
            logs = render(video_first, concurrency=2)
            assert f"cpu weight {SLACK_WEIGHT:g}" in logs["text"], logs["text"]
            assert "cpu weight" not in logs["video"] and "cpu weight" not in logs["assemble"]
        logs = render(video_first=False, concurrency=1)  # one scene at a time: the text scene is on the way
        assert not any("cpu weight" in log for log in logs.values()), logs
    finally:
        httpd.shutdown()
        httpd.server_close()
