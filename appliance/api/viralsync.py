"""ViralSync dialect: Movie JSON render jobs under /v1 (seed viralsync-render-api.txt; api-research.md §2).

A render is the ``movie`` pipeline (fetch media, N scene tasks + 1 assemble task); this module only speaks
the dialect: auth and rate limit, validation messages, plans and quotas, the job object, SSE and webhooks.
"""
from __future__ import annotations

import base64
import binascii
import json
import time

from litestar import Request, Response, Router, delete, get, post
from litestar.di import Provide
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse
from litestar.response import Stream

from appliance.api import openapi, schemas
from appliance.api.auth import authenticate, bearer, require_scope
from appliance.api.common import handlers_for, json_response
from appliance.api.ratelimit import SlidingWindow
from appliance.api.viralsync_objects import child_object, event_body, find_child, job_object, list_page, parse_child_id
from appliance.contracts import viralsync as contract
from appliance.contracts.base import Refused
from appliance.delivery import sse
from appliance.errors import ApplianceError, Unauthorized
from appliance.services import plans
from appliance.services.jobs import JobService, NewJob
from appliance.services.pipelines import movie as movie_pipeline
from appliance.store import ids, jobs, users
from appliance.store.db import dumps
from appliance.store.rows import JobRow

PRESETS = contract.PRESETS
PROGRESS_WEBHOOK_EVERY_S = 5.0
MAX_BODY = 10 * 1024 * 1024  # a Movie document names its media by URL: 10 MB of JSON is a generous ceiling
STATUSES = ("queued", "running", "waiting", "done", "failed", "cancelled")


class VsError(ApplianceError):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message, status=status, code=code)
        self.headers = headers or {}


def error_response(exc: ApplianceError) -> Response:
    if exc.status == 413:
        return json_response({"error": f"Request body larger than {MAX_BODY // 2**20} MB",
                              "code": "PAYLOAD_TOO_LARGE"}, 413)
    if isinstance(exc, Unauthorized):
        code = "API_KEY_REVOKED" if exc.code == "revoked" else "UNAUTHORIZED"
        return json_response({"error": f"{exc.message}. Send x-api-key: vs_prod_…", "code": code}, 401)
    if isinstance(exc, VsError):
        return json_response({"error": exc.message, "code": exc.code}, exc.status, exc.headers)
    # The core's and Litestar's own errors (404, 405, 415, 500, 503): their code in ViralSync's upper case;
    # any 400 is a request ViralSync calls INVALID_REQUEST.
    code = "INVALID_REQUEST" if exc.status == 400 else exc.code.upper()
    return json_response({"error": exc.message, "code": code}, exc.status)


def _token(request: Request) -> str | None:
    return request.headers.get("x-api-key") or bearer(request) or request.query_params.get("api_key")


async def api_key(request: Request, service: JobService) -> users.ApiKey:
    key = authenticate(service.db, "viralsync", _token(request))
    require_scope(key, request.method)
    wait = _limiter(request, service).hit(key.id)
    if wait:
        raise VsError(429, "RATE_LIMITED", f"Rate limit exceeded. Retry after {wait} seconds.",
                      {"Retry-After": str(wait)})
    return key


def _limiter(request: Request, service: JobService) -> SlidingWindow:
    state = request.app.state
    if "viralsync_limiter" not in state:
        state.viralsync_limiter = SlidingWindow(service.settings.rate_limit_requests,
                                                service.settings.rate_limit_window_s)
    return state.viralsync_limiter


def _user_plan(service: JobService, key: users.ApiKey) -> tuple[dict, plans.Plan]:
    user = users.get_user(service.db, key.user_id)
    if user is None:  # a key outlived its user (deleted behind the server's back): the key is no good
        raise Unauthorized("Unknown API key", code="unknown")
    return user, plans.PLANS[user["plan"]]


