"""Pieces of a Manim video: one H.264 stream per ``play()``/``wait()``, content-addressed, reusable across renders.

A whole-scene render (renderers/manim_scene.py) encodes each animation into its own piece (a new encoder
stream: the piece starts with an IDR frame and is closed before the next begins) and joins the pieces into
``video.mp4`` by copying their packets. Before each animation is drawn, its **address** is computed: a SHA-256
over everything that decides its pixels —

- the state Manim's own partial-movie cache hashes (``get_hash_from_play_call``): the animations, every mobject
  of the scene and the camera, each object's attributes recursively, arrays by their bytes, functions (rate
  functions, updaters, ``always_redraw`` builders) by their bytecode, constants, closure cells and the module
  globals they name; here as a pickle stream (4x faster than Manim's JSON walk: 4 ms a play for a 20-animation
  Text scene) that also covers what Manim's hash leaves out: the methods of classes the scene code defines (an
  edited ``interpolate_mobject`` of a custom Animation), the scene's own attributes (``self.k`` read by an
  updater), the scene clock, and the state of ``random`` and ``numpy.random`` (a changed seed);
- the frame (width, height, fps), the encoder's resolved settings, and the versions of Manim, PyAV, libavcodec
  and this format (``FORMAT``).

The task's input may name earlier renders of the same scene by the same user (``reuse``: their ``video.mp4``
staged in the workdir, and each one's piece index: address, frames, drawing milliseconds). An animation whose
address is there is **stepped, not drawn**: Manim interpolates it frame by frame exactly as when drawing (so
updaters, ``dt`` and random draws advance as they would), but the camera draws nothing and nothing is encoded;
its packets are copied from the earlier video. Anything that fails to hash (an object pickle refuses) gives the
piece no address: it is always drawn. The index and the video come from the same user's own earlier task, so a
forged index can only put that user's own pixels into that user's own video.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import random
import types
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from renderers.base import RenderError

FORMAT = "manim-pieces-1"
SCENE_MODULE = "user_scene"  # manim_scene.SCENE_MODULE: classes defined there are hashed with their methods
PIECES_DIR = "pieces"
WORKDIR = "<workdir>"  # the task's folder, in paths and strings of the hashed state
DEFAULT_SEED = 0  # a scene that sets no seed gets this one: its pieces then have a stable address
# Attributes whose values depend on the process, not on the picture (Manim's hash drops them too); the camera's
# own frame buffers are its output, not its input, and the display methods it looks up on its first frame a cache.
RUN_DEPENDENT = frozenset({"original_id"})
CAMERA_BUFFERS = frozenset({"pixel_array", "background", "pixel_array_to_cairo_context", "display_funcs"})
# Scene attributes Manim keeps (its renderer, the mobject lists hashed on their own, per-play bookkeeping):
# anything else on the scene is the scene code's own state and is hashed.
SCENE_INTERNALS = frozenset({
    "renderer", "mobjects", "foreground_mobjects", "animations", "moving_mobjects", "static_mobjects",
    "time_progression", "duration", "last_t", "stop_condition", "camera_class", "camera_target", "session_spec",
    "file_writer_settings", "output_plan", "manager", "queue", "widgets", "meshes", "mouse_point",
    "mouse_drag_point", "mouse_press_callbacks", "key_to_function_map", "quit_interaction", "interactive_mode",
    "dearpygui_imported", "skip_animation_preview", "_log_file_path", "updaters", "always_update_mobjects",
    "random_seed", "sender", "kwargs", "skip_animations",
})


# -- addresses ---------------------------------------------------------------------------------------------------

class _Token:
    """What functions, methods, user classes, modules and the scene pickle as: a name and a state."""


def _code_digest(code: types.CodeType) -> bytes:
    parts = [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    for const in code.co_consts:
        parts.append(_code_digest(const) if isinstance(const, types.CodeType) else repr(const).encode())
    return hashlib.sha256(b"\0".join(parts)).digest()


class _Pickler(pickle.Pickler):
    """Pickles the state as it is, but for the kinds ``_kind`` names (decided once per type: a play pickles
    ~50,000 objects, most of them arrays and mobjects that need nothing)."""

    def __init__(self, file: io.BytesIO, scene: Any, workdir: str) -> None:
        super().__init__(file, protocol=5)
        self.scene, self.workdir = scene, workdir

    def reducer_override(self, obj: Any) -> Any:
        kind = _KINDS.get(type(obj))
        if kind is None:
            kind = _KINDS[type(obj)] = _kind(type(obj))
        if kind == "plain":
            return NotImplemented
        if kind == "mobject":
            state = obj.__dict__
            if "original_id" not in state and "id_to_vgroup_dict" not in state:
                return NotImplemented
            # A copy remembers its original's id(); an SVG's groups are keyed by the ids cairo gave the file's
            # elements ("surface7": a count of the surfaces this process made, drawn frames included). Neither
            # is part of the picture.
            state = {k: v for k, v in state.items() if k not in RUN_DEPENDENT}
            if isinstance(state.get("id_to_vgroup_dict"), dict):
                state["id_to_vgroup_dict"] = list(state["id_to_vgroup_dict"].values())
            return _Token, ("object", type(obj)), state
        if kind == "scene":
            return (_Token, ("scene",)) if obj is self.scene else NotImplemented
        if kind == "path":  # a file Manim wrote (a Text's SVG): where the task ran does not matter
            return _Token, ("path", str(obj).replace(self.workdir, WORKDIR))
        if kind == "method":
            return _Token, ("method",), (obj.__func__, obj.__self__)
        if kind == "function":
            code, names = obj.__code__, obj.__globals__
            used = {n: names[n] for n in code.co_names if n in names} if names.get("__name__") == SCENE_MODULE \
                else obj.__module__ + "." + obj.__qualname__  # library code: its version is in the address
            cells = tuple(cell.cell_contents if _filled(cell) else None for cell in obj.__closure__ or ())
            return _Token, ("function", _code_digest(code)), (obj.__defaults__, obj.__kwdefaults__, cells, used)
        if kind == "module":
            return _Token, ("module", obj.__name__)
        if kind == "class":
            if obj.__module__ != SCENE_MODULE:
                return NotImplemented  # by reference (module and name)
            own = {k: v for k, v in vars(obj).items() if not k.startswith("__") or k == "__init__"}
            return _Token, ("class", obj.__qualname__), (obj.__bases__, own)
        if kind == "descriptor":
            return _Token, (type(obj).__name__,), (getattr(obj, "__func__", None), getattr(obj, "fget", None),
                                                   getattr(obj, "fset", None))
        state = {k: v for k, v in obj.__dict__.items() if k not in RUN_DEPENDENT | CAMERA_BUFFERS}
        return _Token, ("camera", type(obj)), state


_KINDS: dict[type, str] = {}


def _kind(cls: type) -> str:
    from manim.camera.camera import Camera
    from manim.mobject.mobject import Mobject
    from manim.scene.scene import Scene

    checks: list[tuple[str, Any]] = [
        ("method", types.MethodType), ("function", types.FunctionType), ("module", types.ModuleType),
        ("class", type), ("descriptor", (staticmethod, classmethod, property)), ("path", PurePath),
        ("camera", Camera), ("scene", Scene), ("mobject", Mobject)]
    return next((name for name, base in checks if issubclass(cls, base)), "plain")


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def frame_identity(width: int, height: int, fps: int, encoder: Any) -> str:
    """What every piece of a render shares: the frame, the encoder's resolved settings, the versions."""
    import av
    from manim._config.video_encoder import video_encoder_fingerprint

    parts = [FORMAT, f"{width}x{height}@{fps}", video_encoder_fingerprint(encoder), metadata.version("manim"),
             av.__version__, repr(av.library_versions.get("libavcodec"))]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def address(scene: Any, identity: str, workdir: Path) -> str | None:
    """The piece address of the animation ``scene`` is about to play (its animations compiled, not begun), or
    None when some object of its state cannot be hashed (the piece is then always drawn)."""
    renderer = scene.renderer
    own = {k: v for k, v in vars(scene).items() if k not in SCENE_INTERNALS}
    state = (identity, repr(renderer.time), random.getstate(), np.random.get_state(), renderer.camera,  # noqa: NPY002
             scene.animations, scene.mobjects, scene.foreground_mobjects, own)
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, scene, str(workdir)).dump(state)
    except Exception:  # noqa: BLE001 - an unpicklable object (a generator, a lock, a local class): no address
        return None
    data = buffer.getvalue().replace(str(workdir).encode(), WORKDIR.encode())  # and in plain strings
    return hashlib.sha256(data).hexdigest()[:32]  # 128 bits: no collision among a box's pieces


