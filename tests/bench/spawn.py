"""`make bench` section `spawn`: what the sandboxed executor itself costs a task.

A no-op task (``test.noop``) through a ``LocalExecutor`` with the default preload (Manim, OpenCV, …: the warm
worker every real task is forked from) and the full sandbox: submit → exit message, median of 30 in a row. No
server, no HTTP, no scheduler: the fork(s), cgroup, namespaces, seccomp, teardown and stage-out of one task.
"""
from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

from appliance.runtime.executors.base import TaskSpec
from appliance.runtime.executors.local import LocalExecutor
from appliance.runtime.sandbox import Limits
from appliance.settings import Settings

RUNS = 30


def bench_spawn(tmp: Path, line) -> None:
    executor = LocalExecutor(preload=Settings().preload, sandbox=True, data_dir=tmp / "spawn")
    executor.start()
    try:
        limits = Limits(cpu_seconds=60, mem_mb=1024, wall_seconds=60, disk_mb=512, log_mb=8)
        took, returned = [], []
        for i in range(RUNS):
            done = threading.Event()
            exits: list[dict] = []

            def on_message(message: dict, exits=exits, done=done) -> None:
                if message.get("type") == "exit":
                    exits.append(message)
                    done.set()
            started = time.perf_counter()
            executor.submit(TaskSpec(task_id=f"noop{i}", renderer="test.noop", input={}, limits=limits), on_message)
            returned.append(time.perf_counter() - started)
            done.wait(60)
            took.append(time.perf_counter() - started)
            assert exits and exits[0]["ok"], exits
        line(f"no-op task, executor submit -> exit, median of {RUNS}",
             f"{statistics.median(took) * 1000:.1f} ms (submit returns after {statistics.median(returned) * 1000:.1f}"
             f" ms; {executor.mechanism.split(' + ')[0]}; preload {executor.ready.get('preload_s', 0):.1f} s)")
    finally:
        executor.stop()
