"""How a scene's video and audio layers read their sources: ONE decode per distinct source, fanned out.

Every layer that uses a source gets a branch of the same decode (``split`` / ``asplit``), trimmed to its own
``trimStart``: a logo clip used ten times is read and decoded once, and ffmpeg-python no longer refuses the graph
("multiple outgoing edges"). The decode seeks (``-ss``) to the earliest ``trimStart`` of its layers; a later one
is cut in the graph (``trim=start``).

A branch whose layer plays the source later than another branch (a larger ``startTime - trimStart``) holds the
frames in between in memory, scaled to its box. When that would pass ``FANOUT_BUFFER_BYTES``, the layer gets a
decode of its own instead: one decode per source is the rule, memory is the limit.

Alpha: a VP8/VP9 stream tagged ``alpha_mode=1`` (WebM with transparency) is decoded with libvpx, given before the
``-i``: ffmpeg's native VP8/VP9 decoders drop the alpha plane. ProRes 4444, PNG and QuickTime Animation in MOV,
GIF and APNG keep theirs with the native decoders. ffmpeg cannot decode an animated WebP: its frames are written out
as PNGs with Pillow and read back through an ``ffconcat`` list with their durations (``expand_animated_webp``).

Threads: each video decode gets an equal share of the task's thread budget (at least one; an audio-only decode
one), so a scene with many sources stays inside the sandbox's process limit (``task_max_processes``) instead of
starting a pool per core per source.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ffmpeg  # ffmpeg-python
from PIL import Image, ImageSequence, UnidentifiedImageError

from renderers.base import RenderError
from renderers.movie.layers import scaled_box
from renderers.movie.probe import SourceInfo, probe_source

MAX_WEBP_FRAMES = 3000  # an animated WebP's frames written out as PNGs, at most
FANOUT_BUFFER_BYTES = 160 << 20  # frames one decode may hold for its later branches (box size, yuva420p + slack)


def expand_animated_webp(path: Path, folder: Path) -> Path | None:
    """An animated WebP as PNG frames (alpha kept) and an ffconcat list of them, or None for any other file."""
    try:  # the RIFF header first: a file Pillow cannot identify makes it import every plugin it has (~20 ms)
        with open(path, "rb") as head:
            magic = head.read(12)
    except OSError:
        return None
    if magic[:4] != b"RIFF" or magic[8:12] != b"WEBP":
        return None
    try:
        with Image.open(path) as image:
            count = int(getattr(image, "n_frames", 1))
            if image.format != "WEBP" or count < 2:
                return None
            if count > MAX_WEBP_FRAMES:
                raise RenderError(f"animated WebP with more than {MAX_WEBP_FRAMES} frames")
            folder.mkdir(parents=True, exist_ok=True)
            lines = ["ffconcat version 1.0"]
            for index, frame in enumerate(ImageSequence.Iterator(image)):
                frame.convert("RGBA").save(folder / f"{index:05d}.png", compress_level=1)
                lines += [f"file '{index:05d}.png'", f"duration {max(1, frame.info.get('duration') or 100) / 1000}"]
            lines.append(lines[-2])  # the concat demuxer gives the last entry no duration: list it once more
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None  # not an image Pillow reads: ffmpeg's probe decides
    listing = folder / "frames.ffconcat"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def audible(layer: dict, info: SourceInfo) -> bool:
    return info.channels > 0 and not layer.get("mute", False) and layer["volume"] > 0


@dataclass
class _Decode:
    path: Path
    loop: bool
    info: SourceInfo
    layers: list[dict] = field(default_factory=list)

    @property
    def seek(self) -> float:
        return min(layer.get("trimStart", 0) for layer in self.layers)


def _lag(layer: dict) -> float:
    """Scene time minus source time while the layer plays: branches with equal lags consume frames together."""
    return layer["startTime"] - layer.get("trimStart", 0)


def _frame_bytes(layer: dict) -> int:
    width, height, _, _ = scaled_box(layer)
    return width * height * 4  # yuva420p is 2.5 bytes a pixel; rotation may grow the box


def _partition(path: Path, loop: bool, info: SourceInfo, layers: list[dict], fps: int) -> list[_Decode]:
    """Split one source's layers into as few decodes as the fan-out memory budget allows (usually one)."""
    videos = sorted((layer for layer in layers if layer["type"] == "video"), key=_lag)
    decodes: list[_Decode] = []
    for layer in videos:
        current = decodes[-1] if decodes else None
        if current is not None:
            spread = _lag(layer) - _lag(current.layers[0])
            biggest = max(_frame_bytes(other) for other in [*current.layers, layer])
            if spread * fps * biggest <= FANOUT_BUFFER_BYTES:
                current.layers.append(layer)
                continue
        decodes.append(_Decode(path, loop, info, [layer]))
    others = [layer for layer in layers if layer["type"] != "video"]
    if others:  # audio layers: cheap to buffer, they join the first decode
        if not decodes:
            decodes.append(_Decode(path, loop, info, []))
        decodes[0].layers.extend(others)
    return decodes


