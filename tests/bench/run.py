"""`make bench`: measured, never asserted. Prints ratios against references measured in the same run."""
from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from appliance.store.db import now_iso, parse_iso
from tests.bench.eta import bench_eta
from tests.bench.movie import bench_movie
from tests.bench.rendercad_image import bench_image
from tests.bench.rendercad_video import bench_video
from tests.bench.reuse import bench_reuse
from tests.bench.scale import bench_scale
from tests.bench.spawn import bench_spawn
from tests.bench.split import bench_split
from tests.conftest import Server

ROOT = Path(__file__).resolve().parents[2]
HELLO = ("from manim import *\n\nclass HelloKodisc(Scene):\n    def construct(self):\n"
         "        self.play(Write(Text(\"Hello, Kodisc\")))\n        self.wait(1)\n")


def line(name: str, value: str) -> None:
    print(f"{name:<58} {value}", flush=True)


def bench_core(tmp: Path) -> None:
    server = Server(tmp / "core", {"APPLIANCE_CPU_SLOTS": "2"})
    (tmp / "core").mkdir()
    server.start()
    try:
        server.cli("users", "create", "bench")
        time.sleep(1.0)
        line("server idle RSS (goal <= 150 MB)", f"{psutil.Process(server.proc.pid).memory_info().rss / 2**20:.0f} MB"
             f" (+ warm worker {_children_rss(server.proc.pid):.0f} MB PSS)")
        latencies = []
        for _ in range(30):
            sent = time.time()
            job = server.wait(server.submit("bench", "test.noop"))
            latencies.append((parse_iso(job["tasks"][0]["startedAt"]) - sent) * 1000)
        line("submit -> start latency, no-op task, p50 (goal <= 50 ms)", f"{statistics.median(latencies):.1f} ms "
             f"(p90 {sorted(latencies)[int(len(latencies) * 0.9)]:.1f} ms)")
        started = time.time()
        ids = [server.submit("bench", "test.noop") for _ in range(100)]
        for job_id in ids:
            server.wait(job_id)
        took = time.time() - started
        line("100 no-op tasks, submit to all completed", f"{took:.2f} s ({100 / took:.1f} tasks/s)")
    finally:
        server.stop()


def _children_rss(pid: int) -> float:
    """The warm worker's memory: the zygote, its spare worker and its uid killer, as PSS (pages they share —
    the spare is a fork of the zygote — counted once, not once per process as RSS would)."""
    return sum(c.memory_full_info().pss for c in psutil.Process(pid).children(recursive=True)) / 2**20


def _cli_render(workdir: Path) -> float:
    scene = workdir / "hello.py"
    scene.write_text(HELLO)
    started = time.time()
    subprocess.run([sys.executable, "-m", "manim", "render", "-q", "m", "--disable_caching", "--media_dir",
                    str(workdir / "media"), str(scene), "HelloKodisc"], check=True, capture_output=True)
    return time.time() - started


def bench_kodisc(tmp: Path) -> None:
    (tmp / "kodisc").mkdir()
    server = Server(tmp / "kodisc", {"APPLIANCE_CPU_SLOTS": "2"})
    server.start()
    try:
        # a user per fresh render: pieces of a user's earlier render of the scene would be reused (the reuse
        # section measures that), and these runs measure a render from nothing
        users = [f"bench{i}" for i in range(6)]
        for user in users:
            server.cli("users", "create", user, "--credits", "100000")
        keys = [{"Authorization": f"Bearer {server.new_key(user, 'kodisc')['key']}"} for user in users]
        auth = keys[0]
        clis = [_cli_render(Path(tempfile.mkdtemp(dir=tmp))) for _ in range(5)]  # medians of 5 (issue: Speed)
        cli_s = statistics.median(clis)
        line("manim CLI render, HelloKodisc medium (reference)", f"{cli_s:.2f} s (runs {_runs(clis)})")
        # a comment per run defeats the content cache without changing what is rendered
        apis = [_api_render(server, keys[i], HELLO + f"# run {i}\n") for i in range(5)]
        api_s = statistics.median(apis)
        line("API submit->completed / CLI, median of 5 (goal <= 0.5)",
             f"{api_s:.2f} s -> {api_s / cli_s:.2f} (runs {_runs(apis)})")
        cached_s = _api_render(server, auth, HELLO + "# run 0\n")
        line("cached resubmit / CLI (goal <= 0.1)", f"{cached_s:.2f} s -> {cached_s / cli_s:.3f}")
        started = time.time()
        variants = [HELLO.replace("Hello, Kodisc", f"Hello {i}") for i in range(8)]
        _api_many(server, keys[5], variants)
        makespan = time.time() - started
        line("8 concurrent jobs makespan / 8 serial CLI renders", f"{makespan:.2f} s -> {makespan / (8 * cli_s):.2f}")
    finally:
        server.stop()


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _api_render(server: Server, auth: dict, code: str) -> float:
    started = time.time()
    _api_many(server, auth, [code])
    return time.time() - started


def _api_many(server: Server, auth: dict, codes: list[str]) -> None:
    ids = [httpx.post(f"{server.url}/api/v2/render", headers=auth,
                      json={"code": c, "className": "HelloKodisc", "quality": "medium"}).json()["jobId"]
           for c in codes]
    for job_id in ids:
        while True:
            job = httpx.get(f"{server.url}/api/v2/render/{job_id}", headers=auth).json()
            if job["status"] in ("completed", "failed"):
                assert job["status"] == "completed", job
                break
            time.sleep(0.01)  # the poll interval quantises the measured time


