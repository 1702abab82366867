"""Kodisc dialect: POST/GET /api/v2/render, GET /api/v2/me — the public contract, exactly.

Seeds: shared/seeds/kodisc-*.txt; api-research.md §1; DECISIONS.md (Kodisc).
"""
from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata

from typing import TYPE_CHECKING

from litestar import Request, Response, Router, get, post

from appliance import ids

from appliance.store import jobs, ledger, users
from appliance.api.auth import authenticate, bearer
from appliance.store.db import dumps, loads
from appliance.errors import ApplianceError, InsufficientCredits, NotFound, Unauthorized
from appliance.delivery.httpfiles import json_response
from appliance.store.jobs import TaskDef
from appliance.delivery.webhooks import TargetRefused, check_target, enqueue

MAX_BODY = 200 * 1024
QUALITIES = {"low": (854, 480, 15), "medium": (1280, 720, 30), "high": (1920, 1080, 30),
             "twok": (2560, 1440, 30), "fourk": (3840, 2160, 30)}
RATES = {"low": 1.0, "medium": 2.3, "high": 4.0, "twok": 6.0, "fourk": 9.0}  # credits per render-second
ASPECTS = ("16:9", "9:16")
CLASSNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
STATUS = {"queued": "queued", "running": "running", "completed": "completed", "failed": "failed",
          "cancelled": "failed"}

if TYPE_CHECKING:
    from appliance.core import Core


class BadRequest(ApplianceError):
    status, code = 400, "bad_request"
    hint: str | None = None


def error_response(exc: ApplianceError) -> Response:
    if isinstance(exc, Unauthorized):
        body = {"error": "unauthorized", "message": f"{exc.message}. Send Authorization: Bearer kdsc_live_…"}
    elif isinstance(exc, InsufficientCredits):
        body = {"error": "insufficient_credits", "message": exc.message}
    elif isinstance(exc, NotFound):
        body = {"error": "not_found", "message": exc.message}
    elif isinstance(exc, BadRequest):
        body = {"error": exc.message, **({"message": exc.hint} if exc.hint else {})}
    else:
        body = {"error": exc.code.lower(), "message": exc.message}
    return json_response(body, exc.status)


def validate(body: bytes, allow_http: bool) -> dict:
    """The seven documented 400 messages, checked in the documented order."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise BadRequest("JSON body required")
    if not isinstance(data.get("code"), str) or not data["code"].strip():
        raise BadRequest("code is required")
    if not isinstance(data.get("className"), str) or not CLASSNAME.match(data["className"]):
        raise BadRequest("className must be a valid Python identifier")
    if data.get("quality", "medium") not in QUALITIES:
        raise BadRequest("quality must be one of: low, medium, high, twok, fourk")
    if data.get("aspectRatio", "16:9") not in ASPECTS:
        raise BadRequest("aspectRatio must be one of: 16:9, 9:16")
    fps = data.get("fps")
    if fps is not None and (type(fps) is not int or not 1 <= fps <= 120):
        raise BadRequest("fps must be a positive integer")
    hook = data.get("webhookUrl", ...)
    if hook not in (None, ...):
        ok_scheme = isinstance(hook, str) and (hook.startswith("https://") or
                                               (allow_http and hook.startswith("http://")))
        if not ok_scheme:
            raise BadRequest("webhookUrl must be an https:// URL")
    return data


def frame(data: dict) -> tuple[int, int, int]:
    width, height, fps = QUALITIES[data.get("quality", "medium")]
    if data.get("aspectRatio", "16:9") == "9:16":
        width, height = height, width
    return width, height, data.get("fps") or fps


def cache_key(data: dict, width: int, height: int, fps: int) -> str:
    parts = [data["code"], data["className"], data.get("quality", "medium"), data.get("aspectRatio", "16:9"),
             str(fps), f"{width}x{height}", metadata.version("manim")]
    return "manim-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()


def job_object(core: Core, job: dict) -> dict:
    """The GET object, in the field order of the docs' webhook example."""
    status = STATUS[job["status"]]
    base = f"{core.settings.base_url}/r/{job['id']}"
    result = None
    if status == "completed":
        result = {"video": f"{base}/video.mp4", "thumbnail": f"{base}/thumb.jpg", "captions": f"{base}/captions.vtt"}
    terminal = status in ("completed", "failed")
    return {"jobId": job["id"], "endpoint": "render", "status": status, "createdAt": job["created_at"],
            "completedAt": job["completed_at"] if terminal else None,
            "durationMs": job["duration_ms"] if terminal else None,
            "creditsCost": ledger.charged(core.db, job["id"]), "metadata": loads(job["metadata"]),
            "result": result, "error": (job["error"] if status == "failed" else None)}