def _fan(stream, split: str, count: int) -> list:
    if count == 1:
        return [stream]
    outputs = stream.filter_multi_output(split, count)
    return [outputs.stream(index) for index in range(count)]


def cpu_budget(threads: int) -> int:
    """The task's thread budget: ``threads`` when the scheduler set one, else the cores this process may use."""
    if threads:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Decodes:
    """The scene's media decodes; ``video(layer)`` / ``audio(layer)`` are that layer's branch, starting at its
    ``trimStart`` with timestamps from 0."""

    def __init__(self, scene: dict, sources: dict[str, Path], fps: int, threads: int, tmp: Path | None = None) -> None:
        self.infos: dict[str, SourceInfo] = {}
        probed: dict[Path, SourceInfo] = {}
        groups: dict[tuple[Path, bool], list[dict]] = {}
        expanded: dict[Path, Path] = {}
        for layer in scene["layers"]:
            if layer["type"] not in ("video", "audio"):
                continue
            path = sources[layer["id"]]
            if layer["type"] == "video" and tmp is not None and path not in expanded:
                expanded[path] = expand_animated_webp(path, tmp / f"webp_{len(expanded):02d}") or path
            path = expanded.get(path, path)
            if path not in probed:
                probed[path] = probe_source(path)
            info = probed[path]
            wanted_video = layer["type"] == "video"
            if (wanted_video and not info.decodes) or (
                    not wanted_video and not info.channels):
                raise RenderError(f"layer '{layer['id']}': cannot decode {layer['type']} from its source")
            self.infos[layer["id"]] = info
            groups.setdefault((path, bool(layer.get("loop"))), []).append(layer)
        self.decodes = [decode for (path, loop), layers in groups.items()
                        for decode in _partition(path, loop, probed[path], layers, fps)]
        self._video: dict[str, Any] = {}
        self._audio: dict[str, Any] = {}
        # Audio decoders run on one thread whatever they are given: the budget is shared by the video decodes
        # (with the seed's soundtrack counted, its 1080p background video got one thread of two).
        pictures = [decode for decode in self.decodes if any(layer["type"] == "video" for layer in decode.layers)]
        per_decode = max(1, cpu_budget(threads) // max(1, len(pictures)))
        for decode in self.decodes:
            self._open(decode, per_decode if decode in pictures else 1)

    def _open(self, decode: _Decode, threads: int) -> None:
        options: dict[str, Any] = {"threads": threads}
        if decode.seek:
            options["ss"] = decode.seek
        if decode.loop:
            options["stream_loop"] = -1
        if decode.info.decoder:
            options["c:v"] = decode.info.decoder
        node = ffmpeg.input(str(decode.path), **options)
        videos = [layer for layer in decode.layers if layer["type"] == "video"]
        sounds = [layer for layer in decode.layers if audible(layer, decode.info)]
        for layer, stream in zip(videos, _fan(node.video, "split", len(videos)) if videos else [], strict=True):
            offset = round(layer.get("trimStart", 0) - decode.seek, 6)
            stream = stream.filter("trim", start=offset) if offset else stream
            self._video[layer["id"]] = stream.filter("setpts", "PTS-STARTPTS")
        for layer, stream in zip(sounds, _fan(node.audio, "asplit", len(sounds)) if sounds else [], strict=True):
            offset = round(layer.get("trimStart", 0) - decode.seek, 6)
            stream = stream.filter("atrim", start=offset) if offset else stream
            self._audio[layer["id"]] = stream.filter("asetpts", "PTS-STARTPTS")

    def video(self, layer: dict):
        return self._video[layer["id"]]

    def audio(self, layer: dict):
        """The layer's sound, or None when it has none to play (no audio stream, muted, volume 0)."""
        return self._audio.get(layer["id"])

    def info(self, layer: dict) -> SourceInfo:
        return self.infos[layer["id"]]
