"""The bench's MoviePy 2 reference: one Movie JSON rendered with MoviePy, as faithfully as MoviePy allows.

Run by tests/bench/movie.py with ``.venv-moviepy/bin/python`` (MoviePy pins pillow<12; the project uses pillow 13,
so MoviePy never goes into .venv). Imports nothing from the project.

    python tests/bench/moviepy_render.py JOB.json

JOB.json: ``{"movie": {...}, "files": {source: local path}, "out": "out.mp4", "preset": "veryfast"}``.
Prints one JSON line: ``{"import_s": ..., "render_s": ...}`` (render_s: building the clips + write_videofile).

Covers the layer fields the bench movies use: scene ``bgColor`` and ``duration``; ``startTime``/``duration``,
``zIndex`` (stable sort), ``position``/``size`` (``fit: contain``; ``role: background`` covers the canvas),
``transform.opacity``; video ``trimStart``/``mute``/``volume``; audio ``volume``; image; text ``text``,
``fontSize``, ``fontWeight`` (bold or >= 600: DejaVu Sans Bold), ``color``, ``textAlign``, wrapped in its box and
vertically centred (TextClip ``method="caption"``). Scenes are concatenated; libx264 at the given preset,
``fps`` from the movie, AAC 48 kHz 192 kb/s (as the appliance's scenes).
"""
from __future__ import annotations

import json
import os
import sys
import time

# The system ffmpeg (the one the appliance runs), not imageio-ffmpeg's bundled build: same libx264 on both sides.
os.environ.setdefault("FFMPEG_BINARY", "ffmpeg")

started = time.perf_counter()
from moviepy import (  # noqa: E402
    AudioFileClip,
    ColorClip,
    CompositeAudioClip,
    CompositeVideoClip,
    ImageClip,
    TextClip,
    VideoFileClip,
    concatenate_videoclips,
    vfx,
)

IMPORT_S = time.perf_counter() - started
FONTS = "/usr/share/fonts/truetype/dejavu/"


def _rgb(color: str) -> tuple[int, int, int]:
    value = color.lstrip("#")
    return tuple(int(value[i:i + 2], 16) for i in (0, 2, 4))


def _bold(layer: dict) -> bool:
    weight = str(layer.get("fontWeight", "normal"))
    return weight == "bold" or (weight.isdigit() and int(weight) >= 600)


def _placed(clip, layer: dict, canvas: tuple[int, int]):
    """Resize into the layer's box (contain; a background covers the canvas) and position it."""
    if layer.get("role") == "background":
        scale = max(canvas[0] / clip.w, canvas[1] / clip.h)
        clip = clip.resized((round(clip.w * scale), round(clip.h * scale)))
        return clip.with_position(((canvas[0] - clip.w) // 2, (canvas[1] - clip.h) // 2))
    box_w, box_h = layer["size"]["width"], layer["size"]["height"]
    scale = min(box_w / clip.w, box_h / clip.h)
    size = (max(1, round(clip.w * scale)), max(1, round(clip.h * scale)))
    if size != (clip.w, clip.h):
        clip = clip.resized(size)
    x = layer["position"]["x"] + (box_w - size[0]) / 2
    y = layer["position"]["y"] + (box_h - size[1]) / 2
    return clip.with_position((round(x), round(y)))


def _timed(clip, layer: dict, scene_duration: float):
    start = layer.get("startTime", 0)
    duration = layer.get("duration", scene_duration - start)
    return clip.with_start(start).with_duration(duration)


def _video(layer: dict, path: str, canvas: tuple[int, int], scene_duration: float):
    audible = not layer.get("mute", False) and layer.get("volume", 1) > 0
    clip = VideoFileClip(path, audio=audible)
    if layer.get("trimStart"):
        clip = clip.subclipped(layer["trimStart"])
    duration = layer.get("duration", scene_duration - layer.get("startTime", 0))
    if clip.duration < duration:
        clip = clip.with_effects([vfx.Loop(duration=duration)])
    if audible and clip.audio is not None and layer.get("volume", 1) != 1:
        clip = clip.with_volume_scaled(layer["volume"])
    return _placed(_timed(clip, layer, scene_duration), layer, canvas)


def _text(layer: dict, scene_duration: float):
    box = (round(layer["size"]["width"]), round(layer["size"]["height"]))
    font = FONTS + ("DejaVuSans-Bold.ttf" if _bold(layer) else "DejaVuSans.ttf")
    clip = TextClip(font=font, text=layer["text"], font_size=round(layer.get("fontSize", 48)),
                    color=layer.get("color", "#ffffff"), size=box, method="caption",
                    text_align=layer.get("textAlign", "left"), vertical_align="center")
    clip = clip.with_position((round(layer["position"]["x"]), round(layer["position"]["y"])))
    return _timed(clip, layer, scene_duration)


def _scene(scene: dict, files: dict, canvas: tuple[int, int]):
    duration = scene["duration"]
    clips = [ColorClip(canvas, color=_rgb(scene.get("bgColor", "#000000")), duration=duration)]
    sounds = []
    layers = sorted(scene["layers"], key=lambda layer: layer.get("zIndex", 0))  # stable: ties keep array order
    layers.sort(key=lambda layer: layer.get("role") != "background")  # backgrounds first
    for layer in layers:
        kind = layer["type"]
        if kind == "audio":
            sound = AudioFileClip(files[layer["source"]])
            length = min(layer.get("duration", duration), sound.duration)
            sound = sound.subclipped(0, length).with_volume_scaled(layer.get("volume", 1))
            sounds.append(sound.with_start(layer.get("startTime", 0)))
            continue
        if kind == "video":
            clip = _video(layer, files[layer["source"]], canvas, duration)
        elif kind == "image":
            clip = _placed(_timed(ImageClip(files[layer["source"]]), layer, duration), layer, canvas)
        else:
            clip = _text(layer, duration)
        opacity = layer.get("transform", {}).get("opacity", 1)
        if opacity < 1:
            clip = clip.with_opacity(opacity)
        if kind == "video" and clip.audio is not None:
            sounds.append(clip.audio.with_start(clip.start))
        clips.append(clip)
    composite = CompositeVideoClip(clips, size=canvas).with_duration(duration)
    if sounds:
        composite = composite.with_audio(CompositeAudioClip(sounds).with_duration(duration))
    return composite


def main(job_path: str) -> int:
    job = json.loads(open(job_path).read())
    movie, files = job["movie"], job["files"]
    canvas = (movie["width"], movie["height"])
    started = time.perf_counter()
    scenes = [_scene(scene, files, canvas) for scene in movie["scenes"]]
    final = concatenate_videoclips(scenes) if len(scenes) > 1 else scenes[0]
    final.write_videofile(job["out"], fps=movie["fps"], codec="libx264", preset=job["preset"], audio_codec="aac",
                          audio_fps=48000, audio_bitrate="192k", logger=None)
    render_s = time.perf_counter() - started
    print(json.dumps({"import_s": round(IMPORT_S, 3), "render_s": round(render_s, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
