"""What the live stream (renderers/manim_live.py) costs a Manim render: the same 20-animation scene at medium
quality (854x480, 30 fps, 600 frames) rendered in fresh renderer processes, alternately with the live stream and
without it (patched out), N times each; prints each run's wall and CPU seconds, the medians, and the CPU the live
muxer itself measured (``muxMs`` in its index, CPU time of whichever thread fed it).

    .venv/bin/python scripts/live_cost.py [N]
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENE = '''from manim import *

class Demo(Scene):
    def construct(self):
        colours = [RED, GREEN, BLUE, YELLOW, PINK, TEAL, ORANGE, PURPLE, WHITE]
        shapes = VGroup(*[Square(0.5, color=c).shift(RIGHT * (i - 4)) for i, c in enumerate(colours)])
        self.play(Create(shapes))
        for i in range(19):
            self.play(shapes[i % 9].animate.shift(UP * (1 if i % 2 else -1)).rotate(0.5),
                      Write(Text(str(i)).to_edge(DOWN)), run_time=1)
'''
OFF = ("import renderers.manim_scene as scene\n_init = scene._SceneEncoder.__init__\n"
       "scene._SceneEncoder.__init__ = lambda self, writer, path, stream=None: _init(self, writer, path, None)\n"
       "scene.live.LiveStream.__init__ = lambda self, *args, **kwargs: None")


def run(folder: Path, patch: str) -> tuple[float, float, float | None]:
    work = folder / "work"
    (work / "tmp").mkdir(parents=True)
    (folder / "input.json").write_text(json.dumps({"code": SCENE, "className": "Demo", "width": 854, "height": 480,
                                                   "fps": 30}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(work), "TMPDIR": str(work / "tmp"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    program = f"import sys\n{patch}\nfrom renderers.__main__ import main\nsys.exit(main(sys.argv[1:]))"
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", program, "manim", "input.json", "work"], cwd=folder, env=env,
                          capture_output=True, text=True)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    if not proc.stdout or json.loads(proc.stdout.splitlines()[-1])["type"] != "result":
        raise SystemExit(proc.stderr[-3000:])
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    index = work / "live" / "index.json"
    return wall, cpu, json.loads(index.read_text())["muxMs"] if index.exists() else None


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    root = Path(tempfile.mkdtemp(prefix="live-cost-"))
    got: dict[str, list[tuple[float, float, float | None]]] = {"off": [], "on": []}
    try:
        for i in range(runs):
            for mode in ("off", "on"):
                got[mode].append(run(root / f"{mode}{i}", OFF if mode == "off" else ""))
                wall, cpu, mux = got[mode][-1]
                print(f"{mode}: wall {wall:.2f} s, cpu {cpu:.2f} s" + (f", live muxer {mux:.0f} ms CPU" if mux else ""),
                      flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cpu = {mode: statistics.median(r[1] for r in got[mode]) for mode in got}
    mux = statistics.median(r[2] or 0.0 for r in got["on"])
    print(f"median CPU: live {cpu['on']:.2f} s, without {cpu['off']:.2f} s ({cpu['on'] / cpu['off'] - 1:+.1%}); "
          f"the live muxer's own CPU {mux:.0f} ms ({mux / 1000 / cpu['on']:.1%} of the render)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
