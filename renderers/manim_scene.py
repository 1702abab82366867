"""The Manim renderer: run one Scene class from user code at a given size and fps.

Runs in a fresh worker process (forked after ``import manim``), so it sets Manim's process-global
``config`` freely; everything Manim writes goes under ``workdir/media``. The video is not Manim's:
``_SceneEncoder`` (renderers/manim_encoder.py) writes H.264 with Manim's own encoder settings, on a thread that
keeps encoding while the next animation draws, and starts each animation on an IDR frame: a piece
(renderers/manim_segments.py) that decodes on its own. The pieces are joined into ``video.mp4`` by copying their
packets. A piece an earlier render of the same scene already drew (same address: the state it starts from, the
animation, the frame, the versions) is not drawn again but copied from that render's video, which the task's
input stages (``reuse``). The result carries the piece index (``pieces``) and what was reused (``reuse``) beside
``meta``.

Outputs: ``video.mp4``, ``thumb.jpg`` (the last frame), ``captions.vtt`` and ``image.png`` (the last frame,
lossless, full size). A still scene (no play() or wait(): the manim CLI saves its frame as a PNG) is a video that
holds its final frame for STILL_SECONDS, with the same outputs.
"""
from __future__ import annotations

import contextlib
import errno
import linecache
import re
import shutil
import socket
import sys
import traceback
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from renderers import manim_address as addresses
from renderers import manim_compat, manim_svgpaths
from renderers import manim_live as live
from renderers import manim_segments as pieces
from renderers.base import RenderError, Reporter
from renderers.encoder import pyav_settings
from renderers.manim_encoder import SceneEncoder as _SceneEncoder  # (manim_split and scripts use this name)
from renderers.preview import Preview

SCENE_FILE = "<scene>"
SCENE_MODULE = "user_scene"
FILES = {"video": "video.mp4", "thumbnail": "thumb.jpg", "captions": "captions.vtt", "image": "image.png"}
FRAME_HEIGHT = 8.0  # Manim's default scene height in units; the width follows the aspect ratio
# Manim's presets are 16:9 to Manim even where the pixels are not quite (854x480 is 1.7792): the CLI keeps its
# frame 14.22 units wide at -ql. A size within PRESET_SLACK of 16:9 (or 9:16) gets that exact frame, so a scene
# lands on the same pixels as in the CLI; any other size gets square pixels.
PRESET_ASPECTS = (16 / 9, 9 / 16)
PRESET_SLACK = 0.01
STILL_SECONDS = 1.0  # a scene without play()/wait() holds its frame this long: Manim's DEFAULT_WAIT_TIME
# zlib level of image.png (lossless at every level): a 3840x2160 code listing took 194 ms and 73 KiB at 6, 161 ms
# and 155 KiB at 3; Manim's flat colours compress well, so the smaller file wins.
PNG_LEVEL = 6
# Manim cannot know how many play() calls are still to come, so rendering progress is an estimate
# that approaches RENDER_SHARE as rendered seconds grow: half way after ESTIMATE_HORIZON_S seconds.
RENDER_SHARE = 0.95
ESTIMATE_HORIZON_S = 5.0
MAX_MESSAGE = 400


def render(task_input: dict, workdir: Path, report: Reporter) -> dict:
    workdir = Path(workdir).resolve()
    report.progress(0.0, "rendering")
    # User print()s and Manim's console write to sys.stdout; the reporter may own that stream.
    with contextlib.redirect_stdout(sys.stderr):
        scene, tracker = _render_scene(task_input, workdir, report)
    report.progress(RENDER_SHARE, "encoding")
    outputs = _write_outputs(scene, tracker, workdir)
    report.progress(1.0, "encoding")
    return outputs


# -- configuration -------------------------------------------------------------------------------

def manim_settings(task_input: dict, workdir: Path) -> dict[str, Any]:
    """Manim config for this task: output size and fps, directories inside workdir, no cache."""
    media = workdir / "media"
    width, height = int(task_input["width"]), int(task_input["height"])
    return {
        "media_dir": str(media), "video_dir": str(media / "videos"),
        "images_dir": str(media / "images"), "tex_dir": str(media / "Tex"),
        "text_dir": str(media / "texts"), "log_dir": str(media / "logs"),
        "partial_movie_dir": str(media / "videos" / "partial_movie_files" / "{scene_name}"),
        "sections_dir": str(media / "videos" / "sections"), "assets_dir": str(workdir),
        "pixel_width": width, "pixel_height": height, "frame_rate": int(task_input["fps"]),
        "frame_height": FRAME_HEIGHT, "frame_width": frame_width(width, height),
        # "auto" is MP4 for an opaque scene; unlike an explicit "mp4", a scene without play() then ends
        # normally, as in the CLI, with its final frame drawn: _render_scene makes it a still (write_still).
        "renderer": "cairo", "transparent": False, "format": "auto", "save_sections": False,
        "dry_run": False, "write_all": False, "output_file": None, "preview": False,
        "live_preview": False, "enable_gui": False, "show_in_file_browser": False,
        **pyav_settings(),  # libx264, or h264_nvenc when this task holds an NVENC session that opens
        "disable_caching": True, "log_to_file": False,
        "progress_bar": "none", "verbosity": "WARNING", "notify_outdated_version": False,
    }


