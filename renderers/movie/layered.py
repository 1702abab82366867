"""The "layered" path: a scene with video layers, composited by one ffmpeg filter graph.

A ``color`` background on the scene clock; every visual layer bottom to top is an ``overlay`` switched on by
PRESENTATION TIME (``enable`` on ``t``, frame-centred bounds), never by frame number: ``n`` inside overlay's
timeline is not the main clip's frame number once an overlay input starts late, which left a video layer with
``startTime`` > 0 invisible. Each overlay stream is itself placed on the scene clock (``setpts``), so its first
frame shows at the layer's start whatever the source's own timestamps or frame rate were.

Text and image layers are Pillow sprites packed into atlas pages (``atlas``); video layers are branches of the
scene's decodes (``decode``): fitted, opacity and rotation applied with their alpha kept, padded with their last
frame when the source is shorter than the layer (a non-looping video holds its last frame), and faded. A video
that covers the whole canvas for the whole scene as its bottom layer is the base stream itself, instead of being
overlaid onto the ``color`` canvas (``base_video``).
"""
from __future__ import annotations

import math
from pathlib import Path

import ffmpeg  # ffmpeg-python

from renderers.movie import layers as lay
from renderers.movie.atlas import pack, save_pages
from renderers.movie.decode import Decodes, cpu_budget
from renderers.movie.layers import Sprite, Window, draw_order, fade_filters, fit_video, make_sprite, scaled_box, to_yuv
from renderers.movie.probe import SourceInfo

# ``overlay`` on the end of its overlay stream: "pass" shows the main picture alone, where "repeat" kept blending the
# last frame. Every overlay stream here lasts to the end of its layer's window (sprites are looped, videos padded
# with their last frame), after which ``enable`` is off anyway, so the picture is the same. But with "repeat"
# ffmpeg's framesync treats the overlay as a stream to keep in step with, and until it knows that stream's next
# frame it gives the blend a COPY of the main frame: a full-canvas copy per overlay per frame (at 1080p with the
# seed's two sprites, 1.1 GB of memmove in 6 s; 120 copies a frame in a 120-layer scene). With "pass" the overlay
# is not a sync input and the main frame is blended in place.
OVERLAY_EOF = "pass"
# An overlay covering at most 1/SMALL_OVERLAY of the canvas blends on ffmpeg's filter thread alone (the filter's
# generic ``threads`` option): handing a few thousand pixels to the slice-thread pool costs more than blending them.
# A scene of 120 small overlays made ~43,000 voluntary context switches in 4 s, ~1,700 with this (same pixels).
SMALL_OVERLAY = 4


def enable_expression(win: Window, fps: int) -> str:
    """True on the frames [first, end) of the scene clock: bounds half a frame off, so rounding cannot flip them."""
    return f"between(t,{(win.first - 0.5) / fps:.6f},{(win.end - 0.5) / fps:.6f})"


def background(width: int, height: int, fps: int, color: str):
    """The bgColor canvas: one RGB frame converted once, then repeated (``loop``) on the scene clock."""
    source = f"color=c=0x{color.lstrip('#')}:s={width}x{height}:r={fps},format=rgb24"
    still = to_yuv(ffmpeg.input(source, f="lavfi").video.filter("trim", end_frame=1), threads=1)
    return still.filter("loop", loop=-1, size=1, start=0).filter("setpts", f"N/({fps}*TB)")


