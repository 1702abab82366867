"""Calibrate the split model's constants (renderers/manim_split_model.py) on this box.

``.venv/bin/python -m tests.bench.split_calibrate`` — prints each constant as measured here; the model's values
are these, rounded. Every figure is the CPU time (user + system, all threads) of a task run in a child forked
from a process that has imported Manim (as the warm worker does), the median of RUNS: CPU time, not wall time,
so that other work on the box moves the figures little.

- START_S: a 1-frame scene (the fork, the scene code, ``Scene()``, one frame, the outputs);
- DRAW_S_FRAME, DRAW_S_MPX: the bench's 24-animation scene drawn with the encoder switched off, at two sizes
  (the fit of CPU seconds per frame against megapixels: a fixed part, the Python around each frame, and a part
  per megapixel, cairo's);
- ENCODE_S_FRAME, ENCODE_S_MPX: the same scene with the encoder on, less the draw-only run, fitted the same way
  (x264; its CPU time over all its threads);
- FROZEN_ENCODE: the scene's mobjects held by one static ``wait`` of as many frames (one frame drawn, then
  encoded as repeats), less START_S and one frame's draw, over the encode of as many drawn frames;
- REPLAY_S: the plan task on that scene (every animation fast-forwarded, nothing drawn) less START_S, per
  animation;
- PARALLELISM: the scene rendered whole on every core of the idle box: its CPU seconds over its wall seconds
  (both less START_S): the cores one render keeps busy;
- SHARED: two halves of the scene (12 animations each) rendered side by side: their solo CPU seconds over the
  wall seconds they took together and the cores each was given (cores / 2);
- OVERHEAD: the scene through the appliance (a server on a fresh data dir, the Kodisc API, never split): the
  task's wall seconds over the bare render's (both less START_S).

PARALLELISM, SHARED and OVERHEAD are wall-time figures: run this on an idle box.

START_S, HOP_S and ASSEMBLE_S are wall times of the appliance's own tasks, the medians that ``make bench``'s split
section prints ("task start", "hop", "assemble") when the box is quiet: they are the sandbox, the verifier and the
scheduler more than CPU work.
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.bench.split import LONG

RUNS = 3
SIZES = ((1280, 720), (640, 360))
FPS = 30
ANIMATIONS = 24
FRAMES = 24 * 15  # 24 animations of 0.5 s at 30 fps


class _Quiet:
    def progress(self, *_: object, **__: object) -> None: ...

    def log(self, *_: object, **__: object) -> None: ...


def _cpu(run: Callable[[Path], None], root: Path) -> float:
    """CPU seconds of ``run`` in a forked child (its own workdir)."""
    work = Path(tempfile.mkdtemp(dir=root))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            run(work)
        except BaseException:  # noqa: BLE001 - report by exit status
            code = 1
        os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    shutil.rmtree(work, ignore_errors=True)
    assert status == 0, f"calibration run failed ({status})"
    return usage.ru_utime + usage.ru_stime


def _median(run: Callable[[Path], None], root: Path) -> float:
    return statistics.median(_cpu(run, root) for _ in range(RUNS))


def _side_by_side(runs: list[Callable[[Path], None]], root: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``runs`` in forked children started together."""
    started, pids, cpu = time.monotonic(), [], 0.0
    for run in runs:
        work = Path(tempfile.mkdtemp(dir=root))
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                run(work)
            except BaseException:  # noqa: BLE001 - report by exit status
                code = 1
            os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status, usage = os.wait4(pid, 0)
        assert status == 0, f"calibration run failed ({status})"
        cpu += usage.ru_utime + usage.ru_stime
    return time.monotonic() - started, cpu


def _wall_median(runs: list[Callable[[Path], None]], root: Path) -> tuple[float, float]:
    results = [_side_by_side(runs, root) for _ in range(RUNS)]
    return statistics.median(w for w, _ in results), statistics.median(c for _, c in results)


def _appliance_task_s(root: Path) -> float:
    """The median wall seconds of the scene's one task through a real appliance, never split."""
    from tests.bench.split import _render, _start

    server, auth = _start(root, "appliance", "1")
    try:
        return statistics.median(_render(server, auth, LONG + f"# run {i}\n")[1][0]["s"] for i in range(RUNS))
    finally:
        server.stop()


