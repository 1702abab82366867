"""The live stream of a Manim render (renderers/manim_live.py), run for real in a fresh renderer process: each
finished piece becomes an fMP4 segment while the scene still renders, and init + segments, in order, decode to
exactly the frames of the final video.mp4 — pieces copied from an earlier render included."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av

from tests.conftest import frame_hashes
from tests.integration.test_manim_reuse import REPO, render, scene

# A scene that stops after its first pieces until the test lets it go on: what is live by then was finished
# while the render was still running. Each wait adds a frame of its own (not a repeat of the last).
BLOCKING = """\
import os, time
from manim import *

class Demo(Scene):
    def construct(self):
        square = Square(color=BLUE)
        self.play(Create(square))
        for i in range(7):
            self.add(Dot().shift(RIGHT * (i - 3)))
            self.wait(1)
        go = os.path.join(os.path.dirname(config.media_dir), "go")
        while not os.path.exists(go):
            time.sleep(0.05)
        self.play(square.animate.shift(UP))
"""


def live_video(folder: Path) -> tuple[dict, Path]:
    """The index, and init.mp4 + every segment it lists, concatenated as one file."""
    live = folder / "work" / "live"
    index = json.loads((live / "index.json").read_text())
    joined = folder / "live.mp4"
    joined.write_bytes((live / index["init"]).read_bytes()
                       + b"".join((live / s["name"]).read_bytes() for s in index["segments"]))
    return index, joined


def boxes(data: bytes) -> list[bytes]:
    kinds, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        assert size >= 8, "a box shorter than its header"
        kinds.append(data[at + 4:at + 8])
        at += size
    assert at == len(data), "the last box runs past the end"
    return kinds


def test_segments_are_the_final_video_frame_for_frame(tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.mkdir()
    outputs = render(first, scene())
    index, joined = live_video(first)
    assert index["done"] and index["failed"] is None
    assert index["codec"].startswith("avc1.")
    # one segment per piece, in order, with the piece's address and frames
    assert [[s["address"], s["frames"]] for s in index["segments"]] == [p[:2] for p in outputs["pieces"]]
    starts = [s["start"] for s in index["segments"]]
    assert starts == [sum(p[1] for p in outputs["pieces"][:i]) for i in range(len(starts))]
    assert all(abs(s["duration"] - s["frames"] / 10) < 1e-6 for s in index["segments"])
    live = first / "work" / "live"
    assert boxes((live / "init.mp4").read_bytes()) == [b"ftyp", b"moov"]
    for segment in index["segments"]:
        kinds = boxes((live / segment["name"]).read_bytes())
        assert kinds[0] == b"moof" and set(kinds) == {b"moof", b"mdat"}
    video = frame_hashes(first / "work" / "video.mp4")
    assert len(video) == outputs["meta"]["frames"]
    assert frame_hashes(joined) == video

    # one animation edited: the copied pieces are in the live stream too, in their place, the same packets
    edited = tmp_path / "edited"
    edited.mkdir()
    outputs = render(edited, scene(color="RED"), reuse=[first])
    index, joined = live_video(edited)
    assert outputs["reuse"]["reusedPieces"] >= 1
    assert [s["reused"] for s in index["segments"]].count(True) == outputs["reuse"]["reusedPieces"]
    assert index["segments"][0]["reused"] and not index["segments"][1]["reused"]
    assert frame_hashes(joined) == frame_hashes(edited / "work" / "video.mp4")

    # nothing edited: every piece copied (no encoder ever starts), still the whole video live
    again = tmp_path / "again"
    again.mkdir()
    outputs = render(again, scene(), reuse=[first])
    index, joined = live_video(again)
    assert outputs["reuse"]["reusedPieces"] == len(index["segments"]) == len(outputs["pieces"])
    assert frame_hashes(joined) == frame_hashes(again / "work" / "video.mp4") == video


def test_segments_appear_while_the_scene_renders(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "tmp").mkdir(parents=True)
    (tmp_path / "input.json").write_text(json.dumps({"code": BLOCKING, "className": "Demo", "width": 256,
                                                     "height": 144, "fps": 10}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(work), "TMPDIR": str(work / "tmp"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "renderers", "manim", "input.json", "work"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        index_path = work / "live" / "index.json"
        deadline = time.monotonic() + 60
        segments: list[dict] = []
        while time.monotonic() < deadline and len(segments) < 2:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            if index_path.exists():
                segments = json.loads(index_path.read_text())["segments"]
            time.sleep(0.1)
        # x264 holds up to rc-lookahead frames back: a piece is complete once that many of the next are drawn
        assert len(segments) >= 2, "no two pieces were live while the scene was held"
        assert proc.poll() is None and not json.loads(index_path.read_text())["done"]
        early = {s["name"]: (work / "live" / s["name"]).read_bytes() for s in segments}
        (work / "go").write_text("")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert json.loads(out.splitlines()[-1])["type"] == "result", err[-2000:]
    index, joined = live_video(tmp_path)
    assert index["done"] and len(index["segments"]) == 9
    for name, data in early.items():  # a finished segment is never rewritten
        assert (work / "live" / name).read_bytes() == data
    assert frame_hashes(joined) == frame_hashes(work / "video.mp4")


def test_a_live_stream_is_a_reuse_source(tmp_path: Path) -> None:
    """What a resumed render is given (runtime/resume.py): init + the first complete segments as one fragmented
    MP4, with their piece index. Its first frame is shown a few frames in (the live stream's decoding delay): the
    join must still put each copied frame where it belongs, with every presentation time once."""
    first = tmp_path / "first"
    first.mkdir()
    render(first, scene())
    index, _ = live_video(first)
    live = first / "work" / "live"
    kept = index["segments"][:3]
    salvaged = tmp_path / "salvaged.mp4"
    salvaged.write_bytes((live / "init.mp4").read_bytes() + b"".join((live / s["name"]).read_bytes() for s in kept))

    resumed = tmp_path / "resumed"
    work = resumed / "work"
    (work / "tmp").mkdir(parents=True)
    (work / "resume.mp4").write_bytes(salvaged.read_bytes())
    task = {"code": scene(), "className": "Demo", "width": 256, "height": 144, "fps": 10,
            "reuse": {"sources": [{"video": "resume.mp4", "pieces": [[s["address"], s["frames"], s["ms"]]
                                                                     for s in kept]}]}}
    (resumed / "input.json").write_text(json.dumps(task))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(work), "TMPDIR": str(work / "tmp"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "renderers", "manim", "input.json", "work"], cwd=resumed, env=env,
                          capture_output=True, text=True, timeout=120)
    outputs = json.loads(proc.stdout.splitlines()[-1])["outputs"]
    assert outputs["reuse"]["reusedPieces"] == 3
    with av.open(str(work / "video.mp4")) as container:
        stream = container.streams.video[0]
        times = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
        assert times[0] == 0 and len(set(times)) == len(times) == 65
        assert abs(float(container.duration) / av.time_base - 6.5) < 1e-6
    copied = 10 * 3
    assert frame_hashes(work / "video.mp4")[:copied] == frame_hashes(salvaged) \
        == frame_hashes(first / "work" / "video.mp4")[:copied]


def test_past_its_limits_the_live_stream_stops_and_the_render_goes_on(tmp_path: Path) -> None:
    outputs = render(tmp_path, scene(), patch="import renderers.manim_live as live\nlive.MAX_SEGMENTS = 2")
    index = json.loads((tmp_path / "work" / "live" / "index.json").read_text())
    assert len(index["segments"]) == 2 and "stops past 2 segments" in index["failed"] and not index["done"]
    assert outputs["meta"]["frames"] == 65 and len(frame_hashes(tmp_path / "work" / "video.mp4")) == 65
