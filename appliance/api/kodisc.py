"""Kodisc dialect: POST/GET /api/v2/render, GET /api/v2/me — the public contract, exactly.

Seeds: kodisc-*.txt; api-research.md §1; DECISIONS.md (Kodisc). A render is the ``manim`` pipeline.
"""
from __future__ import annotations

import json

from litestar import Request, Response, Router, get, post
from litestar.di import Provide

from appliance.api import openapi, schemas
from appliance.api.auth import authenticate, bearer, require_scope
from appliance.api.common import handlers_for, json_response
from appliance.contracts import kodisc as contract
from appliance.contracts.base import Refused
from appliance.delivery import netpolicy
from appliance.errors import ApplianceError, InsufficientCredits, NotFound, Unauthorized
from appliance.services.jobs import JobService, NewJob
from appliance.store import ids, ledger, users
from appliance.store.db import dumps, loads
from appliance.store.rows import JobRow

MAX_BODY = 200 * 1024
MAX_FPS, QUALITIES, MESSAGES = contract.MAX_FPS, contract.QUALITIES, contract.MESSAGES
RATES = {"low": 1.0, "medium": 2.3, "high": 4.0, "twok": 6.0, "fourk": 9.0}  # credits per render-second
STATUS = {"queued": "queued", "running": "running", "completed": "completed", "failed": "failed",
          "cancelled": "failed"}
TOO_LARGE = {"error": "Request body too large", "message": "Maximum request body is 200 KB"}

class BadRequest(ApplianceError):
    status, code = 400, "bad_request"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint  # the optional "message": why, where the documented error is too coarse


def error_response(exc: ApplianceError) -> Response:
    if exc.status == 413:
        return json_response(TOO_LARGE, 413)
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
    """The seven documented 400 messages, checked in the documented order (contracts/kodisc.py declares them)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise BadRequest(contract.BODY_MESSAGE)
    try:
        data["fps"] = contract.RENDER.validate(data, {"allow_http": allow_http})["fps"]
    except Refused as exc:
        raise BadRequest(exc.message, exc.hint) from None
    return data


def frame(data: dict) -> tuple[int, int, int]:
    width, height, fps = QUALITIES[data.get("quality", "medium")]
    if data.get("aspectRatio", "16:9") == "9:16":
        width, height = height, width
    return width, height, data.get("fps") or fps


def job_object(service: JobService, job: JobRow) -> dict:
    """The GET object, in the field order of the docs' webhook example."""
    status = STATUS[job["status"]]
    base = f"{service.settings.base_url}/r/{job['id']}"
    result, error = None, job["error"] if status == "failed" else None
    if status == "completed" and not job["expired_at"]:
        result = {"video": f"{base}/video.mp4", "thumbnail": f"{base}/thumb.jpg", "captions": f"{base}/captions.vtt"}
        if "image" in (loads(job["result"]) or {}).get("files", {}):  # the last frame, lossless (a job rendered
            result["image"] = f"{base}/image.png"                    # before image.png existed has none)
    elif status == "completed":  # the retention sweep removed the files: no dead URLs
        error = service.expired_message(job)
    terminal = status in ("completed", "failed")
    return {"jobId": job["id"], "endpoint": "render", "status": status, "createdAt": job["created_at"],
            "completedAt": job["completed_at"] if terminal else None,
            "durationMs": job["duration_ms"] if terminal else None,
            "creditsCost": ledger.charged(service.db, job["id"]), "metadata": loads(job["metadata"]),
            "result": result, "error": error}


async def api_key(request: Request, service: JobService) -> users.ApiKey:
    key = authenticate(service.db, "kodisc", bearer(request))
    require_scope(key, request.method)
    return key


# ---- the OpenAPI description of each operation (appliance/api/openapi.py) ----------------------------
def _error(values: tuple[str, ...], description: str):
    return openapi.error_body(schemas.KodiscError, "error", values, description)


