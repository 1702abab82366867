"""Kodisc dialect: POST/GET /api/v2/render, GET /api/v2/me — the public contract, exactly.

Seeds: kodisc-*.txt; api-research.md §1; DECISIONS.md (Kodisc). A render is the ``manim`` pipeline.
"""
from __future__ import annotations

import json
import re

from litestar import Request, Response, Router, get, post
from litestar.di import Provide

from appliance.api.auth import authenticate, bearer
from appliance.api.common import handlers_for, json_response
from appliance.delivery import netpolicy
from appliance.errors import ApplianceError, InsufficientCredits, NotFound, Unauthorized
from appliance.services.jobs import JobService, NewJob
from appliance.store import ids, ledger, users
from appliance.store.db import dumps, loads

MAX_BODY = 200 * 1024
MAX_FPS = 120  # DECISIONS.md (Kodisc)
QUALITIES = {"low": (854, 480, 15), "medium": (1280, 720, 30), "high": (1920, 1080, 30),
             "twok": (2560, 1440, 30), "fourk": (3840, 2160, 30)}
RATES = {"low": 1.0, "medium": 2.3, "high": 4.0, "twok": 6.0, "fourk": 9.0}  # credits per render-second
ASPECTS = ("16:9", "9:16")
CLASSNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
STATUS = {"queued": "queued", "running": "running", "completed": "completed", "failed": "failed",
          "cancelled": "failed"}

class BadRequest(ApplianceError):
    status, code = 400, "bad_request"
    hint: str | None = None


def error_response(exc: ApplianceError) -> Response:
    if exc.status == 413:
        return json_response({"error": "Request body too large", "message": "Maximum request body is 200 KB"}, 413)
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
    except (ValueError, UnicodeDecodeError, RecursionError):
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
    if fps is not None and (type(fps) is not int or fps < 1):
        raise BadRequest("fps must be a positive integer")
    if fps is not None and fps > MAX_FPS:
        raise BadRequest(f"fps must be at most {MAX_FPS}")
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


def job_object(service: JobService, job: dict) -> dict:
    """The GET object, in the field order of the docs' webhook example."""
    status = STATUS[job["status"]]
    base = f"{service.settings.base_url}/r/{job['id']}"
    result = None
    if status == "completed":
        result = {"video": f"{base}/video.mp4", "thumbnail": f"{base}/thumb.jpg", "captions": f"{base}/captions.vtt"}
    terminal = status in ("completed", "failed")
    return {"jobId": job["id"], "endpoint": "render", "status": status, "createdAt": job["created_at"],
            "completedAt": job["completed_at"] if terminal else None,
            "durationMs": job["duration_ms"] if terminal else None,
            "creditsCost": ledger.charged(service.db, job["id"]), "metadata": loads(job["metadata"]),
            "result": result, "error": (job["error"] if status == "failed" else None)}


async def api_key(request: Request, service: JobService) -> users.ApiKey:
    return authenticate(service.db, "kodisc", bearer(request))


@post("/render", status_code=202)
async def enqueue_render(request: Request, service: JobService, key: users.ApiKey) -> Response:
    data = validate(await request.body(), service.settings.allow_http_webhooks)
    webhook_url = _webhook_url(service, key, data)
    job = service.submit(_new_job(service, key, data, webhook_url))
    return json_response({"jobId": job["id"], "status": "queued", "endpoint": "render"}, 202)


def _webhook_url(service: JobService, key: users.ApiKey, data: dict) -> str | None:
    url = key.webhook_url if "webhookUrl" not in data else data["webhookUrl"]
    if url:
        try:
            netpolicy.parse(url, allow_loopback=service.settings.allow_loopback_targets)
        except netpolicy.RefusedURL as exc:
            err = BadRequest("webhookUrl must be an https:// URL")
            err.hint = str(exc)
            raise err from None
    return url or None


def _new_job(service: JobService, key: users.ApiKey, data: dict, webhook_url: str | None) -> NewJob:
    width, height, fps = frame(data)
    reserve = service.settings.reserve_credits
    if ledger.balance(service.db, key.user_id)["total"] < reserve:
        raise InsufficientCredits("Not enough credits to start a render. Ask the appliance admin for credits "
                                  "(appliance credits grant).")
    return NewJob(job_id=ids.kodisc_job_id(), dialect="kodisc", user_id=key.user_id, key_id=key.id, kind="manim",
                  payload={"code": data["code"], "className": data["className"], "width": width, "height": height,
                           "fps": fps},
                  request={k: data.get(k) for k in ("className", "quality", "aspectRatio", "fps")},
                  metadata=data.get("metadata"), webhook_url=webhook_url,
                  credit_rate=RATES[data.get("quality", "medium")], reserve=reserve)


@get("/render/{job_id:str}")
async def get_render(service: JobService, key: users.ApiKey, job_id: str) -> Response:
    job = service.find(job_id, key.user_id, "kodisc")
    if not job:
        raise NotFound(f"No job {job_id} for this key's user")
    return json_response(job_object(service, job))


@get("/me")
async def get_me(service: JobService, key: users.ApiKey) -> Response:
    return json_response({"userId": key.user_id, "keyId": key.id, "keyPrefix": key.prefix,
                          "credits": ledger.balance(service.db, key.user_id)})


def listener(service: JobService):
    """One webhook per terminal state, body = the GET object, to the job's resolved URL."""
    def on_event(job: dict, event_type: str) -> None:
        status = STATUS.get(event_type)
        if status not in ("completed", "failed") or not job["webhook_url"]:
            return
        service.webhooks.enqueue(job_id=job["id"], dialect="kodisc", key_id=job["key_id"], url=job["webhook_url"],
                                 event=status, body=dumps(job_object(service, job)).encode())
    return on_event


router = Router(path="/api/v2", route_handlers=[enqueue_render, get_render, get_me],
                dependencies={"key": Provide(api_key)}, exception_handlers=handlers_for(error_response),
                request_max_body_size=MAX_BODY)