def seed_module_code() -> None:
    """The scene module's own top-level code draws from the same seeds each run (Scene seeds again later)."""
    random.seed(DEFAULT_SEED)
    np.random.seed(DEFAULT_SEED)  # noqa: NPY002 - the global state is what scene code uses


def seed_if_unset() -> None:
    """A scene that sets no seed would start from fresh entropy each run, and no piece would match twice: it
    gets DEFAULT_SEED (Manim's Scene seeds ``random`` and ``numpy.random`` from ``config.seed``)."""
    from manim import config

    if config.seed is None:
        config.seed = DEFAULT_SEED


# -- the earlier renders' pieces ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """A piece of an earlier render: where its packets are, and what drawing it cost then."""
    video: Path
    start: int  # first frame in that video
    frames: int
    ms: int
    final: bool  # the last piece of that video: its last frame is worth drawing for thumb.jpg / image.png


def read_reuse(task_input: dict, workdir: Path) -> dict[str, Source]:
    """address -> an earlier piece, from the task's ``reuse`` input ({"sources": [{"video", "pieces"}]}); a
    source that is malformed or not staged is skipped (its pieces are drawn again)."""
    found: dict[str, Source] = {}
    reuse = task_input.get("reuse")
    for source in reuse.get("sources", []) if isinstance(reuse, dict) else []:
        try:
            video = workdir / str(source["video"])
            pieces = [(None if h is None else str(h), int(n), int(ms)) for h, n, ms in source["pieces"]]
        except (KeyError, TypeError, ValueError):
            continue
        if "/" in str(source["video"]) or not video.is_file() or any(n < 1 for _, n, _ in pieces):
            continue
        start = 0
        for index, (digest, frames, ms) in enumerate(pieces):
            if digest and digest not in found:
                found[digest] = Source(video, start, frames, ms, index == len(pieces) - 1)
            start += frames
    return found


