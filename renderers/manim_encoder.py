"""The H.264 encoder of a Manim render: Manim's own encoder settings, on a thread of its own, in runs.

Manim encodes a file per play(), waits at the end of each play() for its encoder to drain, then concatenates
the files, and the video was then remuxed for faststart: here the encoder thread keeps working across play()
boundaries and nothing is copied afterwards. Codec, pixel format and x264 options are Manim's resolved
segment settings (the CLI's), and a frame repeated by wait() is converted to YUV once, not per repeat.

Each animation starts on an IDR frame (``cut``): a piece (renderers/manim_segments.py) that decodes on its own.
The drawn pieces are written in **runs**: one encoder and one file (``pieces/stream.mp4``, then
``stream_1.mp4``...) per stretch of drawn pieces. A piece copied from an earlier render (``copied``) ends the run
before it: the encoder is drained and closed on its thread at once, while the render thread goes on stepping the
copied animations. One encoder all along would hold the run's last frames in x264's lookahead (40 frames at
Manim's settings) until the end of the scene: an edited render that draws one animation then copies the others
waited for the whole animation's encoding after its last copied one (about 0.17 s of a 0.8 s re-render). Every
run has the same settings and so the same parameter sets, which the join (manim_segments.join) checks: runs are
for libx264 only (an NVENC session held by the task is one encoder all along, as its parameter sets were never
compared). A render that copies nothing writes one run, as before (restarting the encoder per piece cost 15 %
more encoding).
"""
from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from queue import Queue
from threading import Thread
from typing import Any

import numpy as np

from renderers import manim_live as live
from renderers.encoder import X264


class SceneEncoder:
    """Shadows the scene's file writer (begin/end_animation, write_frame, finish, abort_encode_jobs, save_image):
    every frame Manim writes goes to the encoder thread, with the live stream (renderers/manim_live.py) fed the
    same packets."""

    def __init__(self, writer: Any, path: Path, stream: live.LiveStream | None = None) -> None:
        self.spec, self.path, self.live = writer.video_encoder, path, stream
        # (frame, repeats, the piece it starts or None); a frame of None: a copied piece goes here in the video
        # (repeats 1: and the run before it ends)
        self.queue: Queue[tuple[np.ndarray | None, int, Any] | None] = Queue(
            maxsize=writer.settings.encoder_queue_size)
        self.thread: Thread | None = None
        self.error: BaseException | None = None
        self.writing = False
        self.key_next: Any = None  # cut(): the next frame starts this piece
        self.frames = 0
        # the runs (render thread's view): their files, where the current one starts, whether a copied piece ended it
        self.paths = [path]
        self.run_start = 0
        self.run_ended = False
        # Instance attributes shadow the methods: Manim's renderer and Manager call these instead.
        writer.begin_animation, writer.end_animation = self.begin_animation, self.end_animation
        writer.write_frame, writer.finish, writer.abort_encode_jobs = self.write_frame, self.finish, self.abort
        writer.save_image = self.save_image

    def save_image(self, pixels: np.ndarray) -> None:
        """Manim saves a still's frame as a PNG of its own: here that is image.png, written with the outputs."""

    def begin_animation(self, allow_write: bool = False, **_: Any) -> None:
        self.writing = allow_write
        if allow_write and self.thread is None:
            self.thread = Thread(target=self._encode, name="scene-encoder", daemon=True)
            self.thread.start()

    def cut(self, piece: Any) -> None:
        """The next frame written is an IDR frame and starts ``piece``: its file (``piece.path``) and first frame
        there (``piece.start``) are set here; after a copied piece, a new run begins with it."""
        if self.run_ended:
            self.run_ended, self.run_start = False, self.frames
            self.paths.append(self.path.with_name(f"{self.path.stem}_{len(self.paths)}{self.path.suffix}"))
        piece.path, piece.start = self.paths[-1], self.frames - self.run_start
        self.key_next = piece

    def copied(self, piece: Any) -> None:
        """A piece copied from an earlier render comes here in the video: the current run ends (its encoder drains
        on its thread), and the live stream (renderers/manim_live.py) puts the piece's packets there, after the
        frames drawn so far."""
        ends = self.frames > self.run_start and not self.run_ended and self.spec.codec == X264
        self.run_ended = self.run_ended or ends
        if self.thread is None:  # nothing drawn is inside the encoder
            if self.live is not None:
                self.live.copied(piece, self.frames, now=True)
        else:
            self.queue.put((None, int(ends), piece))

    def end_animation(self, allow_write: bool = False) -> None:
        self.writing = False

    def write_frame(self, pixels: np.ndarray, *, repeat: int = 1) -> None:
        if self.error is not None:
            raise self.error
        if self.writing:  # frames outside a play() (skipped sections) are not part of the video, as in Manim
            self.queue.put((pixels, repeat, self.key_next))
            self.key_next = None
            self.frames += repeat

    def finish(self) -> None:
        self._close()
        if self.error is not None:
            raise self.error
        if self.live is not None:
            self.live.close()

    def abort(self, reraise_encoder_failures: bool = False) -> None:
        self._close()
        for path in self.paths:
            path.unlink(missing_ok=True)

    def _close(self) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
            self.thread = None

    def _encode(self) -> None:
        from av.video.reformatter import VideoReformatter

        run: _Run | None = None
        to_yuv = VideoReformatter()  # one swscale context for the whole scene
        pts = 0  # the scene's frame count: each run's timestamps go on from the one before
        try:
            while (item := self.queue.get()) is not None:
                pixels, repeats, piece = item
                if pixels is None:  # a copied piece: the run may end here; the piece goes out in the live stream
                    if repeats and run is not None:
                        run.close(self)
                        run = None
                    if self.live is not None:  # at once where no drawn frame is inside the encoder
                        self.live.copied(piece, pts, now=run is None)
                    continue
                if run is None:
                    run = _Run(self.spec, piece.path if piece is not None and piece.path is not None else self.path)
                if piece is not None and self.live is not None:
                    self.live.drawn(piece, pts)
                pts = run.write(self, to_yuv, pixels, repeats, piece is not None, pts)
            if run is not None:
                run.close(self)
                run = None
        except BaseException as exc:  # noqa: BLE001 - handed to the render thread at its next frame or at finish
            self.error = exc
            if run is not None:
                with contextlib.suppress(Exception):
                    run.out.close()
            while self.queue.get() is not None:  # keep draining, so the render thread never blocks on put()
                pass

    def mux(self, out: Any, stream: Any, packets: list[Any]) -> None:
        if self.live is not None and packets:  # before the muxer takes their data
            self.live.packets(packets, stream)
        out.mux(packets)

    def meta(self, fps: int) -> dict:
        return {"duration": round(self.frames / fps, 3), "frames": self.frames, "width": self.spec.width,
                "height": self.spec.height, "fps": fps}


