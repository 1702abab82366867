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
from typing import Any

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
    opened: dict[Path, Any] = {}
    try:
        for path, count in zip(playlist, frames, strict=True):
            if path in opened:  # a repeat: read it again from the start, without opening (and probing) it again
                block = opened[path]
                block.seek(0)
            else:
                block = opened[path] = av.open(str(path))
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
    finally:
        for block in opened.values():
            block.close()


def concat_scenes(files: list[Path], dst: Path) -> dict:
    """Scene clips back to back, video and audio copied, moov atom first: what ``ffmpeg -f concat -c copy -copyts
    -movflags +faststart`` wrote (renderers.ffmpeg.concat_copy), in-process with PyAV instead of one more ffmpeg
    process (0.2-0.4 s of the seed example's assemble task on a busy machine). The clips must share their codec
    parameters (else FfmpegError, as for any failure: the caller then runs ffmpeg's concat).

    The concat demuxer's timestamps: file i moves by the durations of the files before it minus its own start
    time (container times, rounded into each stream's time base); ffmpeg then lifts a DTS that does not increase
    to the previous one + 1 (each clip's AAC priming packet overlaps the end of the clip before it).

    Each clip is opened once (an open probes its streams, ~5 ms: checking the parameter sets in a pass of their
    own, then probing the output for its meta, made 2n + 2 opens), and the output's meta — what
    ``renderers.ffmpeg.video_meta`` reads back — is counted while muxing: duration, frames, width, height, fps."""
    import av

    try:
        return _concat(files, dst)
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise FfmpegError(["pyav-concat", *map(str, files[:1]), str(dst)], str(exc)) from None


def _concat(files: list[Path], dst: Path) -> dict:
    import av

    with av.open(str(dst), mode="w", options={"movflags": "+faststart"}) as out:
        outputs: dict[str, Any] = {}
        last: dict[str, int | None] = {"video": None, "audio": None}
        offset = 0  # microseconds: the durations of the clips before this one
        frames = 0
        for path in files:
            with av.open(str(path)) as clip:
                video, audio = clip.streams.video[0], clip.streams.audio[0]
                extradata = bytes(video.codec_context.extradata or b"")
                if not outputs:
                    parameter_sets = extradata
                    outputs = {"video": out.add_stream_from_template(template=video),
                               "audio": out.add_stream_from_template(template=audio)}
                    width, height = video.codec_context.width, video.codec_context.height
                    rate = video.average_rate or video.guessed_rate
                elif extradata != parameter_sets:  # one MP4 track holds one SPS/PPS: ffmpeg's concat re-encodes
                    raise ValueError("the clips' H.264 parameter sets differ")
                streams = {video.index: "video", audio.index: "audio"}
                start = clip.start_time or 0
                bases = {index: clip.streams[index].time_base for index in streams}
                if None in bases.values():
                    raise ValueError(f"{path.name} has a stream without a time base")
                shifts = {index: _rescale(offset - start, base) for index, base in bases.items() if base is not None}
                for packet in clip.demux(video, audio):
                    if packet.dts is None or packet.pts is None or packet.time_base is None:
                        continue  # demux's flushing packets
                    kind = streams[packet.stream.index]
                    shift = shifts[packet.stream.index]
                    packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                    previous = last[kind]
                    if previous is not None and packet.dts <= previous:  # as ffmpeg's muxing step does
                        packet.pts = max(packet.pts, previous + 1) if packet.pts >= packet.dts else packet.pts
                        packet.dts = previous + 1
                    last[kind] = packet.dts
                    frames += kind == "video"
                    packet.stream = outputs[kind]
                    out.mux(packet)
                if not clip.duration:
                    raise ValueError(f"{path.name} has no duration")
                offset += clip.duration
    fps = float(rate) if rate else 0.0
    return {"duration": round(frames / fps, 3) if fps else 0.0, "frames": frames, "width": width, "height": height,
            "fps": round(fps)}


def _rescale(microseconds: int, time_base: Fraction) -> int:
    """av_rescale_q from AV_TIME_BASE_Q: rounded to nearest, halves away from zero."""
    value = Fraction(microseconds, 1_000_000) / time_base
    return int(value + (Fraction(1, 2) if value >= 0 else Fraction(-1, 2)))