def usable(found: dict[str, Source], encoder: Any) -> dict[str, Source]:
    """The pieces whose video carries the H.264 parameter sets this render's encoder writes: one MP4 track holds
    one set, so a piece from another encoder (its settings are in the address too) could never be joined."""
    if not found:
        return found
    expected = parameter_sets(encoder)
    videos = {source.video for source in found.values()}
    same = {video for video in videos if expected and nal_units(_extradata(video)) == expected}
    return {digest: source for digest, source in found.items() if source.video in same}


def parameter_sets(encoder: Any) -> tuple[bytes, ...]:
    """The SPS/PPS a stream of ``encoder`` (Manim's resolved settings) starts with: the encoder opened, no frame."""
    import av

    try:
        with av.open(io.BytesIO(), "w", format=encoder.container_format) as out:
            stream = out.add_stream(encoder.codec, rate=encoder.frame_rate, options=dict(encoder.options))
            stream.pix_fmt, stream.width, stream.height = encoder.pixel_format, encoder.width, encoder.height
            stream.codec_context.open()
            return nal_units(bytes(stream.codec_context.extradata or b""))
    except Exception:  # noqa: BLE001 - no reuse then, never a failed render
        return ()


def nal_units(extradata: bytes | None) -> tuple[bytes, ...]:
    """The NAL units of H.264 extradata, whether the encoder's Annex B (start codes) or MP4's avcC record."""
    if not extradata:
        return ()
    if extradata[0] != 1:  # Annex B
        return tuple(unit.rstrip(b"\0") for unit in extradata.split(b"\0\0\1") if unit.rstrip(b"\0"))
    units, at = [], 6
    try:
        for count in (extradata[5] & 0x1F, None):
            if count is None:
                count, at = extradata[at], at + 1
            for _ in range(count):
                size = int.from_bytes(extradata[at:at + 2], "big")
                units.append(extradata[at + 2:at + 2 + size])
                at += 2 + size
    except IndexError:
        return ()
    return tuple(units)


def _extradata(video: Path) -> bytes | None:
    import av

    try:
        with av.open(str(video)) as container:
            return bytes(container.streams.video[0].codec_context.extradata or b"")
    except Exception:  # noqa: BLE001 - an unreadable earlier video is simply not used
        return None


def last_frame(video: Path) -> np.ndarray:
    """The video's last frame, decoded (RGBA): when the last piece was copied from a render in which it was not
    the last, its final frame was never drawn here."""
    import av

    frame = None
    with av.open(str(video)) as container:
        for decoded in container.decode(container.streams.video[0]):
            frame = decoded
    if frame is None:
        raise RenderError("the joined video holds no frame")
    return frame.to_ndarray(format="rgba")


# -- pieces and the join -----------------------------------------------------------------------------------------

