"""/backend/video.php: create_job → (uploads) → finalize_job → status; cancel; convert (video → GIF).

A video job (a UUID4 id) is a core job of kind "video" (pipelines/image_video.py), opened in phase "uploading"
until finalize submits it; rendercad_jobs keeps its RenderCAD kind "video" and its settings. Its sources are
RenderCAD asset URLs of the same user (an image render, or an upload's `_input`), copied into the job's own
upload folder at create time so a later delete of the source does not break it; without `image_url` the job
asks for the `input_main` upload slot, filled through render.php's presign_upload. A convert job (`vc_` + 12
hex, kind "convert") is submitted at once: it costs no tokens and sends no webhook."""
from __future__ import annotations

import asyncio
import secrets
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from litestar import Response

from appliance.api.rendercad import uploads
from appliance.api.rendercad.common import (
    PIPELINES,
    Action,
    Ctx,
    RCError,
    cancel_row,
    finalize,
    job_row,
    ok,
    open_job,
    public_state,
    queue_figures,
    refuse,
)
from appliance.services.jobs import JobService, NewJob
from appliance.services.models import ModelRegistry
from appliance.services.pipelines import generative, image_video
from appliance.store import rendercad as store
from appliance.store.db import loads
from appliance.store.rows import JobRow

DETAIL = {"uploading": "Waiting for upload", "pending": "Queued...", "processing": "Generating video...",
          "completed": None, "failed": "Failed", "canceled": "Canceled"}
