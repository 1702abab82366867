"""What the dashboard's pages show, as JSON: job pages and lists, a job's detail, capacity, users and keys.

Read-only assembly from the store and the running core; every change of a job goes through JobService.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import stat
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.services import models
from appliance.services.estimate import Estimator
from appliance.services.jobs import JobService
from appliance.store import deliveries, jobs, ledger, operators, pieces, rendercad_inputs, users
from appliance.store.db import loads, rows
from appliance.store.rows import JobRow, TaskRow

DIALECTS = ("kodisc", "viralsync", "rendercad", "hotfolder", "admin")
# Shown beside the filters: what the appliance's own dialects and the pipelines (kinds) are.
DIALECT_HELP = {"kodisc": "Kodisc API (/api/v2): Manim scenes", "viralsync": "ViralSync API (/v1): Movie JSON, and "
                "appliance render FILE.json", "rendercad": "RenderCAD API (/backend): images and image videos",
                "hotfolder": "files dropped into the hot folder (hotfolder_dir)",
                "admin": "the operator's own admin API: appliance render SCENE.py, appliance doctor --attack, "
                         "scripts and tests (jobs of kind tasks)"}
KIND_HELP = {"manim": "a Manim scene (split into ranges when long)", "movie": "a Movie JSON document: scenes, "
             "then assembly", "image": "a RenderCAD image render", "video": "a RenderCAD image video",
             "video_convert": "a RenderCAD video converted to GIF",
             "tasks": "renderer tasks named directly through the admin API (no pipeline)"}
COST_UNIT = {"rendercad": "token"}
SEARCH_MAX = 200
STATUSES = ("queued", "running", "completed", "failed", "cancelled")
PAGE = 50
LOG_TAIL = 8 * 1024
REQUEST_SHOWN = 4 * 1024
PREVIEW_NAME = "preview.jpg"  # what renderers drop in their workdir while they render (renderers/preview.py)
PREVIEW_MAX = 2 * 1024 * 1024
VIDEO, IMAGES = (".mp4",), (".jpg", ".jpeg", ".png", ".webp", ".gif")


def _cursor(text: str | None) -> tuple[str, str] | None:
    """The keyset cursor "<created_at>|<id>" of the last job of the previous page."""
    if not text:
        return None
    created, sep, job_id = text.partition("|")
    if not sep or not created or not job_id or len(text) > 200:
        raise ApplianceError("cursor is malformed: pass back a nextCursor as it was given")
    return created, job_id


def job_row(job: dict, names: dict[str, str]) -> dict:
    return {"id": job["id"], "dialect": job["dialect"], "kind": job["kind"], "user": names.get(job["user_id"], ""),
            "status": job["status"], "phase": job["phase"], "progress": job["progress"] or 0.0,
            "error": job["error"], "createdAt": job["created_at"], "startedAt": job["started_at"],
            "completedAt": job["completed_at"], "durationMs": job["duration_ms"]}


def _cost(job: dict, charged: dict[str, int]) -> str | None:
    """What the job cost its owner, in its dialect's unit: credits (Kodisc, and manim jobs of the other entry
    points), RenderCAD tokens, ViralSync render minutes (output length / 60)."""
    if job["dialect"] == "viralsync":
        return f"{job['media_s'] / 60:.2f} min" if job["status"] == "completed" and job["media_s"] else None
    amount = charged.get(job["id"])
    if amount is None:
        return None
    unit = COST_UNIT.get(job["dialect"], "credit")
    return f"{amount} {unit}" if amount == 1 else f"{amount} {unit}s"


def _thumb(service: JobService, job: dict) -> tuple[str | None, str | None]:
    """(URL of the picture the list shows, the output's main file name): the job's thumbnail, else its image."""
    if job["status"] != "completed" or job["expired_at"]:
        return None, None
    try:
        names = sorted(p.name for p in service.datadir.job_dir(job["id"]).iterdir() if not p.name.startswith("."))
    except OSError:
        return None, None
    pictures = [n for n in names if n.lower().endswith(IMAGES)]
    main = next((n for n in names if n.lower().endswith(VIDEO)), None) or (pictures[0] if pictures else None)
    # a thumbnail, else a picture; a video alone (a RenderCAD image video) is shown by its first frame
    shown = "thumb.jpg" if "thumb.jpg" in names else pictures[0] if pictures else main
    return (f"/dashboard/api/jobs/{job['id']}/files/{shown}" if shown else None), main


def list_row(service: JobService, job: dict, names: dict[str, str], charged: dict[str, int]) -> dict:
    """A row of the jobs list: the job, what a person calls it, a thumbnail, its output's length and its cost."""
    thumb, main = _thumb(service, job)
    title = job["title"] or ""
    if job["dialect"] == "rendercad" and main:
        title = f"{title} · {main}" if title else main
    return {**job_row(job, names), "title": title, "thumb": thumb,
            "thumbIsVideo": bool(thumb and thumb.lower().endswith(VIDEO)), "mediaS": job["media_s"],
            "cost": _cost(job, charged)}


def job_list(service: JobService, query: dict) -> dict:
    """A page of every user's jobs, filtered by dialect, user (name), status and kind, and searched (``q``) by id
    or title."""
    filters = {k: (query.get(k) or "").strip() or None for k in ("dialect", "user", "status", "kind", "q")}
    if filters["q"] and len(filters["q"]) > SEARCH_MAX:
        raise ApplianceError(f"search at most {SEARCH_MAX} characters")
    if filters["status"] and filters["status"] not in STATUSES:
        raise ApplianceError(f"status must be one of: {', '.join(STATUSES)}")
    user_id = None
    if filters["user"]:
        user = users.get_user_by_name(service.db, filters["user"])
        if user is None:
            return {"jobs": [], "nextCursor": None}
        user_id = user["id"]
    try:
        limit = max(1, min(200, int(query.get("limit") or PAGE)))
    except ValueError:
        raise ApplianceError("limit must be a number from 1 to 200") from None
    page = operators.list_all_jobs(service.db, dialect=filters["dialect"], user_id=user_id,
                                   status=filters["status"], kind=filters["kind"], search=filters["q"],
                                   before=_cursor(query.get("cursor")), limit=limit + 1)
    more, page = len(page) > limit, page[:limit]
    names = operators.user_names(service.db, {j["user_id"] for j in page})
    charged = operators.charged(service.db, [j["id"] for j in page])
    last = page[-1] if page else None
    return {"jobs": [list_row(service, j, names, charged) for j in page],
            "nextCursor": f"{last['created_at']}|{last['id']}" if more and last else None}


def filter_options(service: JobService) -> dict:
    return {"dialects": list(DIALECTS), "statuses": list(STATUSES), "kinds": sorted(service.pipelines),
            "users": [u["name"] for u in users.list_users(service.db)], "dialectHelp": DIALECT_HELP,
            "kindHelp": {k: KIND_HELP.get(k, "") for k in sorted(service.pipelines)}}


# ---- one job --------------------------------------------------------------------------------------------------
def _tail(path: Path, size: int = LOG_TAIL) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - size))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _files(service: JobService, job: JobRow) -> list[dict]:
    folder = service.datadir.job_dir(job["id"])
    if job["status"] != "completed" or not folder.is_dir():
        return []
    return [{"name": p.name, "size": p.stat().st_size, "url": f"/dashboard/api/jobs/{job['id']}/files/{p.name}"}
            for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]


