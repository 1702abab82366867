"""Which H.264 encoder a task uses: ``h264_nvenc`` when the scheduler granted it an NVENC session, else libx264.

The grant reaches the task through its environment (the executor sets it; renderers never import the
appliance): ``RENDER_NVENC=1`` when the task holds a session, ``CUDA_VISIBLE_DEVICES`` naming its one GPU (so
inside the task that GPU is device 0). Both encoders write H.264 High, yuv420p, BT.709 limited range; NVENC
runs at constant quality 23 (``-rc vbr -cq 23``, preset p5, tune hq), the counterpart of x264's default CRF 23.
When NVENC fails at run time the caller encodes again with libx264 (``ffmpeg.encode_with_fallback``); the
reason is kept, the rest of the task goes straight to libx264, and ``encoder_meta()`` reports both.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

NVENC_ENV = "RENDER_NVENC"
NVENC, X264 = "h264_nvenc", "libx264"
COLOR = {"colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709", "color_range": "tv"}
_NVENC_QUALITY = {"preset": "p5", "tune": "hq", "rc": "vbr", "cq": 23, "b:v": 0}
_state: dict[str, str] = {}  # this task's process: "used" (last encoder), "fallback" (why NVENC failed)


@dataclass(frozen=True)
class EncoderGrant:
    nvenc: bool = False
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES as the task sees it

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EncoderGrant:
        env = os.environ if environ is None else environ
        return cls(nvenc=env.get(NVENC_ENV) == "1", gpu=env.get("CUDA_VISIBLE_DEVICES") or None)


def preferred(grant: EncoderGrant | None = None) -> str:
    """NVENC when granted and it has not failed in this task already; libx264 otherwise."""
    grant = grant if grant is not None else EncoderGrant.from_env()
    return NVENC if grant.nvenc and "fallback" not in _state else X264


def nvenc_failed(reason: str) -> None:
    _state["fallback"] = reason[:300]


def used(encoder: str) -> None:
    _state["used"] = encoder


def encoder_meta() -> dict:
    """What this task encoded with, for its result's meta: {"encoder", "nvencFallback"?}."""
    meta = {"encoder": _state.get("used", X264)}
    return {**meta, "nvencFallback": _state["fallback"]} if "fallback" in _state else meta


def output_options(encoder: str, *, preset: str, x264_params: str = "") -> dict:
    """ffmpeg-python output keywords for the video codec (without the rate): H.264 High yuv420p BT.709.

    NVENC ignores ``x264_params``; ``forced-idr`` turns forced key frames (segment cuts) into IDR frames as
    x264 does, so the pieces of one encode still start cleanly.
    """
    common = {"pix_fmt": "yuv420p", "profile:v": "high", **COLOR}
    if encoder == NVENC:
        return {"vcodec": NVENC, **_NVENC_QUALITY, "gpu": 0, "forced-idr": 1, **common}
    options = {"vcodec": X264, "preset": preset, **common}
    return {**options, "x264-params": x264_params} if x264_params else options


def video_codec_args(grant: EncoderGrant | None = None, *, preset: str = "veryfast",
                     x264_params: str = "") -> list[str]:
    """The video codec part of an ffmpeg command line for this task's grant, e.g. ``["-c:v", "libx264", …]``.

    For callers that build command lines by hand (the RenderCAD video pipeline). On an FfmpegError while
    ``preferred(grant) == NVENC``, call ``nvenc_failed(reason)`` and run again: the second call gives libx264.
    """
    options = output_options(preferred(grant), preset=preset, x264_params=x264_params)
    args: list[str] = []
    for key, value in options.items():
        args += ["-c:v" if key == "vcodec" else f"-{key}", str(value)]
    return args


def pyav_settings(grant: EncoderGrant | None = None) -> dict:
    """Manim config keys for its PyAV writer: h264_nvenc when granted AND an encoder opens here (checked in
    process with one frame: Manim's writer cannot start over once it has frames), else Manim's libx264."""
    if preferred(grant) != NVENC:
        return {"video_codec": X264, "pixel_format": "yuv420p"}
    problem = _pyav_nvenc_problem()
    if problem:
        nvenc_failed(problem)
        used(X264)
        return {"video_codec": X264, "pixel_format": "yuv420p"}
    used(NVENC)
    return {"video_codec": NVENC, "pixel_format": "yuv420p",
            "video_encoder_options": {k: str(v) for k, v in _NVENC_QUALITY.items() if k != "b:v"}}


def _pyav_nvenc_problem() -> str | None:
    try:
        import av

        ctx: Any = av.CodecContext.create(NVENC, "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        frame = av.VideoFrame(256, 256, "yuv420p")
        frame.pts = 0
        ctx.encode(frame)
        ctx.encode(None)
    except Exception as exc:  # noqa: BLE001 - any failure means: encode with libx264
        return f"{NVENC} failed: {exc}"
    return None
