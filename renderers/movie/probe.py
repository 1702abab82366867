"""``probe_source``: what a scene needs to know about one media file, read in-process with PyAV.

Why: it used to be two ffprobe/ffmpeg processes per source (the streams, then "does the first frame decode");
each process start costs 0.1-0.3 s on a busy machine, about 8 % of the seed example's video scene. PyAV (libav,
already loaded in the warm worker) opens the file and decodes its first video frame in a few tens of ms.

PyAV carries its own libav build, which may accept or refuse other files than the ffmpeg CLI that renders the
scene. So PyAV only answers for files it reads without complaint; anything it cannot open, or whose first frame
it cannot decode, is asked of the CLI as before (``renderers.ffmpeg``): a file is refused only when the CLI
refuses it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from renderers import ffmpeg as ff
from renderers.movie.layers import source_matrix

ALPHA_DECODERS = {"vp9": "libvpx-vp9", "vp8": "libvpx"}  # native vp8/vp9 decoders drop the alpha plane
# AVColorSpace values as ffprobe names them (libavutil/pixfmt.h); others (unspecified, rgb, ycgco…) are left out
# as ffprobe leaves out "unknown", and source_matrix guesses for them.
_COLOR_SPACES = {1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}


@dataclass(frozen=True)
class SourceInfo:
    """What the probe said about one source file."""

    has_video: bool
    channels: int
    matrix: str  # the video's YUV matrix (layers.source_matrix)
    decoder: str | None  # a decoder to force before -i (libvpx for VP8/VP9 with alpha), else ffmpeg's choice
    decodes: bool = False  # the first video frame decodes (a probe alone accepts a PNG signature before junk)
    opaque: bool = False  # the video certainly has no alpha (its decoded format has none, no alpha decoder)
    size: tuple[int, int] | None = None  # the video's width and height, when PyAV read them
    # The first decoded frame's pixel format and whether it is limited range (tagged so, or untagged, which
    # ffmpeg's scale filter reads as limited), when PyAV decoded it: a source that is already BT.709 limited
    # yuv420p at the size it is shown needs no conversion (``layered.base_video``).
    pix_fmt: str | None = None
    limited: bool = False


def _info(streams: list[dict], decodes: bool, opaque: bool, pix_fmt: str | None = None,
          limited: bool = False) -> SourceInfo:
    """The answer from ffprobe-style stream entries (``width`` is only there when PyAV read the file)."""
    by_type = {stream.get("codec_type"): stream for stream in reversed(streams)}  # the first of each type
    video, audio = by_type.get("video"), by_type.get("audio", {})
    decoder = None
    tags = {str(key).lower(): str(value) for key, value in ((video or {}).get("tags") or {}).items()}
    if video is not None and tags.get("alpha_mode") == "1":
        decoder = ALPHA_DECODERS.get(video.get("codec_name", ""))
    size = (int(video["width"]), int(video["height"])) if video is not None and video.get("width") else None
    decoded = decodes and video is not None
    return SourceInfo(video is not None, int(audio.get("channels") or 0), source_matrix(video or {}), decoder,
                      decoded, opaque and decoder is None and video is not None, size,
                      pix_fmt if decoded and decoder is None else None, limited and decoded)


def _pyav_probe(path: Path) -> tuple[list[dict], bool, bool, str | None, bool] | None:
    """(streams as ffprobe lists them, first video frame decoded, its format has no alpha, its pixel format, it
    is limited range), or None when PyAV cannot read the file or its first video frame."""
    import av

    try:
        with av.open(str(path)) as container:
            streams = []
            for stream in container.streams:
                context: Any = stream.codec_context  # a VideoCodecContext or AudioCodecContext, per stream.type
                entry = {"codec_type": stream.type, "codec_name": context.codec.canonical_name,
                         "tags": dict(stream.metadata)}
                if stream.type == "audio":
                    entry["channels"] = context.channels
                elif stream.type == "video":
                    entry["width"], entry["height"] = context.width, context.height
                    if (space := _COLOR_SPACES.get(int(context.colorspace or 0))) is not None:
                        entry["color_space"] = space
                streams.append(entry)
            if not container.streams.video:
                return streams, False, False, None, False
            frame = ff.first_frame(container, container.streams.video[0])
            if frame is None:
                return None
            fmt = frame.format
            opaque = not fmt.has_palette and not any(part.is_alpha for part in fmt.components)
            # AVColorRange: 0 unspecified, 1 MPEG (limited), 2 JPEG (full; a yuvj* format in ffmpeg 5.1's CLI)
            limited = int(frame.color_range or 0) in (0, 1) and not fmt.name.startswith("yuvj")
            return streams, True, opaque, fmt.name, limited
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return None


def probe_source(path: Path) -> SourceInfo:
    found = _pyav_probe(path)
    if found is not None:
        return _info(*found)
    streams = ff.media_streams(path)  # the CLI's own answer
    has_video = any(stream.get("codec_type") == "video" for stream in streams)
    return _info(streams, has_video and ff.decodes_first_frame(path), False)
