"""The live stream of a Manim render: each finished piece becomes a playable fMP4 media segment while the scene
renders (issue #22 item 2), in ``live/`` of the task's workdir, beside an init segment and an index.

One fragmented-MP4 muxer (``frag_keyframe+empty_moov+default_base_moof``) is fed the very packets the scene's
encoder writes into ``pieces/stream.mp4`` (renderers/manim_scene.py ``_SceneEncoder``), copied before that muxer
takes them, and the packets of reused pieces (copied from an earlier render's video, renderers/manim_segments.py)
at their place in the video: so ``init.mp4`` + the segments, in order, are the final ``video.mp4``'s packets,
frame for frame. The muxer writes a fragment out when a key frame arrives, and every piece starts with an IDR
frame: right after the first packet of piece k+1 is muxed, all of piece k's bytes have left the muxer, and they
are its segment. x264 holds frames back (lookahead, B-frames), so piece k is complete only when the IDR of the
next piece leaves the encoder, or at the end.

Files (each written to a temporary name and renamed, so a reader never sees half of one):
- ``init.mp4``: ftyp + moov (no samples);
- ``seg00000.m4s``…: one per piece, moof + mdat pairs;
- ``index.json``: ``{"fps", "codec", "init", "delay", "done", "failed", "muxMs", "segments": [{"name", "piece",
  "frames", "start", "duration", "address", "ms", "reused", "bytes"}]}``, rewritten after each segment; ``done``
  once the last is written; ``muxMs``: the CPU time spent here so far (what the live stream costs the render).

Timestamps are the live stream's own: frame n is shown at n / fps (plus ``delay`` frames: decoding times are
n - delay, made non-negative by the muxer, as the join makes them for the final file). A live stream never fails a
render: any error stops it (``failed``) and the render goes on.
"""
from __future__ import annotations

import json
import os
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

LIVE_DIR = "live"
INDEX = "index.json"
INIT = "init.mp4"
SEGMENT = "seg{:05d}.m4s"
# Decoding times run this many frames behind presentation times. x264's reordering delay with Manim's settings
# is 2 (B-pyramid); a piece copied from an earlier render keeps its own order, never deeper than the encoder's.
DELAY = 4
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+skip_trailer"
# Past these the stream stops (the render goes on): the worker mirrors no more than this (executors/live_mirror.py),
# and the segments share the task's disk and file quotas with the render itself.
MAX_SEGMENTS = 5000
MAX_BYTES = 1 << 30


def segment_name(index: int) -> str:
    return SEGMENT.format(index)


def codec_string(extradata: bytes) -> str:
    """RFC 6381's ``avc1.PPCCLL`` from the SPS in H.264 extradata (Annex B or avcC): what MSE and
    HLS's CODECS attribute need."""
    from renderers.manim_segments import nal_units

    sps = next((unit for unit in nal_units(extradata) if unit and unit[0] & 0x1F == 7), None)
    return f"avc1.{sps[1:4].hex()}" if sps is not None and len(sps) >= 4 else "avc1.640028"


def annex_b(data: bytes, length_size: int) -> bytes:
    """An MP4 sample (NAL units, each after its big-endian length) as Annex B (each after a start code): the
    muxer's input format here, which it turns back into exactly these NAL units."""
    out, at = bytearray(), 0
    while at + length_size <= len(data):
        size = int.from_bytes(data[at:at + length_size], "big")
        out += b"\0\0\0\1" + data[at + length_size:at + length_size + size]
        at += length_size + size
    return bytes(out)


@dataclass
class _Entry:
    """A piece in video order: drawn (its frames from ``at`` of the encoder's stream) or copied (placed after the
    encoder's first ``at`` frames). ``piece`` is the Segmenter's Piece: address, frames, drawing ms."""
    piece: Any
    at: int
    copied: bool
    cut: bool = False  # its segment is written


