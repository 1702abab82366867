"""`make bench` eta section (issue #22 part 3): how well the appliance knows, before and during, how long a job takes.

A replay of the benchmark's kinds of work on a fresh server with 2 CPU slots, one job at a time (so that a job's
render time is its own): Manim scenes of 2 to 24 animations at Kodisc's low and medium presets, and movies of 1
to 6 text-and-colour scenes at 640x360 and 1280x720. The first WARMUP jobs of each family only give the box a
history; for every later job the bench records
- the quote just before submitting it (``POST /admin/estimate``), and
- the ETA the admin API shows when the job's progress first reaches 10 % (its predicted total render time),
and compares each with the job's render time as billed (started -> completed). Errors are |predicted - actual| /
actual; the goals are a median of <= 30 % at submit and <= 15 % once 10 % is done.
"""
from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import httpx

from tests.conftest import Server

WARMUP = 6
PRESETS = {"low": (854, 480, 15), "medium": (1280, 720, 30)}
SCENE = ("from manim import *\n\nclass Replay(Scene):\n    def construct(self):\n"
         "        square = Square(side_length=2, color=BLUE, fill_opacity=0.3)\n"
         "        dots = VGroup(*[Dot(radius=0.08) for _ in range(20)]).arrange_in_grid(4, 5, buff=0.4)\n"
         "        self.add(square, dots)\n"
         "        for i in range({n}):\n"
         "            self.play(square.animate.rotate(PI / 6), dots.animate.shift(0.1 * UP * (-1) ** i))\n"
         "# {tag}\n")


def _line(name: str, value: str) -> None:
    print(f"{name:<58} {value}", flush=True)


def _manim(n: int, preset: str, tag: str) -> dict:
    width, height, fps = PRESETS[preset]
    return {"user": "bench", "renderer": "manim", "input": {
        "code": SCENE.format(n=n, tag=tag), "className": "Replay", "width": width, "height": height, "fps": fps}}


def _movie(scenes: int, seconds: float, size: tuple[int, int], tag: str) -> dict:
    width, height = size
    return {"user": "bench", "movie": {"width": width, "height": height, "fps": 25, "scenes": [
        {"id": f"s{i}", "duration": seconds, "bgColor": f"#{(i * 40) % 256:02x}3050", "layers": [
            {"id": "t", "type": "text", "text": f"{tag} scene {i + 1}", "startTime": 0, "duration": seconds,
             "position": {"x": width // 10, "y": height // 3},
             "size": {"width": width * 8 // 10, "height": height // 4},
             "fontSize": height // 8, "color": "#ffffff", "textAlign": "center"}]} for i in range(scenes)]}}


def _jobs(seed: int) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    manim = [("manim", _manim(n, preset, f"{preset}{n}"))
             for n in (2, 4, 6, 8, 12, 16, 20, 24) for preset in ("low", "medium")]
    movies = [("movie", _movie(scenes, seconds, size, f"m{scenes}{seconds}{size[0]}"))
              for scenes, seconds in ((1, 3), (1, 6), (2, 2), (3, 3), (4, 2), (6, 2))
              for size in ((640, 360), (1280, 720))]
    rng.shuffle(manim)
    rng.shuffle(movies)
    return manim + movies  # each family's first WARMUP jobs are its history


def _run(client: httpx.Client, server: Server, body: dict) -> tuple[float | None, dict | None, float]:
    """(quote at submit, the ETA when 10 % is done with the progress then, actual render seconds) of a job."""
    quote = client.post("/admin/estimate", json=body).json().get("seconds")
    job_id = client.post("/admin/jobs", json=body).json()["id"]
    at_tenth = None
    while (job := client.get(f"/admin/jobs/{job_id}").json())["status"] not in ("completed", "failed", "cancelled"):
        if at_tenth is None and job["status"] == "running" and (job["progress"] or 0) >= 0.1 and job["eta"]:
            at_tenth = {**job["eta"], "progress": job["progress"]}
        time.sleep(0.02)
    if job["status"] != "completed":
        raise RuntimeError(f"eta bench: a job did not complete: {job['error']}")
    return quote, at_tenth, job["durationMs"] / 1000


def bench_eta(tmp: Path) -> None:
    (tmp / "eta").mkdir()
    server = Server(tmp / "eta", {"APPLIANCE_CPU_SLOTS": "2"})
    server.start()
    try:
        server.cli("users", "create", "bench")
        token = (server.data_dir / "admin.token").read_text().strip()
        errors: dict[str, tuple[list[float], list[float]]] = {"manim": ([], []), "movie": ([], [])}
        extrapolated: dict[str, list[float]] = {"manim": [], "movie": []}  # elapsed / progress alone, for scale
        seen = {"manim": 0, "movie": 0}
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            for family, body in _jobs(7):
                quote, at_tenth, actual = _run(client, server, body)
                seen[family] += 1
                if seen[family] <= WARMUP:
                    continue
                at_submit, during = errors[family]
                if quote is not None:
                    at_submit.append(abs(quote - actual) / actual)
                if at_tenth is not None:
                    during.append(abs(at_tenth["totalSeconds"] - actual) / actual)
                    elapsed = at_tenth["totalSeconds"] - at_tenth["secondsLeft"]
                    extrapolated[family].append(abs(elapsed / at_tenth["progress"] - actual) / actual)
    finally:
        server.stop()
    everything = ([e for f in errors.values() for e in f[0]], [e for f in errors.values() for e in f[1]])
    for name, (at_submit, during) in [*errors.items(), ("all", everything)]:
        alone = extrapolated.get(name, [e for f in extrapolated.values() for e in f])
        _line(f"ETA error, {name}: at submit | once 10 % done (goals 30 | 15 %)",
              f"median {_pct(at_submit)} | {_pct(during)} ({len(at_submit)} | {len(during)} jobs; elapsed / "
              f"progress alone at 10 %: {_pct(alone)})")


def _pct(values: list[float]) -> str:
    return f"{statistics.median(values) * 100:.0f} %" if values else "n/a"
