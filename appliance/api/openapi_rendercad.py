"""The RenderCAD operations in the OpenAPI document.

RenderCAD's API is a handful of PHP files that pick their action from `?action=`, so one HTTP path carries many
operations with different bodies. OpenAPI keys operations by path and method only; to describe each action
with its own body, parameters and answers, each gets a path key that ends in its action
(`/backend/render.php?action=create_job`). Swagger UI and Schemathesis send such a path as it is and add the
other query parameters after it. The handlers (api/rendercad/) are registered with include_in_schema=False;
this module is the document's only description of them, built from the Structs in schemas_rendercad.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)

from appliance.api import schemas_rendercad as s
from appliance.api.rendercad import limits

REF = "#/components/schemas/{name}"
TAG = "RenderCAD"
SECURITY_SCHEMES = {
    "rendercadBearer": SecurityScheme(type="http", scheme="bearer", bearer_format="rendercad_…",
                                      description="RenderCAD: Authorization: Bearer <API token>"),
    "rendercadToken": SecurityScheme(type="apiKey", name="X-Auth-Token", security_scheme_in="header",
                                     description="RenderCAD: X-Auth-Token: <API token> (same tokens as Bearer)"),
}
TOKEN: list[SecurityRequirement] = [{"rendercadBearer": []}, {"rendercadToken": []}]
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")
RATE_HEADERS = {"X-RateLimit-Endpoint": "The limit's name (the seed's table)", "X-RateLimit-Limit": "Requests "
                "per window", "X-RateLimit-Remaining": "Left in this window", "X-RateLimit-Reset": "Unix time the "
                "window ends"}
WHY = {400: "A missing or invalid field (the message names it)", 401: "No token, or an invalid, expired or "
       "revoked one (no cookie fallback)", 403: "The token's scope is too low for this action",
       404: "No such job, token, webhook or asset of this user's", 409: "The job's state does not allow this",
       413: "Body too large", 415: "Content-Type must be application/json", 422: "A semantic error (e.g. 4k "
       "without the pro model; an upload that is no readable image)", 429: "Rate limit, or not enough tokens"}


def ref(struct: type) -> dict:
    return {"$ref": REF.format(name=struct.__name__)}


def raw(schema: dict) -> Schema:
    return cast(Schema, schema)


def _json(schema: dict, description: str, headers: dict[str, str] | None = None) -> OpenAPIResponse:
    return OpenAPIResponse(description=description,
                           content={"application/json": OpenAPIMediaType(schema=raw(schema))},
                           headers={k: OpenAPIHeader(schema=raw({"type": "string"}), description=v)
                                    for k, v in (headers or {}).items()} or None)


def _query(name: str, schema: dict, description: str, required: bool = False) -> Parameter:
    return Parameter(name=name, param_in="query", schema=raw(schema), description=description, required=required)


@dataclass
class Action:
    file: str
    action: str
    method: str
    summary: str
    scope: str | None  # None: no token; "optional"; else the least scope
    ok: type
    body: type | None = None
    params: list[Parameter] = field(default_factory=list)
    errors: tuple[int, ...] = ()
    example: dict | None = None
    forms: bool = False  # also accepts multipart/form-data (and urlencoded)


def _operation(a: Action) -> Operation:
    limit = limits.TABLE.get((a.file, a.action))
    rate = {**RATE_HEADERS, "Retry-After": "Seconds to wait (429 only)"} if limit else None
    codes = set(a.errors) | ({401} if a.scope not in (None, "optional") else set())
    codes |= {403} if a.scope in ("render-only", "full-access") else set()
    codes |= {400, 413, 415} if a.method == "POST" else set()
    codes |= {429} if limit else set()
    responses: dict[str, OpenAPIResponse | Reference] = {"200": _json(ref(a.ok), "OK", rate)}
    for code in sorted(codes):
        responses[str(code)] = _json(ref(s.RenderCADError), WHY.get(code, "Error"), rate)
    body = None
    if a.body is not None:
        content = {"application/json": OpenAPIMediaType(schema=raw(ref(a.body)), example=a.example)}
        if a.forms:
            content["multipart/form-data"] = OpenAPIMediaType(schema=raw({"type": "object", "properties": {
                **({"image": {"type": "string", "format": "binary"}} if a.action == "render" else {})}}))
        body = RequestBody(required=a.action not in ("request_device_code",), content=content)
    limited = f" Rate limit: {limit.limit} per {limit.window} s ({limit.endpoint})." if limit else ""
    scope = {None: "No token.", "optional": "Token optional."}.get(a.scope, f"Scope: {a.scope} or higher.")
    return Operation(tags=[TAG], summary=a.summary, description=f"{scope}{limited}",
                     operation_id=f"rendercad_{a.file.split('.')[0]}_{a.action}",
                     parameters=list[Parameter | Reference](a.params) or None,
                     request_body=body, responses=responses,
                     security=TOKEN + [{}] if a.scope == "optional" else (TOKEN if a.scope else []))


JOB_ID = _query("job_id", {"type": "string", "minLength": 1}, "The job's id", required=True)
ACTIONS = [
    Action("auth.php", "request_device_code", "POST", "Start a device-code sign-in", None, s.RenderCADObject,
           s.RenderCADDeviceRequest, [_query(n, {"type": "string", "maxLength": 100}, "The app's metadata, as "
                                             "older clients send it") for n in ("app_name", "app_type",
                                                                               "app_version")], forms=True),
    Action("auth.php", "poll_device_code", "GET", "Poll a device code: pending, authorized (api_token) or "
           "expired", None, s.RenderCADObject, params=[_query("code", {"type": "string"}, "The device code")],
           errors=(400, 404)),
    Action("auth.php", "check", "GET", "Whether the token is valid (200 authenticated:false without one)",
           "optional", s.RenderCADObject),
    Action("auth.php", "usage", "GET", "Usage in the current billing cycle", "read-only", s.RenderCADObject),
    Action("auth.php", "plan_info", "GET", "The user's plan and billing cycle", "read-only", s.RenderCADObject),
    Action("auth.php", "get_api_tokens", "GET", "The user's active API tokens", "read-only", s.RenderCADObject),
    Action("auth.php", "create_api_token", "POST", "Create an API token (plaintext shown once; at most 10)",
           "full-access", s.RenderCADObject, s.RenderCADCreateToken),
    Action("auth.php", "revoke_api_token", "POST", "Revoke an API token", "full-access", s.RenderCADOk,
           s.RenderCADTokenRef, errors=(404,)),
    Action("auth.php", "rename_api_token", "POST", "Rename an API token", "full-access", s.RenderCADOk,
           s.RenderCADRenameToken, errors=(404,)),
    *[Action("api_discovery.php", name, "GET", text, "read-only", s.RenderCADObject) for name, text in (
        ("models", "Models, quality tiers and render modes"), ("conditions", "The 43 condition presets"),
        ("backgrounds", "The background asset library"), ("textures", "The texture asset library"),
        ("video_options", "Video presets, durations and resolutions"))],
    Action("render.php", "create_job", "POST", "Create an image job (then upload, then finalize)", "render-only",
           s.RenderCADJobCreated, s.RenderCADCreateJob, errors=(404, 422),
           example={"model": "pro", "quality": "standard", "render_mode": "preserve", "background_style": "auto",
                    "condition": "auto", "custom_instructions": "warm, soft shadow"}),
    Action("render.php", "presign_upload", "POST", "A signed PUT URL for one upload slot (or, without job_id, "
           "a job for the legacy render)", "render-only", s.RenderCADPresigned, s.RenderCADPresign,
           errors=(404, 409), example={"job_id": "render_0123456789abc.01234567", "slot": "input_main",
                                       "content_type": "image/jpeg"}),
    Action("render.php", "finalize_job", "POST", "Validate the uploads and queue the render", "render-only",
           s.RenderCADQueued, s.RenderCADJobRef, errors=(404, 409, 422)),
    Action("render.php", "status", "GET", "An image job's status", "read-only", s.RenderCADStatus,
           params=[JOB_ID], errors=(400, 404)),
    Action("render.php", "history", "GET", "Render history, paged", "read-only", s.RenderCADHistory, params=[
        _query("page", {"type": "integer", "minimum": 1}, "Page, from 1"),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "Renders per page (50)"),
        _query("filter", {"type": "string", "enum": ["all", "image", "video"]}, "Kind")], errors=(400,)),
    Action("render.php", "cancel", "POST", "Cancel a pending job (409 once processing; no refund then)",
           "render-only", s.RenderCADStatus, s.RenderCADJobRef, errors=(404, 409)),
    Action("render.php", "delete", "POST", "Delete a finished job and its files (409 while active)",
           "full-access", s.RenderCADOk, s.RenderCADJobRef, errors=(404, 409)),
    Action("render.php", "render", "POST", "Legacy: render an inline image (data URL or multipart) or an "
           "r2_input_url", "render-only", s.RenderCADLegacyAccepted, s.RenderCADLegacyRender,
           errors=(404, 409, 413, 422), forms=True),
    Action("video.php", "create_job", "POST", "Create an image-to-video job", "render-only", s.RenderCADJobCreated,
           s.RenderCADVideoCreate, errors=(404, 409, 422)),
    Action("video.php", "finalize_job", "POST", "Queue a video job (tokens_used)", "render-only", s.RenderCADQueued,
           s.RenderCADJobRef, errors=(404, 409, 422)),
    Action("video.php", "convert", "POST", "Convert a finished video to GIF", "render-only", s.RenderCADJobCreated,
           s.RenderCADConvert, errors=(404, 409, 422)),
    Action("video.php", "status", "GET", "A video or convert job's status", "read-only", s.RenderCADStatus,
           params=[JOB_ID], errors=(400, 404)),
    Action("video.php", "cancel", "POST", "Cancel a pending video job", "render-only", s.RenderCADStatus,
           s.RenderCADJobRef, errors=(404, 409)),
    Action("webhooks.php", "register", "POST", "Register a webhook (secret shown once; at most 5)", "full-access",
           s.RenderCADObject, s.RenderCADWebhookRegister),
    Action("webhooks.php", "list", "GET", "The account's webhooks with delivery figures", "read-only",
           s.RenderCADObject),
    Action("webhooks.php", "delete", "POST", "Delete a webhook", "full-access", s.RenderCADOk,
           s.RenderCADWebhookRef, errors=(404,)),
]


def _binary(types: tuple[str, ...], description: str) -> OpenAPIResponse:
    return OpenAPIResponse(description=description, content={
        t: OpenAPIMediaType(schema=raw({"type": "string", "format": "binary"})) for t in types})


def _files() -> dict[str, PathItem]:
    """The non-PHP paths: the authenticated output proxy, the public assets and the signed upload URL."""
    error = _json(ref(s.RenderCADError), "Not found")
    serve = Operation(tags=[TAG], summary="The finished render (the authenticated output_url)",
                      operation_id="rendercad_serve_render", security=TOKEN,
                      parameters=[_query("id", {"type": "string"}, "The job id", required=True)],
                      responses={"200": _binary(("image/jpeg", "video/mp4", "image/gif"), "The output"),
                                 "401": _json(ref(s.RenderCADError), WHY[401]), "404": error})
    asset = Operation(tags=[TAG], summary="A public asset: {job_id} (the output), {job_id}_input (the upload)",
                      operation_id="rendercad_asset", security=[],
                      parameters=[Parameter(name="name", param_in="path", required=True,
                                            schema=raw({"type": "string"}), description="Asset name")],
                      responses={"200": _binary((*IMAGE_TYPES, "video/mp4"), "The file"), "404": error})
    upload_params: list[Parameter | Reference] = [
        Parameter(name=n, param_in="path", required=True, schema=raw({"type": "string"}), description=d)
        for n, d in (("job_id", "The job"), ("slot", "The slot"))]
    upload_params += [_query("expires", {"type": "integer"}, "From presigned_url", True),
                      _query("sig", {"type": "string"}, "From presigned_url", True)]
    upload = Operation(
        tags=[TAG], summary="The presigned PUT of one upload slot (streamed to disk; ≤ 80 MB)",
        operation_id="rendercad_upload", security=[],
        parameters=upload_params,
        request_body=RequestBody(required=True, content={t: OpenAPIMediaType(schema=raw(
            {"type": "string", "format": "binary"})) for t in IMAGE_TYPES}),
        responses={"200": OpenAPIResponse(description="Stored (empty body, ETag)"),
                   "403": _json(ref(s.RenderCADError), "Wrong signature, slot or content type, or expired"),
                   "409": _json(ref(s.RenderCADError), WHY[409]), "413": _json(ref(s.RenderCADError), WHY[413])})
    return {"/backend/serve_render.php": PathItem(get=serve), "/renders/{name}": PathItem(get=asset),
            "/backend/upload/{job_id}/{slot}": PathItem(put=upload)}


def paths() -> dict[str, PathItem]:
    items: dict[str, Any] = {}
    for a in ACTIONS:
        op = _operation(a)
        items[f"/backend/{a.file}?action={a.action}"] = PathItem(get=op) if a.method == "GET" else PathItem(post=op)
    return {**items, **_files()}