class ByteSink:
    """Where the muxer writes: a growing buffer the segments are cut from (also appliance/delivery/scenestream.py)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: Any) -> int:
        self.data += data
        return len(data)


class LiveStream:
    """Fed from the encoder's thread (drawn packets, the pieces' order) and, before the encoder starts or after it
    stops, from the render thread (copied pieces); a lock keeps the muxer's calls in one order."""

    def __init__(self, folder: Path, fps: int) -> None:
        self.folder, self.fps = folder, fps
        self.folder.mkdir(exist_ok=True)
        self.lock = threading.Lock()
        self.sink = ByteSink()
        self.out: Any = None
        self.stream: Any = None
        self.extradata = b""
        self.source: Any = None  # the encoder's stream whose packets came last
        self.pending: deque[_Entry] = deque()
        self.started: list[_Entry] = []  # in video order; the last one is still being muxed
        self.awaiting_first = False  # the newest started entry has no packet muxed yet
        self.frames = 0  # live frames muxed before the current entry
        self.decoded = 0  # packets muxed
        self.offset = 0  # live frame of the encoder's stream frame 0 of the current drawn entry
        self.segments: list[dict[str, Any]] = []
        self.bytes = 0  # the segments' bytes written so far
        self.videos: dict[Path, tuple[Any, bytes]] = {}  # an earlier video, read once; its parameter sets
        self.failed: str | None = None
        self.seconds = 0.0  # CPU time spent here, by whichever thread: what the live stream costs the render

    # -- the plan: each piece as it begins, in video order ------------------------------------------------------
    def drawn(self, piece: Any, start: int) -> None:
        """The encoder's thread: a drawn piece begins at frame ``start`` of the encoder's stream."""
        with self.lock:
            self.pending.append(_Entry(piece, start, False))

    def copied(self, piece: Any, after: int, now: bool) -> None:
        """A copied piece follows the encoder's first ``after`` frames; ``now``: no drawn frame is still inside
        the encoder (it has not started, or it has finished), so its packets go out at once."""
        with self.lock:
            self.pending.append(_Entry(piece, after, True))
            if now:
                self._timed(self._flush_pending)

    # -- packets ------------------------------------------------------------------------------------------------
    def packets(self, packets: list[Any], stream: Any) -> None:
        """The encoder's packets, before the scene's own muxer takes them (muxing gives a packet's data away);
        ``stream`` is the encoder's output stream."""
        with self.lock:
            self._timed(self._packets, packets, stream)

    def close(self) -> None:
        """The encoder has finished: what is still pending goes out, the muxer ends, the last segment is cut."""
        with self.lock:
            self._timed(self._close)
            for video, _ in self.videos.values():
                video.close()
            self.videos.clear()

    def _timed(self, call: Any, *args: Any) -> None:
        import time

        if self.failed is not None:
            return
        begun = time.thread_time()
        try:
            call(*args)
        except Exception as exc:  # noqa: BLE001 - the live view stops; the render does not
            self.failed = f"{type(exc).__name__}: {exc}"
            self._write_index()
        finally:
            self.seconds += time.thread_time() - begun

    def _packets(self, packets: list[Any], stream: Any) -> None:
        import av

        for packet in packets:
            if packet.pts is None:
                continue
            pts = int(packet.pts)
            while self.pending and self.pending[0].at <= pts:
                self._begin(self.pending.popleft())
            if self.out is None:  # the encoder's parameter sets (Annex B): the muxer's input format
                self._open(stream, bytes(stream.codec_context.extradata or b""))
            elif stream is not self.source:  # a later run of the encoder (renderers/manim_encoder.py)
                if bytes(stream.codec_context.extradata or b"") != self.extradata:
                    raise RuntimeError("an encoder run's parameter sets differ from the stream's")
            self.source = stream
            self._mux(av.Packet(bytes(packet)), self.offset + pts, bool(packet.is_keyframe))

    def _flush_pending(self) -> None:
        while self.pending:
            self._begin(self.pending.popleft())

    def _close(self) -> None:
        self._flush_pending()
        if self.out is not None:
            self.out.close()
            self.out = None
        self._cut()
        self._write_index(done=True)

    def _begin(self, entry: _Entry) -> None:
        """Entry ``entry`` starts: a drawn one with its next packet, a copied one with all of its packets now."""
        self.frames = self.frames + (self.started[-1].piece.frames if self.started else 0)
        self.started.append(entry)
        self.awaiting_first = True
        if entry.copied:
            self._mux_copied(entry)
        else:
            self.offset = self.frames - entry.at

    def _mux_copied(self, entry: _Entry) -> None:
        import av

        from renderers.manim_segments import _Video, nal_units

        source = entry.piece.source
        if source.video not in self.videos:
            with av.open(str(source.video)) as probe:
                own = bytes(probe.streams.video[0].codec_context.extradata or b"")
            self.videos[source.video] = (_Video(source.video, self.fps, own), own)
        video, own = self.videos[source.video]
        length_size = (own[4] & 3) + 1 if own[:1] == b"\1" else 0  # avcC: samples are length-prefixed
        if self.out is None:
            self._open(video.container.streams.video[0], b"".join(b"\0\0\0\1" + u for u in nal_units(own)))
        for packet, frame in video.packets(source.start, source.frames, self.frames):
            data = bytes(packet)
            self._mux(av.Packet(annex_b(data, length_size) if length_size else data), frame,
                      bool(packet.is_keyframe))

    def _mux(self, packet: Any, frame: int, key: bool) -> None:
        packet.time_base = Fraction(1, self.fps)
        packet.pts, packet.dts = frame, self.decoded - DELAY
        packet.is_keyframe = key
        packet.stream = self.stream
        self.out.mux(packet)
        self.decoded += 1
        if self.awaiting_first:  # the entries before are all out now (the muxer flushed their fragments)
            self.awaiting_first = False
            self._cut(keep_newest=True)

    def _open(self, template: Any, extradata: bytes) -> None:
        """The muxer, its one stream shaped as ``template`` (the encoder's or an earlier video's) with Annex B
        parameter sets; ``init.mp4`` is what it writes first."""
        import av

        self.extradata = extradata
        self.out = av.open(self.sink, "w", format="mp4", options={"movflags": MOVFLAGS, "flush_packets": "1"})
        self.stream = self.out.add_stream_from_template(template=template)
        self.stream.codec_context.extradata = extradata
        self.out.start_encoding()
        self._write(INIT, bytes(self.sink.data))
        self.sink.data.clear()

    def _cut(self, keep_newest: bool = False) -> None:
        """Write the segments of the started entries not yet written; ``keep_newest``: all but the newest, whose
        first packet is still inside the muxer (the sink holds the others' bytes only)."""
        done = [e for e in self.started if not e.cut]
        if keep_newest:
            done = done[:-1]
        for entry in done:
            entry.cut = True
            index = len(self.segments)
            data = bytes(self.sink.data)
            self.sink.data.clear()
            self.bytes += len(data)
            if index >= MAX_SEGMENTS or self.bytes > MAX_BYTES:
                raise RuntimeError(f"the live stream stops past {MAX_SEGMENTS} segments or {MAX_BYTES} bytes")
            name = segment_name(index)
            self._write(name, data)
            piece = entry.piece
            start = self.segments[-1]["start"] + self.segments[-1]["frames"] if self.segments else 0
            self.segments.append({"name": name, "piece": index, "frames": piece.frames, "start": start,
                                  "duration": round(piece.frames / self.fps, 6), "address": piece.address,
                                  "ms": piece.source.ms if piece.source is not None else piece.ms,
                                  "reused": piece.source is not None, "bytes": len(data)})
            self._write_index()

    def _write(self, name: str, data: bytes) -> None:
        tmp = self.folder / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / name)

    def _write_index(self, done: bool = False) -> None:
        index = {"fps": self.fps, "codec": codec_string(self.extradata), "init": INIT, "delay": DELAY,
                 "done": done, "failed": self.failed, "muxMs": round(self.seconds * 1000, 1),
                 "segments": self.segments}
        try:
            self._write(INDEX, json.dumps(index, separators=(",", ":")).encode())
        except OSError:
            pass
