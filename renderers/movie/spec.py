"""Validate and normalise a ViralSync Movie (api-research.md §2.4, DECISIONS.md "ViralSync").

``validate_and_normalize(movie)`` returns a new dict with every default filled and unknown fields dropped, or
raises ``SpecError`` whose message starts with the JSON path relative to the movie object, e.g.
``scenes[1].layers[0].duration must be > 0`` (the API layer prefixes ``movie.``). Normalising an already
normalised movie gives the same movie, so renderers may normalise their input again.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

LAYER_TYPES = ("video", "image", "audio", "text")
FITS = ("contain", "cover", "fill")
TEXT_FITS = ("shrink", "none")  # shrink: fontSize is the largest size, reduced until the text fits its box
TEXT_ALIGNS = ("left", "center", "right")
FONT_WEIGHT_WORDS = ("normal", "bold", "bolder", "lighter")
DEFAULT_FONT_FAMILY = "DejaVu Sans"
MAX_VOLUME = 10
# the canvas: (least, most, default); width and height must also be even (H.264 in yuv420p)
WIDTHS, HEIGHTS, FPS_RANGE = (360, 3840, 1920), (360, 2160, 1080), (1, 60, 30)
# Part of every scene cache key: bump it when a change to the renderer changes its pixels or samples.
RENDER_VERSION = 2

_REQUIRED = object()
_HEX = re.compile(r"#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")


class SpecError(ValueError):
    """An invalid movie; ``path`` is the JSON path of the offending field ("" for the movie itself)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