DOC_ERRORS = {
    400: _error(MESSAGES, "One of the seven documented messages, checked in this order; message gives details"),
    401: _error(("unauthorized",), "Missing, malformed, revoked or unknown key (or a key of another dialect)"),
    402: _error(("insufficient_credits",), "Balance below the reserve: no job was created"),
    403: _error(("forbidden",), "A read-only key cannot start renders"),
    404: _error(("not_found",), "No such job for this key's user"),
    413: _error((TOO_LARGE["error"],), "Body over 200 KB"),
    429: _error(("rate_limited",), "Too many failed renders in the last hour (max_failed_jobs_per_hour)"),
    503: _error(("unavailable",), "The appliance is short of disk space, or has no sandbox for scene code"),
}


def _doc(summary: str, status: int, struct: type, errors: tuple[int, ...], description: str, body=None):
    return openapi.operation(
        tag="Kodisc", summary=summary, description=description, security=openapi.KODISC_AUTH, body=body,
        example=schemas.KODISC_EXAMPLE if body else None,
        responses={status: openapi.json_body(openapi.ref(struct), summary), **{e: DOC_ERRORS[e] for e in errors}},
        path_params={"job_id": "The jobId that POST /api/v2/render returned"})


@post("/render", status_code=202, operation_class=_doc(
    "Enqueue a render", 202, schemas.KodiscRenderAccepted, (400, 401, 402, 403, 413, 429, 503),
    "Reserves credits and queues a Manim render; poll GET /api/v2/render/{jobId} or use a webhook.",
    body=schemas.KodiscRenderRequest))
async def enqueue_render(request: Request, service: JobService, key: users.ApiKey) -> Response:
    data = validate(await request.body(), service.settings.allow_http_webhooks)
    webhook_url = _webhook_url(service, key, data)
    job = service.submit(_new_job(service, key, data, webhook_url))
    return json_response({"jobId": job["id"], "status": "queued", "endpoint": "render"}, 202)


def _webhook_url(service: JobService, key: users.ApiKey, data: dict) -> str | None:
    """The request's webhookUrl (null opts out), else the key's default; both pass the one URL policy."""
    own = "webhookUrl" in data
    url = data["webhookUrl"] if own else key.webhook_url
    if url:
        try:
            netpolicy.parse(url, allow_http=service.settings.allow_http_webhooks,
                            allow_loopback=service.settings.allow_loopback_targets)
        except netpolicy.RefusedURL as exc:
            reason = str(exc) if own else f"the key's default webhook URL is refused: {exc}"
            raise BadRequest(contract.HTTPS_MESSAGE, reason) from None
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


@get("/render/{job_id:str}", operation_class=_doc(
    "Get a render", 200, schemas.KodiscJob, (401, 404),
    "The job object (also the webhook body). A failed scene is status failed with error, never a 5xx."))
async def get_render(service: JobService, key: users.ApiKey, job_id: str) -> Response:
    job = service.find(job_id, key.user_id, "kodisc")
    if not job:
        raise NotFound(f"No job {job_id} for this key's user")
    return json_response(job_object(service, job))


@get("/me", operation_class=_doc("The key and its credits", 200, schemas.KodiscMe, (401,),
                                "The authenticated key and the user's credit balance (paid, free, total)."))
async def get_me(service: JobService, key: users.ApiKey) -> Response:
    return json_response({"userId": key.user_id, "keyId": key.id, "keyPrefix": key.prefix,
                          "credits": ledger.balance(service.db, key.user_id)})


def listener(service: JobService):
    """One webhook per terminal state, body = the GET object, to the job's resolved URL."""
    def on_event(job: JobRow, event_type: str) -> None:
        status = STATUS.get(event_type)
        if status not in ("completed", "failed") or not job["webhook_url"]:
            return
        service.webhooks.enqueue(job_id=job["id"], dialect="kodisc", key_id=job["key_id"], url=job["webhook_url"],
                                 event=status, body=dumps(job_object(service, job)).encode())
    return on_event


router = Router(path="/api/v2", route_handlers=[enqueue_render, get_render, get_me],
                dependencies={"key": Provide(api_key)}, exception_handlers=handlers_for(error_response),
                request_max_body_size=MAX_BODY)