def main() -> int:
    import logging

    import manim  # noqa: F401 - preloaded, as in the warm worker

    from renderers import manim_scene, manim_split

    logging.getLogger("httpx").setLevel(logging.WARNING)  # else manim's rich handler prints every poll
    quiet = _Quiet()

    def scene(width: int, height: int, code: str = LONG) -> dict:
        return {"code": code, "className": "Long", "width": width, "height": height, "fps": FPS}

    def whole(task: dict) -> Callable[[Path], None]:
        return lambda work: manim_scene.render(task, work, quiet)

    def draw_only(task: dict) -> Callable[[Path], None]:
        def run(work: Path) -> None:
            def discard(self: manim_scene._SceneEncoder, pixels: object, *, repeat: int = 1) -> None:
                self.frames += repeat
            manim_scene._SceneEncoder.write_frame = discard  # type: ignore[method-assign]
            manim_scene.render(task, work, quiet)
        return run

    tiny = "from manim import *\n\nclass Long(Scene):\n    def construct(self):\n        self.wait(1 / 30)\n"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = _median(whole(scene(1280, 720, tiny)), root)
        print(f"start        {start:.3f} s of CPU (a 1-frame scene, 1280x720)")
        per_frame = {}
        for width, height in SIZES:
            task = scene(width, height)
            draw = (_median(draw_only(task), root) - start) / FRAMES
            full = (_median(whole(task), root) - start) / FRAMES
            per_frame[(width, height)] = (draw, full - draw)
            print(f"{width}x{height}: draw {draw * 1000:.2f} ms/frame, encode {(full - draw) * 1000:.2f} ms/frame")
        (w1, h1), (w2, h2) = SIZES
        mpx1, mpx2 = w1 * h1 / 1e6, w2 * h2 / 1e6
        slope = (per_frame[SIZES[0]][0] - per_frame[SIZES[1]][0]) / (mpx1 - mpx2)
        print(f"DRAW_S_FRAME {per_frame[SIZES[1]][0] - slope * mpx2:.5f}")
        print(f"DRAW_S_MPX   {slope:.5f}")
        encode = (per_frame[SIZES[0]][1] - per_frame[SIZES[1]][1]) / (mpx1 - mpx2)
        print(f"ENCODE_S_FRAME {per_frame[SIZES[1]][1] - encode * mpx2:.5f}")
        print(f"ENCODE_S_MPX {encode:.5f}")
        frozen_code = LONG.split("        for i in")[0] + f"        self.wait({FRAMES / FPS})\n"
        frozen = (_median(whole(scene(1280, 720, frozen_code)), root) - start) / FRAMES
        print(f"FROZEN_ENCODE {(frozen - per_frame[SIZES[0]][0] / FRAMES) / per_frame[SIZES[0]][1]:.3f}  "
              f"({frozen * 1000:.2f} ms a frozen frame at 1280x720)")
        split = {"split": {"workers": 1, "minAnimations": 2, "cores": 1}}
        plan = _median(lambda work: manim_split.plan({**scene(1280, 720), **split}, work, quiet), root)
        print(f"REPLAY_S     {(plan - start) / ANIMATIONS:.5f}  (plan {plan:.3f} s for {ANIMATIONS} animations)")
        cores = os.cpu_count() or 1
        wall, cpu = _wall_median([whole(scene(1280, 720))], root)
        print(f"PARALLELISM  {(cpu - start) / (wall - start):.3f}  (whole on {cores} cores: {wall:.2f} s wall, "
              f"{cpu:.2f} s CPU)")
        half = scene(1280, 720, LONG.replace(f"range({ANIMATIONS})", f"range({ANIMATIONS // 2})"))
        solo = _median(whole(half), root)
        together, _ = _wall_median([whole(half), whole(half)], root)
        print(f"SHARED       {(solo - start) / (together - start) / (cores / 2):.3f}  (two halves side by side: "
              f"{together:.2f} s wall; one alone {solo:.2f} s CPU)")
        task = _appliance_task_s(root)
        print(f"OVERHEAD     {(task - start) / (wall - start):.3f}  (the appliance's task {task:.2f} s, the bare "
              f"render {wall:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
