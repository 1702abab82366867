"""A rendering movie's finished scenes as a live stream (issue #22 item 2): the scene clips its ``movie.scene``
tasks made, in order up to the first one still rendering, remuxed into an fMP4 init segment and one media
segment per scene, with the index the dashboard's playlist is written from (api/dashboard/livestream.py), in
the same shape as a Manim render's (renderers/manim_live.py, executors/live_mirror.py).

The clips' video packets are copied, never decoded or encoded: the assemble task joins the same packets into the
movie's ``output.mp4`` (renderers/movie/assemble.py), so the segments show its frames exactly. Audio is left out:
the live view is a picture of the render, and the soundtrack is mixed over whole scenes. Timestamps are counted
in frames at the movie's rate, decoding times ``DELAY`` frames behind presentation as the Manim stream has them.
Every scene clip starts on a key frame, so the muxer (``frag_keyframe``) has written all of scene k's bytes once
the first packet of scene k+1 is in: they are its segment. The clips come from the artifact store (the server's
own files: the tasks' outputs, verified when they were taken in).

A clip whose H.264 parameter sets differ from the first clip's cannot share its init segment: the stream stops
before it (the page shows what came before, then the finished movie). Built by the server on request, in a
thread, into ``data_dir/tmp/live-<job>/live/``, and built again only when another scene has finished.
"""
from __future__ import annotations

import json
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

from renderers.manim_live import ByteSink

DELAY = 4  # renderers/manim_live.py's: decoding times this many frames behind
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+skip_trailer"
INIT, INDEX = "init.mp4", "index.json"


def segment_name(index: int) -> str:
    return f"seg{index:05d}.m4s"


def build(clips: list[Path], fps: int, folder: Path, key: str) -> dict[str, Any] | None:
    """The index of the stream of ``clips`` (in order) written into ``folder``; the folder's own when it was
    built from the same ``key`` already; None when not even the first clip can be read."""
    try:
        index = json.loads((folder / INDEX).read_text())
        if index.get("key") == key:
            return index
    except (OSError, ValueError):
        pass
    import av

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sink, extradata, decoded, start = ByteSink(), b"", 0, 0
    segments: list[dict[str, Any]] = []
    out: Any = None
    stream: Any = None
    try:
        for number, clip in enumerate(clips):
            with av.open(str(clip)) as container:
                source = container.streams.video[0]
                own = bytes(source.codec_context.extradata or b"")
                if out is None:
                    out = av.open(sink, "w", format="mp4", options={"movflags": MOVFLAGS, "flush_packets": "1"})
                    stream, extradata = out.add_stream_from_template(template=source), own
                    out.start_encoding()
                    _write(folder, INIT, bytes(sink.data))
                    sink.data.clear()
                elif own != extradata:
                    break  # another encoder's parameter sets: this init segment cannot carry it
                assert source.time_base is not None
                ticks = Fraction(source.time_base) * fps  # frames per tick of the clip's time base
                packets = [p for p in container.demux(source) if p.pts is not None]
                origin = min((int(p.pts or 0) for p in packets), default=0)
                frames = 0
                for n, packet in enumerate(packets):
                    frame = round((int(packet.pts or 0) - origin) * ticks)
                    frames = max(frames, frame + 1)
                    packet.time_base = Fraction(1, fps)
                    packet.pts, packet.dts = start + frame, decoded - DELAY
                    packet.stream = stream
                    out.mux(packet)
                    decoded += 1
                    if n == 0 and segments and not segments[-1].get("written"):
                        _cut(folder, sink, segments)  # scene k is out: the first packet of k+1 is in
            segments.append({"name": segment_name(number), "piece": number, "frames": frames, "start": start,
                             "duration": round(frames / fps, 6), "address": None, "ms": 0, "reused": False})
            start += frames
        if out is not None:
            out.close()
            _cut(folder, sink, segments)
    except (av.error.FFmpegError, OSError, ValueError, IndexError):
        segments = [s for s in segments if s.get("written")]  # what was cut before it failed is still good
    if not segments:
        return None
    index = {"fps": fps, "codec": codec_string(extradata), "init": INIT, "delay": DELAY, "done": False,
             "key": key, "segments": [{k: v for k, v in s.items() if k != "written"} for s in segments]}
    _write(folder, INDEX, json.dumps(index).encode())
    return index


def codec_string(extradata: bytes) -> str:
    """RFC 6381's ``avc1.PPCCLL`` from an MP4 clip's avcC record (profile, constraints, level follow its version
    byte), as renderers/manim_live.py gives it from the SPS; a common High profile string where there is none."""
    return f"avc1.{extradata[1:4].hex()}" if len(extradata) >= 4 and extradata[0] == 1 else "avc1.640028"


def _cut(folder: Path, sink: ByteSink, segments: list[dict[str, Any]]) -> None:
    """The bytes the muxer wrote since the last cut are the newest unwritten segment's."""
    pending = [s for s in segments if not s.get("written")]
    if pending:
        _write(folder, pending[0]["name"], bytes(sink.data))
        pending[0]["written"] = True
        sink.data.clear()


def _write(folder: Path, name: str, data: bytes) -> None:
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)