def _media(files: list[dict]) -> dict:
    """The preview a job page plays: its video with a poster image, or its image."""
    videos = [f["url"] for f in files if f["name"].lower().endswith(VIDEO)]
    images = [f["url"] for f in files if f["name"].lower().endswith(IMAGES)]
    if videos:  # the poster: the small thumbnail, not Kodisc's full-size lossless image.png
        thumbs = [f["url"] for f in files if f["name"] == "thumb.jpg"]
        return {"video": videos[0], "poster": (thumbs or images or [None])[0]}
    return {"image": images[0]} if images else {}


def input_file(service: JobService, job: JobRow, slot: str) -> tuple[Path, str] | None:
    """(the file, its content type) of a RenderCAD job's upload in `slot`, or None. The slot only picks a row of
    the job's own uploads (it never becomes a path); the row's path must be a regular file, not a link, inside
    the job's own upload folder, of an image type the appliance accepts, and the upload must have passed
    finalize's check (an upload refused as unreadable may be any bytes at all: never served)."""
    from appliance.api.rendercad import uploads  # the upload folder, its accepted types, finalize's refusals

    if job["dialect"] != rendercad_inputs.DIALECT or job["status"] == "uploading" or (
            job["error"] is not None and job["error"] in uploads.REFUSALS):
        return None
    got = next((u for u in rendercad_inputs.of_job(service.db, job["id"]) if u["slot"] == slot), None)
    if got is None or not got["path"] or got["content_type"] not in uploads.CONTENT_TYPES:
        return None
    folder = uploads.upload_dir(service, job["id"])
    path = Path(got["path"])
    try:
        inside = path.parent.resolve(strict=True) == folder.resolve(strict=True)
        regular = stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return None
    return (path, got["content_type"]) if inside and regular else None


