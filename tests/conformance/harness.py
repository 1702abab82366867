"""Render a scene twice — through POST /api/v2/render on a live appliance and through the venv's ``manim`` CLI at
the same size and frame rate — and compare the decoded results.

Pass: both complete; the videos have the same number of frames (``ffprobe -count_frames``); the frames at 25 %,
50 % and the last one agree at PSNR >= PSNR_MIN (decoded by ffmpeg to raw RGB). A still (no play()/wait()) is
compared as images: the CLI's PNG against the API's ``result.image``; the API's video holds it for 1 s.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
MANIM = Path(sys.executable).parent / "manim"
PSNR_MIN = 35.0
# result.image (lossless) against the API video's own last frame: only x264's loss at Manim's settings, which on
# fine detail at 854x480 (an SVG's edges, a 3-D mesh) measured 33-35 dB; a wrong frame scores far lower.
IMAGE_VS_VIDEO_MIN = 30.0
QUALITY = ("low", 854, 480)  # the Kodisc preset; the CLI gets the same -r W,H


@dataclass(frozen=True)
class Case:
    name: str
    cls: str
    code: str
    still: bool = False  # no play()/wait(): the CLI writes a PNG
    fast: bool = False  # part of the default pytest run
    shim: bool = False  # the plain CLI fails on it with Pillow 13 (ImageMobject): the reference applies the shim
    split: bool = False  # the appliance must plan it as parallel animation ranges (renderers/manim_split.py)


@dataclass
class Outcome:
    api_s: float
    cli_s: float
    frames: int
    psnr: list[float]


def submit(server, case: Case, fps: int) -> tuple[str, float]:
    body = {"code": case.code, "className": case.cls, "quality": QUALITY[0], "fps": fps}
    response = httpx.post(f"{server.url}/api/v2/render", json=body, headers=server.auth, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["jobId"], time.monotonic()


def finish(server, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/api/v2/render/{job_id}", headers=server.auth, timeout=30).json()
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"{job_id} did not finish in {timeout} s")


def download(url: str, path: Path) -> Path:
    response = httpx.get(url, timeout=60)
    assert response.status_code == 200, (url, response.status_code)
    path.write_bytes(response.content)
    return path


def cli_render(case: Case, workdir: Path, fps: int) -> Path:
    """The reference render; returns the CLI's video (or, for a still, its PNG)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "scene.py").write_text(case.code, encoding="utf-8")
    command = [sys.executable, "-m", "tests.conformance.manim_cli"] if case.shim else [str(MANIM)]
    command += ["render", "-r", f"{QUALITY[1]},{QUALITY[2]}", "--fps", str(fps), "--disable_caching",
                "--media_dir", "media", "-v", "WARNING", "--progress_bar", "none", "scene.py", case.cls]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"manim CLI failed on {case.name}:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
    pattern = "*.png" if case.still else "*.mp4"
    found = [p for p in (workdir / "media").rglob(pattern) if "partial_movie_files" not in p.parts]
    assert len(found) == 1, (case.name, found, proc.stderr[-2000:])
    return found[0]


def frame_count(video: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", str(video)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip().rstrip(","))


def frames_at(video: Path, indices: list[int], width: int, height: int) -> np.ndarray:
    """The frames with these indices, decoded by ffmpeg to RGB24 (one array per index, in index order)."""
    wanted = sorted(set(indices))
    select = "+".join(f"eq(n\\,{i})" for i in wanted)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-vf", f"select='{select}'",
                          "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)
    assert len(frames) == len(wanted), (video, wanted, len(frames))
    by_index = dict(zip(wanted, frames, strict=True))
    return np.stack([by_index[i] for i in indices])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def conform(server, case: Case, tmp: Path, fps: int) -> Outcome:
    """Both renders, compared; raises AssertionError with the figures when they disagree."""
    job_id, submitted = submit(server, case, fps)
    started = time.monotonic()
    reference = cli_render(case, tmp / "cli", fps)  # meanwhile the appliance renders on its own worker
    cli_s = time.monotonic() - started
    job = finish(server, job_id)
    api_s = (job["durationMs"] or 0) / 1000
    assert job["status"] == "completed", f"{case.name}: the CLI renders it, the API failed: {job['error']}"
    renderers = [task["renderer"] for task in server.job(job_id)["tasks"]]
    assert (renderers[-1] == "manim.assemble") == case.split, (case.name, renderers)
    width, height = QUALITY[1], QUALITY[2]
    video = download(job["result"]["video"], tmp / "api.mp4")
    image = download(job["result"]["image"], tmp / "api.png")
    frames = frame_count(video)
    ours = rgb(image)
    assert ours.shape == (height, width, 3)
    if case.still:
        assert frames == fps, f"{case.name}: a still holds its frame 1 s ({fps} frames), got {frames}"
        scores = [psnr(ours, rgb(reference))]
        assert scores[0] >= PSNR_MIN, f"{case.name}: still image PSNR {scores[0]:.1f} dB < {PSNR_MIN}"
        return Outcome(api_s, cli_s, frames, scores)
    theirs = frame_count(reference)
    assert frames == theirs, f"{case.name}: {frames} frames through the API, {theirs} from the CLI"
    indices = [frames // 4, frames // 2, frames - 1]
    a, b = frames_at(video, indices, width, height), frames_at(reference, indices, width, height)
    scores = [psnr(x, y) for x, y in zip(a, b, strict=True)]
    assert min(scores) >= PSNR_MIN, f"{case.name}: PSNR at frames {indices}: {[round(s, 1) for s in scores]}"
    last = psnr(ours, a[-1])  # result.image is the last frame, before the lossy encode
    assert last >= IMAGE_VS_VIDEO_MIN, f"{case.name}: result.image vs the video's last frame: {last:.1f} dB"
    return Outcome(api_s, cli_s, frames, scores)