def sprite_streams(sprites: list[Sprite], fps: int, tmp: Path) -> list:
    """Each sprite as an overlay stream (yuva420p): cut from its atlas page, converted once, then repeated on the
    scene clock up to the end of its window (``loop`` hands on references, no copies) and faded if it fades.

    Why a stream rather than one frame that ``overlay`` repeats: see ``OVERLAY_EOF``."""
    pages, slots = pack([sprite.image for sprite in sprites])
    paths = save_pages(pages, tmp)
    users = [sum(slot.page == page for slot in slots) for page in range(len(pages))]
    branches = []
    for path, count in zip(paths, users, strict=True):
        page = ffmpeg.input(str(path), f="image2", pattern_type="none", framerate=fps, threads=1).video
        branches.append(iter([page] if count == 1 else
                             [page.filter_multi_output("split", count).stream(i) for i in range(count)]))
    streams = []
    for sprite, slot in zip(sprites, slots, strict=True):
        stream = next(branches[slot.page]).filter("crop", w=slot.width, h=slot.height, x=slot.x, y=slot.y, exact=1)
        stream = to_yuv(stream, "yuva420p", threads=1)  # one small frame: no thread pool
        stream = stream.filter("loop", loop=sprite.window.end - 1, size=1, start=0).filter("setpts", f"N/({fps}*TB)")
        streams.append(fade_filters(stream, sprite.window, alpha=True) if sprite.window.fades else stream)
    return streams


def _on_layer_frames(stream, win: Window, fps: int):
    """A source on the movie's frame rate, exactly the layer's frame count: ``fps`` resamples any source rate,
    ``tpad`` clones the last frame when the source ends before the layer does (so a fade-out still fades it),
    ``trim`` cuts it to the layer's frames."""
    video = stream.filter("fps", fps=fps)
    video = video.filter("tpad", stop_mode="clone", stop_duration=round((win.end - win.first) / fps, 6))
    return video.filter("trim", end_frame=win.end - win.first)


def video_overlay_source(stream, layer: dict, win: Window, fps: int, matrix: str, threads: int = 0):
    """A video layer's branch as an overlay stream on the scene clock, and its overlay x/y expressions."""
    width, height, cx, cy = scaled_box(layer)
    transform = layer["transform"]
    video = fit_video(_on_layer_frames(stream, win, fps), layer["fit"], width, height, matrix, threads)
    if transform["opacity"] < 1:  # scales the source's own alpha: transparency and opacity compose
        video = video.filter("lut", a=f"val*{transform['opacity']}")
    if transform["rotation"] % 360:
        angle = math.radians(transform["rotation"])
        video = video.filter("rotate", angle, ow=f"rotw({angle})", oh=f"roth({angle})", c="none")
    video = video.filter("setpts", f"PTS-STARTPTS+{win.first}/({fps}*TB)")
    video = fade_filters(video, win, alpha=True)
    return video, f"{cx:.2f}-overlay_w/2", f"{cy:.2f}-overlay_h/2"


def covers_canvas(layer: dict, win: Window, info: SourceInfo, width: int, height: int, frames: int) -> bool:
    """Whether a video layer is the whole picture on every frame of the scene: an opaque source, fitted onto
    exactly the canvas (fill, cover, or contain with the canvas's own aspect ratio and even sides), on from the
    first frame to the last, not rotated or faded."""
    box_w, box_h, cx, cy = scaled_box(layer)
    fills = layer["fit"] in ("fill", "cover") or (
        info.size is not None and info.size[0] * height == info.size[1] * width and width % 2 == height % 2 == 0)
    return (info.opaque and fills and (box_w, box_h) == (width, height) and abs(cx - width / 2) < 1e-6
            and abs(cy - height / 2) < 1e-6 and not layer["transform"]["rotation"] % 360 and not win.fades
            and (win.first, win.end) == (0, frames))


def limited_yuv(color: str) -> tuple[int, int, int]:
    """A colour as BT.709 limited-range Y, Cb, Cr (what ``background`` turns bgColor into)."""
    r, g, b, _ = lay.rgba(color)
    luma = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return (round(16 + 219 * luma / 255), round(128 + 224 * (b - luma) / (1.8556 * 255)),
            round(128 + 224 * (r - luma) / (1.5748 * 255)))


def needs_no_conversion(info: SourceInfo, width: int, height: int) -> bool:
    """Whether the source decodes to what the scene encodes: yuv420p, BT.709 limited range, at ``width`` x
    ``height`` (then every fit is the identity and the colour conversion a copy)."""
    return (info.pix_fmt == "yuv420p" and info.limited and info.matrix == "bt709" and info.size == (width, height)
            and width % 2 == height % 2 == 0)


