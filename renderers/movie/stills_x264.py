"""``encode_silent_blocks``: a stills scene without sound, encoded in this process with PyAV's libx264.

Why: for a stills scene the ffmpeg process cost more than its x264 work. The seed's 4 s title at 1080p took
~0.25 CPU-s in ffmpeg (its start ~40-60 ms in the dynamic loader, the pictures through a FIFO as raw RGB, x264's
start, the AAC of the silence) and ~0.13 CPU-s here; in the seed's full example, where that scene runs beside the
video scene, the job took 0.06 s less (medians of 8 interleaved jobs, BENCHMARKS.md). Manim's writer already
encodes with PyAV's libx264; a movie scene now does too when nothing in it needs ffmpeg's filters.

What it writes is what the block path's ffmpeg wrote (``compose._encode_blocks``), so ``mux.join_blocks`` joins
either: ``block_NNN.mp4``, one per block, cut at the IDR frame that starts each block out of ONE x264 encode, each
without an edit list and with its timestamps starting over (the segment muxer's ``reset_timestamps``); and the
audio file: AAC-LC, 48 kHz stereo silence of exactly the scene's samples. Same preset and x264 parameters, High
profile, BT.709 limited-range tags, square pixels: the same SPS/PPS as ffmpeg's libx264 writes (the tests compare
them), so these clips still join the other scenes by stream copy.

Only for scenes without an audible layer (mixing sounds stays ffmpeg's) and when the task encodes with libx264
(not under an NVENC grant); the caller falls back to ffmpeg when this fails.
"""
from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from renderers import encoder as enc
from renderers.ffmpeg import SCENE_AUDIO, FfmpegError

AAC_FRAME = 1024  # samples per AAC frame
# ffmpeg's codec settings of every scene clip's audio (renderers.ffmpeg.SCENE_AUDIO), as PyAV takes them
AUDIO_RATE = int(str(SCENE_AUDIO["ar"]))
_AAC_OPTIONS = {"aac_coder": str(SCENE_AUDIO["aac_coder"])}
_AAC_BIT_RATE = int(str(SCENE_AUDIO["b:a"]).removesuffix("k")) * 1000
# renderers.ffmpeg.SCENE_COLOR as the codec context's numbers: BT.709 matrix, primaries and transfer; limited range
_BT709, _LIMITED = 1, 1

Block = list[tuple[Any, int]]  # (picture key, frame count) parts, as compose plans them


def encode_silent_blocks(blocks: list[Block], rgb: Callable[[Any], bytes], size: tuple[int, int], fps: int, *,
                         preset: str, x264_params: str, tmp: Path, audio: Path, seconds: float,
                         on_progress: Callable[[float], None]) -> None:
    """Encode ``blocks`` (each picture key drawn by ``rgb`` as raw RGB of ``size``) into ``tmp/block_NNN.mp4``,
    and the scene's ``seconds`` of silence into ``audio``. Fails with FfmpegError."""
    import av

    lengths = [sum(count for _, count in block) for block in blocks]
    whole = tmp / "blocks.mp4"
    try:
        _encode(blocks, lengths, rgb, size, fps, preset, x264_params, whole, on_progress)
        _split(whole, lengths, fps, tmp)
        _silence(seconds, audio)
    except (av.error.FFmpegError, ValueError, MemoryError) as exc:
        raise FfmpegError(["pyav-libx264", str(whole)], str(exc)) from None
    finally:
        whole.unlink(missing_ok=True)
    enc.used(enc.X264)


def _encode(blocks: list[Block], lengths: list[int], rgb: Callable[[Any], bytes], size: tuple[int, int], fps: int,
            preset: str, x264_params: str, path: Path, on_progress: Callable[[float], None]) -> None:
    import av
    from av.video.frame import PictureType

    width, height = size
    starts = {0, *itertools.accumulate(lengths[:-1])}  # forced key frames: IDR frames, the GOP being closed
    total = sum(lengths)
    with av.open(str(path), "w", options={"use_editlist": "0"}) as out:
        options = {"preset": preset, "profile": "high", **({"x264-params": x264_params} if x264_params else {})}
        stream: Any = out.add_stream(enc.X264, rate=fps, options=options)  # a VideoStream
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        context = stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = _BT709
        context.color_range = _LIMITED
        context.sample_aspect_ratio = Fraction(1, 1)
        number = 0
        parts = ((picture, count) for block in blocks for picture, count in block)
        for frame, count in _ahead(parts, lambda picture: _yuv(rgb(picture), width, height)):
            for _ in range(count):  # x264 takes its own copy: one converted frame serves the whole part
                frame.pts = number
                frame.pict_type = PictureType.I if number in starts else PictureType.NONE
                out.mux(stream.encode(frame))
                number += 1
            on_progress(number / total)
        out.mux(stream.encode(None))


