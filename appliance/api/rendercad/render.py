"""/backend/render.php: create_job → presign_upload → (PUT) → finalize_job → status; history, cancel, delete.

A job is a core job from create_job on: opened in phase "uploading" (no tasks, no tokens reserved) while it
collects its uploads, submitted by finalize through JobService; rendercad_jobs keeps its kind and settings. Its
public status is always the core job's, in RenderCAD's words (common.PUBLIC)."""
from __future__ import annotations

import asyncio
import math
import secrets
import time
from pathlib import Path

from litestar import Response

from appliance.api.rendercad import library, references, uploads
from appliance.api.rendercad.common import (
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
from appliance.api.rendercad.video import video_settings
from appliance.contracts import rendercad as contract
from appliance.contracts.base import Refused
from appliance.services.models import ModelRegistry
from appliance.services.pipelines import generative, image
from appliance.store import rendercad as store
from appliance.store.db import parse_iso

DETAIL = {"uploading": "Waiting for upload", "pending": "Queued...", "processing": "Rendering...",
          "completed": None, "failed": "Failed", "canceled": "Canceled"}
SLOTS = ("input_main",)
RETRY_LATER = {"timed out": "Rendering timed out. You were not charged. Please try again.",
               "time limit": "Rendering timed out. You were not charged. Please try again.",
               "could not start": "Render did not start. You were not charged. Please try again.",
               "worker lost": "Render did not start. You were not charged. Please try again.",
               "could not be read": uploads.UNREADABLE,
               # a GPU-only studio model where no GPU can be granted (the scheduler's admission says so)
               "needs a GPU": "This model needs a GPU and the appliance has none to grant. You were not charged."}
GENERIC_FAILURE = "Render failed. You were not charged. Please try again."


def new_job_id() -> str:
    """render_ + 13 hex + . + 8 digits: the shape of PHP's uniqid('', true) that the hosted service uses."""
    return f"render_{secrets.token_hex(7)[:13]}.{secrets.randbelow(10**8):08d}"


def enforce_rules(settings: dict) -> None:
    """The image contract's cross-field rules (4K needs the pro model): 422, in RenderCAD's error shape."""
    try:
        contract.IMAGE.enforce(settings)
    except Refused as exc:
        raise RCError(exc.status, exc.message) from None


def display_error(error: str | None) -> str:
    """A core job's error as display-safe text: never a path, a traceback or an internal name."""
    for needle, text in RETRY_LATER.items():
        if needle in (error or ""):
            return text
    return GENERIC_FAILURE


# ---- actions ---------------------------------------------------------------------------------------------------
async def create_job(ctx: Ctx) -> Response:
    studio = generative.installed(ModelRegistry.of(ctx.service.settings.data_dir))  # its name is a model id
    try:
        settings = image.validate(ctx.body, studio["name"] if studio else None)
    except image.ImageError as exc:
        raise RCError(400, str(exc)) from None
    if studio and settings["model"] == studio["name"]:  # a GPU-only model: told now, not after the upload
        reason = generative.gpu_refusal(studio, ctx.service.scheduler.capacity, "use classic or pro")
        if reason:
            raise RCError(422, reason)
    enforce_rules(settings)
    if ctx.body.get("references"):  # the listings are read (and made, the first time) off the event loop
        for kind in library.KINDS:
            await asyncio.to_thread(library.listing, ctx.service.settings, kind)
    # the database is read on the event loop only; the library lookups are cached by now
    refs, copies = references.parse(ctx.service, ctx.user_id, settings["model"], ctx.body.get("references"))
    source = ctx.body.get("source_url")
    source_file = None
    if source not in (None, ""):
        source_file = uploads.asset_file(ctx.service, ctx.user_id, source, "source_url")
    slots = ([] if source_file else [SLOTS[0]]) + [r["slot"] for r in refs if r["source"] == "upload"]
    params = {**settings, **({"references": refs} if refs else {}), "slots": slots}
    job_id = new_job_id()
    open_job(ctx, job_id, "image", params)
    for slot, path in [*(((SLOTS[0], source_file),) if source_file else ()), *copies.items()]:
        content_type, copy = await asyncio.to_thread(uploads.copy_in, ctx.service, job_id, slot, path)
        store.put_upload(ctx.db, job_id, slot, content_type, str(copy), copy.stat().st_size)
    data = {"job_id": job_id, "status": "uploading", "required_uploads": [public_slot(s, refs) for s in slots]}
    if settings.get("custom_instructions") and not (studio and settings["model"] == studio["name"]):
        data["instructions_applied"] = image.parse_instructions(settings["custom_instructions"]).applied
    return ok(data)


def job_slots(row: store.RcJob) -> list[str]:
    """The upload slots a job waits for (jobs made before references and source_url: input_main)."""
    return row["params"].get("slots", list(SLOTS))


def public_slot(slot: str, refs: list[dict]) -> dict:
    """An upload slot as the client names it: {"slot": "input_main"} or {"slot": "reference", "index": i,
    "type": "background"|"material"}."""
    if not slot.startswith("reference_"):  # input_main, or a transition video's last_frame
        return {"slot": slot}
    index = int(slot.rpartition("_")[2])
    return {"slot": "reference", "index": index, "type": refs[index]["type"]}


async def presign_upload(ctx: Ctx) -> Response:
    row = job_row(ctx)
    if row["status"] != "uploading":
        raise RCError(409, "This job is not accepting uploads")
    slot, content_type, index = ctx.body.get("slot"), ctx.body.get("content_type"), ctx.body.get("index")
    wanted = job_slots(row)
    internal = slot
    if slot == "reference":
        if not isinstance(index, int) or isinstance(index, bool):
            raise RCError(400, "index is required for the reference slot (see required_uploads)")
        internal = f"reference_{index}"
    if internal not in wanted:
        names = sorted({"reference" if s.startswith("reference_") else s for s in wanted})
        raise RCError(400, "slot must be one of: " + (", ".join(names) or "(none: this job needs no uploads)")
                      + ("" if slot != "reference" or "reference" not in names else " with an index it listed"))
    if not isinstance(content_type, str) or content_type not in uploads.CONTENT_TYPES:
        raise RCError(400, "content_type must be one of: " + ", ".join(uploads.CONTENT_TYPES))
    signed = uploads.presign(ctx.service, row["id"], internal, content_type)
    if internal != slot:
        signed.update(slot="reference", index=index, asset_url=None)  # a reference is no public asset
    return ok(signed)


async def finalize_job(ctx: Ctx) -> Response:
    row = job_row(ctx)
    if row["kind"] != "image":  # a video job's uploads go through render.php, its finalize through video.php
        raise RCError(422, "This is a video job: finalize it with video.php?action=finalize_job")
    if row["status"] != "uploading":
        raise RCError(409, "This job was already finalized")
    got = store.uploads_of(ctx.db, row["id"])
    for slot in job_slots(row):
        if slot not in got:
            name = slot if slot in SLOTS else f"reference (index {slot.rpartition('_')[2]})"
            raise RCError(400, f"Upload did not finish for slot {name}. Upload the image, then finalize again.")
    for slot in [s for s in got if s in SLOTS or s.startswith("reference_")]:
        reason = await asyncio.to_thread(uploads.problem, ctx.service, got[slot])
        if reason:
            raise refuse(ctx, row, reason)
    extra = await asyncio.to_thread(_reference_paths, ctx, row, got)
    payload = {"settings": row["params"], "input_path": got["input_main"]["path"], **extra}
    job = finalize(ctx, row, payload, image.cost(row["params"]["model"], row["params"]["quality"]), "render")
    return ok({"job_id": row["id"], "status": "pending", **queue_figures(ctx, job, "image")})


def _reference_paths(ctx: Ctx, row: store.RcJob, got: dict) -> dict:
    """background_path and texture_paths for the pipeline: library files (looked up now: the operator may have
    removed one since create_job) or the job's own uploads and copies."""
    background, textures = None, []
    for i, ref in enumerate(row["params"].get("references", [])):
        if ref["source"] == "library":
            kind = "backgrounds" if ref["type"] == "background" else "textures"
            asset = library.find(ctx.service.settings, kind, ref["asset_id"])
            if asset is None or not Path(asset["path"]).is_file():
                raise RCError(422, f"references[{i}]: that {kind[:-1]} is no longer in the asset library")
            path = asset["path"]
        else:
            path = got[ref["slot"]]["path"]
        if ref["type"] == "background":
            background = path
        else:
            textures.append(path)
    return {"background_path": background, "texture_paths": textures}


async def status(ctx: Ctx) -> Response:
    row = job_row(ctx)
    state, job = public_state(ctx, row)
    data = {"job_id": row["id"], "status": state, "status_detail": DETAIL[state]}
    if state in ("pending", "processing"):
        data.update({k: v for k, v in queue_figures(ctx, job, "image").items() if k != "queue_position"})
    elif state == "completed":
        data.update({"output_url": f"{ctx.base}/backend/serve_render.php?id={row['id']}",
                     "asset_url": f"{ctx.base}/renders/{row['id']}",
                     "input_url": f"{ctx.base}/renders/{row['id']}_input",
                     "completed_at": job["completed_at"] if job else None})
    elif state in ("failed", "canceled"):
        if state == "failed":
            data["error_message"] = uploads.shown_error(row["error"], display_error)
        data["completed_at"] = (job or row)["completed_at"]
    return ok(data)


def _int(ctx: Ctx, name: str, default: int, low: int, high: int) -> int:
    raw = ctx.query(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise RCError(400, f"{name} must be an integer from {low} to {high}")
    return int(raw)


async def history(ctx: Ctx) -> Response:
    page, limit = _int(ctx, "page", 1, 1, 10**6), _int(ctx, "limit", 50, 1, 100)
    kind = {"all": None, "image": "image", "video": "video"}.get(ctx.query("filter") or "all", "bad")
    if kind == "bad":
        raise RCError(400, "filter must be one of: all, image, video")
    total = store.count_jobs(ctx.db, ctx.user_id, kind)
    renders = [_history_row(ctx, r) for r in store.list_jobs(ctx.db, ctx.user_id, kind, (page - 1) * limit, limit)]
    pages = math.ceil(total / limit)
    return ok({"renders": renders, "pagination": {"page": page, "limit": limit, "total_count": total,
                                                  "total_pages": pages, "has_next": page < pages}})


def _history_row(ctx: Ctx, row: store.RcJob) -> dict:
    state, job = public_state(ctx, row)
    settings, completed = row["params"], (job or row).get("completed_at")
    days = ctx.service.settings.retention_days
    if completed:
        days = max(0, days - int((time.time() - parse_iso(completed)) // 86400))
    video = row["kind"] == "video"
    data = {"job_id": row["id"], "status": state, "render_mode": settings.get("render_mode"),
            "model": settings.get("model"), "quality_tier": settings.get("quality"),
            "background_style": None if video else settings.get("background_style"),
            "condition": settings.get("condition"), "input_url": f"{ctx.base}/renders/{row['id']}_input",
            "output_url": f"{ctx.base}/renders/{row['id']}{'.mp4' if video else ''}" if state == "completed" else None,
            "created_at": row["created_at"], "completed_at": completed, "days_to_deletion": days}
    if video:  # the seed: video rows carry video_settings as the canonical settings; background_style is null
        data["video_settings"] = video_settings(settings)
    return data


async def cancel(ctx: Ctx) -> Response:
    return cancel_row(ctx, job_row(ctx))


async def delete(ctx: Ctx) -> Response:
    row = job_row(ctx)
    state, job = public_state(ctx, row)
    if state in ("uploading", "pending", "processing"):
        raise RCError(409, f"This job is {state}: cancel it first or wait until processing finishes")
    ctx.service.delete(row["id"])
    asyncio.get_running_loop().run_in_executor(None, uploads.remove, ctx.service, row["id"])
    return ok()


ACTIONS = {
    "create_job": Action("POST", "render-only", create_job),
    "presign_upload": Action("POST", "render-only", presign_upload),
    "finalize_job": Action("POST", "render-only", finalize_job),
    "status": Action("GET", "read-only", status),
    "history": Action("GET", "read-only", history),
    "cancel": Action("POST", "render-only", cancel),
    "delete": Action("POST", "full-access", delete),
}
