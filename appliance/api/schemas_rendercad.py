"""The RenderCAD API's documented request and response bodies, as msgspec Structs for the OpenAPI document
(openapi_rendercad.py places them on the /backend/*.php operations). As for the other dialects, the handlers
read raw bodies themselves. The job settings (create_job, the legacy render, video.php create_job) are generated
from the contracts their validators run (appliance/contracts/rendercad.py); keep the rest in step with
api/rendercad/* by hand.

Response bodies list the documented fields as optional (an answer leaves out what does not apply, e.g.
output_url before completion) and keep `success` required: every RenderCAD answer has it but errors."""
from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from appliance.contracts import rendercad

Timestamp = Annotated[str, Meta(description="ISO 8601 UTC")]


def one_of(*values: str) -> Meta:
    return Meta(extra_json_schema={"enum": list(values)})


Background = Annotated[str, Meta(pattern=r"^(auto|white|grey|black|gradient|custom:#[0-9A-Fa-f]{6})$",
                                 description="A preset, or custom:#RRGGBB")]
AssetUrl = Annotated[str, Meta(max_length=2048, description="One of this user's RenderCAD asset URLs "
                                                             "({public_url}/renders/{job_id} or …_input)")]
JobId = Annotated[str, Meta(min_length=1, max_length=100)]


# ---- requests ----------------------------------------------------------------------------------------------
class RenderCADReference(Struct, kw_only=True):
    """A background or material for the pro model: asset_id (library), url (copied at once) or neither (an
    upload slot {slot: reference, index} in required_uploads)."""

    type: Annotated[str, one_of("background", "material")]
    asset_kind: Annotated[str, one_of("texture", "background")] | None = None
    asset_id: Annotated[str, Meta(description="From api_discovery.php?action=backgrounds|textures")] | None = None
    url: AssetUrl | None = None
    file_name: str | None = None


# render.php create_job and the legacy render: the image contract's settings (appliance/contracts/rendercad.py,
# what the validator runs), with the fields other code checks around them
References = Annotated[list[RenderCADReference], Meta(max_length=6)]
RenderCADCreateJob = rendercad.IMAGE.struct(before=(("source_url", AssetUrl | None, None),),
                                            after=(("references", References | None, None),))


class RenderCADPresign(Struct, kw_only=True):
    """render.php?action=presign_upload. Without job_id (the legacy flow) a job is made for the upload and
    r2_input_url names it for action=render."""

    content_type: Annotated[str, one_of("image/jpeg", "image/png", "image/webp", "image/gif")]
    job_id: JobId | None = None
    slot: Annotated[str, one_of("input_main", "reference", "last_frame")] | None = None
    index: Annotated[int, Meta(ge=0, le=5, description="The reference's index (slot reference)")] | None = None


class RenderCADJobRef(Struct, kw_only=True):
    job_id: JobId


RenderCADLegacyRender = rendercad.IMAGE.struct(
    name="RenderCADLegacyRender", doc="render.php?action=render (legacy): the image inline as a data URL (≤ 10 MB), "
    "or the r2_input_url of a jobless presign_upload; multipart form data with an `image` file is accepted too.",
    before=(("image", Annotated[str, Meta(pattern=r"^data:image/", description="data:image/…;base64,…")] | None,
             None), ("r2_input_url", str | None, None)))


class RenderCADDeviceRequest(Struct, kw_only=True):
    """auth.php?action=request_device_code: JSON, form data, or the same names as query parameters."""

    app_name: Annotated[str, Meta(max_length=100)] | None = None
    app_type: Annotated[str, one_of("browser-extension", "desktop-app", "mobile-app", "cli-tool")] | None = None
    app_version: Annotated[str, Meta(max_length=100)] | None = None


class RenderCADCreateToken(Struct, kw_only=True):
    token_name: Annotated[str, Meta(min_length=1, max_length=100)]
    scope: Annotated[str, one_of("read-only", "render-only", "full-access")] = "full-access"


class RenderCADTokenRef(Struct, kw_only=True):
    token_id: int