def _inputs(service: JobService, job: JobRow) -> list[dict]:
    """A RenderCAD job's input pictures, shown beside its output."""
    if job["dialect"] != rendercad_inputs.DIALECT:
        return []
    return [{"slot": u["slot"], "url": f"/dashboard/api/jobs/{job['id']}/inputs/{u['slot']}"}
            for u in rendercad_inputs.of_job(service.db, job["id"]) if input_file(service, job, u["slot"])]


def _task(t: TaskRow) -> dict:
    return {"id": t["id"], "name": t["name"], "renderer": t["renderer"], "status": t["status"],
            "progress": t["progress"] or 0.0, "attempts": t["attempts"], "error": t["error"],
            "cached": bool(t["cached"]), "startedAt": t["started_at"], "finishedAt": t["finished_at"],
            "cpu": t["cpu"], "memMb": t["mem_mb"], "gpu": t["gpu"] or 0}


def job_detail(service: JobService, job_id: str, estimator: Estimator | None = None) -> dict:
    """The job page's data; with the estimator, a queued or running job's ETA (services/estimate.py) too."""
    job = service.get(job_id)
    tasks = service.tasks(job_id)
    names = operators.user_names(service.db, {job["user_id"]})
    shown = next((t for t in tasks if t["status"] == "running"), None) or next(
        (t for t in reversed(tasks) if t["started_at"]), None)
    request = job["request"] or ""
    files = _files(service, job)
    active = job["status"] not in jobs.TERMINAL
    summary = list_row(service, {**job, **operators.job_summary(service.db, job["id"])}, names,
                       operators.charged(service.db, [job["id"]]))
    return {
        "job": {**summary, "expiredAt": job["expired_at"], "eta": estimator.for_job(job) if estimator else None,
                "reuse": pieces.reuse_of(tasks),
                "request": request if len(request) <= REQUEST_SHOWN else request[:REQUEST_SHOWN] + "…",
                "tasks": jobs.task_counts(service.db, job_id)},
        "tasks": [_task(t) for t in tasks],
        "log": {"task": shown["id"], "text": _tail(service.datadir.log_path(shown["id"]))} if shown else None,
        "deliveries": [{"id": d["id"], "url": d["url"], "event": d["event"], "status": d["status"],
                        "attempts": d["attempt"], "lastStatus": d["last_status"], "lastError": d["last_error"],
                        "createdAt": d["created_at"], "updatedAt": d["updated_at"]}
                       for d in deliveries.of_job(service.db, job_id)],
        "files": files, "media": _media(files), "inputs": _inputs(service, job),
        "preview": f"/dashboard/api/jobs/{job_id}/preview.jpg" if active else None,
        # a Manim render's or a movie's growing HLS playlist (api/dashboard/livestream.py): 404 until its first
        # animation or scene is done; ``liveUnit`` names what each segment is
        "live": f"/dashboard/api/jobs/{job_id}/live.m3u8" if active and any(
            t["renderer"] in ("manim", "movie.scene") for t in tasks) else None,
        "liveUnit": "scene" if any(t["renderer"] == "movie.scene" for t in tasks) else "animation",
        "actions": {"cancel": active, "retry": job["status"] in ("failed", "cancelled"), "delete": not active},
    }


