"""The documented request and response bodies of the Kodisc and ViralSync APIs, as msgspec Structs.

They exist only to describe the API in the OpenAPI document (openapi.py turns them into JSON Schema): the
handlers read raw bodies themselves, so that they answer the exact documented validation messages in the
documented order, which a schema-driven decoder cannot do. A request with a contract (appliance/contracts/) is
generated from it, the declaration its validator runs; the rest are kept in step by hand with the handlers and
renderers/movie/spec.py; the fuzz run (scripts/fuzz.py) checks every answer against them.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from appliance.contracts import kodisc, viralsync

Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time"}, description="ISO 8601 UTC, milliseconds")]
Number = float  # JSON Schema "number": integers are numbers too


def one_of(*values: str) -> Meta:
    """Annotated[str, one_of(...)]: a string enum in the documented order (msgspec sorts a Literal's values)."""
    return Meta(extra_json_schema={"enum": list(values)})


# ---- Kodisc -------------------------------------------------------------------------------------------------
KodiscRenderRequest = kodisc.RENDER.struct()  # from the contract the validator runs (contracts/kodisc.py)


class KodiscRenderAccepted(Struct):
    """202 from POST /api/v2/render."""

    jobId: str
    status: Literal["queued"]
    endpoint: Literal["render"]


class KodiscResult(Struct):
    video: str
    thumbnail: str
    captions: str
    image: str | None = None  # the last frame as a lossless PNG at the render's size (the appliance's addition)


class KodiscJob(Struct):
    """GET /api/v2/render/{jobId}, and the body of every Kodisc webhook."""

    jobId: str
    endpoint: Literal["render"]
    status: Annotated[str, one_of("queued", "running", "completed", "failed")]
    createdAt: Timestamp
    completedAt: Timestamp | None
    durationMs: int | None
    creditsCost: Annotated[Number, Meta(description="0 until the job completes")]
    metadata: Any
    result: KodiscResult | None
    error: str | None


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
    message: str | None = None


# ---- ViralSync: the Movie document (loosely: renderers/movie/spec.py has every rule, and the limits and
# vocabularies below are its constants, through contracts/viralsync.py) -----------------------------------
class Point(Struct, kw_only=True):
    x: Number = 0
    y: Number = 0


class Size(Struct, kw_only=True):
    width: Annotated[Number, Meta(gt=0)] | None = None
    height: Annotated[Number, Meta(gt=0)] | None = None


class Transform(Struct, kw_only=True):
    opacity: Annotated[Number, Meta(ge=0, le=1)] = 1
    rotation: Number = 0
    scale: Annotated[Number, Meta(gt=0)] = 1


Color = Annotated[str, Meta(pattern=r"^#([0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$", description="Hex colour")]
Opaque = Annotated[str, Meta(pattern=r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$", description="Hex colour, no alpha")]
Id = Annotated[str, Meta(min_length=1, pattern=r"\S", description="Unique among its siblings")]
FontWeight = (Annotated[str, one_of(*viralsync.FONT_WEIGHT_WORDS)] | Annotated[Number, Meta(ge=100, le=900)]
              | Annotated[str, Meta(pattern=r"^[1-9][0-9]{2}$", description="CSS weight: bold from 600")])
Source = Annotated[str, Meta(min_length=1, description="http(s) URL, or a path under the appliance's assets_dir")]


class Layer(Struct, kw_only=True, tag_field="type"):
    """What every layer has; unknown fields are ignored. Extensions (README): fit, fadeIn/fadeOut."""

    id: Id
    role: str | None = None
    startTime: Annotated[Number, Meta(ge=0, description="Seconds from the scene's start; before its end")] = 0
    duration: Annotated[Number, Meta(gt=0, description="Seconds; the rest of the scene if absent")] | None = None
    zIndex: int = 0
    position: Point | None = None
    size: Size | None = None
    transform: Transform | None = None


class TextLayer(Layer, tag="text"):
    """Extensions: fontFamily, lineHeight, backgroundColor, padding."""

    text: str
    fontSize: Annotated[Number, Meta(gt=0)] | None = None
    fontWeight: FontWeight | None = None
    color: Color | None = None
    textAlign: Annotated[str, one_of(*viralsync.TEXT_ALIGNS)] | None = None


class ImageLayer(Layer, tag="image"):
    source: Source


class VideoLayer(Layer, tag="video"):
    """Extensions: trimStart, loop, volume."""

    source: Source
    mute: bool | None = None


class AudioLayer(Layer, tag="audio"):
    source: Source
    volume: Annotated[Number, Meta(ge=0, le=viralsync.MAX_VOLUME)] | None = None


class Scene(Struct, kw_only=True):
    id: Id
    name: str | None = None
    duration: Annotated[Number, Meta(gt=0, description="Seconds; at least one frame")]
    bgColor: Opaque | None = None
    layers: list[TextLayer | ImageLayer | VideoLayer | AudioLayer] = []


class Movie(Struct, kw_only=True):
    """Width and height must be even; fps an integer (DECISIONS.md)."""

    id: str | None = None
    title: str | None = None
    width: Annotated[int, Meta(ge=viralsync.WIDTHS[0], le=viralsync.WIDTHS[1], multiple_of=2)] = viralsync.WIDTHS[2]
    height: Annotated[int, Meta(ge=viralsync.HEIGHTS[0], le=viralsync.HEIGHTS[1], multiple_of=2)] = \
        viralsync.HEIGHTS[2]
    fps: Annotated[int, Meta(ge=viralsync.FPS_RANGE[0], le=viralsync.FPS_RANGE[1])] = viralsync.FPS_RANGE[2]
    scenes: Annotated[list[Scene], Meta(min_length=1)]


ViralSyncRenderRequest = viralsync.JOB.struct(types={"movie": Movie})  # the contract its validator runs


# ---- ViralSync: answers ---------------------------------------------------------------------------------
class ViralSyncAccepted(Struct):
    jobId: str
    status: Literal["queued"]


class Children(Struct, kw_only=True):
    total: int
    succeeded: int
    running: int
    queued: int
    failed: int
    jobIds: list[str] | None = None  # the child jobs' ids (scene_<jobId>_NNN, assemble_<jobId>), on a parent


class MediaData(Struct):
    duration: Number | None
    width: int | None
    height: int | None
    fileSize: int | None


class ViralSyncJob(Struct):
    """GET /v1/jobs/{jobId}; also the answer of cancel. A child job (a scene or the assembly) has the same shape,
    with its parentJobId and no children."""

    jobId: str
    type: Literal["render", "render.scene", "render.assemble"]
    status: Annotated[str, one_of("queued", "running", "waiting", "done", "failed", "cancelled")]
    phase: Annotated[str, one_of("planning", "dispatching", "waiting", "rendering", "assembling", "uploading",
                                 "done")] | None
    progress: Annotated[Number, Meta(ge=0, le=1)]
    parentJobId: str | None
    outputUrl: str | None
    error: str | None
    mediaData: MediaData | None
    payload: dict[str, Any]
    children: Children | None
    createdAt: Timestamp
    updatedAt: Timestamp


class ViralSyncJobList(Struct):
    jobs: list[ViralSyncJob]
    nextCursor: str | None


class ViralSyncMe(Struct):
    userId: str
    plan: str
    email: str


class ViralSyncUsage(Struct):
    plan: str
    renderMinutesUsed: Number
    renderMinutesLimit: Number | None
    periodStart: Timestamp
    periodEnd: Timestamp


class ViralSyncEvent(Struct, kw_only=True):
    """The data of a progress stream event and the body of a callbackUrl webhook (api-research.md §2.8)."""

    jobId: str
    status: Annotated[str, one_of("queued", "running", "waiting", "done", "failed", "cancelled")]
    phase: str | None
    progress: Annotated[Number, Meta(ge=0, le=1)]
    outputUrl: str | None
    timestamp: Timestamp
    children: Children | None = None
    mediaData: MediaData | None = None
    error: str | None = None


class ViralSyncStreamEvent(Struct, kw_only=True):
    """One Server-Sent Event of GET /v1/jobs/{jobId}/progress; data is a ViralSyncEvent as JSON."""

    id: Annotated[str, Meta(pattern=r"^[0-9]+$", description="Increasing; send it back as Last-Event-ID")]
    event: Annotated[str, one_of("progress", "done", "failed", "cancelled")]
    data: Annotated[str, Meta(extra_json_schema={
        "contentMediaType": "application/json", "contentSchema": {"$ref": "#/components/schemas/ViralSyncEvent"}})]


class ViralSyncError(Struct):
    """Every ViralSync error."""

    error: str
    code: str


# The public docs' own requests (Kodisc quickstart, ViralSync minimal example): shown by the docs page, and
# sent as they are by the fuzz run's examples phase.
KODISC_EXAMPLE = {
    "code": "from manim import *\n\nclass HelloKodisc(Scene):\n    def construct(self):\n"
            "        self.play(Write(Text(\"Hello, Kodisc\")))\n        self.wait(1)\n",
    "className": "HelloKodisc", "quality": "medium", "aspectRatio": "16:9"}
VIRALSYNC_EXAMPLE = {"kind": "movie", "projectId": "proj_abc123", "movie": {
    "width": 1920, "height": 1080, "fps": 30, "scenes": [{
        "id": "scene_1", "duration": 5, "bgColor": "#1a1a2e", "layers": [{
            "id": "headline", "type": "text", "text": "Hello from the API", "startTime": 0, "duration": 5,
            "zIndex": 1, "position": {"x": 360, "y": 460}, "size": {"width": 1200, "height": 160}, "fontSize": 80,
            "fontWeight": "bold", "color": "#ffffff", "textAlign": "center"}]}]}}

DOCUMENTED = (KodiscRenderRequest, KodiscRenderAccepted, KodiscJob, KodiscMe, KodiscError, ViralSyncRenderRequest,
              ViralSyncAccepted, ViralSyncJob, ViralSyncJobList, ViralSyncMe, ViralSyncUsage, ViralSyncError,
              ViralSyncEvent, ViralSyncStreamEvent)
