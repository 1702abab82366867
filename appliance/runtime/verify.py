"""Nothing is published until it is what it claims to be.

A renderer runs code that strangers send, so its result is a claim. Before an output becomes an artifact it is
checked by content: every output its renderer must make is there; a video is decodable H.264 of the size and
frame rate the task asked for; a thumbnail is a real JPEG; captions are WebVTT.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from appliance.runtime.artifacts import safe_name
from renderers.registry import REQUIRED_OUTPUTS

ROLE_KINDS = {"video": "h264", "scene": "h264", "thumbnail": "jpeg", "captions": "webvtt", "render": "raster",
              "gif": "gif"}


def verify(renderer: str, task_input: dict, files: dict, workdir: Path) -> str | None:
    """None when every output is what it claims, else the reason (one line, shown on the failed job)."""
    for role in REQUIRED_OUTPUTS.get(renderer, ()):
        if role not in files:
            return f"renderer result is missing its {role} output"
    for role, name in files.items():
        kind = ROLE_KINDS.get(role) if renderer in REQUIRED_OUTPUTS else None
        if kind is None:
            continue
        try:
            path = workdir / safe_name(name)
        except ValueError as exc:
            return str(exc)
        try:
            problem = CHECKS[kind](path, task_input)
        except Exception as exc:  # noqa: BLE001 - any decoder error means "not what it claims"
            problem = f"cannot be read ({type(exc).__name__})"
        if problem:
            return f"renderer output {name} is not a valid {kind} file: {problem}"
    return None


def _h264(path: Path, task_input: dict) -> str | None:
    import av  # imported on first use: the web app does not pay for it at start

    with av.open(str(path)) as container:
        if not container.streams.video:
            return "no video stream"
        stream = container.streams.video[0]
        if stream.codec_context.name != "h264":
            return f"codec {stream.codec_context.name}"
        want = (task_input.get("width"), task_input.get("height"))
        if all(want) and (stream.codec_context.width, stream.codec_context.height) != want:
            return f"{stream.codec_context.width}x{stream.codec_context.height}, expected {want[0]}x{want[1]}"
        fps = task_input.get("fps")
        rate = stream.guessed_rate or stream.average_rate  # the stream's frame rate, not a duration average
        if fps and rate and abs(Fraction(rate) - fps) > Fraction(fps, 100):
            return f"{float(rate):g} fps, expected {fps}"
        if next(container.decode(stream), None) is None:
            return "no decodable frame"
    return None


def _jpeg(path: Path, task_input: dict) -> str | None:
    from PIL import Image

    with Image.open(path) as image:
        if image.format != "JPEG":
            return f"format {image.format}"
        image.load()
    return None


def _webvtt(path: Path, task_input: dict) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head.lstrip(b"\xef\xbb\xbf").startswith(b"WEBVTT"):
        return "no WEBVTT header"
    return None


def _raster(path: Path, task_input: dict) -> str | None:
    """A finished still (RenderCAD): a real JPEG or PNG of exactly the square size the task asked for."""
    from PIL import Image

    with Image.open(path) as image:
        if image.format not in ("JPEG", "PNG"):
            return f"format {image.format}"
        size = task_input.get("size")
        if size and image.size != (size, size):
            return f"{image.size[0]}x{image.size[1]}, expected {size}x{size}"
        image.draft("RGB", (image.size[0] // 8, image.size[1] // 8))  # decodes every block, at 1/8 the cost
        image.load()
    return None


def _gif(path: Path, task_input: dict) -> str | None:
    """A converted video (RenderCAD): a real GIF of the width the task asked for, every frame decodable."""
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        if image.format != "GIF":
            return f"format {image.format}"
        width = task_input.get("width")
        if width and image.size[0] != width:
            return f"{image.size[0]} pixels wide, expected {width}"
        for _ in ImageSequence.Iterator(image):
            pass
    return None


CHECKS = {"h264": _h264, "jpeg": _jpeg, "webvtt": _webvtt, "raster": _raster, "gif": _gif}
