"""Pieces of a Manim video: one H.264 stream per ``play()``/``wait()``, content-addressed, reusable across renders.

A whole-scene render (renderers/manim_scene.py) encodes one stream in which each animation starts on an IDR frame
(a piece: it decodes without what came before, and x264 codes every frame before the IDR first) and joins the
pieces into ``video.mp4`` by copying their packets. Before each animation is drawn, its **address** is computed
(renderers/manim_address.py): a SHA-256 over everything that decides its pixels — the state it starts from (the
animations, mobjects, camera, the functions and classes of the scene code, the clock, the random state), the
frame, the encoder's settings and the library versions.

The task's input may name earlier renders of the same scene by the same user (``reuse``: their ``video.mp4``
staged in the workdir, and each one's piece index: address, frames, drawing milliseconds). An animation whose
address is there is **stepped, not drawn**: Manim interpolates it frame by frame exactly as when drawing (so
updaters, ``dt`` and random draws advance as they would), but the camera draws nothing and nothing is encoded;
its packets are copied from the earlier video. Where the scene's source passes manim_split's rule (no updaters or
other per-frame state, no clock, seeded randomness), such an animation is fast-forwarded instead: one update to
its end, as Manim skips an animation, and the clock set where drawing would have left it. Anything that fails to
hash (an object pickle refuses) gives the piece no address: it is always drawn. A render that ends on a copied
piece takes that earlier render's stills (image.png, thumb.jpg: ``image``/``thumbnail`` of its source, staged
only where that render drew them) instead of drawing its last frame. The index, the video and the stills come
from the same user's own earlier task, so a forged index can only put that user's own pixels into that user's own
video.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from renderers.base import RenderError
from renderers.manim_address import address

PIECES_DIR = "pieces"
STREAM_FILE = "stream.mp4"  # the pieces drawn here, in PIECES_DIR


# -- the earlier renders' pieces ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """A piece of an earlier render: where its packets are, and what drawing it cost then."""
    video: Path
    start: int  # first frame in that video
    frames: int
    ms: int
    final: bool  # the last piece of that video: its last frame is worth drawing for thumb.jpg / image.png
    # the final piece's: that render's image.png and thumb.jpg, made from its exact last frame (staged as
    # ``image`` and ``thumbnail``): a render ending on this piece copies them instead of drawing the frame
    stills: tuple[Path, Path] | None = None


def read_reuse(task_input: dict, workdir: Path) -> dict[str, Source]:
    """address -> an earlier piece, from the task's ``reuse`` input ({"sources": [{"video", "pieces", "image"?,
    "thumbnail"?}]}); a source that is malformed or not staged is skipped (its pieces are drawn again), and so
    are stills that are not there (the final frame is drawn)."""
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
        stills = _stills(source, workdir)
        start = 0
        for index, (digest, frames, ms) in enumerate(pieces):
            if digest and digest not in found:
                final = index == len(pieces) - 1
                found[digest] = Source(video, start, frames, ms, final, stills if final else None)
            start += frames
    return found


def _stills(source: dict, workdir: Path) -> tuple[Path, Path] | None:
    names = source.get("image"), source.get("thumbnail")
    if not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..") for n in names):
        return None
    paths = (workdir / str(names[0]), workdir / str(names[1]))
    return paths if all(p.is_file() and not p.is_symlink() for p in paths) else None


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
    path: Path | None = None  # drawn here: the frames from ``start`` of this render's stream
    start: int = 0
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
    packets whose presentation times fall in its frames, contiguous in decoding order; each moves by the frames
    before it in the output minus where it started. Decoding times are written anew: x264 delays a piece by as
    many frames as it reorders (none for a piece of one or two frames, two with B-frames), and joined as they were
    a short piece's times would not increase into the next. Every piece is given the largest delay: the i-th
    packet of the output decodes at frame i - delay, never after it is shown."""
    import av

    drawn = next((p.path for p in pieces if p.path is not None), None)
    template_path = drawn or next(p.source.video for p in pieces if p.source is not None)
    videos: dict[Path, _Video] = {}
    try:
        with av.open(str(template_path)) as first, \
                av.open(str(dst), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            template = first.streams.video[0]
            extradata = bytes(template.codec_context.extradata or b"")
            stream = out.add_stream_from_template(template=template)
            runs, played = [], 0
            for piece in pieces:
                path = piece.path or (piece.source.video if piece.source else None)
                assert path is not None
                if path not in videos:  # an earlier render's video is read once, whatever it gives
                    videos[path] = _Video(path, fps, extradata)
                runs.append((videos[path], videos[path].packets(piece.source.start if piece.source else piece.start,
                                                                piece.frames, played)))
                played += piece.frames
            order = [frame for _, run in runs for _, frame in run]  # output frame of each packet, decoding order
            delay = max((i - frame for i, frame in enumerate(order)), default=0)
            decoded = 0
            for video, run in runs:
                for packet, _ in run:
                    packet.dts = round((decoded - delay) * video.ticks)
                    packet.stream = stream
                    out.mux(packet)
                    decoded += 1
            for video in videos.values():
                video.close()
    except (av.error.FFmpegError, ValueError) as exc:
        raise RenderError(f"joining the video's pieces failed: {exc}") from None
    return played


class _Video:
    """One MP4's video packets, demuxed once, with each packet's frame index (presentation order)."""

    def __init__(self, path: Path, fps: int, extradata: bytes) -> None:
        import av

        self.path = path
        self.container = av.open(str(path))
        source = self.container.streams.video[0]
        if bytes(source.codec_context.extradata or b"") != extradata:
            raise ValueError(f"{path.name}: its H.264 parameter sets differ from the other pieces'")
        if source.time_base is None:
            raise ValueError(f"{path.name} has no time base")
        self.ticks = 1 / (fps * Fraction(source.time_base))  # ticks per frame
        self.all = [p for p in self.container.demux(source) if p.pts is not None and p.dts is not None]
        # where its first frame is shown: 0 in the videos joined here, a few frames in a live stream's (a resumed
        # render's first source, renderers/manim_live.py), whose decoding times were made non-negative
        self.origin = origin = min((p.pts or 0 for p in self.all), default=0)
        self.frame_of = [round(((p.pts or 0) - origin) / self.ticks) for p in self.all]
        self.taken: set[int] = set()

    def packets(self, start: int, frames: int, played: int) -> list[tuple[Any, int]]:
        """The packets of frames [start, start + frames) in decoding order, each with its frame index in the
        output, where the run begins at frame ``played``; their presentation times moved there. Muxing a packet
        gives its data away: a range is taken once (two pieces of one render never share an address, as the
        scene clock is part of it)."""
        if start in self.taken:
            raise ValueError(f"{self.path.name}: frames from {start} taken twice")
        self.taken.add(start)
        chosen = [(p, n) for p, n in zip(self.all, self.frame_of, strict=True) if start <= n < start + frames]
        if len(chosen) != frames:
            raise ValueError(f"{self.path.name}: {len(chosen)} frames where the piece has {frames}")
        shift = round((played - start) * self.ticks) - self.origin
        for packet, _ in chosen:
            packet.pts = (packet.pts or 0) + shift
        return [(packet, n - start + played) for packet, n in chosen]

    def close(self) -> None:
        self.container.close()


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

    ``encoder`` is the scene's ``_SceneEncoder`` (renderers/manim_scene.py): ``cut``, ``path``, ``frames`` and the
    writer methods it shadows. ``on_frame`` receives the last frame of a stepped piece when it is drawn (a
    source's final piece: the frame thumb.jpg and image.png are made from, if the video ends there)."""

    def __init__(self, scene: Any, encoder: Any, workdir: Path, reuse: dict[str, Source], identity: str,
                 on_frame: Any, fast: bool = False) -> None:
        self.scene, self.renderer, self.encoder = scene, scene.renderer, encoder
        # ``fast``: a copied animation may be fast-forwarded (one step to its end, as Manim skips it) instead of
        # stepped frame by frame: for scenes whose state does not depend on per-frame steps (manim_split's rule)
        self.fast, self.fast_forwarding, self.clock = fast, False, 0.0
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
            draw_last = source.final and source.stills is None  # with stills, the frame is never needed
            piece.source, piece.frames, piece.last_frame_known = source, frames, draw_last
            self.stepping, self.draw_last = True, draw_last
            self.updates, self.expected_updates, self.counted = 0, updates, 0
            self.fast_forwarding = self.fast and not draw_last and not scene.is_current_animation_frozen_frame()
            self.encoder.copied(piece)  # its place in the live stream (renderers/manim_live.py)
            if self.fast_forwarding:  # Manim's skipping: one update to the end; the clock is set at the end
                self.renderer.skip_animations, self.clock = True, self.renderer.time
            self._begin(False, **kwargs)  # the encoder drops whatever reaches it
        else:
            self.frames_before = self.encoder.frames
            self.encoder.cut(piece)  # sets the piece's file and first frame there
            self._begin(True, **kwargs)
        self.pieces.items.append(piece)
        self.current, self.started = piece, time.perf_counter()

    def end_animation(self, allow_write: bool = False) -> None:
        import time

        piece, self.current = self.current, None
        if piece is not None:
            piece.ms = round((time.perf_counter() - self.started) * 1000)
            if self.fast_forwarding:  # the clock where drawing each frame would have left it
                dt = 1 / self.renderer.camera.frame_rate
                for _ in range(piece.frames):
                    self.clock += 1 * dt
                self.renderer.time, self.counted = self.clock, piece.frames
            if piece.source is not None and self.counted != piece.frames:  # cannot happen: the counts are Manim's
                raise RenderError(f"animation {len(self.pieces.items) - 1} stepped {self.counted} frames where "
                                  f"its earlier piece has {piece.frames}")
            if piece.path is not None:
                piece.frames = self.encoder.frames - self.frames_before
        self.stepping = self.draw_last = self.drawing = self.fast_forwarding = False
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
    def last_drawn(self) -> bool:
        """Whether the latest piece was drawn here (its last frame is the tracker's)."""
        return bool(self.pieces.items) and self.pieces.items[-1].source is None

    def final_frame_known(self) -> bool:
        return bool(self.pieces.items) and self.pieces.items[-1].last_frame_known

    def final_stills(self) -> tuple[Path, Path] | None:
        """image.png and thumb.jpg of the video's last frame, where its last piece was copied with them."""
        last = self.pieces.items[-1] if self.pieces.items else None
        return last.source.stills if last is not None and last.source is not None else None