def frame_width(width: int, height: int) -> float:
    """The scene's width in units for a frame of width x height pixels, FRAME_HEIGHT units high."""
    ratio = width / height
    aspect = next((a for a in PRESET_ASPECTS if abs(ratio / a - 1) <= PRESET_SLACK), ratio)
    return FRAME_HEIGHT * aspect


def _configure(task_input: dict, workdir: Path) -> None:
    from manim import config
    from manim.constants import RendererType

    for key, value in manim_settings(task_input, workdir).items():
        if key == "renderer" and config.renderer == RendererType(value):
            # its setter reassigns __bases__ of every class Manim converts between renderers, even to the same
            # bases: ~8 ms, and CPython's method caches start over; set only where scene code changed it
            continue
        config[key] = value  # through each property's setter, as the manim CLI does


# -- running the scene ---------------------------------------------------------------------------

def _render_scene(task_input: dict, workdir: Path, report: Reporter) -> tuple[Any, _Tracker]:
    _configure(task_input, workdir)
    encoder: _SceneEncoder | None = None
    try:
        addresses.seed_module_code()
        scene_class = load_scene_class(task_input["code"], task_input["className"])
        _configure(task_input, workdir)  # module-level code may have changed config; size/fps are ours
        addresses.seed_if_unset()
        scene = scene_class()
        tracker = _Tracker(scene, report)
        tracker.preview = Preview(workdir)  # the dashboard's live frame (renderers/preview.py)
        writer = scene.renderer.file_writer
        (workdir / pieces.PIECES_DIR).mkdir(exist_ok=True)
        stream = live.LiveStream(workdir / live.LIVE_DIR, int(task_input["fps"]))  # the growing HLS's segments
        encoder = tracker.encoder = _SceneEncoder(writer, workdir / pieces.PIECES_DIR / pieces.STREAM_FILE, stream)
        identity = addresses.frame_identity(int(task_input["width"]), int(task_input["height"]),
                                         int(task_input["fps"]), writer.video_encoder)
        reuse = pieces.usable(pieces.read_reuse(task_input, workdir), writer.video_encoder)
        from renderers.manim_split import split_refusal  # (manim_split imports this module)

        tracker.pieces = pieces.Segmenter(scene, encoder, workdir, reuse, identity, tracker.set_last_frame,
                                          fast=split_refusal(task_input["code"]) is None)
        scene.render()
        if not scene.renderer.num_plays:  # a still: Manim drew the final frame (the CLI saves it as a PNG)
            frame = tracker.last_frame = write_still(scene, encoder)
            tracker.preview.offer(lambda: Image.fromarray(frame), settled=True)
    except RenderError:
        raise
    except (Exception, SystemExit) as exc:
        if encoder is not None:  # Manim aborts it when construct() raises, not when tear_down() does
            encoder.abort()
        raise RenderError(describe_error(exc)) from None
    if not tracker.pieces.pieces.items:  # every animation was skipped (sections): there is nothing to show
        raise RenderError("Scene drew no frames: every animation it played was skipped "
                          "(next_section(skip_animations=True)); the manim CLI writes no video for it either")
    return scene, tracker


def write_still(scene: Any, encoder: _SceneEncoder) -> np.ndarray:
    """A scene that never called play()/wait(): its final frame, held STILL_SECONDS, through the same encoder."""
    frame = np.array(scene.renderer.get_frame())  # an owned copy, as the renderer hands over each frame
    writer = scene.renderer.file_writer  # the encoder's methods, or the pieces' around them
    writer.begin_animation(allow_write=True)
    encoder.write_frame(frame, repeat=max(1, round(STILL_SECONDS * scene.camera.frame_rate)))
    writer.end_animation()
    encoder.finish()
    return frame


