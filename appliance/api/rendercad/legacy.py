"""The legacy flows RenderCAD's published clients still use: render.php?action=render with the image inline
(JSON data URL or multipart `image`) or by `r2_input_url` from a jobless presign_upload, answering
{success, job_id}. Each becomes an ordinary job (create → upload → finalize), so status, history, webhooks
and the upload checks are the current flow's."""
from __future__ import annotations

import asyncio
import base64
import binascii
import os
import secrets

from litestar import Response
from litestar.datastructures import UploadFile

from appliance.api.rendercad import render, uploads
from appliance.api.rendercad.common import Action, Ctx, RCError, json_body, ok, open_job
from appliance.contracts import rendercad as contract
from appliance.services.pipelines import image
from appliance.store import rendercad as store

MAX_BYTES = 10 * 1024 * 1024  # the legacy API's documented image limit
MAX_BODY = MAX_BYTES * 4 // 3 + 64 * 1024  # the same image as base64 in JSON, plus the other fields
FIELDS = tuple(f.name for f in contract.IMAGE.fields)  # the settings, as in create_job
TOO_LARGE = "Images must be 10MB or smaller"


def _settings(data: dict) -> dict:
    try:
        settings = image.validate({k: data[k] for k in FIELDS if data.get(k) not in (None, "")})
    except image.ImageError as exc:
        raise RCError(400, str(exc)) from None
    render.enforce_rules(settings)
    return settings


def _new_job(ctx: Ctx, settings: dict) -> str:
    job_id = render.new_job_id()
    open_job(ctx, job_id, "image", settings)
    return job_id


async def presign(ctx: Ctx) -> Response:
    """presign_upload with only content_type: a job is made for the upload; r2_input_url names it to render."""
    content_type = ctx.body.get("content_type")
    if not isinstance(content_type, str) or content_type not in uploads.CONTENT_TYPES:
        raise RCError(400, "content_type must be one of: " + ", ".join(uploads.CONTENT_TYPES))
    job_id = _new_job(ctx, image.validate({}))
    signed = uploads.presign(ctx.service, job_id, "input_main", content_type)
    return ok({**signed, "r2_input_url": signed["asset_url"]})


async def render_action(ctx: Ctx) -> Response:
    content_type = ctx.request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await ctx.request.form()
        data = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise RCError(400, "image is required")
        job_id = await _inline(ctx, _settings(data), await upload.read(), upload.content_type)
    else:
        data = await json_body(ctx.request)
        if data.get("r2_input_url"):
            job_id = _from_presign(ctx, data)
        else:
            body, kind = _data_url(data.get("image"))
            job_id = await _inline(ctx, _settings(data), body, kind)
    ctx.body = {"job_id": job_id}
    await render.finalize_job(ctx)
    return ok({"job_id": job_id})


def _data_url(value: object) -> tuple[bytes, str]:
    if not isinstance(value, str) or not value:
        raise RCError(400, "image or r2_input_url is required")
    head, sep, payload = value.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise RCError(400, "image must be a data URL: data:image/<type>;base64,...")
    if len(payload) > MAX_BYTES * 4 // 3 + 4:
        raise RCError(413, TOO_LARGE)
    try:
        return base64.b64decode(payload, validate=True), head[5:-7].lower()
    except (binascii.Error, ValueError):
        raise RCError(400, "image is not valid base64") from None


async def _inline(ctx: Ctx, settings: dict, data: bytes, content_type: str | None) -> str:
    """A job whose input_main is these bytes, written as an upload would be."""
    if len(data) > MAX_BYTES:
        raise RCError(413, TOO_LARGE)
    kind = content_type if content_type in uploads.CONTENT_TYPES else "image/jpeg"  # the decoder checks it
    job_id = _new_job(ctx, settings)
    folder = uploads.upload_dir(ctx.service, job_id)
    path = folder / f"input_main{uploads.CONTENT_TYPES[kind]}"
    await asyncio.to_thread(_write, path, data)
    store.put_upload(ctx.db, job_id, "input_main", kind, str(path), len(data))
    return job_id


def _write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".part{secrets.token_hex(4)}")
    partial.write_bytes(data)
    os.replace(partial, path)


def _from_presign(ctx: Ctx, data: dict) -> str:
    """The job a jobless presign made, named by its r2_input_url; the render's settings replace the defaults."""
    url = data["r2_input_url"]
    prefix = f"{ctx.base}/renders/"
    if not isinstance(url, str) or not url.startswith(prefix) or not url.endswith("_input"):
        raise RCError(400, "r2_input_url must be the r2_input_url that presign_upload returned")
    row = store.get_job(ctx.db, url[len(prefix):-len("_input")], ctx.user_id)
    if row is None:
        raise RCError(404, "Upload not found")
    if row["status"] != "uploading":
        raise RCError(409, "This upload was already rendered")
    store.set_params(ctx.db, row["id"], _settings(data))  # finalize gives them to the core job as its request
    return row["id"]


async def presign_upload(ctx: Ctx) -> Response:
    """With a job_id: the current flow's slot upload; with only content_type: the legacy one."""
    return await (render.presign_upload if ctx.body.get("job_id") is not None else presign)(ctx)


ACTIONS = {**render.ACTIONS, "presign_upload": Action("POST", "render-only", presign_upload),
           "render": Action("POST", "render-only", render_action, json_body=False)}
