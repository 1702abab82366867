"""The hot folder against a real server: files in, videos (or error files) out, once, across restarts."""
from __future__ import annotations

import json
import signal
import textwrap
import time
from pathlib import Path

import pytest

from renderers.ffmpeg import probe, video_stream

SCENE = textwrap.dedent("""\
    from manim import *


    class Helper:
        pass


    class TinyDot(Scene):
        def construct(self):
            self.add(Dot(color=RED))
            self.wait(0.2)
    """)


def movie(text: str = "hot") -> dict:
    return {"width": 640, "height": 360, "fps": 10, "scenes": [
        {"id": "s0", "duration": 0.5, "bgColor": "#203040", "layers": [
            {"id": "t", "type": "text", "text": text, "startTime": 0, "duration": 0.5,
             "position": {"x": 10, "y": 10}, "size": {"width": 200, "height": 60}, "fontSize": 24}]}]}


def wait_for(path: Path, timeout: float = 180, stale_error: bool = False) -> Path:
    """Wait for ``path``; an error file in its place fails at once (unless one is there from before)."""
    deadline, error = time.time() + timeout, path.with_suffix(".error.txt")
    while not path.exists():
        assert stale_error or path.suffix == ".txt" or not error.exists(), error.read_text()
        assert time.time() < deadline, f"{path} never appeared; outbox: {sorted(path.parent.parent.rglob('*'))}"
        time.sleep(0.2)
    return path


def hot_jobs(server) -> list[str]:
    return [line for line in server.cli("jobs", "list", "--limit", "500").splitlines() if " hotfolder " in line]


@pytest.fixture
def hot(make_server, tmp_path):
    def start(data_dir: Path | None = None):
        server = make_server({"APPLIANCE_HOTFOLDER_DIR": str(tmp_path / "inbox"), "APPLIANCE_CPU_SLOTS": "2",
                              "APPLIANCE_HOTFOLDER_QUALITY": "low", "APPLIANCE_HOTFOLDER_RESCAN_S": "0.5"},
                             data_dir=data_dir)
        server.inbox, server.outbox = tmp_path / "inbox", tmp_path / "outbox"
        return server
    return start


@pytest.mark.slow
def test_scenes_and_movies_come_out_as_videos_and_failures_as_error_files(hot):
    server = hot()
    server.cli("users", "create", "alice")
    (server.inbox / "alice" / "shots").mkdir(parents=True)
    (server.inbox / "alice" / "shots" / "dot.py").write_text(SCENE)
    (server.inbox / "alice" / "bare.json").write_text(json.dumps(movie("bare")))
    (server.inbox / "alice" / "body.json").write_text(json.dumps({"movie": movie("body"), "projectId": "p"}))
    (server.inbox / "alice" / "broken.json").write_text(json.dumps({"movie": {"width": 320}}))
    (server.inbox / "alice" / "crash.py").write_text("from manim import *\n\nclass Crash(Scene):\n"
                                                      "    def construct(self):\n        1 / 0\n")
    (server.inbox / "alice" / ".hidden.py").write_text(SCENE)

    dot = wait_for(server.outbox / "alice" / "shots" / "dot.mp4")
    stream = video_stream(probe(dot))
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 854, 480), stream
    for name in ("bare", "body"):
        assert video_stream(probe(wait_for(server.outbox / "alice" / f"{name}.mp4")))["width"] == 640
    assert "movie." in wait_for(server.outbox / "alice" / "broken.error.txt").read_text()
    assert "ZeroDivisionError" in wait_for(server.outbox / "alice" / "crash.error.txt").read_text()
    assert not list(server.outbox.rglob("*hidden*"))
    jobs = hot_jobs(server)
    assert len(jobs) == 4 and sum(" completed " in j for j in jobs) == 3, jobs  # broken.json made no job
    assert {j.split()[2] for j in jobs} == {"manim", "movie"}


@pytest.mark.slow
def test_an_unknown_user_is_told_the_fix_and_picked_up_once_created(hot):
    server = hot()
    (server.inbox / "carol").mkdir(parents=True)
    (server.inbox / "carol" / "clip.json").write_text(json.dumps(movie()))
    (server.inbox / "loose.json").write_text(json.dumps(movie()))
    error = wait_for(server.outbox / "carol" / "clip.error.txt").read_text()
    assert "no appliance user 'carol'" in error and "appliance users create carol" in error, error
    assert "<user>" in wait_for(server.outbox / "loose.error.txt").read_text()
    server.cli("users", "create", "carol")
    wait_for(server.outbox / "carol" / "clip.mp4", stale_error=True)
    assert not (server.outbox / "carol" / "clip.error.txt").exists()  # the fix worked: the old error is gone
    assert len(hot_jobs(server)) == 1


@pytest.mark.slow
def test_a_file_still_being_written_is_not_picked_up_early(hot):
    server = hot()
    server.cli("users", "create", "alice")
    (server.inbox / "alice").mkdir(parents=True)
    text = json.dumps(movie("slow"))
    target = server.inbox / "alice" / "slow.json"
    with open(target, "w") as f:  # half a document for 3 s, in pieces less than a second apart
        for i in range(0, len(text), len(text) // 6 + 1):
            f.write(text[i:i + len(text) // 6 + 1])
            f.flush()
            time.sleep(0.5)
    wait_for(server.outbox / "alice" / "slow.mp4")
    assert not (server.outbox / "alice" / "slow.error.txt").exists()
    assert len(hot_jobs(server)) == 1


@pytest.mark.slow
def test_restarts_never_render_twice_nor_lose_a_file(hot):
    server = hot()
    server.cli("users", "create", "alice")
    (server.inbox / "alice").mkdir(parents=True)
    (server.inbox / "alice" / "first.json").write_text(json.dumps(movie("first")))
    wait_for(server.outbox / "alice" / "first.mp4")
    # a scene that takes a while, so the server surely dies while it renders
    slow = SCENE.replace("from manim import *", "import time\nfrom manim import *").replace(
        "def construct(self):", "def construct(self):\n        time.sleep(2)")
    assert slow.count("time.sleep(2)") == 1
    (server.inbox / "alice" / "second.py").write_text(slow)
    deadline = time.time() + 30
    while len(hot_jobs(server)) < 2:  # picked up: its job exists, it has not finished
        assert time.time() < deadline
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    assert not (server.outbox / "alice" / "second.mp4").exists()

    again = hot(data_dir=server.data_dir)
    wait_for(again.outbox / "alice" / "second.mp4")
    time.sleep(2)  # longer than a rescan (0.5 s here), the settling second and a tick: nothing is picked up again
    jobs = hot_jobs(again)
    assert len(jobs) == 2 and all(" completed " in j for j in jobs), jobs
    (again.inbox / "alice" / "first.json").touch()  # same bytes, new mtime: not a new render
    time.sleep(2)
    assert len(hot_jobs(again)) == 2