@dataclass
class Piece:
    address: str | None
    frames: int = 0
    ms: int = 0
    path: Path | None = None  # drawn here
    source: Source | None = None  # or copied from an earlier render
    last_frame_known: bool = True


@dataclass
class Pieces:
    items: list[Piece] = field(default_factory=list)

    def index(self) -> list[list[Any]]:
        """The result's ``pieces``: [address, frames, drawing ms] per piece, in video order."""
        return [[p.address, p.frames, p.source.ms if p.source else p.ms] for p in self.items]

    def reuse(self) -> dict[str, Any]:
        reused = [p for p in self.items if p.source is not None]
        saved = sum(p.source.ms - p.ms for p in reused if p.source is not None)
        return {"pieces": len(self.items), "reusedPieces": len(reused), "secondsSaved": round(max(0, saved) / 1000, 2)}


def join(pieces: list[Piece], fps: int, dst: Path) -> int:
    """Write ``dst`` from the pieces' packets, back to back, moov atom first; returns the frames written.

    Every piece starts with an IDR frame and holds whole GOPs (its encoder was flushed), so a piece is the run of
    packets whose presentation times fall in its frames, contiguous in decoding order. Each moves by the frames
    before it in the output minus where it started; x264 gives every piece the same B-frame delay, so decoding
    times keep increasing across the joins (the muxer refuses them otherwise, and the join fails)."""
    import av

    drawn = next((p.path for p in pieces if p.path is not None), None)
    template_path = drawn or next(p.source.video for p in pieces if p.source is not None)
    try:
        with av.open(str(template_path)) as first, \
                av.open(str(dst), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            template = first.streams.video[0]
            extradata = bytes(template.codec_context.extradata or b"")
            stream = out.add_stream_from_template(template=template)
            played = 0
            for piece in pieces:
                played += _copy_piece(piece, fps, played, extradata, stream, out)
    except (av.error.FFmpegError, ValueError) as exc:
        raise RenderError(f"joining the video's pieces failed: {exc}") from None
    return played


def _copy_piece(piece: Piece, fps: int, played: int, extradata: bytes, stream: Any, out: Any) -> int:
    import av  # noqa: F811 - the caller's import is local to it

    path = piece.path or (piece.source.video if piece.source else None)
    assert path is not None
    start = piece.source.start if piece.source else 0
    with av.open(str(path)) as container:
        source = container.streams.video[0]
        if bytes(source.codec_context.extradata or b"") != extradata:
            raise ValueError(f"{path.name}: its H.264 parameter sets differ from the other pieces'")
        if source.time_base is None:
            raise ValueError(f"{path.name} has no time base")
        ticks = 1 / (fps * Fraction(source.time_base))  # ticks per frame
        packets = [p for p in container.demux(source) if p.pts is not None and p.dts is not None]
        origin = min((p.pts or 0 for p in packets), default=0)
        chosen = [p for p in packets if start <= round(((p.pts or 0) - origin) / ticks) < start + piece.frames]
        if len(chosen) != piece.frames:
            raise ValueError(f"{path.name}: {len(chosen)} frames where the piece has {piece.frames}")
        shift = round((played - start) * ticks)
        for packet in chosen:
            packet.pts, packet.dts = (packet.pts or 0) + shift, (packet.dts or 0) + shift
            packet.stream = stream
            out.mux(packet)
    return piece.frames


# -- drawing or stepping each animation --------------------------------------------------------------------------

def expected_frames(scene: Any) -> tuple[int, int]:
    """(frames, camera updates) the compiled animation will give, as Manim's renderer counts them: a static wait
    is one frame repeated, anything else one frame per step of ``np.arange(0, duration, 1 / fps)``."""
    rate = scene.renderer.camera.frame_rate
    if scene.is_current_animation_frozen_frame():
        return int(scene.duration / (1 / rate)), 1
    steps = len(np.arange(0, scene.duration, 1 / rate))
    return steps, steps


class Segmenter:
    """Hooks the scene's file writer and renderer: each animation becomes a piece, drawn into its own file or,
    when its address is in ``reuse``, stepped without drawing and copied later from the earlier render.

    ``encoder`` is the scene's ``_SceneEncoder`` (renderers/manim_scene.py): ``next_file``, ``frames`` and the
    writer methods it shadows. ``on_frame`` receives the last frame of a stepped piece when it is drawn (a
    source's final piece: the frame thumb.jpg and image.png are made from, if the video ends there)."""

    def __init__(self, scene: Any, encoder: Any, workdir: Path, reuse: dict[str, Source], identity: str,
                 on_frame: Any) -> None:
        self.scene, self.renderer, self.encoder = scene, scene.renderer, encoder
        self.folder = workdir / PIECES_DIR
        self.folder.mkdir(exist_ok=True)
        self.reuse, self.identity, self.on_frame = reuse, identity, on_frame
        self.pieces = Pieces()
        self.current: Piece | None = None
        self.stepping = False
        self.draw_last = False  # stepping a source's final piece: draw its last frame
        self.updates = self.expected_updates = self.counted = 0
        self.drawing = False
        self.started, self.frames_before = 0.0, 0
        writer, renderer = self.renderer.file_writer, self.renderer
        self._begin, self._end = writer.begin_animation, writer.end_animation
        writer.begin_animation, writer.end_animation = self.begin_animation, self.end_animation
        self._update, self._add = renderer.update_frame, renderer.add_frame
        self._get, self._static = renderer.get_frame, renderer.save_static_frame_data
        # Instance attributes shadow the methods, so Manim's own calls go through these.
        renderer.update_frame, renderer.add_frame = self.update_frame, self.add_frame
        renderer.get_frame, renderer.save_static_frame_data = self.get_frame, self.save_static

    # the file writer's side: one piece per animation that writes frames
    def begin_animation(self, allow_write: bool = False, **kwargs: Any) -> None:
        import time

        if not allow_write:  # a skipped animation (a section's): no frames, no piece
            self._begin(allow_write, **kwargs)
            return
        scene = self.scene
        playing = bool(scene.animations) and scene.stop_condition is None  # wait_until: frames not known ahead
        digest = address(scene, self.identity, self.folder.parent) if playing else None
        frames, updates = expected_frames(scene) if playing else (0, 0)
        source = self.reuse.get(digest) if digest else None
        piece = Piece(digest)
        if source is not None and source.frames == frames:
            piece.source, piece.frames, piece.last_frame_known = source, frames, source.final
            self.stepping, self.draw_last = True, source.final
            self.updates, self.expected_updates, self.counted = 0, updates, 0
            self._begin(False, **kwargs)  # the encoder drops whatever reaches it
        else:
            piece.path = self.folder / f"{len(self.pieces.items):04d}.mp4"
            self.encoder.next_file(piece.path)
            self.frames_before = self.encoder.frames
            self._begin(True, **kwargs)
        self.pieces.items.append(piece)
        self.current, self.started = piece, time.perf_counter()

    def end_animation(self, allow_write: bool = False) -> None:
        import time

        piece, self.current = self.current, None
        if piece is not None:
            piece.ms = round((time.perf_counter() - self.started) * 1000)
            if piece.source is not None and self.counted != piece.frames:  # cannot happen: the counts are Manim's
                raise RenderError(f"animation {len(self.pieces.items) - 1} stepped {self.counted} frames where "
                                  f"its earlier piece has {piece.frames}")
            if piece.path is not None:
                piece.frames = self.encoder.frames - self.frames_before
        self.stepping = self.draw_last = self.drawing = False
        self._end(allow_write)

    # the renderer's side: while stepping, the camera draws nothing (but a source's final frame)
    def update_frame(self, scene: Any, *args: Any, **kwargs: Any) -> None:
        if not self.stepping:
            self._update(scene, *args, **kwargs)
            return
        self.updates += 1
        self.drawing = self.draw_last and self.updates == self.expected_updates
        if self.drawing:
            self._update(scene, *args, **kwargs)

    def get_frame(self) -> Any:
        return self._get() if not self.stepping or self.drawing else None

    def add_frame(self, frame: Any, num_frames: int = 1) -> None:
        if not self.stepping:
            self._add(frame, num_frames)
            return
        self.counted += num_frames
        self.renderer.time += num_frames * (1 / self.renderer.camera.frame_rate)  # as drawing moves the clock
        if self.drawing and frame is not None:
            self.on_frame(frame)

    def save_static(self, scene: Any, static_mobjects: Any) -> Any:
        if self.stepping and not self.draw_last:
            self.renderer.static_image = None
            return None
        stepping, self.stepping = self.stepping, False  # its own update_frame/get_frame draw for real
        try:
            return self._static(scene, static_mobjects)
        finally:
            self.stepping = stepping

    # what the scene's outputs need
    def final_frame_known(self) -> bool:
        return bool(self.pieces.items) and self.pieces.items[-1].last_frame_known