def _yuv(rgb: bytes, width: int, height: int) -> Any:
    import av

    pixels = np.frombuffer(rgb, np.uint8).reshape(height, width, 3)
    return av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU709",
                                                                       dst_color_range="MPEG")


def _ahead(parts: Iterator[tuple[Any, int]], convert: Callable[[Any], Any]) -> Iterator[tuple[Any, int]]:
    """(convert(picture), count) for each part, the pictures composited and converted on a thread of their own,
    at most two ahead: as the picture feed did for ffmpeg (feed.py), so that x264 encodes one picture while the
    next is drawn (a fade at 4K: a new 25 MB picture per frame). Pillow, swscale and x264 release the GIL."""
    ready: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for picture, count in parts:
                if not _put(ready, (convert(picture), count), stop):
                    return  # the encoder stopped
            _put(ready, end, stop)
        except BaseException as exc:  # noqa: BLE001 - raised again on the encoding thread
            _put(ready, exc, stop)

    thread = threading.Thread(target=produce, name="stills-pictures", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the encoder failed or finished: the producer must not wait on a full queue
        thread.join()


def _put(ready: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put, giving up (False) every 50 ms to look whether the consumer has stopped."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _split(whole: Path, lengths: list[int], fps: int, tmp: Path) -> None:
    """Cut the encode into one file per block, at the blocks' IDR frames, each block's timestamps moved back by
    the frames before it (so each starts at the encoder's B-frame delay, as the segment muxer wrote them).

    Streamed, one block file open at a time: each GOP is closed, so a block's packets all come before the next
    block's in decoding order (a long fading scene is one long block; its packets are not held in memory)."""
    import av

    firsts = [0, *itertools.accumulate(lengths)]
    with av.open(str(whole)) as source:
        video = source.streams.video[0]
        if video.time_base is None:
            raise ValueError("the encoded blocks have no time base")
        per_frame = 1 / (fps * video.time_base)  # time base units
        delay: int | None = None  # the first packet's: the IDR, shown first, at the B-frame delay
        number = -1  # the block being written, into out's stream
        out: Any = None
        stream: Any = None
        try:
            for packet in source.demux(video):
                if packet.pts is None or packet.dts is None:
                    continue  # the demuxer's flush
                delay = packet.pts if delay is None else delay
                frame = round((packet.pts - delay) / per_frame)
                while number + 1 < len(lengths) and frame >= firsts[number + 1]:
                    number += 1
                    if out is not None:
                        out.close()
                    out = av.open(str(tmp / f"block_{number:03d}.mp4"), "w", options={"use_editlist": "0"})
                    stream = out.add_stream_from_template(template=video)
                if out is None or not firsts[number] <= frame < firsts[number + 1]:
                    raise ValueError(f"x264 gave frame {frame} out of its block's order")
                shift = round(firsts[number] * per_frame)
                packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
                packet.stream = stream
                out.mux(packet)
        finally:
            if out is not None:
                out.close()
        if number != len(lengths) - 1:
            raise ValueError(f"x264 gave {number + 1} of {len(lengths)} blocks")


def _silence(seconds: float, path: Path) -> None:
    """AAC-LC, 48 kHz stereo digital silence of exactly ``seconds`` (rounded to samples), as ffmpeg's
    ``anullsrc`` + ``atrim`` + ``aac`` gave it."""
    import av

    total = round(seconds * AUDIO_RATE)
    with av.open(str(path), "w") as out:
        stream: Any = out.add_stream("aac", rate=AUDIO_RATE, options=_AAC_OPTIONS)  # an AudioStream
        stream.bit_rate = _AAC_BIT_RATE
        stream.layout = "stereo"
        stream.format = "fltp"
        for start in range(0, total, AAC_FRAME):
            frame = av.AudioFrame(format="fltp", layout="stereo", samples=min(AAC_FRAME, total - start))
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate, frame.pts = AUDIO_RATE, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
