"""The documented request and response bodies of the Kodisc and ViralSync APIs, as msgspec Structs.

They exist only to describe the API in the OpenAPI document (openapi.py turns them into JSON Schema): the
handlers read raw bodies themselves, so that they answer the exact documented validation messages in the
documented order, which a schema-driven decoder cannot do. Keep them in step with kodisc.validate,
viralsync.parse_submission and renderers/movie/spec.py; the fuzz run (scripts/fuzz.py) checks every answer
against them.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from msgspec import Meta, Struct

Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time"}, description="ISO 8601 UTC, milliseconds")]
Number = float  # JSON Schema "number": integers are numbers too


def one_of(*values: str) -> Any:
    """A string enum in the documented order (msgspec would sort a Literal's values)."""
    return Annotated[str, Meta(extra_json_schema={"enum": list(values)})]


# ---- Kodisc -------------------------------------------------------------------------------------------------
class KodiscRenderRequest(Struct, kw_only=True):
    """POST /api/v2/render. Only code and className are required; the whole body is at most 200 KB."""

    code: Annotated[str, Meta(min_length=1, pattern=r"\S", description="Manim source with the Scene subclass")]
    className: Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The Scene subclass to render")]
    quality: one_of("low", "medium", "high", "twok", "fourk") = "medium"
    aspectRatio: one_of("16:9", "9:16") = "16:9"
    fps: Optional[Annotated[int, Meta(ge=1, le=120, description="Overrides the preset's frame rate")]] = None
    webhookUrl: Optional[Annotated[str, Meta(pattern=r"^https://", description=(
        "Overrides the key's default webhook URL; null sends no webhook. http:// only with "
        "allow_http_webhooks; loopback and link-local hosts are refused"))]] = None
    metadata: Any = None


class KodiscRenderAccepted(Struct):
    """202 from POST /api/v2/render."""

    jobId: str
    status: Literal["queued"]
    endpoint: Literal["render"]


class KodiscResult(Struct):
    video: str
    thumbnail: str
    captions: str


class KodiscJob(Struct):
    """GET /api/v2/render/{jobId}, and the body of every Kodisc webhook."""

    jobId: str
    endpoint: Literal["render"]
    status: one_of("queued", "running", "completed", "failed")
    createdAt: Timestamp
    completedAt: Optional[Timestamp]
    durationMs: Optional[int]
    creditsCost: Annotated[Number, Meta(description="0 until the job completes")]
    metadata: Any
    result: Optional[KodiscResult]
    error: Optional[str]


class KodiscCredits(Struct):
    paid: Number
    free: Number
    total: Number


class KodiscMe(Struct):
    """GET /api/v2/me."""

    userId: str
    keyId: str
    keyPrefix: str
    credits: KodiscCredits


class KodiscError(Struct, kw_only=True):
    """Every Kodisc error: a 400's error is one of the seven documented messages."""

    error: str
    message: Optional[str] = None


# ---- ViralSync: the Movie document (loosely: renderers/movie/spec.py has every rule) ---------------------
class Point(Struct, kw_only=True):
    x: Number = 0
    y: Number = 0


class Size(Struct, kw_only=True):
    width: Optional[Annotated[Number, Meta(gt=0)]] = None
    height: Optional[Annotated[Number, Meta(gt=0)]] = None


class Transform(Struct, kw_only=True):
    opacity: Annotated[Number, Meta(ge=0, le=1)] = 1
    rotation: Number = 0
    scale: Annotated[Number, Meta(gt=0)] = 1


class Layer(Struct, kw_only=True):
    """A video, image, audio or text layer; unknown fields are ignored. Media layers need source, text layers
    text. Extensions (README): fit, trimStart, loop, fadeIn/fadeOut, fontFamily, lineHeight, backgroundColor,
    padding."""

    id: Annotated[str, Meta(min_length=1)]
    type: one_of("video", "image", "audio", "text")
    role: Optional[str] = None
    startTime: Annotated[Number, Meta(ge=0, description="Seconds from the scene's start")] = 0
    duration: Optional[Annotated[Number, Meta(gt=0)]] = None
    zIndex: int = 0
    position: Optional[Point] = None
    size: Optional[Size] = None
    transform: Optional[Transform] = None
    source: Optional[str] = None
    mute: Optional[bool] = None
    volume: Optional[Annotated[Number, Meta(ge=0, le=10)]] = None
    text: Optional[str] = None
    fontSize: Optional[Annotated[Number, Meta(gt=0)]] = None
    fontWeight: Optional[str] = None
    color: Optional[str] = None
    textAlign: Optional[one_of("left", "center", "right")] = None


class Scene(Struct, kw_only=True):
    id: Annotated[str, Meta(min_length=1)]
    name: Optional[str] = None
    duration: Annotated[Number, Meta(gt=0, description="Seconds")]
    bgColor: Optional[str] = None
    layers: list[Layer] = []


class Movie(Struct, kw_only=True):
    """Width and height must be even; fps an integer (DECISIONS.md)."""

    id: Optional[str] = None
    title: Optional[str] = None
    width: Annotated[int, Meta(ge=360, le=3840, multiple_of=2)] = 1920
    height: Annotated[int, Meta(ge=360, le=2160, multiple_of=2)] = 1080
    fps: Annotated[int, Meta(ge=1, le=60)] = 30
    scenes: Annotated[list[Scene], Meta(min_length=1)]


class RenderOptions(Struct, kw_only=True):
    qualityPreset: one_of("stable", "balanced", "fast", "turbo") = "balanced"
    requestedConcurrency: Optional[Annotated[int, Meta(ge=1, le=32)]] = None


class ViralSyncRenderRequest(Struct, kw_only=True):
    """POST /v1/render/jobs."""

    kind: Literal["movie"]
    projectId: Annotated[str, Meta(min_length=1)]
    movie: Movie
    renderOptions: Optional[RenderOptions] = None
    callbackUrl: Optional[Annotated[str, Meta(description="http(s) URL for progress/done/failed/cancelled events")]] = None


# ---- ViralSync: answers ---------------------------------------------------------------------------------
class ViralSyncAccepted(Struct):
    jobId: str
    status: Literal["queued"]


class Children(Struct):
    total: int
    succeeded: int
    running: int
    queued: int
    failed: int


class MediaData(Struct):
    duration: Optional[Number]
    width: Optional[int]
    height: Optional[int]
    fileSize: Optional[int]


class ViralSyncJob(Struct):
    """GET /v1/jobs/{jobId}; also the answer of cancel."""

    jobId: str
    type: Literal["render"]
    status: one_of("queued", "running", "waiting", "done", "failed", "cancelled")
    phase: Optional[one_of("planning", "dispatching", "waiting", "rendering", "assembling", "uploading")]
    progress: Annotated[Number, Meta(ge=0, le=1)]
    parentJobId: Optional[str]
    outputUrl: Optional[str]
    error: Optional[str]
    mediaData: Optional[MediaData]
    payload: dict[str, Any]
    children: Children
    createdAt: Timestamp
    updatedAt: Timestamp


class ViralSyncJobList(Struct):
    jobs: list[ViralSyncJob]
    nextCursor: Optional[str]


class ViralSyncMe(Struct):
    userId: str
    plan: str
    email: str


class ViralSyncUsage(Struct):
    plan: str
    renderMinutesUsed: Number
    renderMinutesLimit: Optional[Number]
    periodStart: Timestamp
    periodEnd: Timestamp


class ViralSyncError(Struct):
    """Every ViralSync error."""

    error: str
    code: str


DOCUMENTED = (KodiscRenderRequest, KodiscRenderAccepted, KodiscJob, KodiscMe, KodiscError, ViralSyncRenderRequest,
              ViralSyncAccepted, ViralSyncJob, ViralSyncJobList, ViralSyncMe, ViralSyncUsage, ViralSyncError)
