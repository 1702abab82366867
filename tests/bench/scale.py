"""`make bench` scale section: a 12-scene 1080p movie on the local executor vs a Dask cluster of local workers.

Three runs of the same movie, each on a fresh data dir (no scene cache): the local executor with 2 CPU slots,
a Dask cluster of 1 worker (CPU=1) and of 2 workers (CPU=1 each), all on this machine. The model, per movie
of S scenes on W workers that each run one scene at a time:
    T(S, W) = p + ceil(S / W) * (s + x) + a(S)
p: planning and the first dispatch (submit -> the first scene started); s: one scene's render on a worker;
x: moving one scene's video to the appliance and checking it (for the local executor: taking in a hard link);
a(S): the assembly, which copies S scenes' streams (linear in S, small). p, s + x and a are read from the
1-worker run's own task timestamps; the model then predicts the two 2-way runs, compared with the measured.
"""
from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from appliance.store.db import parse_iso
from tests.conftest import ROOT, Server, free_port

SCENES, SECONDS, FPS = 12, 2, 30


def _line(name: str, value: str) -> None:
    print(f"{name:<58} {value}", flush=True)


def _movie() -> dict:
    scenes = [{"id": f"scale_{i}", "duration": SECONDS, "bgColor": f"#{(i * 20) % 256:02x}3050", "layers": [
        {"id": "title", "type": "text", "text": f"Scene {i + 1} of {SCENES}", "startTime": 0, "duration": SECONDS,
         "position": {"x": 160, "y": 420}, "size": {"width": 1600, "height": 200}, "fontSize": 120,
         "fontWeight": "bold", "color": "#ffffff", "textAlign": "center", "transform": {"opacity": 0.95}}]}
        for i in range(SCENES)]
    return {"width": 1920, "height": 1080, "fps": FPS, "scenes": scenes}


class _Cluster:
    """`dask scheduler` and N `appliance worker` processes on loopback."""

    def __init__(self, root: Path, workers: int) -> None:
        self.address = f"tcp://127.0.0.1:{free_port()}"
        log = open(root / "dask.log", "ab")
        self.procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                        "--port", self.address.rsplit(":", 1)[1], "--no-dashboard"],
                                       cwd=ROOT, stdout=log, stderr=log)]
        for n in range(workers):
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "appliance.cli", "worker", "--scheduler", self.address, "--name", f"w{n}",
                 "--resources", "CPU=1,MEM=4000", "--nthreads", "1", "--worker-dir", str(root / f"w{n}"),
                 "--host", "127.0.0.1", "--no-nanny"], cwd=ROOT, stdout=log, stderr=log))
        from distributed import Client

        with Client(self.address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:  # a Dask worker stopping as its scheduler does once hung in distributed's close (CancelledError)
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _run(root: Path, env: dict) -> dict:
    """One movie on a fresh server: the makespan and the task timings it stored."""
    root.mkdir()
    server = Server(root, {"APPLIANCE_PRELOAD": "numpy,PIL,renderers.movie.compose,renderers.movie.assemble", **env})
    server.start()
    try:
        server.cli("users", "create", "bench")
        sent = time.time()
        job = server.wait(server.submit("bench", movie=_movie()), timeout=1800)
        took = time.time() - sent
    finally:
        server.stop()
    if job["status"] != "completed":
        raise RuntimeError(f"scale bench: the movie did not complete: {job['error']}")
    tasks = job["tasks"]
    scenes = [t for t in tasks if t["renderer"] == "movie.scene"]
    assemble = next(t for t in tasks if t["renderer"] == "movie.assemble")
    span = [parse_iso(t["finishedAt"]) - parse_iso(t["startedAt"]) for t in scenes]
    first = min(parse_iso(t["startedAt"]) for t in scenes)
    return {"T": took, "p": first - sent, "s": statistics.median(span),
            "a": parse_iso(assemble["finishedAt"]) - parse_iso(assemble["startedAt"])}


def _predict(fit: dict, workers: int) -> float:
    return fit["p"] + math.ceil(SCENES / workers) * fit["s"] + fit["a"]


def bench_scale(tmp: Path) -> None:
    label = f"{SCENES} x {SECONDS} s scenes at 1080p{FPS}"
    local = _run(tmp / "scale_local", {"APPLIANCE_CPU_SLOTS": "2"})
    _line(f"{label}, local executor, 2 slots", f"{local['T']:.1f} s (scene {local['s']:.2f} s median)")
    measured: dict[int, dict] = {}
    for workers in (1, 2):
        (tmp / f"cluster{workers}").mkdir()
        cluster = _Cluster(tmp / f"cluster{workers}", workers)
        try:
            measured[workers] = _run(tmp / f"scale_dask{workers}", {
                "APPLIANCE_EXECUTOR": "dask", "APPLIANCE_DASK_SCHEDULER": cluster.address})
        finally:
            cluster.close()
        m = measured[workers]
        _line(f"{label}, Dask, {workers} worker(s) x CPU=1", f"{m['T']:.1f} s (scene {m['s']:.2f} s median, "
              f"first dispatch {m['p']:.2f} s, assembly {m['a']:.2f} s)")
    fit = measured[1]
    _line("model fitted on 1 worker: p + ceil(S/W)*(s+x) + a", f"p={fit['p']:.2f} s, s+x={fit['s']:.2f} s, "
          f"a={fit['a']:.2f} s")
    for name, actual in (("Dask, 2 workers", measured[2]["T"]), ("local, 2 slots", local["T"])):
        predicted = _predict(fit, 2)
        _line(f"model vs measured, {name}", f"{predicted:.1f} s predicted, {actual:.1f} s measured "
              f"({(actual - predicted) / predicted * 100:+.0f} %)")
    for workers in (4, 8):
        _line(f"model, {SCENES} scenes on {workers} workers (1 scene each at a time)",
              f"{_predict(fit, workers):.1f} s")
    _line("speed-up of 2 Dask workers over 1", f"{measured[1]['T'] / measured[2]['T']:.2f} x "
          f"({os.cpu_count()} CPUs on this machine, shared by both workers)")
