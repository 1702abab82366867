"""The one place that builds and runs ffmpeg/ffprobe commands (via ffmpeg-python where it helps).

Shared by every renderer: add functions here rather than calling ffmpeg elsewhere.
A failed command raises FfmpegError carrying the command line and the tail of stderr.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ffmpeg  # ffmpeg-python

from renderers import encoder as enc

# video_codec_args: the codec part of a hand-built command line for this task's grant; encoder_meta: what it used
from renderers.encoder import encoder_meta, video_codec_args  # noqa: F401


class FfmpegError(Exception):
    def __init__(self, cmd: list[str], stderr: str) -> None:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        super().__init__(f"ffmpeg failed: {' '.join(cmd[:12])}{' …' if len(cmd) > 12 else ''}\n{tail}")
        self.cmd = cmd
        self.stderr = stderr


def run(cmd: list[str], timeout: float | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise FfmpegError(cmd, proc.stderr)


def probe(path: str | Path) -> dict:
    """ffprobe a media file: {"duration", "streams": [...], "format": {...}} as ffprobe reports."""
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
           "-count_frames", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FfmpegError(cmd, proc.stderr)
    return json.loads(proc.stdout)


def video_stream(info: dict) -> dict | None:
    return next((s for s in info.get("streams", []) if s.get("codec_type") == "video"), None)


def extract_last_frame(src: Path, dst: Path) -> None:
    """Write the last video frame of src as a JPEG (thumbnail)."""
    run(["ffmpeg", "-hide_banner", "-nostdin", "-y", "-sseof", "-0.1", "-i", str(src),
         "-frames:v", "1", "-update", "1", "-q:v", "3", str(dst)])


def _rate(text: str) -> float:
    """An ffprobe rate such as "30/1" or "0/0" as a float (0.0 when unknown)."""
    num, _, den = text.partition("/")
    denominator = float(den or 1)
    return float(num) / denominator if denominator else 0.0


def video_meta(path: str | Path) -> dict:
    """Probe (no decoding) of the first video stream: duration, frames, width, height, fps — in-process with PyAV
    (libav, which the warm worker already loaded), not an ffprobe process (~0.1 s saved per call).

    ``frames`` is the container's frame count (exact for MP4, which stores one entry per sample).
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FfmpegError(["pyav-probe", str(path)], "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 0
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / av.time_base
            return {"duration": round(duration, 3), "frames": int(stream.frames or 0),
                    "width": int(stream.codec_context.width), "height": int(stream.codec_context.height),
                    "fps": round(float(rate))}
    except av.error.FFmpegError as exc:
        raise FfmpegError(["pyav-probe", str(path)], str(exc)) from None


# --- movie scenes (renderers/movie) ---------------------------------------------------------------------------

# ffmpeg's AAC encoder with its "fast" coder, not the default "twoloop": at 192 kb/s it is closer to the source and
# half the CPU (6 s of tonal stereo music: 55.5 dB SNR against 31.0 dB, 0.11 against 0.20 CPU-s; twoloop suits low
# bitrates, and FFmpeg made "fast" its default for a while in 2018 for this reason). No change to the stream's
# parameters: clips of either coder concat by stream copy.
SCENE_AUDIO = {"c:a": "aac", "aac_coder": "fast", "b:a": "192k", "ar": 48000, "ac": 2}


# Scene clips are BT.709 limited range, said so in the stream (an untagged HD stream is guessed, SD one not).
SCENE_COLOR = {"colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709", "color_range": "tv"}


def _h264_options(fps: int, preset: str, x264_params: str, encoder: str = enc.X264) -> dict:
    if encoder == enc.NVENC:  # same profile, pixel format and colour tags: see renderers/encoder.py
        return {**enc.output_options(encoder, preset=preset), "r": fps}
    options = {"vcodec": "libx264", "preset": preset, "pix_fmt": "yuv420p", "r": fps, "profile:v": "high",
               **SCENE_COLOR}
    return {**options, "x264-params": x264_params} if x264_params else options


def h264_aac_output(video, audio, path: str | Path, *, fps: int, preset: str, x264_params: str = "",
                    encoder: str = enc.X264):
    """An ffmpeg-python output node for a scene clip: H.264 yuv420p at a constant ``fps``, AAC 48 kHz stereo.

    Every clip gets the same codec settings so clips concat with ``-c copy``; ``x264_params`` may only hold
    options that leave the SPS/PPS unchanged (analysis and rate control, not refs, B-frames or entropy coding).
    Cut the streams to length in the filter graph: ``-frames:v`` would end the file and clip the audio's tail.
    """
    return ffmpeg.output(video, audio, str(path), **_h264_options(fps, preset, x264_params, encoder),
                         **SCENE_AUDIO)


def h264_segments_output(video, pattern: str | Path, *, fps: int, preset: str, x264_params: str = "",
                         split_frames: list[int], encoder: str = enc.X264):
    """Encode once (one x264 instance) and cut into MP4 files starting at ``split_frames`` (IDR frames there).

    Without edit lists every piece starts at the same B-frame delay, so the concat demuxer joins them without
    gaps (with them, only the first piece carries the delay and the next one starts late).
    """
    split = {"segment_frames": ",".join(map(str, split_frames)),
             "force_key_frames": "expr:" + "+".join(f"eq(n,{frame})" for frame in split_frames)}
    return ffmpeg.output(video, str(pattern), **_h264_options(fps, preset, x264_params, encoder), f="segment",
                         reset_timestamps=1, segment_format_options="use_editlist=0",
                         **(split if split_frames else {"segment_time": 10**9}))


def copy_video_aac_output(video, audio, path: str | Path):
    """Copy an H.264 video stream (e.g. from the concat demuxer) and encode the audio as in ``h264_aac_output``."""
    return ffmpeg.output(video, audio, str(path), vcodec="copy", **SCENE_AUDIO)


def run_with_progress(stream, total_seconds: float, on_progress: Callable[[float], None],
                      log_path: str | Path) -> None:
    """Run an ffmpeg-python graph, calling ``on_progress(0..1)`` from ``-progress`` output times.

    stderr goes to ``log_path`` (a pipe could fill up and stall ffmpeg); its tail is in FfmpegError.
    """
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-progress", "pipe:1",
           *ffmpeg.compile(stream, overwrite_output=True)[1:]]
    # Few malloc arenas: each of ffmpeg's many threads would otherwise reserve its own 64 MB of address space,
    # which an RLIMIT_AS sandbox counts (a 1080p scene needs about half as much with this).
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            key, _, value = line.strip().partition("=")
            if key == "out_time_us" and value.isdigit() and total_seconds > 0:
                on_progress(min(1.0, int(value) / 1e6 / total_seconds))
        proc.wait()
    if proc.returncode != 0:
        raise FfmpegError(cmd, Path(log_path).read_text(errors="replace"))


