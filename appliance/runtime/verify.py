"""Nothing is published until it is what it claims to be.

A renderer runs code that strangers send, so its result is a claim. Each renderer declares the roles it makes and
what each one is (``OUTPUTS``); a role it does not declare is dropped, never published. The outputs reach this
module as the server's own copies (``runtime/intake.py`` took them by descriptor, never following a link), and
each is checked by content, read through a file object with its container format forced: a video is decodable
H.264 in MP4 of the size and frame rate the task asked for; a thumbnail is a real JPEG; captions are WebVTT. A
forced format and a file object mean no protocol is ever opened: a playlist, a ``concat`` list or an external
reference named ``video.mp4`` is not MP4 and fails.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, BinaryIO

from renderers.ffmpeg import first_frame
from renderers.registry import REQUIRED_OUTPUTS

# renderer -> role -> kind. Renderers not listed (the test renderers) keep every role, unchecked.
OUTPUTS: dict[str, dict[str, str]] = {
    "manim": {"video": "h264", "thumbnail": "jpeg", "captions": "webvtt", "image": "png"},
    "manim.plan": {"plan": "json", "captions": "webvtt"},
    "manim.range": {"video": "h264", "thumbnail": "jpeg", "image": "png"},
    "manim.assemble": {"video": "h264", "thumbnail": "jpeg", "captions": "webvtt", "image": "png"},
    "movie.scene": {"scene": "h264", "thumbnail": "jpeg"},
    "movie.assemble": {"video": "h264", "thumbnail": "jpeg"},
    "image.render": {"render": "raster"},
    "image.video": {"video": "h264"},
    "image.gif": {"gif": "gif"},
}
MAX_JSON = 1 << 20


def declared(renderer: str, files: dict[str, str]) -> dict[str, str]:
    """The result's files under the roles its renderer makes; the rest are dropped (never taken or published)."""
    roles = OUTPUTS.get(renderer)
    return dict(files) if roles is None else {role: name for role, name in files.items() if role in roles}


def verify_open(renderer: str, task_input: dict[str, Any], files: Mapping[str, tuple[str, BinaryIO]]) -> str | None:
    """None when every output (role -> (its name, a seekable binary file: the server's copy)) is what it claims,
    else the reason (one line). Runs in a verifier process (``runtime/verifier.py``), never in the server."""
    for role in REQUIRED_OUTPUTS.get(renderer, ()):
        if role not in files:
            return f"renderer result is missing its {role} output"
    for role, (name, handle) in files.items():
        kind = OUTPUTS.get(renderer, {}).get(role)
        if kind is None:
            continue
        try:
            handle.seek(0)
            problem = CHECKS[kind](handle, task_input)
        except Exception as exc:  # noqa: BLE001 - any decoder error means "not what it claims"
            problem = f"cannot be read ({type(exc).__name__})"
        if problem:
            return f"renderer output {name} is not a valid {kind} file: {problem}"
    return None


def _h264(handle: BinaryIO, task_input: dict[str, Any]) -> str | None:
    import av  # imported on first use: the web app does not pay for it at start

    with av.open(handle, mode="r", format="mp4") as container:
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
        if first_frame(container, stream) is None:
            return "no decodable frame"
    return None


def _jpeg(handle: BinaryIO, task_input: dict[str, Any]) -> str | None:
    from PIL import Image

    with Image.open(handle, formats=["JPEG"]) as image:
        if image.format != "JPEG":
            return f"format {image.format}"
        # every block entropy-decoded, at 1/8 the cost: a 1080p thumbnail in ~1-2 ms instead of 7-15 (it is on the
        # path from a movie's last scene to its assembly)
        image.draft("RGB", (image.size[0] // 8, image.size[1] // 8))
        image.load()
    return None


def _webvtt(handle: BinaryIO, task_input: dict[str, Any]) -> str | None:
    head = handle.read(16)
    if not head.lstrip(b"\xef\xbb\xbf").startswith(b"WEBVTT"):
        return "no WEBVTT header"
    return None


def _raster(handle: BinaryIO, task_input: dict[str, Any]) -> str | None:
    """A finished still (RenderCAD): a real JPEG or PNG of exactly the square size the task asked for."""
    from PIL import Image

    with Image.open(handle, formats=["JPEG", "PNG"]) as image:
        if image.format not in ("JPEG", "PNG"):
            return f"format {image.format}"
        size = task_input.get("size")
        if size and image.size != (size, size):
            return f"{image.size[0]}x{image.size[1]}, expected {size}x{size}"
        image.draft("RGB", (image.size[0] // 8, image.size[1] // 8))  # decodes every block, at 1/8 the cost
        image.load()
    return None


def _gif(handle: BinaryIO, task_input: dict[str, Any]) -> str | None:
    """A converted video (RenderCAD): a real GIF of the width the task asked for, every frame decodable."""
    from PIL import Image, ImageSequence

    with Image.open(handle, formats=["GIF"]) as image:
        if image.format != "GIF":
            return f"format {image.format}"
        width = task_input.get("width")
        if width and image.size[0] != width:
            return f"{image.size[0]} pixels wide, expected {width}"
        for _ in ImageSequence.Iterator(image):
            pass
    return None


def _png(handle: BinaryIO, task_input: dict[str, Any]) -> str | None:
    """A lossless still (a Manim scene's last frame): a real PNG of the task's size."""
    from PIL import Image

    with Image.open(handle, formats=["PNG"]) as image:
        want = (task_input.get("width"), task_input.get("height"))
        if all(want) and image.size != want:
            return f"{image.size[0]}x{image.size[1]}, expected {want[0]}x{want[1]}"
        image.load()
    return None


def _json(handle: BinaryIO, task_input: dict[str, Any]) -> str | None:
    data = handle.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        return "over 1 MB"
    json.loads(data)
    return None


def image_problem(handle: BinaryIO, formats: list[str], max_pixels: int) -> str | None:
    """A client's picture (a RenderCAD upload): None, "unreadable" or "too_many_pixels". Checked without holding
    the picture: the header (format, pixel count) first; a JPEG decoded at 1/8 scale; a PNG's chunks and
    checksums verified without inflating its pixels (a 0.4 MB PNG can be 100 MP: 300 MB decoded); WebP and GIF,
    which have no such check, decoded. The full decode happens in the sandboxed render."""
    from PIL import Image

    try:
        with Image.open(handle, formats=formats) as img:
            if img.format not in formats:
                return "unreadable"
            if img.size[0] * img.size[1] > max_pixels:
                return "too_many_pixels"
            if img.format == "PNG":
                img.verify()
                return None
            img.draft("RGB", (img.size[0] // 8 or 1, img.size[1] // 8 or 1))
            img.load()
    except Image.DecompressionBombError:
        return "too_many_pixels"
    except Exception:  # noqa: BLE001 - any decoder error means "not an image we can render"
        return "unreadable"
    return None


CHECKS = {"h264": _h264, "jpeg": _jpeg, "webvtt": _webvtt, "raster": _raster, "gif": _gif, "png": _png,
          "json": _json}
