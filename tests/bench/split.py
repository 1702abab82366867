"""`make bench` split section: a 24-animation Kodisc scene in the default configuration on 2 CPU slots (the cost
model decides at submit: on 2 free slots it renders whole, one ``manim`` task, asserted), split in 2 (an explicit
``manim_split_max_workers`` = 2 forces it), and split in 4 on a Dask cluster of 4 local workers (CPU=1 each, all
on this box); the model's predictions beside the measured times.

The model (renderers/manim_split_model.py; constants calibrated by tests/bench/split_calibrate.py) predicts the
seconds of the job's tasks on c free cores; a Kodisc job adds o, the API and scheduling around its tasks (T1 - S1,
measured on the 1-worker job). The predictions use the constants alone, with c = the cores this box has (2): the
4 Dask workers declare 4 CPUs but share the box's cores, which the model is told (the appliance itself plans on
the slots it sees, so on such a cluster it would expect 4 cores: ``manim_split_max_workers`` is how an operator
forces the split there).
"""
from __future__ import annotations

import json
import os
import sqlite3
import statistics
import time
from pathlib import Path

import httpx

from appliance.store.db import parse_iso
from renderers import manim_split
from renderers import manim_split_model as model
from tests.conftest import Server

RUNS = 5
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
        rows = db.execute("select id, renderer, started_at, finished_at from tasks where job_id = ? order by idx",
                          (job_id,)).fetchall()
    return took, [{"id": i, "renderer": r, "start": parse_iso(a), "end": parse_iso(b),
                   "s": parse_iso(b) - parse_iso(a)} for i, r, a, b in rows]


def _start(tmp: Path, name: str, workers: str) -> tuple[Server, dict]:
    (tmp / name).mkdir()
    server = Server(tmp / name, {"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_MANIM_SPLIT_MAX_WORKERS": workers})
    server.start()
    server.cli("users", "create", "bench", "--credits", "100000")
    return server, {"Authorization": f"Bearer {server.new_key('bench', 'kodisc')['key']}"}


PLAYS = [(15, False)] * 24  # LONG: 24 animations of 0.5 s at 30 fps
WIDTH, HEIGHT = 1280, 720  # "medium"


def _plan_document(server: Server, tasks_row: dict) -> dict:
    """The plan task's plan.json, from the artifact store."""
    with sqlite3.connect(server.data_dir / "appliance.db") as db:
        result = json.loads(db.execute("select result from tasks where id = ?", (tasks_row["id"],)).fetchone()[0])
    digest = result["outputs"][result["files"]["plan"]]
    return json.loads(next(server.data_dir.rglob(digest)).read_text())


def _dask_four(tmp: Path) -> tuple[float, list[tuple[int, int]], list[float]] | None:
    """The scene forced into 4 ranges on a Dask cluster of 4 local workers: (median seconds, the ranges, runs).
    None (and a line saying why) when the cluster does not come up."""
    from tests.bench.scale import _Cluster

    (tmp / "split_dask").mkdir()
    try:
        cluster = _Cluster(tmp / "split_dask", 4)
    except Exception as exc:  # noqa: BLE001 - reported, the rest of the section stands
        _line("  4 Dask workers", f"not measured: the cluster did not start ({type(exc).__name__}: {exc})")
        return None
    try:
        (tmp / "split4").mkdir()
        server = Server(tmp / "split4", {"APPLIANCE_EXECUTOR": "dask", "APPLIANCE_DASK_SCHEDULER": cluster.address,
                                         "APPLIANCE_MANIM_SPLIT_MAX_WORKERS": "4"})
        server.start()
        try:
            server.cli("users", "create", "bench", "--credits", "100000")
            auth = {"Authorization": f"Bearer {server.new_key('bench', 'kodisc')['key']}"}
            _render(server, auth, TINY + "# warm the workers\n")
            runs = [_render(server, auth, LONG + f"# dask run {i}\n") for i in range(3)]
            assert all(len(tasks) == 6 for _, tasks in runs), runs[0][1]
            ranges = [(a, b) for a, b, _ in _plan_document(server, runs[0][1][0])["ranges"]]
        finally:
            server.stop()
    finally:
        cluster.close()
    times = [t for t, _ in runs]
    return statistics.median(times), ranges, times


