"""The GPU figures issue #11 asks for, measured on a machine with an NVIDIA GPU (BENCHMARKS.md, "GPU figures").

    python3 scripts/gpu_figures.py [--json OUT.json] [--runs 5]

Made for the lent GPU machine, which has CUDA, CuPy, OpenCV and NumPy but neither this project's venv nor
ffmpeg nor a network: it needs only those (psutil and the appliance's settings are used when they import).
Each section reports what it could not do instead of stopping:

1. capacity: ``nvidia-smi`` as the appliance reads it, then the appliance's own probe (``resources.measure``)
   when it imports — NVENC/NVDEC are probed with ffmpeg, so without ffmpeg the reason says so;
2. the RenderCAD 4096² pro render (``renderers/image/pipeline.render``, the function the sandboxed task runs,
   JPEG included) with no GPU granted (``CUDA_VISIBLE_DEVICES=""``: the OpenCV path) and with GPU 0 granted
   (the CuPy path of ``renderers/image/gpu.py``): median seconds of ``--runs`` after one warm-up each;
3. the GPU stage alone (tone, saturation, unsharp mask: ``pipeline.finish_subject``) CPU vs GPU, and how far
   the two outputs are apart (max and mean absolute difference per channel; the stated tolerance is ±1 level
   for the stage and ±2 for the whole chain).

``--xp numpy`` stands NumPy in for CuPy (no GPU needed): checks the script itself on a machine without one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def section(name: str, figures: dict, fn) -> None:
    try:
        figures[name] = fn()
    except Exception as exc:  # noqa: BLE001 - report it and go on with the next section
        figures[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"{name}: {json.dumps(figures[name], indent=1)}", flush=True)


def capacity() -> dict:
    found: dict = {}
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        found["nvidia_smi"] = out.stdout.strip().splitlines() or out.stderr.strip()
    else:
        found["nvidia_smi"] = "nvidia-smi not found"
    found["ffmpeg"] = shutil.which("ffmpeg") or "not found: NVENC/NVDEC cannot be probed with ffmpeg here"
    try:
        from appliance import settings
        from appliance.runtime import resources

        cap = resources.measure(settings.load(environ={}))
        found["appliance"] = [g.describe() for g in cap.gpus] or "no GPU detected"
    except Exception as exc:  # noqa: BLE001 - psutil or the settings' dependencies missing on this machine
        found["appliance"] = f"the appliance's probe did not import: {type(exc).__name__}: {exc}"
    return found


def photo(side: int) -> bytes:
    """A product shot like the tests' (a red disc with a blue cap on a graded backdrop), as a JPEG."""
    import cv2
    import numpy as np

    ys, xs = np.mgrid[0:side, 0:side]
    img = np.empty((side, side, 3), np.float32)
    img[:] = (235, 232, 226)
    img *= (1 - 0.08 * ys / side)[..., None]
    img[((xs - side / 2) / (side * 0.2)) ** 2 + ((ys - side * 0.6) / (side * 0.28)) ** 2 < 1] = (200, 30, 40)
    img[(abs(xs - side / 2) < side * 0.05) & (ys > side * 0.22) & (ys < side * 0.36)] = (30, 60, 200)
    img += np.random.default_rng(1).normal(0, 2.5, img.shape)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


class Report:
    """What renderers report (progress, log lines); kept quiet here."""

    def progress(self, fraction: float, phase: str | None = None) -> None:
        pass

    def log(self, text: str) -> None:
        pass


def timed(fn, runs: int) -> tuple[float, object]:
    result = fn()  # warm-up: CUDA context, kernels compiled, OpenCV tables
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def granted(gpu: str):
    """The task's environment as the sandbox sets it: the granted GPU's index, or empty for none."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"


def render_4k(runs: int) -> dict:
    import cv2

    from renderers.image import pipeline

    work = Path(tempfile.mkdtemp(prefix="gpu-figures-"))
    (work / "input.jpg").write_bytes(photo(3000))
    task = {"model": "pro", "render_mode": "auto", "background_style": "studio_white", "condition": "auto",
            "size": 4096, "input": "input.jpg"}
    out: dict = {"cv2_threads": cv2.getNumThreads(), "cpu_count": os.cpu_count()}
    images = {}
    for label, gpu in (("cpu", ""), ("gpu", "0")):
        granted(gpu)
        seconds, _ = timed(lambda: pipeline.render(task, work, Report()), runs)
        out[f"{label}_s"] = round(seconds, 3)
        images[label] = cv2.imread(str(work / pipeline.OUTPUT))
    out["speedup"] = round(out["cpu_s"] / out["gpu_s"], 2)
    out.update(_difference(images["cpu"], images["gpu"], "jpeg_"))
    shutil.rmtree(work, ignore_errors=True)
    return out


def stage(runs: int) -> dict:
    """pipeline.finish_subject alone: the part that runs on CuPy."""
    import cv2
    import numpy as np

    from renderers.image import instructions, pipeline

    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(photo(4096), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    settings = {"model": "pro", "condition": "auto"}
    adjust = instructions.Adjust()
    out: dict = {}
    results = {}
    for label, gpu in (("cpu", ""), ("gpu", "0")):
        granted(gpu)
        seconds, result = timed(lambda: pipeline.finish_subject(rgb, alpha, settings, 1.0, adjust), runs)
        out[f"{label}_s"] = round(seconds, 4)
        results[label] = result[0] if isinstance(result, tuple) else result
    out["speedup"] = round(out["cpu_s"] / out["gpu_s"], 2)
    out.update(_difference(results["cpu"], results["gpu"], ""))
    return out


def _difference(a, b, prefix: str) -> dict:
    import numpy as np

    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {f"{prefix}max_abs_diff": int(diff.max()), f"{prefix}mean_abs_diff": round(float(diff.mean()), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--xp", choices=("cupy", "numpy"), default="cupy",
                        help="numpy: stand NumPy in for CuPy, to check this script without a GPU")
    args = parser.parse_args()
    if args.xp == "numpy":
        import numpy

        from renderers.image import gpu

        numpy.asnumpy = numpy.asarray  # CuPy's download; NumPy has none
        gpu.backend = lambda: numpy if os.environ.get("CUDA_VISIBLE_DEVICES") else None
    figures: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": sys.version.split()[0],
                     "xp": args.xp}
    try:
        import cupy

        figures["cupy"] = f"{cupy.__version__}, {cupy.cuda.runtime.getDeviceCount()} device(s)"
    except Exception as exc:  # noqa: BLE001
        figures["cupy"] = f"not usable: {type(exc).__name__}: {exc}"
    print(f"cupy: {figures['cupy']}", flush=True)
    section("capacity", figures, capacity)
    section("render_4096_pro", figures, lambda: render_4k(args.runs))
    section("gpu_stage_4096", figures, lambda: stage(args.runs))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
