"""/backend/render.php: create_job → presign_upload → (PUT) → finalize_job → status; history, cancel, delete.

A job lives in rendercad_jobs while it collects its uploads ("uploading"); finalize submits the core job with
the same id, and from then on its public status is the core job's, in RenderCAD's words."""
from __future__ import annotations

import asyncio
import math
import secrets
import time
from pathlib import Path

from litestar import Response

from appliance.api.rendercad import library, references, uploads, webhooks
from appliance.api.rendercad.common import Action, Ctx, RCError, cancel_row, job_row, ok, public_state, queue_figures
from appliance.api.rendercad.video import video_settings
from appliance.errors import InsufficientCredits
from appliance.services.jobs import NewJob
from appliance.services.pipelines import image
from appliance.store import ledger
from appliance.store import rendercad as store
from appliance.store.db import now_iso, parse_iso

DETAIL = {"uploading": "Waiting for upload", "pending": "Queued...", "processing": "Rendering...",
          "completed": None, "failed": "Failed", "canceled": "Canceled"}
SLOTS = ("input_main",)
RETRY_LATER = {"timed out": "Rendering timed out. You were not charged. Please try again.",
               "time limit": "Rendering timed out. You were not charged. Please try again.",
               "could not start": "Render did not start. You were not charged. Please try again.",
               "worker lost": "Render did not start. You were not charged. Please try again.",
               "could not be read": uploads.UNREADABLE}
GENERIC_FAILURE = "Render failed. You were not charged. Please try again."


def new_job_id() -> str:
    """render_ + 13 hex + . + 8 digits: the shape of PHP's uniqid('', true) that the hosted service uses."""
    return f"render_{secrets.token_hex(7)[:13]}.{secrets.randbelow(10**8):08d}"


def display_error(error: str | None) -> str:
    """A core job's error as display-safe text: never a path, a traceback or an internal name."""
    for needle, text in RETRY_LATER.items():
        if needle in (error or ""):
            return text
    return GENERIC_FAILURE








# ---- actions ---------------------------------------------------------------------------------------------------
async def create_job(ctx: Ctx) -> Response:
    try:
        settings = image.validate(ctx.body)
    except image.ImageError as exc:
        raise RCError(400, str(exc)) from None
    if settings["quality"] == "4k" and settings["model"] != "pro":
        raise RCError(422, "4K quality requires the pro model")
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
    row = store.create_job(ctx.db, new_job_id(), ctx.user_id, ctx.key.id if ctx.key else "", "image", params)
    for slot, path in [*(((SLOTS[0], source_file),) if source_file else ()), *copies.items()]:
        content_type, copy = await asyncio.to_thread(uploads.copy_in, ctx.service, row["id"], slot, path)
        store.put_upload(ctx.db, row["id"], slot, content_type, str(copy), copy.stat().st_size)
    data = {"job_id": row["id"], "status": "uploading", "required_uploads": [public_slot(s, refs) for s in slots]}
    if settings.get("custom_instructions"):
        data["instructions_applied"] = image.parse_instructions(settings["custom_instructions"]).applied
    return ok(data)


def job_slots(row: dict) -> list[str]:
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
            if store.set_status_if(ctx.db, row["id"], "uploading", status="failed", error_message=reason,
                                   completed_at=now_iso()):
                webhooks.upload_failed(ctx.service, row, reason)
            raise RCError(422, reason)
    job = _submit(ctx, row, got, await asyncio.to_thread(_reference_paths, ctx, row, got))
    return ok({"job_id": row["id"], "status": "pending", **queue_figures(ctx, job, "image")})


def _reference_paths(ctx: Ctx, row: dict, got: dict) -> dict:
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


def _submit(ctx: Ctx, row: dict, got: dict, extra: dict | None = None) -> dict:
    settings = row["params"]
    price = image.cost(settings["model"], settings["quality"])
    if ledger.balance(ctx.db, ctx.user_id)["total"] < price:
        raise RCError(429, f"Not enough tokens: this render needs {price}. Ask the appliance admin for credits.")
    if not store.set_status_if(ctx.db, row["id"], "uploading", status="submitted", cost=price, finalized_at=now_iso()):
        raise RCError(409, "This job was already finalized")
    payload = {"settings": settings, "input_path": got["input_main"]["path"], **(extra or {})}
    try:
        return ctx.service.submit(NewJob(job_id=row["id"], dialect="rendercad", user_id=ctx.user_id,
                                         key_id=row["key_id"], kind="image", payload=payload, request=settings,
                                         reserve=price, charge=price))
    except InsufficientCredits:
        store.update_job(ctx.db, row["id"], status="uploading")
        raise RCError(429, f"Not enough tokens: this render needs {price}.") from None
    except Exception:
        store.update_job(ctx.db, row["id"], status="uploading")  # the client may finalize again
        raise


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
            data["error_message"] = row["error_message"] or display_error(job["error"] if job else None)
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


def _history_row(ctx: Ctx, row: dict) -> dict:
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
    if job is not None:
        ctx.service.delete(row["id"])
    store.mark_deleted(ctx.db, row["id"])
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