# ---- submission ----------------------------------------------------------------------------------
def parse_submission(body: bytes, allow_loopback: bool = False) -> dict:
    """The request, validated in full before any plan or quota check (a malformed request is a 400 whatever
    the plan): contracts/viralsync.py's fields in their order; RecursionError: JSON nested deeper than the
    parser's limit."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise VsError(400, "INVALID_MOVIE_JSON", contract.BODY_MESSAGE) from None
    if not isinstance(data, dict):
        raise VsError(400, "INVALID_MOVIE_JSON", contract.BODY_MESSAGE)
    try:
        values = contract.JOB.validate(data, {"allow_loopback": allow_loopback})
    except Refused as exc:
        raise VsError(400, "INVALID_MOVIE_JSON", exc.message) from None
    data["movie"], data["renderOptions"] = values["movie"], values["renderOptions"]  # normalised
    return data


def check_plan(service: JobService, user: dict, plan: plans.Plan, movie: dict) -> None:
    if movie["width"] * movie["height"] > plan.max_pixels:
        raise VsError(400, "PLAN_RESOLUTION_EXCEEDED", f"{movie['width']}x{movie['height']} exceeds the "
                                                       f"{plan.name} plan's maximum resolution")
    minutes = plans.movie_minutes(movie)
    if minutes > plan.max_job_minutes:
        raise VsError(400, "PLAN_DURATION_EXCEEDED", f"Total duration {minutes:.1f} min exceeds the {plan.name} "
                                                     f"plan's per-job limit of {plan.max_job_minutes:g} min")
    start, _ = plans.month_bounds()
    _check_quota(service, user["id"], plan.minutes_per_month, start, minutes, "RENDER_QUOTA_EXCEEDED",
                 "Monthly render minute limit reached. Wait for the monthly reset or ask the admin to upgrade the "
                 "plan.")
    _check_quota(service, user["id"], plan.daily_minutes, plans.today_start(), minutes, "RENDER_QUOTA_DAILY_EXCEEDED",
                 "Daily render cap reached. Resets at midnight UTC.")
    if plan.concurrency is not None and jobs.count_active(service.db, user["id"], "viralsync") >= plan.concurrency:
        raise VsError(409, "CONCURRENCY_LIMIT_EXCEEDED",
                      "Concurrent job limit reached. Wait for a running job to complete.")


def _check_quota(service: JobService, user_id: str, limit: float | None, since, minutes: float, code: str,
                 message: str) -> None:
    """Minutes metered (completed jobs) + minutes reserved by unfinished jobs + this job's must fit the limit:
    concurrent jobs cannot together overshoot it (a failed or cancelled job releases its reservation)."""
    if limit is None:
        return
    held = plans.minutes_used(service.db, user_id, since) + plans.minutes_reserved(service.db, user_id, since)
    if held >= limit or held + minutes > limit + 1e-9:
        raise VsError(402, code, message)


def workers_for(service: JobService, options: dict, scene_count: int) -> int:
    wanted = options["requestedConcurrency"] or PRESETS[options["qualityPreset"]]
    return max(1, min(wanted, scene_count, int(service.capacity.cpu)))


def submit(service: JobService, key: users.ApiKey, data: dict) -> JobRow:
    user, plan = _user_plan(service, key)
    if not plan.api:
        raise VsError(403, "FORBIDDEN", "Your plan does not include API access. Upgrade to Pro.")
    check_plan(service, user, plan, data["movie"])
    return service.submit(new_movie_job(service, key.user_id, key.id, data, data.get("callbackUrl")))


# What a job keeps of its submission besides the movie: the documented top-level fields, nothing a client adds.
REQUEST_FIELDS = ("kind", "projectId", "renderOptions", "callbackUrl")


def new_movie_job(service: JobService, user_id: str, key_id: str | None, data: dict,
                  callback: str | None = None) -> NewJob:
    """A validated movie request as a job of the movie pipeline (also what `appliance render movie.json` runs)."""
    movie = data["movie"]
    return NewJob(job_id=ids.viralsync_job_id(), dialect="viralsync", user_id=user_id, key_id=key_id, kind="movie",
                  payload={"movie": movie}, request={k: data[k] for k in REQUEST_FIELDS if k in data},
                  webhook_url=callback, metadata={"reserveMinutes": plans.movie_minutes(movie)},
                  max_parallel=workers_for(service, data["renderOptions"], movie_pipeline.scene_count(movie)))


class Webhooks:
    """Terminal events, and progress at most every PROGRESS_WEBHOOK_EVERY_S, to the job's callbackUrl."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self._last_progress: dict[str, float] = {}

    def __call__(self, job: JobRow, event_type: str) -> None:
        if event_type not in ("progress", "completed", "failed", "cancelled") or not job["webhook_url"]:
            return
        if event_type == "progress":
            last = self._last_progress.get(job["id"], 0.0)
            if time.monotonic() - last < PROGRESS_WEBHOOK_EVERY_S:
                return
            self._last_progress[job["id"]] = time.monotonic()
        else:
            self._last_progress.pop(job["id"], None)
        name, body = event_body(self.service, job, event_type)
        self.service.webhooks.enqueue(job_id=job["id"], dialect="viralsync", key_id=job["key_id"],
                                      url=job["webhook_url"], event=name, body=dumps(body).encode())