def _key(core: Core, request: Request) -> users.ApiKey:
    return authenticate(core.db, "kodisc", bearer(request))


@post("/render", status_code=202)
async def enqueue_render(request: Request) -> Response:
    core: Core = request.app.state.core
    try:
        key = _key(core, request)
        body = await request.body()
        if len(body) > MAX_BODY:
            return json_response({"error": "Request body too large", "message": "Maximum request body is 200 KB"}, 413)
        data = validate(body, core.settings.allow_http_webhooks)
        webhook_url = _webhook_url(core, key, data)
        core.check_disk()
        job = _create(core, key, data, webhook_url)
    except ApplianceError as exc:
        return error_response(exc)
    core.submitted()
    return json_response({"jobId": job["id"], "status": "queued", "endpoint": "render"}, 202)


def _webhook_url(core: Core, key: users.ApiKey, data: dict) -> str | None:
    url = key.webhook_url if "webhookUrl" not in data else data["webhookUrl"]
    if url:
        try:
            check_target(url, allow_loopback=core.settings.allow_loopback_targets)
        except TargetRefused as exc:
            err = BadRequest("webhookUrl must be an https:// URL")
            err.hint = str(exc)
            raise err from None
    return url or None


def _create(core: Core, key: users.ApiKey, data: dict, webhook_url: str | None) -> dict:
    width, height, fps = frame(data)
    if ledger.balance(core.db, key.user_id)["total"] < core.settings.reserve_credits:
        raise InsufficientCredits("Not enough credits to start a render. Ask the appliance admin for credits "
                                  "(appliance credits grant).")
    task = TaskDef(renderer="manim", name="render", cpu=1.0, mem_mb=1024,
                   input={"code": data["code"], "className": data["className"],
                          "width": width, "height": height, "fps": fps},
                   cache_key=cache_key(data, width, height, fps))
    request = {k: data.get(k) for k in ("className", "quality", "aspectRatio", "fps")}
    return jobs.create_job(core.db, job_id=ids.kodisc_job_id(), dialect="kodisc", user_id=key.user_id,
                           key_id=key.id, kind="manim", request=request, tasks=[task],
                           metadata=data.get("metadata"), webhook_url=webhook_url,
                           credit_rate=RATES[data.get("quality", "medium")], reserve=core.settings.reserve_credits)


@get("/render/{job_id:str}")
async def get_render(request: Request, job_id: str) -> Response:
    core: Core = request.app.state.core
    try:
        key = _key(core, request)
        job = jobs.get_user_job(core.db, job_id, key.user_id, "kodisc")
        if not job:
            raise NotFound(f"No job {job_id} for this key's user")
    except ApplianceError as exc:
        return error_response(exc)
    return json_response(job_object(core, job))


@get("/me")
async def get_me(request: Request) -> Response:
    core: Core = request.app.state.core
    try:
        key = _key(core, request)
    except ApplianceError as exc:
        return error_response(exc)
    return json_response({"userId": key.user_id, "keyId": key.id, "keyPrefix": key.prefix,
                          "credits": ledger.balance(core.db, key.user_id)})


def listener(core: Core):
    """One webhook per terminal state, body = the GET object, to the job's resolved URL."""
    def on_event(job: dict, event_type: str) -> None:
        status = STATUS.get(event_type)
        if status not in ("completed", "failed") or not job["webhook_url"]:
            return
        body = dumps(job_object(core, job)).encode()
        enqueue(core.db, job_id=job["id"], dialect="kodisc", key_id=job["key_id"], url=job["webhook_url"],
                event=status, body=body)
        core.deliverer.wake()
    return on_event


router = Router(path="/api/v2", route_handlers=[enqueue_render, get_render, get_me])
