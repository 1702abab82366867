"""``join_blocks``: a stills scene's encoded blocks, in playlist order, and its audio track → one MP4, in-process.

This is the stills path's last step. It used to be a second ffmpeg process (the concat demuxer copying the
blocks and encoding the audio); starting that process, probing every block and encoding the audio cost about
0.2-0.3 s of a 6 s scene. Now the block encoder writes the audio too, and the packets are copied here with
PyAV (libav, already loaded in the warm worker): no process, no re-encoding.

Timestamps follow what ffmpeg's concat-and-copy gave: every block starts at the same B-frame delay (they are
written without edit lists), so each block's packets move by the frames played before it, minus that delay;
the video then starts at 0 with negative DTS (an edit list), and the AAC priming stays below zero as encoded.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

from renderers.ffmpeg import FfmpegError


def join_blocks(playlist: list[Path], frames: list[int], fps: int, audio: Path, dst: Path) -> None:
    """Write ``dst``: the video of ``playlist[i]`` (``frames[i]`` frames each) back to back, and ``audio``'s
    first audio stream, both copied. Packets are interleaved by decoding time. Fails with FfmpegError."""
    import av

    try:
        _join(playlist, frames, fps, audio, dst)
    except (av.error.FFmpegError, ValueError) as exc:
        raise FfmpegError(["pyav-join", *map(str, playlist[:1]), str(dst)], str(exc)) from None


def _join(playlist: list[Path], frames: list[int], fps: int, audio: Path, dst: Path) -> None:
    import av

    with av.open(str(playlist[0])) as first, av.open(str(audio)) as sound, av.open(str(dst), mode="w") as out:
        video_out = out.add_stream_from_template(template=first.streams.video[0])
        audio_out = out.add_stream_from_template(template=sound.streams.audio[0])
        video = _video_packets(playlist, frames, fps)
        audio_packets = (p for p in sound.demux(sound.streams.audio[0]) if p.dts is not None)
        for packet in heapq.merge(video, audio_packets, key=lambda p: p.dts * p.time_base):
            packet.stream = video_out if packet.stream.type == "video" else audio_out
            out.mux(packet)


def _video_packets(playlist: list[Path], frames: list[int], fps: int) -> Iterator:
    import av

    played = Fraction(0)  # seconds of video before the current block
    for path, count in zip(playlist, frames, strict=True):
        with av.open(str(path)) as block:
            stream = block.streams.video[0]
            packets = [p for p in block.demux(stream) if p.dts is not None and p.pts is not None]
            if not packets or stream.time_base is None:
                raise ValueError(f"{path.name} holds no video packets")
            delay = min(int(p.pts or 0) for p in packets)
            shift = round(played / stream.time_base) - delay
            for packet in packets:
                packet.pts = int(packet.pts or 0) + shift
                packet.dts = int(packet.dts or 0) + shift
                yield packet
        played += Fraction(count, fps)