# ---- the OpenAPI description of each operation (appliance/api/openapi.py) ------------------------
def _ok(struct: type, text: str) -> OpenAPIResponse:
    return openapi.json_body(openapi.ref(struct), text)


def _doc(summary: str, ok: dict, errors: dict, description: str, body: type | None = None, params=(),
         security=openapi.VIRALSYNC_AUTH):
    """ok: the success responses; errors: status -> the codes it may carry. Every operation may also answer
    401 and 429."""
    errors = {401: ("UNAUTHORIZED", "API_KEY_REVOKED"), **errors, 429: ("RATE_LIMITED",)}
    responses = dict(ok)
    for status, codes in errors.items():
        responses[status] = openapi.error_body(
            schemas.ViralSyncError, "code", codes, _ERROR_TEXT[status],
            {"Retry-After": "Seconds until the window has room"} if status == 429 else None)
    return openapi.operation(tag="ViralSync", summary=summary, description=description, security=security,
                             body=body, example=schemas.VIRALSYNC_EXAMPLE if body else None, params=params,
                             responses=responses,
                             path_params={"job_id": "The jobId that POST /v1/render/jobs returned"})


_ERROR_TEXT = {400: "Invalid request", 401: "Missing, invalid or revoked key", 402: "Render quota reached",
               403: "The plan has no API access, or the key is read-only", 404: "No such job for this key's user",
               409: "Conflicts with the job's state or the plan's concurrency limit",
               413: "Body over 10 MB", 429: "Over 120 requests per 60 s for this key",
               503: "The appliance is short of disk space; retry later"}
LIST_PARAMS = (
    openapi.query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 25}, "Page size"),
    openapi.query("cursor", {"type": "string"}, "nextCursor of the previous page"),
    openapi.query("type", {"type": "string"},
                  "render (default: movie jobs), render.scene or render.assemble (child jobs); others list nothing"),
    openapi.query("status", {"type": "string", "enum": list(STATUSES)}, "Only jobs in this status"))
SSE_PARAMS = (openapi.header("Last-Event-ID", {"type": "string"},
                             "Resume after this event id; anything but a positive integer replays from the start"),)


# ---- routes --------------------------------------------------------------------------------------
def _job_for(service: JobService, key: users.ApiKey, job_id: str) -> JobRow:
    job = service.find(job_id, key.user_id, "viralsync")
    if not job:
        raise VsError(404, "JOB_NOT_FOUND", f"Job {job_id} not found")
    return job


@post("/render/jobs", status_code=202, operation_class=_doc(
    "Submit a Movie render", {202: _ok(schemas.ViralSyncAccepted, "Queued")},
    {400: ("INVALID_MOVIE_JSON", "PLAN_RESOLUTION_EXCEEDED", "PLAN_DURATION_EXCEEDED"),
     402: ("RENDER_QUOTA_EXCEEDED", "RENDER_QUOTA_DAILY_EXCEEDED"), 403: ("FORBIDDEN",),
     409: ("CONCURRENCY_LIMIT_EXCEEDED",), 413: ("PAYLOAD_TOO_LARGE",), 503: ("UNAVAILABLE",)},
    "Validates the Movie document and queues it: planning, one task per scene, then assembly.",
    body=schemas.ViralSyncRenderRequest))