def load_scene_class(code: str, class_name: str) -> type:
    """Execute the code as a module named SCENE_MODULE and return its Scene subclass ``class_name``."""
    from manim import Scene

    manim_compat.apply()  # before any scene code runs (renderers/manim_compat.py)
    manim_svgpaths.apply()  # glyph paths shared by copies, hashed once (renderers/manim_svgpaths.py)
    module = _exec_scene_code(code)
    scene_class = vars(module).get(class_name)
    if scene_class is None:
        raise RenderError(f"Scene class {class_name!r} not found in code")
    if not (isinstance(scene_class, type) and issubclass(scene_class, Scene)):
        raise RenderError(f"{class_name!r} is not a Scene subclass")
    return scene_class


def _exec_scene_code(code: str) -> types.ModuleType:
    # A real module in sys.modules, so that dataclasses, pickling and typing in user code work.
    module = types.ModuleType(SCENE_MODULE)
    module.__file__ = SCENE_FILE
    sys.modules[SCENE_MODULE] = module
    linecache.cache[SCENE_FILE] = (len(code), None, code.splitlines(keepends=True), SCENE_FILE)
    exec("from manim import *", vars(module))  # manim names work even if the import is forgotten
    exec(compile(code, SCENE_FILE, "exec"), vars(module))
    return module


class _Tracker:
    """Hooks the scene's renderer: progress per frame, a log line per animation, the last frame."""

    def __init__(self, scene: Any, report: Reporter) -> None:
        self.report = report
        self.renderer = scene.renderer
        self.last_frame: np.ndarray | None = None
        self.encoder: _SceneEncoder | None = None
        self.pieces: pieces.Segmenter | None = None
        self.preview: Preview | None = None
        self.reported = 0.0
        self._add_frame = self.renderer.add_frame
        self._play = self.renderer.play
        # Instance attributes shadow the methods, so Manim's own calls go through the hooks.
        self.renderer.add_frame = self.add_frame
        self.renderer.play = self.play

    def add_frame(self, frame: np.ndarray, num_frames: int = 1) -> None:
        self._add_frame(frame, num_frames)
        if self.renderer.skip_animations:
            return
        self.last_frame = frame
        if self.preview is not None:  # at most once a second, shrunk to 320 px: a few ms
            self.preview.offer(lambda: Image.fromarray(frame))
        fraction = RENDER_SHARE * self.renderer.time / (self.renderer.time + ESTIMATE_HORIZON_S)
        if fraction - self.reported >= 0.01:
            self.reported = fraction
            self.report.progress(fraction, "rendering")

    def set_last_frame(self, frame: np.ndarray) -> None:
        self.last_frame = frame

    def play(self, scene: Any, *args: Any, **kwargs: Any) -> None:
        self._play(scene, *args, **kwargs)
        frame = self.last_frame if self.pieces is None or self.pieces.last_drawn() else None  # not copied
        if self.preview is not None and frame is not None:  # the frame the animation ends on, for the dashboard
            self.preview.offer(lambda: Image.fromarray(frame), settled=True)
        names = ", ".join(type(animation).__name__ for animation in scene.animations or [])
        self.report.log(f"animation {self.renderer.num_plays}: {names} ({scene.duration:.2f}s)")


# -- error messages ------------------------------------------------------------------------------

def describe_error(exc: BaseException) -> str:
    """One readable line: exception type and message, LaTeX's own error, and the scene line."""
    if isinstance(exc, SyntaxError) and exc.filename == SCENE_FILE:
        return f"{_one_line(f'{type(exc).__name__}: {exc.msg}')} (scene line {exc.lineno})"
    text = latex_error(exc) or network_error(exc) or _exception_text(exc)
    line = scene_line(exc)
    return _one_line(text) + (f" (scene line {line})" if line else "")


