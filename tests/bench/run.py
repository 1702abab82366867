"""`make bench`: measured, never asserted. Prints ratios against references measured in the same run."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from appliance.store.db import parse_iso
from tests.bench.movie import bench_movie
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
             f" (+ warm worker {_children_rss(server.proc.pid):.0f} MB)")
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
    return sum(c.memory_info().rss for c in psutil.Process(pid).children(recursive=True)) / 2**20


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
        server.cli("users", "create", "bench", "--credits", "100000")
        auth = {"Authorization": f"Bearer {server.new_key('bench', 'kodisc')['key']}"}
        clis = [_cli_render(Path(tempfile.mkdtemp(dir=tmp))) for _ in range(3)]
        cli_s = statistics.median(clis)
        line("manim CLI render, HelloKodisc medium (reference)", f"{cli_s:.2f} s (runs {_runs(clis)})")
        # a comment per run defeats the content cache without changing what is rendered
        apis = [_api_render(server, auth, HELLO + f"# run {i}\n") for i in range(3)]
        api_s = statistics.median(apis)
        line("API submit->completed / CLI (goal <= 0.6)", f"{api_s:.2f} s -> {api_s / cli_s:.2f} (runs {_runs(apis)})")
        cached_s = _api_render(server, auth, HELLO + "# run 0\n")
        line("cached resubmit / CLI (goal <= 0.1)", f"{cached_s:.2f} s -> {cached_s / cli_s:.3f}")
        started = time.time()
        variants = [HELLO.replace("Hello, Kodisc", f"Hello {i}") for i in range(8)]
        _api_many(server, auth, variants)
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


SECTIONS = {"core": bench_core, "kodisc": bench_kodisc, "movie": bench_movie}


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
