"""The one place that builds and runs ffmpeg/ffprobe commands (via ffmpeg-python where it helps).

Shared by every renderer: add functions here rather than calling ffmpeg elsewhere.
A failed command raises FfmpegError carrying the command line and the tail of stderr.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import ffmpeg  # ffmpeg-python


class FfmpegError(Exception):
    def __init__(self, cmd: list[str], stderr: str) -> None:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        super().__init__(f"ffmpeg failed: {' '.join(cmd[:12])}{' …' if len(cmd) > 12 else ''}\n{tail}")
        self.cmd = cmd
        self.stderr = stderr


def run(cmd: list[str], timeout: float | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise FfmpegError(cmd, proc.stderr)


def run_stream(stream, overwrite: bool = True) -> None:
    """Run an ffmpeg-python stream graph, raising FfmpegError with its stderr."""
    cmd = ffmpeg.compile(stream, overwrite_output=overwrite)
    run(["ffmpeg", "-hide_banner", "-nostdin", *cmd[1:]])


def probe(path: str | Path) -> dict:
    """ffprobe a media file: {"duration", "streams": [...], "format": {...}} as ffprobe reports."""
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
           "-count_frames", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FfmpegError(cmd, proc.stderr)
    return json.loads(proc.stdout)


def video_stream(info: dict) -> dict | None:
    return next((s for s in info.get("streams", []) if s.get("codec_type") == "video"), None)


def remux_faststart(src: Path, dst: Path) -> None:
    """Copy streams into an MP4 with the moov atom first (progressive playback over HTTP)."""
    run(["ffmpeg", "-hide_banner", "-nostdin", "-y", "-i", str(src), "-c", "copy",
         "-movflags", "+faststart", str(dst)])


def extract_last_frame(src: Path, dst: Path) -> None:
    """Write the last video frame of src as a JPEG (thumbnail)."""
    run(["ffmpeg", "-hide_banner", "-nostdin", "-y", "-sseof", "-0.5", "-i", str(src),
         "-update", "1", "-q:v", "3", str(dst)])


def _rate(text: str) -> float:
    """An ffprobe rate such as "30/1" or "0/0" as a float (0.0 when unknown)."""
    num, _, den = text.partition("/")
    denominator = float(den or 1)
    return float(num) / denominator if denominator else 0.0


def video_meta(path: str | Path) -> dict:
    """Fast probe (no decoding) of the first video stream: duration, frames, width, height, fps.

    ``frames`` is the container's frame count (exact for MP4, which stores one entry per sample).
    """
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
           "-select_streams", "v:0", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FfmpegError(cmd, proc.stderr)
    info = json.loads(proc.stdout)
    stream = video_stream(info) or {}
    fps = _rate(stream.get("avg_frame_rate", "0/1")) or _rate(stream.get("r_frame_rate", "0/1"))
    duration = float(stream.get("duration") or info.get("format", {}).get("duration") or 0.0)
    return {"duration": round(duration, 3), "frames": int(stream.get("nb_frames") or 0),
            "width": int(stream.get("width", 0)), "height": int(stream.get("height", 0)),
            "fps": round(fps)}
