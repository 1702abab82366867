"""What every RenderCAD endpoint shares: the `{"error": "..."}` shape, token auth (Bearer or X-Auth-Token) with
scopes, JSON-only POST bodies, and the `?action=` dispatch of the PHP-style endpoints."""
from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from litestar import Request, Response

from appliance.api.auth import authenticate
from appliance.api.common import HTTP_CODES, json_response
from appliance.api.rendercad import limits
from appliance.errors import ApplianceError, Conflict, InsufficientCredits, Unauthorized
from appliance.services.jobs import JobService, OpenJob
from appliance.store import rendercad as store
from appliance.store import users
from appliance.store.rows import JobRow

SCOPE_RANK = {"read-only": 0, "render-only": 1, "full-access": 2}
SCOPE_WORDS = {"read-only": "read-only or higher", "render-only": "render-only or full-access",
               "full-access": "full-access"}
# Litestar's own errors (no such path, wrong method, body too large) in RenderCAD's words.
HTTP_MESSAGES = {400: "Bad request", 401: "Authentication required", 403: "Forbidden", 404: "Not found",
                 405: "Method not allowed", 413: "Request body too large",
                 415: "Content-Type must be application/json", 429: "Too many requests",
                 500: "Internal server error"}


class RCError(ApplianceError):
    """A RenderCAD error: status plus the display-safe text of its `error` field (and extra fields)."""

    def __init__(self, status: int, message: str, **extra) -> None:
        super().__init__(message, status=status, code="rendercad")
        self.extra = extra


def error_response(exc: ApplianceError) -> Response:
    if isinstance(exc, RCError):
        return json_response({**exc.extra, "error": exc.message}, exc.status)
    if exc.code in HTTP_CODES.values():  # Litestar's own: its generic words, in RenderCAD's
        return json_response({"error": HTTP_MESSAGES.get(exc.status, exc.message)}, exc.status)
    return json_response({"error": exc.message}, exc.status)


