"""Media for the movie renderer's tests, made with ffmpeg on the spot, and helpers that read rendered frames back.

- ``ramp_clip``: grey video whose brightness rises with its own time (Y = 30 + 50 t), so a decoded pixel tells which
  source time a layer showed at a given scene time; ``source_level`` reads the same level from the clip itself.
- ``alpha_clip``: a red left half over a fully transparent right half, in one of ``ALPHA_FORMATS`` (VP9/VP8 WebM
  with alpha, ProRes 4444, PNG and QuickTime Animation in MOV, animated GIF, APNG and animated WebP).
- ``tone``: a sine tone; ``serve``: a folder over local HTTP (what the server fetches media from in the API tests).
"""
from __future__ import annotations

import functools
import http.server
import math
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

RED_HALF = "geq=r='255':g='0':b='0':a='if(lt(X,W/2),255,0)'"  # on rgba: red left half, transparent right half

# name -> (file name, ffmpeg output arguments for an rgba source)
ALPHA_FORMATS: dict[str, tuple[str, list[str]]] = {
    "vp9-webm": ("alpha_vp9.webm", ["-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p", "-b:v", "1M"]),
    "vp8-webm": ("alpha_vp8.webm", ["-c:v", "libvpx", "-pix_fmt", "yuva420p", "-auto-alt-ref", "0", "-b:v", "1M"]),
    "prores-4444": ("alpha_prores.mov", ["-c:v", "prores_ks", "-profile:v", "4444", "-pix_fmt", "yuva444p10le"]),
    "png-mov": ("alpha_png.mov", ["-c:v", "png", "-pix_fmt", "rgba"]),
    "qtrle-mov": ("alpha_qtrle.mov", ["-c:v", "qtrle", "-pix_fmt", "argb"]),
    "gif": ("alpha.gif", ["-filter_complex", "[0:v]split[a][b];[a]palettegen=reserve_transparent=1[p];"
                          "[b][p]paletteuse=alpha_threshold=128", "-gifflags", "-transdiff"]),
    "apng": ("alpha.png", ["-c:v", "apng", "-pix_fmt", "rgba", "-plays", "0", "-f", "apng"]),
    "webp-animated": ("alpha.webp", []),  # ffmpeg cannot write (or read) animated WebP: drawn with Pillow
}


def ffmpeg(out: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args, str(out)], check=True)
    return out


def ramp_clip(out: Path, *, rate: int = 25, seconds: float = 4, size: str = "320x180", audio: bool = False) -> Path:
    """H.264 grey frames with Y = 30 + 50 t (t: the clip's own time), optionally with a 500 Hz tone."""
    video = f"color=c=black:s={size}:r={rate}:d={seconds},format=yuv420p,geq=lum='30+50*T':cb=128:cr=128"
    sound = ["-f", "lavfi", "-i", f"sine=frequency=500:sample_rate=48000:duration={seconds}", "-c:a", "aac"]
    return ffmpeg(out, "-f", "lavfi", "-i", video, *(sound if audio else []), "-c:v", "libx264", "-preset",
                  "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p", "-g", "1")


def alpha_clip(folder: Path, kind: str, *, size: str = "160x90", rate: int = 10, seconds: float = 2) -> Path:
    name, codec = ALPHA_FORMATS[kind]
    if kind == "webp-animated":
        from PIL import Image

        width, height = (int(v) for v in size.split("x"))
        pictures = []
        for index in range(round(seconds * rate)):
            picture = Image.new("RGBA", (width, height), (0, 0, 0, 0))
            picture.paste((255, 0, 0, 255), (0, 0, width // 2, height))
            picture.putpixel((index % width, 0), (255, 0, 0, 254))  # frames differ, so none is merged away
            pictures.append(picture)
        pictures[0].save(folder / name, save_all=True, append_images=pictures[1:], duration=round(1000 / rate),
                         loop=0, lossless=True)
        return folder / name
    source = f"color=c=red:s={size}:r={rate}:d={seconds},format=rgba,{RED_HALF}"
    return ffmpeg(folder / name, "-f", "lavfi", "-i", source, *codec)


def tone(out: Path, *, seconds: float = 6, frequency: int = 500) -> Path:
    return ffmpeg(out, "-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate=48000:duration={seconds}",
                  "-c:a", "aac")


def frames(path: Path) -> np.ndarray:
    """Every frame of a video as RGB: frames x height x width x 3."""
    info = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                           "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    width, height = (int(v) for v in info.strip().split(",")[:2])
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def at(video: np.ndarray, seconds: float, fps: int) -> np.ndarray:
    return video[min(round(seconds * fps), len(video) - 1)]


@functools.cache
def _source_levels(path: str) -> np.ndarray:
    return frames(Path(path)).mean(axis=(1, 2, 3))


def source_level(path: Path, seconds: float, rate: int) -> float:
    """The mean brightness of the clip's frame shown at its own time ``seconds``."""
    levels = _source_levels(str(path))
    return float(levels[min(int(math.floor(seconds * rate + 1e-6)), len(levels) - 1)])


def rms_db(path: Path, start: float, end: float) -> float:
    """The level of a file's audio between two times, in dBFS."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-ss", str(start), "-t", str(end - start), "-i", str(path),
                          "-f", "f32le", "-ac", "1", "-ar", "48000", "-"], capture_output=True, check=True).stdout
    samples = np.frombuffer(raw, np.float32).astype(np.float64)
    return 20 * math.log10(max(float(np.sqrt(np.mean(samples ** 2))) if len(samples) else 0.0, 1e-10))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve a folder over HTTP on 127.0.0.1; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