def bench_split(tmp: Path) -> None:
    one, one_auth = _start(tmp, "split1", "0")  # the default: the model decides
    two, two_auth = _start(tmp, "split2", "2")  # forced: 2 ranges
    try:
        start_s = statistics.median(_render(one, one_auth, TINY + f"# {i}\n")[1][0]["s"] for i in range(3))
        singles, splits = [], []
        sides = [(one, one_auth, singles), (two, two_auth, splits)]
        for i in range(RUNS):  # alternating, each run in another order, so that the machine's load hits both alike
            for server, auth, runs in sides[i % 2:] + sides[:i % 2]:
                runs.append(_render(server, auth, LONG + f"# run {i}\n"))
        assert all([t["renderer"] for t in tasks] == ["manim"] for _, tasks in singles)  # the model said: whole
        assert all(len(tasks) == 4 for _, tasks in splits), splits[0][1]
        t1, t2 = statistics.median(t for t, _ in singles), statistics.median(t for t, _ in splits)
        s1 = statistics.median(tasks[0]["s"] for _, tasks in singles)
        plan = statistics.median(tasks[0]["s"] for _, tasks in splits)
        assemble = statistics.median(tasks[-1]["s"] for _, tasks in splits)
        hops = statistics.median(((tasks[-1]["start"] - max(t["end"] for t in tasks[1:-1]))
                                  + (min(t["start"] for t in tasks[1:-1]) - tasks[0]["end"])) / 2
                                 for _, tasks in splits)  # one hop: the mean of the DAG's two
        document = _plan_document(two, splits[0][1][0])
        ranges = [(a, b) for a, b, _ in document["ranges"]]
        work = model.animation_work(PLAYS, WIDTH, HEIGHT)
        o = t1 - s1
        _line("split: 24-animation scene, medium, API submit->completed", f"default (model: whole, 1 task) "
              f"{t1:.2f} s | forced 2 workers {t2:.2f} s -> forced split / default {t2 / t1:.2f}x (runs "
              f"{_runs(t for t, _ in singles)} | {_runs(t for t, _ in splits)})")
        _line("  parts (medians)", f"1-worker task {s1:.2f} s; plan {plan:.2f} s, ranges "
              f"{_runs(t['s'] for t in splits[0][1][1:-1])} s (run 0), assemble {assemble:.2f} s, hop {hops:.2f} s"
              f", task start {start_s:.2f} s, API around a task {o:.2f} s")
        box = os.cpu_count() or 2
        whole2, split2 = o + model.whole_s(work, box), o + model.split_s(work, ranges, box)
        _line(f"  model vs measured, 1 worker (whole), {box} cores", f"{whole2:.2f} s vs {t1:.2f} s "
              f"({_err(whole2, t1)}); the plan task said {document['predicted']}")
        _line(f"  model vs measured, 2 workers, {box} cores", f"{split2:.2f} s vs {t2:.2f} s ({_err(split2, t2)})")
        four = _dask_four(tmp)
        if four is not None:
            t4, ranges4, runs4 = four
            split4 = o + model.split_s(work, ranges4, box)
            _line(f"  model vs measured, 4 Dask workers, {box} cores", f"{split4:.2f} s vs {t4:.2f} s "
                  f"({_err(split4, t4)}; runs {_runs(runs4)}; 4 x CPU=1 workers sharing this box)")
        for cores in (4, 8, 16):
            decision = manim_split.decide(PLAYS, {"width": WIDTH, "height": HEIGHT, "split": {
                "workers": cores, "minAnimations": 12, "cores": cores}})
            _line(f"  model, {cores} free cores", f"whole {decision.whole_s + o:.2f} s, "
                  + (f"split in {len(decision.ranges)} {decision.split_s + o:.2f} s -> "
                     f"{decision.whole_s / decision.split_s:.2f}x" if len(decision.ranges) > 1 else
                     f"renders whole (best split {decision.split_s + o:.2f} s)" if decision.split_s else "whole"))
    finally:
        one.stop()
        two.stop()


def _err(predicted: float, measured: float) -> str:
    return f"{(predicted - measured) / measured * 100:+.0f} %"


def _runs(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)
