"""What a Movie document should look like, computed from the document itself: the conformance suite's oracle.

Every visual layer of a conformance document is drawn from content whose pixels are known (``Paint``): solid
images, half-transparent images and clips, a text box's padding band in its background colour, a grey ramp clip
whose brightness is its own time. ``expected`` composites those, bottom to top, at one frame and one point — or
says it does not know (a glyph, an edge, a fade in progress), and ``probes`` picks, for each layer, a point where
that layer decides the colour at the middle of its window, plus the same point just before or after the window.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from renderers.movie.layers import draw_order, scaled_box, window
from tests.media import movie as m

EDGE = 4  # pixels near an edge (a box's, a half's) are not probed: scaling blurs them


@dataclass(frozen=True)
class Paint:
    """kind: solid (rgb everywhere), half (rgb on the left half, transparent on the right), band (a text box: rgb in
    its padding band, glyphs inside), ramp (clip: grey by source time), unknown (no probe inside)."""

    kind: str
    rgb: tuple[int, int, int] = (0, 0, 0)
    pad: float = 0
    clip: Path | None = None
    rate: int = 25
    seconds: float = 0


def _hex(color: str) -> tuple[int, int, int]:
    digits = color.lstrip("#")
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _paint_at(paint: Paint, layer: dict, frame: int, fps: int, u: float, v: float, w: float, h: float):
    """(rgb, alpha) of the layer's content at box coordinates (u, v), or None when unknown there."""
    if paint.kind == "unknown":
        return None
    if paint.kind == "solid":
        return paint.rgb, 1.0
    if paint.kind == "half":
        if abs(u - w / 2) < EDGE:
            return None
        return (paint.rgb, 1.0) if u < w / 2 else ((0, 0, 0), 0.0)
    if paint.kind == "band":
        inside = min(u, v, w - u, h - v) < paint.pad - 2  # glyphs start at the padding
        return (paint.rgb, 1.0) if inside else None
    first = window(layer, fps, 10**9).first
    t = (frame - first) / fps + layer.get("trimStart", 0)
    if layer.get("loop"):
        t %= paint.seconds
    t = min(t, paint.seconds - 1 / paint.rate)
    level = round(m.source_level(paint.clip, t, paint.rate))  # type: ignore[arg-type]
    return (level, level, level), 1.0


def expected(scene: dict, paints: dict[str, Paint], frame: int, fps: int, frames: int, x: float, y: float,
             without: str | None = None) -> tuple[int, int, int] | None:
    """The colour at (x, y) of the scene's frame, or None when it is not known there."""
    color: tuple[float, ...] | None = _hex(scene["bgColor"])
    for layer in draw_order(scene["layers"]):
        if layer["id"] == without:
            continue
        win = window(layer, fps, frames)
        level = win.alpha(frame, fps)
        if level == 0:
            continue
        w, h, cx, cy = scaled_box(layer)
        u, v = x - (cx - w / 2), y - (cy - h / 2)
        if -EDGE < u < w + EDGE and -EDGE < v < h + EDGE and not (EDGE <= u <= w - EDGE and EDGE <= v <= h - EDGE):
            color = None  # near the edge
            continue
        if not (0 <= u <= w and 0 <= v <= h):
            continue
        if layer["transform"]["rotation"] % 360 or 0 < level < 1:
            color = None
            continue
        painted = _paint_at(paints[layer["id"]], layer, frame, fps, u, v, w, h)
        if painted is None:
            color = None
            continue
        rgb, alpha = painted
        alpha *= layer["transform"]["opacity"]
        if alpha >= 1:
            color = rgb
        elif alpha > 0:
            mixed = None if color is None else zip(color, rgb, strict=True)
            color = None if mixed is None else tuple(c * (1 - alpha) + p * alpha for c, p in mixed)
    return None if color is None else tuple(round(c) for c in color)  # type: ignore[return-value]


@dataclass(frozen=True)
class Probe:
    layer: str
    frame: int
    x: int
    y: int
    rgb: tuple[int, int, int]
    inside: bool  # True: in the layer's window (the layer decides the colour); False: just outside it


def _differs(a, b) -> bool:
    return b is None or max(abs(p - q) for p, q in zip(a, b, strict=True)) > 40


def probes(scene: dict, paints: dict[str, Paint], fps: int) -> tuple[list[Probe], list[str]]:
    """For each visual layer, a point where it shows at the middle of its window and the same point outside the
    window (when the scene has frames there). Returns the probes and the layers no point could be found for."""
    frames = round(scene["duration"] * fps)
    found, missing = [], []
    for layer in draw_order(scene["layers"]):
        if paints[layer["id"]].kind == "unknown":
            continue
        win = window(layer, fps, frames)
        middle = (win.first + win.end - 1) // 2
        w, h, cx, cy = scaled_box(layer)
        grid = [(cx - w / 2 + w * i / 8, cy - h / 2 + h * j / 8) for j in range(1, 8) for i in range(1, 8)]
        if paints[layer["id"]].kind == "band":  # the padding band, just inside the box's edge
            inset = (EDGE + paints[layer["id"]].pad - 2) / 2
            grid += [(cx - w / 2 + inset, cy), (cx, cy - h / 2 + inset), (cx + w / 2 - inset, cy)]
        grid = [(round(x), round(y)) for x, y in grid if 0 <= x < scene["_width"] and 0 <= y < scene["_height"]]
        for x, y in grid:
            here = expected(scene, paints, middle, fps, frames, x, y)
            if here is None or not _differs(here, expected(scene, paints, middle, fps, frames, x, y, layer["id"])):
                continue
            found.append(Probe(layer["id"], middle, x, y, here, True))
            for outside in (win.first - 2, win.end + 1):
                if 0 <= outside < frames and (rgb := expected(scene, paints, outside, fps, frames, x, y)):
                    found.append(Probe(layer["id"], outside, x, y, rgb, False))
                    break
            break
        else:
            missing.append(layer["id"])
    return found, missing