async def submit_render(request: Request, service: JobService, key: users.ApiKey) -> Response:
    data = parse_submission(await request.body(), service.settings.allow_loopback_targets)
    job = submit(service, key, data)
    return json_response({"jobId": job["id"], "status": "queued"}, 202)


@get("/jobs", operation_class=_doc(
    "List jobs", {200: _ok(schemas.ViralSyncJobList, "Newest first; nextCursor null on the last page")},
    {400: ("INVALID_REQUEST",)}, "Cursor pagination over this user's jobs.", params=LIST_PARAMS))
async def list_jobs(request: Request, service: JobService, key: users.ApiKey) -> Response:
    q = request.query_params
    limit, before = _page(q.get("limit", "25"), q.get("cursor"))
    wanted = q.get("status")
    if wanted is not None and wanted not in STATUSES:
        raise VsError(400, "INVALID_REQUEST", f"status must be one of: {', '.join(STATUSES)}")
    rows, objects = list_page(service, key.user_id, q.get("type"), wanted, before, limit + 1)
    page, more = rows[:limit], len(rows) > limit
    cursor = (base64.urlsafe_b64encode(f"{page[-1]['created_at']}|{page[-1]['id']}".encode()).decode()
              if more and page else None)
    return json_response({"jobs": objects[:limit], "nextCursor": cursor})


def _page(limit_text: str, cursor: str | None) -> tuple[int, tuple[str, str] | None]:
    bad = VsError(400, "INVALID_REQUEST", "limit must be 1-100 and cursor must come from nextCursor")
    try:
        limit = int(limit_text)
        parts = base64.urlsafe_b64decode(cursor.encode()).decode().split("|") if cursor else None
    except (ValueError, UnicodeError, binascii.Error):
        raise bad from None
    if parts is not None and (len(parts) != 2 or not all(parts)):
        raise bad
    if not 1 <= limit <= 100:
        raise VsError(400, "INVALID_REQUEST", "limit must be between 1 and 100")
    return limit, (parts[0], parts[1]) if parts else None


@get("/jobs/{job_id:str}", operation_class=_doc(
    "Get a job", {200: _ok(schemas.ViralSyncJob, "The job")}, {404: ("JOB_NOT_FOUND",)},
    "Status, phase, progress, children, outputUrl and mediaData of one job."))
async def get_job(service: JobService, key: users.ApiKey, job_id: str) -> Response:
    child = parse_child_id(job_id)
    if child is None:
        return json_response(job_object(service, _job_for(service, key, job_id)))
    parent = _job_for(service, key, child[0])  # JOB_NOT_FOUND names the child id asked for
    task = find_child(service.tasks(parent["id"]), child[1], child[2])
    if task is None:
        raise VsError(404, "JOB_NOT_FOUND", f"Job {job_id} not found")
    return json_response(child_object(parent, task))


@post("/jobs/{job_id:str}/cancel", status_code=200, operation_class=_doc(
    "Cancel a job", {200: _ok(schemas.ViralSyncJob, "The cancelled job")},
    {403: ("FORBIDDEN",), 404: ("JOB_NOT_FOUND",), 409: ("INVALID_STATE_TRANSITION",)},
    "Stops every running task of a queued or running job; a finished job answers 409."))
async def cancel_job(service: JobService, key: users.ApiKey, job_id: str) -> Response:
    job = _job_for(service, key, job_id)
    if not service.cancel(job["id"]):
        raise VsError(409, "INVALID_STATE_TRANSITION", f"Job {job_id} is {job_object(service, job)['status']} "
                                                       "and can no longer be cancelled")
    return json_response(job_object(service, service.get(job_id)))


@delete("/jobs/{job_id:str}", status_code=200, operation_class=_doc(
    "Delete a job", {204: OpenAPIResponse("Deleted, with its outputs")},
    {403: ("FORBIDDEN",), 404: ("JOB_NOT_FOUND",), 409: ("INVALID_STATE_TRANSITION",)},
    "Removes a finished job and its outputs; an active job answers 409 (cancel it first)."))
