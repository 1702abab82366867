"""`make bench` section "video": RenderCAD image → video and video → GIF, through the renderers themselves.

The reference is the x264 encode floor measured in the same run: the finished clip decoded and piped as raw
frames into exactly the encode command the renderer uses (renderers/ffmpeg.raw_h264_command), so the ratio is
what the frame synthesis adds on top of an encode that cannot be avoided."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

from renderers import ffmpeg as ff
from renderers.base import NullReporter


def _product(path: Path) -> None:
    """A 1024x1024 product shot: a red body with a blue cap on a graded studio backdrop."""
    ys, xs = np.mgrid[0:1024, 0:1024]
    img = np.empty((1024, 1024, 3), np.float32)
    img[:] = (205, 208, 214)
    img *= (1 - 0.12 * ys / 1024)[..., None]
    img[((xs - 512) / 210) ** 2 + ((ys - 600) / 300) ** 2 < 1] = (30, 40, 200)
    img[(abs(xs - 512) < 50) & (ys > 230) & (ys < 320)] = (170, 60, 30)
    cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])


def _floor(src: Path, dst: Path) -> float:
    """Decode the clip to raw BGR and pipe it into the renderer's own encode command."""
    started = time.perf_counter()
    decode = subprocess.Popen(["ffmpeg", "-v", "error", "-nostdin", "-i", str(src), "-f", "rawvideo",
                               "-pix_fmt", "bgra", "pipe:1"], stdout=subprocess.PIPE)
    encode = subprocess.run(ff.raw_h264_command(dst, 1920, 1080, 30, pix_fmt="bgra"), stdin=decode.stdout,
                            capture_output=True)
    decode.wait()
    assert encode.returncode == 0 and decode.returncode == 0, encode.stderr[-500:]
    return time.perf_counter() - started


def bench_video(tmp: Path, line) -> None:
    from renderers.image import gif, video

    work = tmp / "video"
    work.mkdir()
    _product(work / "product.jpg")
    task = {"width": 1920, "height": 1080, "fps": 30, "frames": 240, "first": "product.jpg", "mode": "single",
            "style": "preserve"}
    for camera, motion in (("auto", "auto"), ("orbit", "hero-spin"), ("zoom-in", "none")):
        started = time.perf_counter()
        video.render({**task, "camera": camera, "motion": motion}, work, NullReporter())
        took = time.perf_counter() - started
        floor = _floor(work / video.OUTPUT, work / "floor.mp4")
        line(f"8 s 1080p30 video, {camera}/{motion} (goal <= 1.5x x264 floor)",
             f"{took:.2f} s = {took / floor:.2f}x the floor ({floor:.2f} s)")
    started = time.perf_counter()
    meta = gif.render({"video": video.OUTPUT, "width": 480, "fps": 15}, work, NullReporter())["meta"]
    line("GIF of that 8 s 1080p video, 480 px 15 fps (goal <= 2 s)",
         f"{time.perf_counter() - started:.2f} s ({meta['frames']} frames, {meta['size_bytes'] / 1e6:.1f} MB)")