def _exception_text(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit: scene code called exit({exc.code if exc.code is not None else ''})"
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def scene_line(exc: BaseException) -> int | None:
    """The line of the deepest traceback frame that ran user code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == SCENE_FILE]
    return frames[-1].lineno if frames else None


def latex_error(exc: BaseException) -> str | None:
    """Manim's LaTeX failure names the .log file; the first ``!`` line there is the real error."""
    match = re.search(r"error converting to \w+\. .*log file: (\S+\.log)", str(exc))
    if not match:
        return None
    try:
        log = Path(match.group(1)).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"LaTeX error: {exc}"
    first = next((i for i, text in enumerate(log) if text.startswith("!")), None)
    if first is None:
        return "LaTeX error: compilation failed"
    message = re.sub(r"^!\s*(LaTeX Error:\s*)?", "", log[first]).strip()
    near = _latex_context(log[first + 1:])
    return f"LaTeX error: {message}" + (f" near '{near}'" if near else "")


def network_error(exc: BaseException) -> str | None:
    """Renders have no network (e.g. manim_kodisc's WebImage/WebSVG fetch a URL): say so, instead of a resolver
    error nested three exceptions deep in requests' retry message."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain and len(chain) < 10:
        chain.append(link)
        link = link.__cause__ or link.__context__
    if len(chain) == 1:  # a bare socket error ("[Errno 101] Network is unreachable") already says it
        return None
    if not any(isinstance(e, (socket.gaierror, ConnectionRefusedError))
               or getattr(e, "errno", None) in (errno.ENETUNREACH, errno.EHOSTUNREACH) for e in chain):
        return None
    request = getattr(exc, "request", None)  # requests' exceptions carry the request they were making
    url = getattr(request, "url", None)
    target = f" to fetch {url}" if url else ""
    return (f"{type(exc).__name__}: the scene tried to use the network{target}, but renders have no network "
            "access; put the image or data in the scene code instead")


def _latex_context(lines: list[str]) -> str | None:
    """TeX's context line ("<argument> \\foo", "l.7 a \\badcmd") ends at the offending token."""
    for text in lines:
        match = re.match(r"(<[^>]*>|l\.\d+) (.*\S)", text)
        if match:
            return match.group(2).strip()[-60:]
    return None


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


# -- outputs -------------------------------------------------------------------------------------

def _write_outputs(scene: Any, tracker: _Tracker, workdir: Path) -> dict:
    writer = scene.renderer.file_writer
    assert tracker.encoder is not None and tracker.pieces is not None
    fps = int(scene.camera.frame_rate)
    video = workdir / FILES["video"]
    made = tracker.pieces.pieces
    tracker.encoder.frames = pieces.join(made.items, fps, video)
    meta = tracker.encoder.meta(fps)
    exact = write_stills(tracker.pieces, tracker.last_frame, video, workdir)
    (workdir / FILES["captions"]).write_text(to_vtt(writer.subcaptions), encoding="utf-8")
    shutil.rmtree(workdir / "media" / "videos", ignore_errors=True)  # a second copy of the video
    shutil.rmtree(workdir / pieces.PIECES_DIR, ignore_errors=True)
    # beside meta: the pieces index a later render of the scene reuses from (renderers/manim_segments.py), and
    # whether its stills are exact (a later render ending on the same piece may copy them)
    return {"files": dict(FILES), "meta": meta, "pieces": made.index(), "reuse": made.reuse(),
            "lastFrameExact": exact}


def write_stills(made: pieces.Segmenter, frame: np.ndarray | None, video: Path, workdir: Path) -> bool:
    """thumb.jpg and image.png of the video's last frame: copied from the earlier render the last piece came
    from, where that render's were exact; else drawn here (``frame``), unless the last piece was copied from a
    render where it was not last: then decoded from the video. Returns whether they are exact (not decoded)."""
    stills = made.final_stills()
    if stills is not None:
        for src, name in zip(stills, (FILES["image"], FILES["thumbnail"]), strict=True):
            (workdir / name).unlink(missing_ok=True)  # a new file, never through a staged input's link
            shutil.copyfile(src, workdir / name)
        return True
    known = frame if made.final_frame_known() else None
    frame = known if known is not None else pieces.last_frame(video)
    write_thumbnail(frame, workdir / FILES["thumbnail"])
    write_image(frame, workdir / FILES["image"])
    return known is not None


def write_thumbnail(frame: np.ndarray, path: Path) -> None:
    """The last frame written to the video, straight from Manim's RGBA pixel array."""
    Image.fromarray(frame).convert("RGB").save(path, "JPEG", quality=90)


def write_image(frame: np.ndarray, path: Path) -> None:
    """The last frame, lossless at full size (RGB: the video has no alpha either)."""
    Image.fromarray(frame).convert("RGB").save(path, "PNG", compress_level=PNG_LEVEL)


def to_vtt(subcaptions: list[Any]) -> str:
    """WebVTT from Manim's ``srt.Subtitle`` list, cues ordered by start time."""
    cues = sorted(subcaptions, key=lambda cue: cue.start)
    blocks = [f"{vtt_time(c.start)} --> {vtt_time(c.end)}\n{_cue_text(c.content)}" for c in cues]
    return "\n\n".join(["WEBVTT", *blocks]) + "\n"


def vtt_time(value: timedelta) -> str:
    millis = max(0, round(value.total_seconds() * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def _cue_text(content: str) -> str:
    # A blank line would end the cue, and "-->" or raw markup would be misread by players.
    lines = [line for line in str(content).replace("-->", "->").splitlines() if line.strip()]
    text = "\n".join(lines) or " "
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