async def delete_job(service: JobService, key: users.ApiKey, job_id: str) -> Response:
    job = _job_for(service, key, job_id)
    if job["status"] not in jobs.TERMINAL:
        raise VsError(409, "INVALID_STATE_TRANSITION", f"Job {job_id} is still active: cancel it first")
    service.delete(job_id)
    return Response(content=b"", status_code=204)


@get("/me", operation_class=_doc("The key's user", {200: _ok(schemas.ViralSyncMe, "The user")}, {},
                                "The user and plan behind the key."))
async def me(service: JobService, key: users.ApiKey) -> Response:
    user, _ = _user_plan(service, key)
    return json_response({"userId": user["id"], "plan": user["plan"], "email": f"{user['name']}@appliance.local"})


@get("/usage", operation_class=_doc(
    "Render minutes this month", {200: _ok(schemas.ViralSyncUsage, "Usage")}, {},
    "Render minutes used in the current calendar month (UTC) and the plan's limit (null: unlimited)."))
async def usage(service: JobService, key: users.ApiKey) -> Response:
    user, plan = _user_plan(service, key)
    start, end = plans.month_bounds()
    return json_response({"plan": user["plan"], "renderMinutesUsed": plans.minutes_used(service.db, user["id"], start),
                          "renderMinutesLimit": plan.minutes_per_month, "periodStart": plans.iso(start),
                          "periodEnd": plans.iso(end)})


def last_event_id(value: str | None) -> int:
    """sse.parse_last_event_id trusts str.isdigit(), which "²" also passes (and int() then refuses): a header
    is Latin-1, so such a value is not ours and replays from the start."""
    return sse.parse_last_event_id(value if value and value.isascii() else None)


class _Framer:
    """A stored event as an SSE frame with the state that event recorded (a replay tells the job's history, not
    its present state over and over); an event that repeats the previous frame's state, or records none (a task
    retried), sends nothing, so ids strictly increase and no two frames say the same."""

    def __init__(self, service: JobService, job_id: str) -> None:
        self.service, self.job_id = service, job_id
        self._last: str | None = None

    def __call__(self, event: dict) -> tuple[bytes, bool]:
        recorded = event.get("data") or {}
        if "status" not in recorded:
            return b"", False
        kind = event["type"] if event["type"] in ("progress", "completed", "failed", "cancelled") else "progress"
        name, body = event_body(self.service, self.service.get(self.job_id), kind, recorded)
        state = dumps({k: v for k, v in body.items() if k != "timestamp"})
        if state == self._last and name == "progress":
            return b"", False
        self._last = state
        return f"id: {event['id']}\nevent: {name}\ndata: {dumps(body)}\n\n".encode(), name != "progress"


@get("/jobs/{job_id:str}/progress", operation_class=_doc(
    "Follow a job's progress", {200: OpenAPIResponse("Server-Sent Events, each one as this schema", content={
        "text/event-stream": OpenAPIMediaType(schema=openapi.raw(openapi.ref(schemas.ViralSyncStreamEvent)))})},
    {404: ("JOB_NOT_FOUND",)},
    "event: progress|done|failed|cancelled, data: the webhook event JSON with the state that event recorded, id: "
    "strictly increasing; `: keepalive` every sse_keepalive_s (15 s); closes after the final event.",
    params=SSE_PARAMS,
    security=[*openapi.VIRALSYNC_AUTH, {"viralsyncQueryKey": []}]))
async def progress_stream(request: Request, service: JobService, key: users.ApiKey, job_id: str) -> Response:
    job = _job_for(service, key, job_id)

    framer = _Framer(service, job_id)
    frames = sse.stream(service.hub, job["id"], lambda after: service.events_since(job["id"], after),
                        lambda: service.get(job_id)["status"] in jobs.TERMINAL, framer,
                        last_event_id(request.headers.get("last-event-id")),
                        service.settings.sse_keepalive_s)
    return Stream(frames, media_type="text/event-stream",
                  headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


router = Router(path="/v1", route_handlers=[submit_render, list_jobs, get_job, cancel_job, delete_job, me, usage,
                                            progress_stream],
                dependencies={"key": Provide(api_key)}, exception_handlers=handlers_for(error_response),
                request_max_body_size=MAX_BODY)
