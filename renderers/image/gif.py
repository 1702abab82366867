"""Video → GIF (RenderCAD video.php?action=convert): one ffmpeg graph that samples the clip at a GIF-friendly
frame rate, scales it with Lanczos and dithers it against a palette generated for this very clip (palettegen /
paletteuse), so a 256-colour GIF keeps the product's colours instead of a web-safe palette's."""
from __future__ import annotations

import time
from pathlib import Path

from renderers import ffmpeg as ff
from renderers.base import RenderError

OUTPUT = "video.gif"
NOT_A_VIDEO = "The video could not be read. Convert a video made by video.php."


def render(task_input: dict, workdir, report) -> dict:
    from PIL import Image

    started = time.perf_counter()
    workdir = Path(workdir)
    width, fps = int(task_input["width"]), int(task_input["fps"])
    try:
        ff.run(ff.gif_command(workdir / task_input["video"], workdir / OUTPUT, width, fps), timeout=600)
    except ff.FfmpegError as exc:
        raise RenderError(NOT_A_VIDEO) from exc
    with Image.open(workdir / OUTPUT) as gif:
        size, frames = gif.size, getattr(gif, "n_frames", 1)
    report.log(f"image.gif {size[0]}x{size[1]} {frames} frames in {time.perf_counter() - started:.2f} s")
    report.progress(1.0, "done")
    return {"files": {"gif": OUTPUT}, "meta": {"width": size[0], "height": size[1], "frames": frames, "fps": fps,
                                               "size_bytes": (workdir / OUTPUT).stat().st_size}}