class RenderCADRenameToken(Struct, kw_only=True):
    token_id: int
    new_name: Annotated[str, Meta(min_length=1, max_length=100)]


class RenderCADWebhookRegister(Struct, kw_only=True):
    """https only unless the appliance allows http; at most 5 per account."""

    url: Annotated[str, Meta(max_length=2048)]
    events: Annotated[list[Annotated[str, one_of("render.completed", "render.failed", "video.completed",
                                                  "video.failed", "credits.exhausted")]], Meta(min_length=1)]


class RenderCADWebhookRef(Struct, kw_only=True):
    id: int


RenderCADVideoCreate = rendercad.VIDEO.struct(before=(
    ("image_url", AssetUrl | None, None), ("first_frame_url", AssetUrl | None, None),
    ("last_frame_url", AssetUrl | None, None)))


class RenderCADConvert(Struct, kw_only=True):
    video_url: AssetUrl
    format: Annotated[str, one_of("gif")] = "gif"


# ---- answers -----------------------------------------------------------------------------------------------
class RenderCADError(Struct, kw_only=True):
    """Every RenderCAD error: display-safe text in `error` (auth.php?action=check adds its flags)."""

    error: str
    success: bool | None = None
    authenticated: bool | None = None
    token_valid: bool | None = None


class RenderCADOk(Struct, kw_only=True):
    """A plain success (delete, revoke, rename); `message` where the action has one."""

    success: bool
    message: str | None = None


class RenderCADUploadSlot(Struct, kw_only=True):
    slot: str
    index: int | None = None
    type: str | None = None


class RenderCADJobCreated(Struct, kw_only=True):
    success: bool
    job_id: str
    status: Annotated[str, one_of("uploading", "pending")]
    required_uploads: list[RenderCADUploadSlot] | None = None
    instructions_applied: Annotated[list[str], Meta(description="The custom_instructions phrases recognised")] \
        | None = None
    format: str | None = None


class RenderCADLegacyAccepted(Struct, kw_only=True):
    """render.php?action=render (legacy): the job is created, uploaded and finalized in one call."""

    success: bool
    job_id: str


class RenderCADPresigned(Struct, kw_only=True):
    success: bool
    presigned_url: str
    asset_url: str | None
    slot: str
    index: int | None
    expires_in: int
    cache_control: str
    r2_input_url: str | None = None


class RenderCADQueued(Struct, kw_only=True):
    success: bool
    job_id: str
    status: str
    queue_depth: int | None = None
    queue_position: int | None = None
    estimated_wait_seconds: int | None = None
    tokens_used: int | None = None


class RenderCADStatus(Struct, kw_only=True):
    """render.php / video.php ?action=status (and cancel's answer)."""

    success: bool
    job_id: str
    status: Annotated[str, one_of("uploading", "pending", "processing", "completed", "failed", "canceled")]
    status_detail: str | None = None
    queue_depth: int | None = None
    estimated_wait_seconds: int | None = None
    output_url: str | None = None
    asset_url: str | None = None
    input_url: str | None = None
    video_url: str | None = None
    error_message: str | None = None
    error: str | None = None
    completed_at: Timestamp | None = None


class RenderCADHistory(Struct, kw_only=True):
    success: bool
    renders: list[dict[str, Any]]
    pagination: dict[str, Any]


class RenderCADObject(Struct, kw_only=True):
    """An answer whose fields the seed lists (auth.php and api_discovery.php figures, tokens, webhooks)."""

    success: bool


DOCUMENTED = (RenderCADCreateJob, RenderCADPresign, RenderCADJobRef, RenderCADLegacyRender, RenderCADDeviceRequest,
              RenderCADCreateToken, RenderCADTokenRef, RenderCADRenameToken, RenderCADWebhookRegister,
              RenderCADWebhookRef, RenderCADVideoCreate, RenderCADConvert, RenderCADError, RenderCADOk,
              RenderCADJobCreated, RenderCADLegacyAccepted, RenderCADPresigned, RenderCADQueued, RenderCADStatus,
              RenderCADHistory, RenderCADObject)