def read_preview(service: JobService, job_id: str) -> bytes | None:
    """The newest preview.jpg a running task of the job wrote in its workdir (data_dir/work/<task>/). The
    workdir belongs to untrusted code: the file is opened without following links, must be a small regular
    file and a JPEG, or it is not served."""
    newest: tuple[float, bytes] | None = None
    for task in service.tasks(service.get(job_id)["id"]):
        if task["status"] != "running":
            continue
        path = service.settings.data_dir / "work" / task["id"] / PREVIEW_NAME
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > PREVIEW_MAX:
                continue
            data = fh.read(PREVIEW_MAX + 1)
        if data[:3] == b"\xff\xd8\xff" and len(data) <= PREVIEW_MAX and (newest is None or st.st_mtime > newest[0]):
            newest = (st.st_mtime, data)
    return newest[1] if newest else None


# ---- capacity -------------------------------------------------------------------------------------------------
_layers: list | None = None


async def sandbox_layers(core) -> list[dict]:
    """Each sandbox layer: as the zygote probed it where tasks start (the root launcher's, under the service),
    else (Dask: tasks start on the workers) probed once here in a fresh interpreter, off the event loop."""
    global _layers
    probed = core.executor.layers() if hasattr(core.executor, "layers") else None
    if probed is not None:
        return [{"name": name, "active": active, "detail": detail} for name, active, detail in probed]
    if _layers is None:
        from appliance.runtime import sandbox  # the probe only; the dashboard starts nothing in runtime

        found = await asyncio.to_thread(sandbox.layers)
        _layers = [{"name": name, "active": active, "detail": detail} for name, active, detail in found]
    return _layers


async def capacity(core) -> dict:
    used = core.scheduler.used()
    disk = shutil.disk_usage(core.settings.data_dir)
    by_status = {r["status"]: r["n"] for r in rows(core.db, "select status, count(*) as n from jobs indexed by "
                                                   "idx_jobs_all_status where deleted_at is null group by status")}
    cap = core.capacity.as_json()
    pool = getattr(core.scheduler, "gpu_pool", None)  # which GPU and NVENC session each running task holds
    per_gpu = pool.in_use() if pool is not None else {}
    gpus = [{**g, "computeUsed": per_gpu.get(g["index"], {}).get("compute", 0),
             "nvencUsed": per_gpu.get(g["index"], {}).get("nvenc", 0)} for g in cap["gpus"]]
    return {"capacity": {**cap, "gpus": gpus, "gpuSlots": cap.get("gpuSlots", cap["gpu"])},
            "used": {"cpu": used["cpu"], "memMb": used["mem_mb"], "gpu": used["gpu"],
                     "nvencSessions": sum(g["nvencUsed"] for g in gpus)},
            "jobs": {s: by_status.get(s, 0) for s in STATUSES}, "tasks": jobs.queue_counts(core.db),
            "disk": {"freeMb": disk.free // 2 ** 20, "totalMb": disk.total // 2 ** 20,
                     "minFreeMb": core.settings.min_free_disk_mb},
            "sandbox": {"mechanism": core.executor.mechanism, "layers": await sandbox_layers(core)},
            # the studio's own models (`appliance models add`): what each kind of job uses, and where it may run
            "models": [models.public(e) for e in models.ModelRegistry.of(core.settings.data_dir).entries()]}


# ---- users ----------------------------------------------------------------------------------------------------
def _key(k: dict) -> dict:
    return {"id": k["id"], "dialect": k["dialect"], "prefix": k["prefix"], "name": k["name"], "scope": k["scope"],
            "createdAt": k["created_at"], "revokedAt": k["revoked_at"]}


def user_list(service: JobService) -> dict:
    everyone = users.list_users(service.db)
    keys: dict[str, list] = {u["id"]: [] for u in everyone}
    disk = jobs.disk_by_user(service.db)
    for k in users.list_keys(service.db):
        keys.setdefault(k["user_id"], []).append(_key(k))
    return {"users": [{"id": u["id"], "name": u["name"], "plan": u["plan"], "createdAt": u["created_at"],
                       "credits": ledger.balance(service.db, u["id"]), "keys": keys[u["id"]],
                       "diskBytes": disk.get(u["id"], 0)} for u in everyone],
            "plans": list(users.PLANS), "dialects": list(users.DIALECTS), "scopes": list(users.SCOPES)}


def loads_body(raw: bytes) -> dict:
    try:
        data = loads(raw.decode() or "{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApplianceError("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApplianceError("body must be a JSON object")
    return data