def base_video(stream, layer: dict, win: Window, fps: int, info: SourceInfo, threads: int, bg: str):
    """A ``covers_canvas`` layer as the scene's base stream, in place of the bgColor canvas and an overlay.

    Why: overlaying a full-canvas video copies the canvas and blends every pixel through an alpha plane that the
    video only got for the blend (a scale to yuva420p, a ``lut`` on it); at 1080p that was about 0.3 s of CPU per
    6 s. Here the video is the picture; below full opacity it is mixed with bgColor by one lookup table per plane
    with the overlay's own arithmetic: alpha = int(255 * opacity) (``lut`` truncates), FAST_DIV255 rounding.

    A source already in the scene's format and size (``needs_no_conversion``) skips the colour conversion: a
    ``scale`` with colour options always builds a swscale context, which copied every frame (0.1-0.15 s of CPU
    per 6 s at 1080p, on ffmpeg's main thread). The ``scale`` kept here has no colour options, so ffmpeg passes
    frames through untouched, and it still fits frames of another size should the source change size midway."""
    width, height = scaled_box(layer)[:2]
    if needs_no_conversion(info, width, height):
        video = _on_layer_frames(stream, win, fps).filter("scale", w=width, h=height).filter("format", "yuv420p")
    else:
        video = fit_video(_on_layer_frames(stream, win, fps), layer["fit"], width, height, info.matrix, threads,
                          "yuv420p")
    alpha = int(255 * layer["transform"]["opacity"])
    if alpha < 255:
        planes = dict(zip(("y", "u", "v"), limited_yuv(bg), strict=True))
        video = video.filter("lutyuv", **{plane: f"floor((val*{alpha}+{value * (255 - alpha)}+128)*257/65536)"
                                          for plane, value in planes.items()})
    return video.filter("setpts", "PTS-STARTPTS")


def layered_video(scene: dict, width: int, height: int, fps: int, frames: int, sources: dict[str, Path],
                  decodes: Decodes, tmp: Path, threads: int = 0):
    """The scene's picture; ``threads`` is the task's budget (0: every core), shared by the video layers' scalers
    so that the thread count stays bounded however many layers there are."""
    ordered = draw_order(scene["layers"])
    scalers = max(1, cpu_budget(threads) // max(1, sum(layer["type"] == "video" for layer in ordered)))
    windows = [lay.window(layer, fps, frames) for layer in ordered]
    first = ordered[0] if ordered else None
    if first is not None and first["type"] == "video" and covers_canvas(first, windows[0], decodes.info(first),
                                                                         width, height, frames):
        video = base_video(decodes.video(first), first, windows[0], fps, decodes.info(first), scalers,
                           scene["bgColor"])
    else:
        first, video = None, background(width, height, fps, scene["bgColor"])
    sprites = {index: make_sprite(layer, sources.get(layer["id"]), windows[index])
               for index, layer in enumerate(ordered) if layer["type"] != "video"}
    stills = dict(zip(sprites, sprite_streams(list(sprites.values()), fps, tmp), strict=True)) if sprites else {}
    for index, layer in enumerate(ordered):
        win = windows[index]
        if layer is first:  # already the base
            continue
        if layer["type"] == "video":
            source, x, y = video_overlay_source(decodes.video(layer), layer, win, fps, decodes.info(layer).matrix,
                                                scalers)
            area = math.prod(scaled_box(layer)[:2])
        else:
            source, x, y = stills[index], sprites[index].x, sprites[index].y
            area = sprites[index].image.width * sprites[index].image.height
        one_thread = {"threads": 1} if area * SMALL_OVERLAY <= width * height else {}
        video = ffmpeg.overlay(video, source, x=x, y=y, eof_action=OVERLAY_EOF, enable=enable_expression(win, fps),
                               **one_thread)
    return video.filter("setsar", "1")