LISTING_JOBS = 100_000
LISTING_MOVIE = json.dumps({"movie": {"width": 1280, "height": 720, "fps": 30, "scenes": [
    {"id": "s1", "duration": 5, "bgColor": "#000000", "layers": []}]}})


def bench_listing(tmp: Path) -> None:
    """GET /v1/jobs over 100,000 ViralSync jobs of one user, written into the SQLite before the server starts."""
    (tmp / "listing").mkdir()
    server = Server(tmp / "listing", {"APPLIANCE_CPU_SLOTS": "1", "APPLIANCE_RATE_LIMIT_REQUESTS": "1000000",
                                      "APPLIANCE_ACCESS_LOG": "false", "APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "bench")  # creates and migrates the database
    key = server.new_key("bench", "viralsync")["key"]
    _insert_jobs(server.data_dir / "appliance.db", LISTING_JOBS)
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers={"x-api-key": key}, timeout=30) as client:
            for params in ({}, {"status": "done"}, {"status": "failed"}, {"status": "running"},
                           {"type": "render.scene"}):
                _bench_list(client, params)
        _bench_dashboard(server)
    finally:
        server.stop()


def _bench_dashboard(server: Server) -> None:
    """The dashboard's jobs list (every user's jobs, keyset-paged) over the same jobs, signed in as an operator."""
    subprocess.run([sys.executable, "-m", "appliance.cli", "operator", "add", "bench", "--data-dir",
                    str(server.data_dir)], input="bench-password\n", text=True, check=True, env=server.env,
                   capture_output=True)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.post("/dashboard/login", data={"name": "bench", "password": "bench-password"})
        for params in ({}, {"status": "failed"}, {"status": "running"}, {"dialect": "viralsync", "kind": "movie"}):
            times, cursor = [], None
            for i in range(320):  # 20 to warm up, then the first page and pages deeper through the cursor
                sent = time.perf_counter()
                r = client.get("/dashboard/api/jobs", params={**params, **({"cursor": cursor} if cursor and i % 2
                                                                             else {})})
                times.append((time.perf_counter() - sent) * 1000)
                r.raise_for_status()
                cursor = r.json()["nextCursor"] or cursor
            times = sorted(times[20:])
            label = "&".join(f"{k}={v}" for k, v in params.items()) or "no filter"
            line(f"dashboard jobs ({label}), {LISTING_JOBS:,} jobs, p99 (goal <= 20 ms)",
                 f"{times[int(len(times) * 0.99) - 1]:.1f} ms (p50 {statistics.median(times):.1f} ms)")


def _insert_jobs(db_path: Path, count: int) -> None:
    db = sqlite3.connect(db_path)
    user_id = db.execute("select id from users where name = 'bench'").fetchone()[0]
    start = time.time() - count
    jobs, tasks = [], []
    for i in range(count):
        job_id, at = f"job_{i:012x}", now_iso(start + i)
        status = "failed" if i % 10 == 0 else "completed"
        jobs.append((job_id, user_id, status, "done" if status == "completed" else "failed", LISTING_MOVIE,
                     json.dumps({"meta": {"duration": 5.0, "width": 1280, "height": 720, "fileSize": 123456}}),
                     at, at, at))
        for idx, renderer in enumerate(("movie.scene", "movie.assemble")):
            tasks.append((f"{job_id}.t{idx:03d}", job_id, idx, "s1" if idx == 0 else "assemble", renderer,
                          "failed" if status == "failed" else "done", at))
    with db:
        db.executemany("insert into jobs (id, dialect, user_id, kind, status, phase, progress, request, payload, "
                       "result, created_at, updated_at, completed_at) values (?, 'viralsync', ?, 'movie', ?, ?, 1.0, "
                       "'{\"kind\":\"movie\",\"projectId\":\"bench\"}', ?, ?, ?, ?, ?)", jobs)
        db.executemany("insert into tasks (id, job_id, idx, name, renderer, input, depends_on, status, progress, "
                       "created_at) values (?, ?, ?, ?, ?, '{}', '[]', ?, 1.0, ?)", tasks)
    db.close()


def _bench_list(client: httpx.Client, params: dict) -> None:
    for _ in range(20):  # warm up: connections, SQLite's page cache
        client.get("/v1/jobs", params=params).raise_for_status()
    times, cursor = [], None
    for i in range(300):  # the first page, and pages deeper and deeper through the cursor
        page = {**params, **({"cursor": cursor} if cursor and i % 2 else {})}
        sent = time.perf_counter()
        r = client.get("/v1/jobs", params=page)
        times.append((time.perf_counter() - sent) * 1000)
        r.raise_for_status()
        cursor = r.json()["nextCursor"] or cursor
    times.sort()
    label = "&".join(f"{k}={v}" for k, v in params.items()) or "no filter"
    line(f"GET /v1/jobs ({label}), {LISTING_JOBS:,} jobs, p99 (goal <= 20 ms)",
         f"{times[int(len(times) * 0.99) - 1]:.1f} ms (p50 {statistics.median(times):.1f} ms)")


SECTIONS = {"core": bench_core, "kodisc": bench_kodisc, "movie": bench_movie, "listing": bench_listing,
            "split": bench_split, "scale": bench_scale, "video": lambda tmp: bench_video(tmp, line),
            "image": lambda tmp: bench_image(tmp, line), "spawn": lambda tmp: bench_spawn(tmp, line),
            "eta": bench_eta, "reuse": bench_reuse}


def main(argv: list[str]) -> int:
    """`python -m tests.bench.run [SECTION ...]` — all sections when none is named."""
    wanted = argv or list(SECTIONS)
    print(f"# make bench — {time.strftime('%Y-%m-%d %H:%M')} — {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in wanted:
            print(f"## {name}", flush=True)
            SECTIONS[name](Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
