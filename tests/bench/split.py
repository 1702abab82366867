"""`make bench` split section: a 24-animation Kodisc scene on 1 worker vs 2, and a model of 8 and 16 workers.

Model (Amdahl-style), per split job on W workers with W free cores:
    T(W) = o + h + P + A + s + (W-1)/W * F + D/W
o: the API and scheduling around one task (T1 - S1, from the 1-worker job); h: the two extra scheduler hops of
the split DAG (the gaps between plan, ranges and assembly); P, A: the plan and assemble tasks; s: a task's
start (fork, the scene code run, an empty scene; a 1-frame job's task); F = P - s: fast-forwarding every
animation (the plan does exactly that; the last range fast-forwards (W-1)/W of them); D = S1 - s: drawing and
encoding all frames (the 1-worker task S1 less its start). The W = 2 prediction is compared with the measured
W = 2 time; 8 and 16 are the model's alone.
"""
from __future__ import annotations

import sqlite3
import statistics
import time
from pathlib import Path

import httpx

from appliance.store.db import parse_iso
from tests.conftest import Server

RUNS = 3
LONG = ("from manim import *\n\nclass Long(Scene):\n    def construct(self):\n"
        "        dots = VGroup(*[Dot(radius=0.08) for _ in range(40)]).arrange_in_grid(5, 8, buff=0.4)\n"
        "        square = Square(side_length=2, color=BLUE, fill_opacity=0.3)\n"
        "        self.add(dots, square)\n"
        "        for i in range(24):\n"
        "            self.play(square.animate.rotate(PI / 6).shift(0.2 * RIGHT * (-1) ** i),\n"
        "                      dots.animate.set_color([RED, GREEN, YELLOW, BLUE][i % 4]), run_time=0.5)\n")
TINY = "from manim import *\n\nclass Long(Scene):\n    def construct(self):\n        self.wait(0.04)\n"


def _line(name: str, value: str) -> None:
    print(f"{name:<58} {value}", flush=True)


def _render(server: Server, auth: dict, code: str) -> tuple[float, list[dict]]:
    """Submit -> completed through the Kodisc API; the job's tasks as stored (renderer, start, end)."""
    started = time.time()
    job_id = httpx.post(f"{server.url}/api/v2/render", headers=auth,
                        json={"code": code, "className": "Long", "quality": "medium"}).json()["jobId"]
    while (job := httpx.get(f"{server.url}/api/v2/render/{job_id}", headers=auth).json())["status"] not in (
            "completed", "failed"):
        time.sleep(0.01)
    took = time.time() - started
    assert job["status"] == "completed", job
    with sqlite3.connect(server.data_dir / "appliance.db") as db:
        rows = db.execute("select renderer, started_at, finished_at from tasks where job_id = ? order by idx",
                          (job_id,)).fetchall()
    return took, [{"renderer": r, "start": parse_iso(a), "end": parse_iso(b), "s": parse_iso(b) - parse_iso(a)}
                  for r, a, b in rows]


def _start(tmp: Path, name: str, workers: int) -> tuple[Server, dict]:
    (tmp / name).mkdir()
    server = Server(tmp / name, {"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_MANIM_SPLIT_MAX_WORKERS": str(workers)})
    server.start()
    server.cli("users", "create", "bench", "--credits", "100000")
    return server, {"Authorization": f"Bearer {server.new_key('bench', 'kodisc')['key']}"}


def model(o: float, h: float, p: float, a: float, s: float, f: float, d: float, workers: int) -> float:
    return o + h + p + a + s + (workers - 1) / workers * f + d / workers


def bench_split(tmp: Path) -> None:
    one, one_auth = _start(tmp, "split1", 1)
    two, two_auth = _start(tmp, "split2", 2)
    try:
        start_s = statistics.median(_render(one, one_auth, TINY + f"# {i}\n")[1][0]["s"] for i in range(3))
        singles, splits = [], []
        for i in range(RUNS):  # alternating, so that a change in the machine's load hits both alike
            singles.append(_render(one, one_auth, LONG + f"# run {i}\n"))
            splits.append(_render(two, two_auth, LONG + f"# run {i}\n"))
        assert all([t["renderer"] for t in tasks] == ["manim"] for _, tasks in singles)
        assert all(len(tasks) == 4 for _, tasks in splits), splits[0][1]
        t1, t2 = statistics.median(t for t, _ in singles), statistics.median(t for t, _ in splits)
        s1 = statistics.median(tasks[0]["s"] for _, tasks in singles)
        plan = statistics.median(tasks[0]["s"] for _, tasks in splits)
        assemble = statistics.median(tasks[-1]["s"] for _, tasks in splits)
        hops = statistics.median((tasks[-1]["start"] - max(t["end"] for t in tasks[1:-1]))
                                 + (min(t["start"] for t in tasks[1:-1]) - tasks[0]["end"]) for _, tasks in splits)
        o, f, d = t1 - s1, max(0.0, plan - start_s), s1 - start_s
        _line("split: 24-animation scene, medium, API submit->completed", f"1 worker {t1:.2f} s | 2 workers "
              f"{t2:.2f} s -> speed-up {t1 / t2:.2f} (runs {_runs(t for t, _ in singles)} | "
              f"{_runs(t for t, _ in splits)})")
        _line("  parts (medians)", f"1-worker task {s1:.2f} s; plan {plan:.2f} s, ranges "
              f"{_runs(t['s'] for t in splits[0][1][1:-1])} s (run 0), assemble {assemble:.2f} s, hops {hops:.2f} s"
              f", task start {start_s:.2f} s")
        params = (o, hops, plan, assemble, start_s, f, d)
        predicted = {w: model(*params, w) for w in (2, 8, 16)}
        _line("  model T(2) vs measured", f"{predicted[2]:.2f} s vs {t2:.2f} s "
              f"({(predicted[2] - t2) / t2 * 100:+.0f} %)")
        _line("  model T(8), T(16) (as many free cores)", f"{predicted[8]:.2f} s -> {t1 / predicted[8]:.2f}x, "
              f"{predicted[16]:.2f} s -> {t1 / predicted[16]:.2f}x; limit (W -> inf) "
              f"{t1 / (o + hops + plan + assemble + start_s + f):.2f}x")
    finally:
        one.stop()
        two.stop()


def _runs(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)