class _Run:
    """One encoder and its file, moov atom first."""

    def __init__(self, spec: Any, path: Path) -> None:
        import av

        # a forced key frame is an IDR frame (x264 makes it one anyway while GOPs are closed; NVENC only so)
        options = {**dict(spec.options), "forced-idr": "1"}
        self.spec = spec
        self.out = av.open(str(path), "w", format=spec.container_format, options={"movflags": "+faststart"})
        self.stream = self.out.add_stream(spec.codec, rate=spec.frame_rate, options=options)
        self.stream.pix_fmt, self.stream.width, self.stream.height = spec.pixel_format, spec.width, spec.height

    def write(self, encoder: SceneEncoder, to_yuv: Any, pixels: np.ndarray, repeats: int, key: bool,
              pts: int) -> int:
        """Encode ``pixels`` ``repeats`` times from ``pts`` (the first an I frame when ``key``); the next pts."""
        import av
        from av.video.frame import PictureType

        spec = self.spec
        # The renderer hands over a fresh copy of each frame: wrap it, don't copy it again.
        rgba = av.VideoFrame.from_numpy_buffer(pixels, format="rgba")
        frame = to_yuv.reformat(rgba, format=spec.pixel_format)
        frame.time_base = Fraction(spec.frame_rate.denominator, spec.frame_rate.numerator)
        for repeat in range(repeats):
            frame.pict_type = PictureType.I if key and not repeat else PictureType.NONE
            frame.pts, pts = pts, pts + 1  # the encoder keeps its own reference to each frame sent
            encoder.mux(self.out, self.stream, self.stream.encode(frame))
        return pts

    def close(self, encoder: SceneEncoder) -> None:
        encoder.mux(self.out, self.stream, self.stream.encode())
        self.out.close()
