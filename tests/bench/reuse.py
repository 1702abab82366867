"""`make bench` section `reuse`: re-rendering an edited job, against its first render, on a real server.

- Manim (Kodisc API, medium: 1280x720, 30 fps): a 20-animation scene (a title, nine shapes drawn one by one,
  each followed by a caption that fades in and out, a last move of all shapes) rendered, then resubmitted with
  one caption's text edited: only that animation depends on the edit, so only its piece is drawn again
  (renderers/manim_segments.py). Each run is a new user, so its first render has nothing to reuse.
- Movie (ViralSync API): ten 2 s scenes, each a background and a text layer, rendered, then resubmitted with one
  scene's text edited: the nine others are scene-cache hits, one scene renders, the movie is assembled again.

Times are submit -> completed, polled every 10 ms. ``BENCH_REUSE_REPEAT`` (default 3) sets the runs; the ratios are
per run (first and edited render of a run are taken back to back, under about the same load) and their median.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import httpx

from tests.conftest import Server

REPEAT = int(os.environ.get("BENCH_REUSE_REPEAT", "3"))
SCENE = """\
from manim import *

class Twenty(Scene):
    def construct(self):
        title = Text("Segment reuse").to_edge(UP)
        self.play(Write(title))
        shapes = VGroup()
        for i in range(9):
            shape = [Circle, Square, Triangle][i % 3](color=[BLUE, GREEN, RED][i % 3]).scale(0.5)
            shape.move_to(LEFT * 5 + RIGHT * 1.25 * i + DOWN)
            self.play(Create(shape))
            shapes.add(shape)
            note = Text(CAPTIONS[i], font_size=36).next_to(shape, DOWN)
            self.play(FadeIn(note, shift=UP), rate_func=there_and_back)
            self.remove(note)
        self.play(shapes.animate.shift(UP))
"""
CAPTIONS = [f"shape {i}" for i in range(9)]


def _line(name: str, value: str) -> None:
    from tests.bench.run import line  # run.py imports this module: import at call time

    line(name, value)


def _scene(edited: bool) -> str:
    captions = [("edited caption" if edited and i == 4 else c) for i, c in enumerate(CAPTIONS)]
    return f"CAPTIONS = {captions!r}\n" + SCENE


def _wait(get, done: tuple[str, ...], failed: tuple[str, ...]) -> dict:
    while True:
        job = get()
        if job["status"] in done + failed:
            if job["status"] in failed:
                raise RuntimeError(f"job ended {job['status']}: {job.get('error')}")
            return job
        time.sleep(0.01)  # the poll interval quantises the measured time


def _manim(server: Server, auth: dict, code: str) -> tuple[float, str]:
    started = time.time()
    job_id = httpx.post(f"{server.url}/api/v2/render", headers=auth, timeout=30,
                        json={"code": code, "className": "Twenty", "quality": "medium"}).json()["jobId"]
    _wait(lambda: httpx.get(f"{server.url}/api/v2/render/{job_id}", headers=auth, timeout=30).json(),
          ("completed",), ("failed",))
    return time.time() - started, job_id


def _movie_doc(run: int, edited: bool) -> dict:
    colors = ["#102030", "#301020", "#203010", "#2a2a2a", "#0f172a"]
    scenes = [{"id": f"run{run}_scene{i}", "duration": 2, "bgColor": colors[i % 5], "layers": [
        {"id": "title", "type": "text", "text": f"Scene {i + 1}" + (" (edited)" if edited and i == 6 else ""),
         "startTime": 0.25, "duration": 1.75, "zIndex": 1, "position": {"x": 140, "y": 280},
         "size": {"width": 1000, "height": 160}, "fontSize": 72, "fontWeight": "bold", "color": "#ffffff",
         "textAlign": "center"}]} for i in range(10)]
    return {"width": 1280, "height": 720, "fps": 30, "scenes": scenes}


def _movie(server: Server, headers: dict, movie: dict) -> tuple[float, str]:
    started = time.time()
    body = {"kind": "movie", "projectId": "bench", "movie": movie, "renderOptions": {}}
    r = httpx.post(f"{server.url}/v1/render/jobs", json=body, headers=headers, timeout=30)
    if r.status_code != 202:
        raise RuntimeError(f"submit refused: {r.status_code} {r.text}")
    job_id = r.json()["jobId"]
    _wait(lambda: httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers, timeout=30).json(),
          ("done",), ("failed", "cancelled"))
    return time.time() - started, job_id


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def bench_reuse(tmp: Path) -> None:
    (tmp / "reuse").mkdir()
    server = Server(tmp / "reuse", {"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_RATE_LIMIT_REQUESTS": "1000000"})
    server.start()
    try:
        firsts, edits, reused = [], [], []
        for run in range(REPEAT):  # a user per run: its first render has no earlier pieces
            server.cli("users", "create", f"reuse{run}", "--credits", "100000")
            auth = {"Authorization": f"Bearer {server.new_key(f'reuse{run}', 'kodisc')['key']}"}
            first, _ = _manim(server, auth, _scene(False))
            edit, job_id = _manim(server, auth, _scene(True))
            firsts.append(first)
            edits.append(edit)
            reused.append(server.job(job_id)["reuse"])
        ratios = [e / f for e, f in zip(edits, firsts, strict=True)]
        _line("manim 20 animations, medium: first render", f"{statistics.median(firsts):.2f} s (runs {_runs(firsts)})")
        _line("one caption edited: re-render / first (goal <= 0.15)",
              f"{statistics.median(edits):.2f} s -> {statistics.median(ratios):.3f} (ratios {_runs(ratios)}; "
              f"reused {reused[-1]['reusedPieces']}/{reused[-1]['pieces']} pieces, "
              f"{reused[-1]['secondsSaved']:.1f} s of drawing)")
        server.cli("users", "create", "reusemovie", "--credits", "100000")
        headers = {"x-api-key": server.new_key("reusemovie", "viralsync")["key"]}
        firsts, edits, cached = [], [], []
        for run in range(REPEAT):  # scene ids per run: the first render of a run hits no scene cache
            first, _ = _movie(server, headers, _movie_doc(run, False))
            edit, job_id = _movie(server, headers, _movie_doc(run, True))
            firsts.append(first)
            edits.append(edit)
            cached.append(sum(t["cached"] for t in server.job(job_id)["tasks"] if t["renderer"] == "movie.scene"))
        ratios = [e / f for e, f in zip(edits, firsts, strict=True)]
        _line("movie 10 scenes x 2 s, 1280x720: first render", f"{statistics.median(firsts):.2f} s "
              f"(runs {_runs(firsts)})")
        _line("one text layer edited: re-render / first (goal <= 0.2)",
              f"{statistics.median(edits):.2f} s -> {statistics.median(ratios):.3f} (ratios {_runs(ratios)}; "
              f"{cached[-1]}/10 scenes from the scene cache)")
    finally:
        server.stop()