def encode_with_fallback(build: Callable[[str], Any], total_seconds: float, on_progress: Callable[[float], None],
                         log_path: str | Path, grant: enc.EncoderGrant | None = None) -> str:
    """Run the graph ``build(encoder)`` with this task's encoder (renderers/encoder.py); when h264_nvenc fails
    (no encoder on the chip, sessions taken, a driver error), run ``build("libx264")``. Returns the encoder used."""
    encoder = enc.preferred(grant)
    if encoder == enc.NVENC:
        try:
            run_with_progress(build(encoder), total_seconds, on_progress, log_path)
            enc.used(encoder)
            return encoder
        except FfmpegError as exc:
            enc.nvenc_failed(f"{enc.NVENC} failed: {_nvenc_reason(exc.stderr)}")
    run_with_progress(build(enc.X264), total_seconds, on_progress, log_path)
    enc.used(enc.X264)
    return enc.X264


def _nvenc_reason(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    named = [line for line in lines if "nvenc" in line.lower() or "cuda" in line.lower()]
    return (named or lines or ["unknown error"])[0][:200]


def media_streams(path: str | Path) -> list[dict]:
    """A media file's streams (codec_type, codec_name, channels, height, color_space and the stream's tags, e.g.
    WebM's ``alpha_mode``), without decoding; [] if unreadable."""
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_entries",
           "stream=codec_type,codec_name,channels,height,color_space:stream_tags", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return []
    return json.loads(proc.stdout).get("streams", [])


def decodes_first_frame(path: str | Path) -> bool:
    """Whether the first video frame decodes: a probe alone accepts e.g. a PNG signature in front of junk."""
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-map", "0:v:0",
           "-frames:v", "1", "-f", "null", "-"]
    return subprocess.run(cmd, capture_output=True, text=True).returncode == 0


def concat_copy(list_file: Path, dst: Path) -> None:
    """Concatenate the files named in a concat-demuxer list without re-encoding, moov atom first.

    ``-copyts`` keeps the AAC priming of the first file below zero (an edit list hides it) instead of shifting
    every stream, so the video still starts at 0 and the output is exactly as long as its parts.
    Clips from different encoders (a scene on NVENC, another on libx264) carry different SPS/PPS, which one
    MP4 track cannot hold: those are joined by the concat filter and encoded once more with libx264.
    """
    files = _listed_files(list_file)
    if len({_parameter_sets(path) for path in files}) > 1:
        _concat_reencode(files, dst)
        return
    run(["ffmpeg", "-hide_banner", "-nostdin", "-y", "-f", "concat", "-i", str(list_file), "-c", "copy",
         "-copyts", "-movflags", "+faststart", str(dst)])


def _listed_files(list_file: Path) -> list[Path]:
    """The files of a concat list written as ``file 'name'`` lines (the list's own quoting undone)."""
    names = [line[len("file "):].strip() for line in Path(list_file).read_text().splitlines()
             if line.startswith("file ")]
    return [Path(list_file).parent / name[1:-1].replace("'\\''", "'") for name in names]


def _parameter_sets(path: Path) -> bytes:
    import av

    try:
        with av.open(str(path)) as container:
            return bytes(container.streams.video[0].codec_context.extradata or b"")
    except (av.error.FFmpegError, IndexError):
        return b""  # unreadable here: the concat itself will say why


