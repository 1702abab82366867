"""What a warm model worker would save (issue #23): seconds from a model task's start to the end of its first
denoising step, for a task forked from a parent that has (cold) nothing of the model's stack, (imports) torch,
diffusers and transformers imported, as a GPU box's warm parent would have (CUDA cannot survive a fork, so the
task loads the weights itself), (warm) the imports and the pipeline loaded on the CPU.

Each run is a fork of this script's process at the stage it has reached, as a task is a fork of the zygote: the
parent imports numpy and Pillow first (the zygote's preload), so ``cold`` is today's task. The child runs the
renderer's own functions (renderers/image/img2img.py: load, generate with its first-step timer) on the tiny
test pipeline (tests/tiny_diffusers.py, built in a subprocess so this parent starts without torch), with the
thread caps every task has. It also reports the parent's RSS at each stage (what the warm parent would hold)
and how many threads it has when it forks (forking is safe while that stays 1: the parent keeps onnxruntime
out, which diffusers imports when it can and which starts a thread).

    .venv/bin/python scripts/model_warm_figures.py [--runs 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
THREAD_CAPS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",  # as childenv.py
               "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
CHILD_TIMEOUT_S = 300  # a deadlock after fork would show as this


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def one_task(folder: Path, warm: tuple | None) -> dict:
    """What a task does, timed from its start: import the stack, load the pipeline (unless ``warm`` is one),
    run 4 steps at strength 0.55 (2 UNet steps) on a 96 px picture."""
    started = time.perf_counter()
    import diffusers  # noqa: F401
    import torch

    from renderers.image import img2img
    from renderers.image.onnx_models import test_picture

    torch.set_num_threads(1)
    imported = time.perf_counter()
    pipe, cls_name = warm if warm is not None else img2img.load(folder, "cpu")
    loaded = time.perf_counter()
    _, meta = img2img.generate(pipe, cls_name, test_picture(96), "make it red", 0.55, 4, 7.5, 0,
                               img2img.native_side(pipe), since=started)
    return {"import_s": imported - started, "load_s": loaded - imported, "first_step_s": meta["first_step_s"],
            "total_s": time.perf_counter() - started, "child_rss_mb": rss_mb(),
            "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}


def forked(folder: Path, warm: tuple | None) -> dict:
    """``one_task`` in a fork of this process; its figures over a pipe."""
    read, write = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        signal.alarm(CHILD_TIMEOUT_S)
        try:
            data = json.dumps(one_task(folder, warm)).encode()
        except BaseException as exc:  # noqa: BLE001 - reported, not raised, in the child
            data = json.dumps({"error": repr(exc)}).encode()
        os.write(write, data)
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    got = json.loads(b"".join(chunks) or b'{"error": "no answer"}')
    if status != 0 or "error" in got:
        raise SystemExit(f"the forked task failed (status {status}): {got}")
    return got


def stage(name: str, folder: Path, warm: tuple | None, runs: int) -> dict:
    parent = {"parent_rss_mb": round(rss_mb(), 1), "parent_threads_at_fork": threads()}
    samples = [forked(folder, warm) for _ in range(runs)]
    figures = {k: round(statistics.median(s[k] for s in samples), 3) for k in samples[0]}
    return {"stage": name, **parent, **figures, "first_step_all": [round(s["first_step_s"], 3) for s in samples]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.update(THREAD_CAPS)
    import numpy  # noqa: F401 - the zygote's preload: every task starts with these
    import PIL.Image  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="warm-figures-") as tmp:
        folder = Path(tmp) / "tiny-sd"
        subprocess.run([sys.executable, "-c", f"from pathlib import Path; from tests import tiny_diffusers as td; "
                        f"td.build(Path({str(folder)!r}), 'sd')"], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        results = [stage("cold", folder, None, args.runs)]
        sys.modules["onnxruntime"] = None  # type: ignore[assignment] # diffusers would import it: a thread
        started = time.perf_counter()
        from renderers.image import img2img

        img2img.preload()
        import_s = time.perf_counter() - started
        results.append({**stage("imports", folder, None, args.runs), "parent_prepare_s": round(import_s, 3)})

        started = time.perf_counter()
        warm = img2img.load(folder, "cpu")
        load_s = time.perf_counter() - started
        results.append({**stage("warm", folder, warm, args.runs), "parent_prepare_s": round(load_s, 3)})
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'stage':8} {'first step s':>12} {'import s':>9} {'load s':>7} {'task CPU s':>10} {'parent RSS MB':>13} "
          f"{'threads':>7}")
    for r in results:
        print(f"{r['stage']:8} {r['first_step_s']:12.3f} {r['import_s']:9.3f} {r['load_s']:7.3f} {r['cpu_s']:10.2f} "
              f"{r['parent_rss_mb']:13.0f} {r['parent_threads_at_fork']:7d}")


if __name__ == "__main__":
    main()