def _fail(path: str, problem: str) -> None:
    raise SpecError(f"{path} {problem}", path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _tidy(value: float) -> int | float:
    """Integral numbers become ints and others lose float noise, so equal scenes give equal cache keys."""
    return int(value) if float(value).is_integer() else round(float(value), 6)


MAX_INTEGER = 2**53  # the largest integer a JSON client (JavaScript) holds exactly


def _get(obj: dict, key: str, path: str, default: Any) -> Any:
    value = obj.get(key)
    if value is None and default is _REQUIRED:
        _fail(_join(path, key), "is required")
    return default if value is None else value


def _number(obj: dict, key: str, path: str, default: Any = _REQUIRED, *, lo: float | None = None,
            hi: float | None = None, gt: float | None = None, integer: bool = False) -> Any:
    value, where = _get(obj, key, path, default), _join(path, key)
    if value is default:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(where, "must be a number")
    if isinstance(value, int) and abs(value) > MAX_INTEGER:  # JSON allows 310 digits; float() would overflow
        _fail(where, "is out of range")
    if not math.isfinite(value):
        _fail(where, "must be a number")
    if integer and not float(value).is_integer():
        _fail(where, "must be an integer")
    if gt is not None and not value > gt:
        _fail(where, f"must be > {gt}")
    if lo is not None and hi is not None and not lo <= value <= hi:
        _fail(where, f"must be between {lo} and {hi}")
    if lo is not None and value < lo:
        _fail(where, f"must be >= {lo}")
    return _tidy(value)


def _string(obj: dict, key: str, path: str, default: Any = _REQUIRED, *, nonempty: bool = False) -> Any:
    value = _get(obj, key, path, default)
    if value is not default and not isinstance(value, str):
        _fail(_join(path, key), "must be a string")
    if nonempty and isinstance(value, str) and not value.strip():
        _fail(_join(path, key), "must not be empty")
    return value


def _choice(obj: dict, key: str, path: str, choices: tuple[str, ...], default: Any = _REQUIRED) -> str:
    value = _get(obj, key, path, default)
    if value not in choices:
        _fail(_join(path, key), f"must be one of: {', '.join(choices)}")
    return value


def _bool(obj: dict, key: str, path: str, default: bool) -> bool:
    value = _get(obj, key, path, default)
    if not isinstance(value, bool):
        _fail(_join(path, key), "must be true or false")
    return value


def _color(obj: dict, key: str, path: str, default: Any, *, alpha: bool = True) -> Any:
    """A hex colour, normalised to lowercase ``#rrggbb`` (``#rrggbbaa`` when it has an alpha channel)."""
    value = _get(obj, key, path, default)
    if value is None:
        return None
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        _fail(_join(path, key), "must be a hex colour such as #1a1a2e")
    digits = value[1:].lower()
    if len(digits) in (3, 4):
        digits = "".join(c * 2 for c in digits)
    if len(digits) == 8 and digits.endswith("ff"):
        digits = digits[:6]
    if len(digits) == 8 and not alpha:
        _fail(_join(path, key), "must be an opaque colour (#rrggbb)")
    return "#" + digits


def _object(obj: dict, key: str, path: str) -> dict:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(_join(path, key), "must be an object")
    return value


def _id(obj: dict, path: str) -> str:
    return _string(obj, "id", path, nonempty=True)


# --- layers -------------------------------------------------------------------------------------------------

def _timing(raw: dict, path: str, scene_duration: float) -> dict:
    start = _number(raw, "startTime", path, 0, lo=0)
    if start >= scene_duration:
        _fail(_join(path, "startTime"), f"must be less than the scene duration ({scene_duration})")
    room = scene_duration - start
    duration = _tidy(min(_number(raw, "duration", path, room, gt=0), room))
    fade_in = _number(raw, "fadeIn", path, 0, lo=0)
    fade_out = _number(raw, "fadeOut", path, 0, lo=0)
    if fade_in + fade_out > duration:  # fades longer than the (clamped) layer shrink to fit it
        shrink = duration / (fade_in + fade_out)
        fade_in, fade_out = _tidy(fade_in * shrink), _tidy(fade_out * shrink)
    return {"startTime": start, "duration": duration, "fadeIn": fade_in, "fadeOut": fade_out}


def _box(raw: dict, path: str, canvas: tuple[int, int]) -> dict:
    pos_path, size_path = _join(path, "position"), _join(path, "size")
    pos, size = _object(raw, "position", path), _object(raw, "size", path)
    return {
        "position": {"x": _number(pos, "x", pos_path, 0), "y": _number(pos, "y", pos_path, 0)},
        "size": {"width": _number(size, "width", size_path, canvas[0], gt=0),
                 "height": _number(size, "height", size_path, canvas[1], gt=0)},
    }


def _transform(raw: dict, path: str) -> dict:
    where, transform = _join(path, "transform"), _object(raw, "transform", path)
    return {"transform": {
        "opacity": _number(transform, "opacity", where, 1, lo=0, hi=1),
        "rotation": _number(transform, "rotation", where, 0),
        "scale": _number(transform, "scale", where, 1, gt=0),
    }}


def _visual(raw: dict, path: str, canvas: tuple[int, int], background: bool) -> dict:
    fields = {**_box(raw, path, canvas), **_transform(raw, path)}
    fields["fit"] = _choice(raw, "fit", path, FITS, "cover" if background else "contain")
    if background:  # role "background" covers the whole canvas, whatever position/size say
        fields["position"] = {"x": 0, "y": 0}
        fields["size"] = {"width": canvas[0], "height": canvas[1]}
    return fields


def _media(raw: dict, path: str, background: bool) -> dict:
    return {
        "source": _string(raw, "source", path, nonempty=True),
        "volume": _number(raw, "volume", path, 1, lo=0, hi=MAX_VOLUME),
        "trimStart": _number(raw, "trimStart", path, 0, lo=0),
        "loop": _bool(raw, "loop", path, background),
    }


def _font_weight(raw: dict, path: str) -> str:
    value = _get(raw, "fontWeight", path, "normal")
    if isinstance(value, str) and value.strip().lower() in FONT_WEIGHT_WORDS:
        return value.strip().lower()
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 1 <= number <= 1000:
        _fail(_join(path, "fontWeight"), "must be normal, bold or a number from 100 to 900")
    return str(_tidy(number))


def _text(raw: dict, path: str) -> dict:
    return {
        "text": _string(raw, "text", path),
        "fontSize": _number(raw, "fontSize", path, 48, gt=0),
        "fontWeight": _font_weight(raw, path),
        "fontFamily": _string(raw, "fontFamily", path, DEFAULT_FONT_FAMILY, nonempty=True),
        "color": _color(raw, "color", path, "#ffffff"),
        "textAlign": _choice(raw, "textAlign", path, TEXT_ALIGNS, "left"),
        "lineHeight": _number(raw, "lineHeight", path, 1.2, gt=0),
        "backgroundColor": _color(raw, "backgroundColor", path, None),
        "padding": _number(raw, "padding", path, 0, lo=0),
        "textFit": _choice(raw, "textFit", path, TEXT_FITS, "shrink"),
    }


def _per_type(raw: dict, kind: str, path: str, canvas: tuple[int, int], background: bool) -> dict:
    if kind == "audio":
        return _media(raw, path, background)
    fields = _visual(raw, path, canvas, background)
    if kind == "text":
        return {**fields, **_text(raw, path)}
    fields["source"] = _string(raw, "source", path, nonempty=True)
    if kind == "video":
        fields.update(_media(raw, path, background), mute=_bool(raw, "mute", path, False))
    return fields


def normalize_layer(raw: Any, path: str, scene_duration: float, canvas: tuple[int, int]) -> dict:
    if not isinstance(raw, dict):
        _fail(path, "must be an object")
    layer_id = _id(raw, path)
    kind = _choice(raw, "type", path, LAYER_TYPES)
    role = _string(raw, "role", path, None)
    layer = {"id": layer_id, "type": kind, "role": role,
             "zIndex": _number(raw, "zIndex", path, 0, integer=True), **_timing(raw, path, scene_duration)}
    layer.update(_per_type(raw, kind, path, canvas, role == "background"))
    return layer


# --- scenes and the movie -----------------------------------------------------------------------------------

def _unique_ids(items: list[dict], path: str, what: str) -> None:
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item["id"] in seen:
            _fail(f"{path}[{index}].id", f"'{item['id']}' duplicates {what}[{seen[item['id']]}].id")
        seen[item["id"]] = index


def normalize_scene(raw: Any, index: int, width: int, height: int, fps: int) -> dict:
    path = f"scenes[{index}]"
    if not isinstance(raw, dict):
        _fail(path, "must be an object")
    scene_id, name = _id(raw, path), _string(raw, "name", path, None)
    duration = _number(raw, "duration", path, gt=0)
    if round(duration * fps) < 1:
        _fail(_join(path, "duration"), f"must be at least one frame ({1 / fps:.4g} s at {fps} fps)")
    layers = _get(raw, "layers", path, [])
    if not isinstance(layers, list):
        _fail(_join(path, "layers"), "must be an array")
    normalized = [normalize_layer(layer, f"{path}.layers[{i}]", duration, (width, height))
                  for i, layer in enumerate(layers)]
    _unique_ids(normalized, f"{path}.layers", "layers")
    return {"id": scene_id, "name": name, "duration": duration,
            "bgColor": _color(raw, "bgColor", path, "#000000", alpha=False), "layers": normalized}


def _canvas(movie: dict) -> tuple[int, int, int]:
    width = _number(movie, "width", "", WIDTHS[2], lo=WIDTHS[0], hi=WIDTHS[1], integer=True)
    height = _number(movie, "height", "", HEIGHTS[2], lo=HEIGHTS[0], hi=HEIGHTS[1], integer=True)
    for key, value in (("width", width), ("height", height)):
        if value % 2:  # H.264 in yuv420p needs even dimensions
            _fail(key, "must be an even number")
    return width, height, _number(movie, "fps", "", FPS_RANGE[2], lo=FPS_RANGE[0], hi=FPS_RANGE[1], integer=True)


def validate_and_normalize(movie: Any) -> dict:
    if not isinstance(movie, dict):
        raise SpecError("movie must be a JSON object")
    width, height, fps = _canvas(movie)
    scenes = _get(movie, "scenes", "", _REQUIRED)
    if not isinstance(scenes, list):
        _fail("scenes", "must be an array")
    if not scenes:
        _fail("scenes", "must contain at least one scene")
    normalized = [normalize_scene(scene, i, width, height, fps) for i, scene in enumerate(scenes)]
    _unique_ids(normalized, "scenes", "scenes")
    return {"id": _string(movie, "id", "", None), "title": _string(movie, "title", "", "Untitled Movie"),
            "width": width, "height": height, "fps": fps, "scenes": normalized}


def scene_sources(scene: dict) -> list[str]:
    """The distinct source strings a scene's layers reference, in layer order."""
    return list(dict.fromkeys(layer["source"] for layer in scene.get("layers", []) if layer.get("source")))


def scene_cache_key(scene: dict, width: int, height: int, fps: int, source_digests: dict[str, str]) -> str:
    """SHA-256 of the canonical scene JSON, the canvas and the digest of every referenced source's bytes."""
    missing = [source for source in scene_sources(scene) if source not in source_digests]
    if missing:
        raise ValueError(f"no digest for source {missing[0]!r}")
    document = {"version": RENDER_VERSION, "scene": scene, "width": width, "height": height, "fps": fps,
                "sources": {source: source_digests[source] for source in scene_sources(scene)}}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