class RateLimited(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass
class Ctx:
    request: Request
    service: JobService
    key: users.ApiKey | None
    body: dict = field(default_factory=dict)
    limit: limits.Limit | None = None
    rate_headers: dict[str, str] = field(default_factory=dict)
    admitted: bool = False

    def admit(self) -> None:
        """Count this request against its rate limit (once); RateLimited when it is over."""
        if self.limit is None or self.admitted:
            return
        self.admitted = True
        self.rate_headers, refused = limits.check(self.db, self.limit, limits.subject(self.request, self.key))
        if refused is not None:
            raise RateLimited(refused)

    @property
    def db(self):
        return self.service.db

    @property
    def base(self) -> str:
        return self.service.settings.base_url

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.request.query_params.get(name, default)

    @property
    def user_id(self) -> str:
        assert self.key is not None
        return self.key.user_id


Handler = Callable[[Ctx], Awaitable[Response]]


@dataclass(frozen=True)
class Action:
    method: str  # GET | POST
    scope: str | None  # None: no token needed; "optional": check's own rules; else the least scope
    handler: Handler
    json_body: bool = True


def presented_token(request: Request) -> str | None:
    """The token the client sent, "" when it sent an Authorization header that is not a bearer token."""
    value = request.headers.get("authorization")
    if value is not None:
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return request.headers.get("x-auth-token")


def authorize(request: Request, service: JobService, scope: str | None) -> users.ApiKey | None:
    """The token's key, checked for the action's scope. A token that is sent but invalid is always a 401."""
    token = presented_token(request)
    if token is None:
        if scope in (None, "optional"):
            return None
        raise RCError(401, "Authentication required")
    try:
        key = authenticate(service.db, "rendercad", token)
    except Unauthorized:
        flags = {"success": False, "authenticated": False, "token_valid": False} if scope == "optional" else {}
        raise RCError(401, "Invalid or expired API token", **flags) from None
    store.touch(service.db, key.id, key.user_id)
    if scope in SCOPE_RANK and SCOPE_RANK[key.scope] < SCOPE_RANK[scope]:
        raise RCError(403, f"Insufficient token scope: this action requires {SCOPE_WORDS[scope]}")
    return key


async def json_body(request: Request) -> dict:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise RCError(415, "Content-Type must be application/json")
    try:
        data = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RCError(400, "Invalid JSON body") from None
    if not isinstance(data, dict):
        raise RCError(400, "Invalid JSON body")
    return data


async def dispatch(request: Request, service: JobService, actions: dict[str, Action]) -> Response:
    """?action= picks the handler; the checks run in the order a client can fix them: action, method, token,
    scope, body."""
    action = actions.get(request.query_params.get("action", ""))
    if action is None:
        raise RCError(404, "Unknown action")
    if request.method != action.method:
        response = json_response({"error": f"Method not allowed: use {action.method}"}, 405)
        response.headers["Allow"] = action.method
        return response
    key = authorize(request, service, action.scope)
    name = request.query_params["action"]
    ctx = Ctx(request, service, key, limit=limits.for_request(request, name))
    try:
        if not limits.counted_late(ctx.limit):  # counted once the caller is known, before the body is read
            ctx.admit()
        ctx.body = await json_body(request) if action.method == "POST" and action.json_body else {}
        response = await action.handler(ctx)
    except RateLimited as exc:
        return exc.response
    except ApplianceError as exc:  # an error of a limited endpoint carries the headers too
        response = error_response(exc)
    response.headers.update(ctx.rate_headers)
    return response


def ok(data: dict | None = None, status: int = 200) -> Response:
    return json_response({"success": True, **(data or {})}, status)


def text_field(body: dict, name: str, *, required: bool = False, max_len: int = 100) -> str | None:
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RCError(400, f"{name} is required")
        return None
    if not isinstance(value, str):
        raise RCError(400, f"{name} must be a string")
    if len(value) > max_len:
        raise RCError(400, f"{name} must be at most {max_len} characters")
    return value.strip()


# ---- jobs as render.php and video.php show them -----------------------------------------------------------------
# RenderCAD's status is the core job's, in RenderCAD's words: the one place the two vocabularies meet. A job
# collecting its uploads is the core's "uploading"; its statuses spell "canceled" with one l.
PUBLIC = {"uploading": "uploading", "queued": "pending", "running": "processing", "completed": "completed",
          "failed": "failed", "cancelled": "canceled"}


def public_status(core_status: str) -> str:
    return PUBLIC.get(core_status, "failed")


def job_row(ctx: Ctx, kinds: tuple[str, ...] | None = None) -> store.RcJob:
    """The caller's own RenderCAD job named by job_id (body on POST, query on GET), of one of `kinds`."""
    job_id = ctx.body.get("job_id") if ctx.request.method == "POST" else ctx.query("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise RCError(400, "job_id is required")
    row = store.get_job(ctx.db, job_id, ctx.user_id)
    if row is None or (kinds is not None and row["kind"] not in kinds):
        raise RCError(404, "Job not found")
    return row


def public_state(ctx: Ctx, row: store.RcJob) -> tuple[str, JobRow | None]:
    """(RenderCAD status, the core job): the core job's state, read now."""
    job = ctx.service.find(row["id"], ctx.user_id, "rendercad")
    return (public_status(job["status"]), job) if job else ("failed", None)


def queue_figures(ctx: Ctx, job: JobRow | None, kind: str) -> dict:
    """queue_depth, queue_position and a wait estimated from this user's measured average for the kind."""
    depth, ahead = store.queue_ahead(ctx.db, job["created_at"] if job else None)
    per_job = max(1, store.avg_seconds(ctx.db, ctx.user_id, kind))
    return {"queue_depth": depth, "queue_position": ahead, "estimated_wait_seconds": math.ceil(ahead * per_job)}


PIPELINES = {"image": "image", "video": "video", "convert": "video_convert"}  # RenderCAD kind -> the core's


def open_job(ctx: Ctx, job_id: str, kind: str, params: dict) -> None:
    """A job that waits for its uploads: RenderCAD's kind and settings, and the core job opened (uploading). In
    this order: RenderCAD's row is read joined to the core job, so a crash between the two leaves nothing seen."""
    store.create_job(ctx.db, job_id, kind, params)
    ctx.service.open(OpenJob(job_id=job_id, dialect="rendercad", user_id=ctx.user_id, kind=PIPELINES[kind],
                             request=params, key_id=ctx.key.id if ctx.key else ""))


def finalize(ctx: Ctx, row: store.RcJob, payload: dict, price: int, what: str) -> JobRow:
    """Submit the job with its uploads: its price is reserved there (the one credit check) and settled when it
    completes. A refusal leaves it uploading, so the client may finalize again."""
    try:
        return ctx.service.finalize(row["id"], payload, request=row["params"], reserve=price, charge=price)
    except InsufficientCredits:
        raise RCError(429, f"Not enough tokens: this {what} needs {price}. Ask the appliance admin for credits.") \
            from None
    except Conflict:
        raise RCError(409, "This job was already finalized") from None


def refuse(ctx: Ctx, row: store.RcJob, reason: str) -> RCError:
    """An upload finalize cannot use: the job fails with the reason (its webhook sent by the job listener, as for
    any failure) unless it left uploading meanwhile; the 422 to raise."""
    ctx.service.refuse(row["id"], reason)
    return RCError(422, reason)


def cancel_row(ctx: Ctx, row: store.RcJob) -> Response:
    """Cancel as both render.php and video.php define it: an uploading or pending job through the core (a
    pending one's reserve refunded there); anything later is a 409 with no refund."""
    state, _ = public_state(ctx, row)
    if state not in ("uploading", "pending") or not ctx.service.cancel(row["id"]):
        raise RCError(409, f"Only pending jobs can be canceled; this job is {public_state(ctx, row)[0]}")
    return ok({"job_id": row["id"], "status": "canceled"})