# The files a finished job serves, by rendercad_jobs kind (an image render's is render.jpg), and the
# extensions its public asset URL may carry.
OUTPUTS = {"video": "video.mp4", "convert": "video.gif"}
EXTENSIONS = {"video": ".mp4", "convert": ".gif"}
SOURCE_SLOTS = {"first": "input_main", "last": "last_frame"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
TIMED_OUT = "Generation timed out"
FAILED = "Generation failed"


def display_error(error: str | None) -> str:
    """The seed's video failure texts; never a path or an internal name."""
    text = error or ""
    if "timed out" in text or "time limit" in text:
        return TIMED_OUT
    if "could not be read" in text:
        return uploads.UNREADABLE
    return FAILED


def asset_url(base: str, row: store.RcJob) -> str:
    return f"{base}/renders/{row['id']}{EXTENSIONS.get(row['kind'], '')}"


def asset_job_id(name: str) -> str:
    """The job id in a public asset name: `{id}`, `{id}_input`, `{id}.mp4`, `{id}.gif`."""
    for ext in EXTENSIONS.values():
        if name.endswith(ext):
            return name[:-len(ext)]
    return name


# ---- sources ---------------------------------------------------------------------------------------------------
def _asset_row(ctx: Ctx, url: object, field: str) -> tuple[store.RcJob, str]:
    """(the user's job an asset URL names, the asset's name): 400 when it is no asset URL, 404 when it names
    nothing of this user's."""
    path = urlsplit(url).path if isinstance(url, str) and len(url) <= 2048 else ""
    head, _, name = path.rpartition("/")
    if not head.endswith("/renders") or not name:
        raise RCError(400, f"{field} must be a RENDERCAD asset URL ({ctx.base}/renders/…)")
    stem = name[:-len("_input")] if name.endswith("_input") else name
    for ext in IMAGE_EXTENSIONS:
        if stem.lower().endswith(ext) and not store.get_job(ctx.db, stem, ctx.user_id):
            stem = stem[:-len(ext)]
    row = store.get_job(ctx.db, asset_job_id(stem), ctx.user_id)
    if row is None:
        raise RCError(404, f"{field}: asset not found")
    return row, name


def _source_path(ctx: Ctx, url: object, field: str) -> Path:
    """The file behind an image asset URL: an image render's output, or any job's uploaded input."""
    row, name = _asset_row(ctx, url, field)
    if name.endswith("_input"):
        got = store.uploads_of(ctx.db, row["id"]).get("input_main")
        path = Path(got["path"]) if got and got["path"] else None
    elif row["kind"] == "image":
        path = ctx.service.datadir.file_path(row["id"], "render.jpg")
    else:
        raise RCError(400, f"{field} must be an image asset, not a {row['kind']}")
    if path is None or not path.is_file():
        raise RCError(409, f"{field}: that render has no image yet")
    return path


def _copy_source(service: JobService, job_id: str, slot: str, source: Path) -> None:
    folder = uploads.upload_dir(service, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{slot}{source.suffix.lower()[:8]}"
    shutil.copyfile(source, target)
    kind = "image/" + {".jpg": "jpeg", ".jpeg": "jpeg"}.get(source.suffix.lower(), source.suffix.lower()[1:])
    store.put_upload(service.db, job_id, slot, kind, str(target), target.stat().st_size)


# ---- actions ---------------------------------------------------------------------------------------------------
async def create_job(ctx: Ctx) -> Response:
    try:
        settings = image_video.validate(ctx.body)
    except image_video.VideoError as exc:
        raise RCError(400, str(exc)) from None
    if settings["video_mode"] == "transition":
        urls = {"first": ctx.body.get("first_frame_url"), "last": ctx.body.get("last_frame_url")}
        if bool(urls["first"]) != bool(urls["last"]):  # both asset URLs, or neither and both uploaded
            raise RCError(400, "first_frame_url and last_frame_url are required for video_mode=transition "
                               "(or send neither and upload both frames to the slots the job lists)")
        fields = {"first": "first_frame_url", "last": "last_frame_url"}
    else:
        urls, fields = {"first": ctx.body.get("image_url")}, {"first": "image_url"}
    if settings["style"] in image_video.GENERATIVE_STYLES:  # the studio's model redraws the first frame
        studio = generative.installed(ModelRegistry.of(ctx.service.settings.data_dir))
        reason = generative.gpu_refusal(studio, ctx.service.scheduler.capacity, "use style=preserve")
        if reason:  # told now (render.php's create_job does the same), not as a failed job after the upload
            raise RCError(422, reason)
    sources = {role: _source_path(ctx, url, fields[role]) for role, url in urls.items() if url}
    ctx.admit()  # counted once the request is valid: a typo does not use up the 10 per 5 minutes
    job_id = str(uuid.uuid4())
    slots = [] if sources else [SOURCE_SLOTS[role] for role in urls]  # render.php's presign_upload reads these
    open_job(ctx, job_id, "video", {**settings, **{fields[r]: urls[r] for r in sources}, "slots": slots})
    for role, path in sources.items():
        await asyncio.to_thread(_copy_source, ctx.service, job_id, SOURCE_SLOTS[role], path)
    return ok({"job_id": job_id, "status": "uploading", "required_uploads": [{"slot": s} for s in slots]})


async def finalize_job(ctx: Ctx) -> Response:
    row = job_row(ctx, ("video",))
    if row["status"] != "uploading":
        raise RCError(409, "This job was already finalized")
    got = store.uploads_of(ctx.db, row["id"])
    roles = ("first", "last") if row["params"]["video_mode"] == "transition" else ("first",)
    for slot in [SOURCE_SLOTS[role] for role in roles if SOURCE_SLOTS[role] not in got]:
        raise RCError(400, f"Upload did not finish for slot {slot}. Upload the image, then finalize again.")
    for slot in got:
        reason = await asyncio.to_thread(uploads.problem, ctx.service, got[slot])
        if reason:
            raise refuse(ctx, row, reason)
    settings = row["params"]
    price = image_video.cost(settings["duration"], settings["resolution"])
    job = finalize(ctx, row, {"settings": settings, "first_path": got["input_main"]["path"],
                              "last_path": (got.get("last_frame") or {}).get("path")}, price, "video")
    return ok({"job_id": row["id"], "status": "pending", "tokens_used": price, **queue_figures(ctx, job, "video")})


async def convert(ctx: Ctx) -> Response:
    fmt = ctx.body.get("format", "gif")
    if fmt != "gif":
        raise RCError(400, "format must be gif")
    source, _ = _asset_row(ctx, ctx.body.get("video_url"), "video_url")
    if source["kind"] != "video":
        raise RCError(400, "video_url must be the URL of a video made by video.php")
    path = ctx.service.datadir.file_path(source["id"], OUTPUTS["video"])
    if path is None or not path.is_file():
        raise RCError(409, "That video is not finished yet")
    ctx.admit()
    job_id, params = f"vc_{secrets.token_hex(6)}", {"format": fmt, "video_url": ctx.body["video_url"],
                                                    "source": source["id"]}
    # submitted at once (nothing to upload, no tokens); a refused submit leaves nothing of RenderCAD's behind
    ctx.service.submit(NewJob(job_id=job_id, dialect="rendercad", user_id=ctx.user_id,
                              key_id=ctx.key.id if ctx.key else "", kind=PIPELINES["convert"], request=params,
                              payload={"video_path": str(path)}))
    store.create_job(ctx.db, job_id, "convert", params)
    return ok({"job_id": job_id, "status": "pending", "format": fmt})


async def status(ctx: Ctx) -> Response:
    row = job_row(ctx, ("video", "convert"))
    state, job = public_state(ctx, row)
    data: dict = {"job_id": row["id"], "status": state, "status_detail": DETAIL[state]}
    if row["kind"] == "convert":
        data["format"] = row["params"].get("format", "gif")
    if state in ("pending", "processing"):
        data.update({k: v for k, v in queue_figures(ctx, job, "video").items() if k != "queue_position"})
        if job and state == "processing":
            data["progress"] = round(float(job.get("progress") or 0) * 100)
    elif state == "completed":
        data.update(_finished(ctx, row, job))
    elif state in ("failed", "canceled"):
        if state == "failed":
            data["error"] = uploads.shown_error(row["error"], display_error)
        data["completed_at"] = (job or row)["completed_at"]
    return ok(data)


def _finished(ctx: Ctx, row: store.RcJob, job: JobRow | None) -> dict:
    url = asset_url(ctx.base, row)
    meta = loads(job["result"] if job else None, {}).get("meta", {})
    done = {"completed_at": job["completed_at"] if job else None}
    if row["kind"] == "convert":
        path = ctx.service.datadir.file_path(row["id"], OUTPUTS["convert"])
        return {"output_url": url, "gif_url": url, "width": meta.get("width"), "height": meta.get("height"),
                "frame_count": meta.get("frames"), "fps": meta.get("fps"),
                "size_bytes": path.stat().st_size if path else meta.get("size_bytes"), **done}
    return {"video_url": url, "input_url": f"{ctx.base}/renders/{row['id']}_input",
            "duration": row["params"].get("duration"), "resolution": row["params"].get("resolution"),
            "video_settings": video_settings(row["params"]), **done}


def video_settings(params: dict) -> dict:
    keys = ("video_mode", "camera", "motion", "style", "prompt", "duration", "resolution", "crossfade_duration")
    return {k: params.get(k) for k in keys}


async def cancel(ctx: Ctx) -> Response:
    return cancel_row(ctx, job_row(ctx, ("video", "convert")))


ACTIONS = {
    "create_job": Action("POST", "render-only", create_job),
    "finalize_job": Action("POST", "render-only", finalize_job),
    "convert": Action("POST", "render-only", convert),
    "status": Action("GET", "read-only", status),
    "cancel": Action("POST", "render-only", cancel),
}