def _concat_reencode(files: list[Path], dst: Path) -> None:
    inputs = [arg for path in files for arg in ("-i", str(path))]
    graph = "".join(f"[{i}:v:0][{i}:a:0]" for i in range(len(files))) + f"concat=n={len(files)}:v=1:a=1[v][a]"
    codec = [arg for key, value in {**_h264_options(0, "veryfast", ""), "r": None}.items() if value is not None
             for arg in ("-c:v" if key == "vcodec" else f"-{key}", str(value))]
    audio = [arg for key, value in SCENE_AUDIO.items() for arg in (f"-{key}", str(value))]
    run(["ffmpeg", "-hide_banner", "-nostdin", "-y", *inputs, "-filter_complex", graph, "-map", "[v]",
         "-map", "[a]", *codec, *audio, "-movflags", "+faststart", str(dst)])


def mean_volume(path: str | Path) -> float:
    """The mean level of a file's audio in dBFS (volumedetect; about -91 for digital silence)."""
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:a:0", "-af", "volumedetect",
           "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = re.search(r"mean_volume: (-?[\d.]+|-inf) dB", proc.stderr)
    if proc.returncode != 0 or not found:
        raise FfmpegError(cmd, proc.stderr)
    return float(found.group(1))


def remux_faststart_av(src: Path, dst: Path) -> dict:
    """Copy the video and audio streams into an MP4 with the moov atom first, in-process with PyAV (libav, which
    the warm worker already loaded): no ffmpeg/ffprobe processes. A one-scene movie is assembled this way.

    Returns the meta that video_meta would probe: duration, frames, width, height, fps.
    """
    import av

    frames = 0
    with av.open(str(src)) as inp, av.open(str(dst), mode="w", options={"movflags": "+faststart"}) as out:
        source = inp.streams.video[0]
        copies = {s.index: out.add_stream_from_template(template=s) for s in (source, *inp.streams.audio[:1])}
        for packet in inp.demux(*(s for s in inp.streams if s.index in copies)):
            if packet.dts is None:  # demux's flushing packets
                continue
            frames += packet.stream.index == source.index
            packet.stream = copies[packet.stream.index]
            out.mux(packet)
        fps = source.average_rate or source.guessed_rate
        width, height = source.codec_context.width, source.codec_context.height
    rate = float(fps) if fps else 0.0
    return {"duration": round(frames / rate, 3) if rate else 0.0, "frames": frames, "width": width,
            "height": height, "fps": round(rate, 3) if rate % 1 else int(rate)}


def first_frame(container: Any, stream: Any, packets: int = 64) -> Any:
    """The first picture of ``stream`` (an open PyAV container's video stream), or None; one thread.

    Why not ``next(container.decode(stream))``: a decoder holds frames back by the stream's reorder delay (two for
    x264's B-frames), so that decoded the first three frames of a 1080p clip to return one (~12-17 ms). The
    packets up to and including the first keyframe go in, then the decoder is drained, which hands out the
    keyframe's picture at once (~4 ms). ``packets`` bounds the search for a keyframe in a file made to have none.
    Lets PyAV's errors through (the caller decides what an unreadable file means)."""
    context = stream.codec_context
    context.thread_count = 1  # one frame: no pool of frame threads to start (the sandbox counts threads too)
    for sent, packet in enumerate(container.demux(stream)):
        if packet.size == 0:  # demux's flushing packet at the end
            break
        frames = context.decode(packet)
        if frames:
            return frames[0]
        if packet.is_keyframe or sent + 1 >= packets:
            break
    frames = context.decode(None)  # drain: the pictures held back for reordering
    return frames[0] if frames else None


# --- RenderCAD video and GIF (renderers/image/video.py, gif.py) ------------------------------------------------

def raw_h264_command(path: str | Path, width: int, height: int, fps: int, preset: str = "veryfast",
                     pix_fmt: str = "bgr24", grant: enc.EncoderGrant | None = None) -> list[str]:
    """ffmpeg reading raw frames (bgr24, bgra, …) on stdin and writing H.264 yuv420p (BT.709, limited range)
    with the moov atom first, one encode for the whole clip: h264_nvenc when the task holds an NVENC session,
    else libx264 with the movie compositor's settings (renderers/encoder.py)."""
    return ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", pix_fmt,
            "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
            "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
            *enc.video_codec_args(grant, preset=preset), "-r", str(fps), "-movflags", "+faststart", str(path)]


def gif_command(src: str | Path, dst: str | Path, width: int, fps: int) -> list[str]:
    """A GIF from a video with a palette generated for it (palettegen/paletteuse in one graph), looping.

    Decoding the source is most of the cost: its deblocking is skipped (invisible once shrunk 4x) and the
    shrink is an area average (sharper than Lanczos at this ratio, a third cheaper, a smaller GIF)."""
    graph = (f"fps={fps},scale={width}:-2:flags=area,split[a][b];[a]palettegen=stats_mode=diff[p];"
             "[b][p]paletteuse=dither=bayer:bayer_scale=5:diff_mode=rectangle")
    return ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-skip_loop_filter", "all", "-i", str(src), "-vf", graph,
            "-loop", "0", str(dst)]
