"""The dashboard's JSON API (/dashboard/api/…), for its own script only: a signed-in operator's session cookie
and, on every change, the session's CSRF token. Jobs change only through JobService."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, Router, delete, get, post
from litestar.di import Provide
from litestar.response import Stream

from appliance.api import admin
from appliance.api.common import handlers_for, json_response
from appliance.api.dashboard import livestream, session, views
from appliance.delivery.httpfiles import serve_file
from appliance.delivery.sse import DROPPED
from appliance.errors import ApplianceError, Conflict, NotFound
from appliance.services.estimate import Estimator
from appliance.services.jobs import JobService
from appliance.store import jobs, ledger, operators, users

MAX_LIVE = 100  # jobs one live stream follows (a page of the list)
LIVE_MAX_S = 15.0  # the longest one live stream stays open (see _merged)


def error_response(exc: ApplianceError) -> Response:
    return json_response({"error": exc.code.lower(), "message": exc.message}, exc.status)


# ---- jobs -----------------------------------------------------------------------------------------------------
@get("/jobs")
async def list_jobs(request: Request, service: JobService, op: dict) -> Response:
    return json_response(views.job_list(service, dict(request.query_params)))


@get("/filters")
async def filters(service: JobService, op: dict) -> Response:
    return json_response(views.filter_options(service))


@get("/jobs/{job_id:str}")
async def job(request: Request, service: JobService, op: dict, job_id: str) -> Response:
    return json_response(views.job_detail(service, job_id, request.app.state.core.estimator))


@get("/jobs/{job_id:str}/files/{name:str}")
async def job_file(request: Request, service: JobService, op: dict, job_id: str, name: str) -> Response:
    path = service.datadir.file_path(service.get(job_id)["id"], name)
    if path is None:
        raise NotFound(f"no output {name} for job {job_id}")
    response = serve_file(request, path)
    response.headers["Cache-Control"] = "private, max-age=60"  # behind a sign-in: never in a shared cache
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@get("/jobs/{job_id:str}/inputs/{slot:str}")
async def job_input(request: Request, service: JobService, op: dict, job_id: str, slot: str) -> Response:
    """A RenderCAD job's uploaded picture (views.input_file says which files qualify), as its output is served:
    behind the operator's session, never sniffed, never in a shared cache, its type the one it was accepted as."""
    found = views.input_file(service, service.get(job_id), slot)
    if found is None:
        raise NotFound(f"no input {slot} for job {job_id}")
    path, content_type = found
    response = serve_file(request, path)
    response.media_type = content_type
    response.headers["Cache-Control"] = "private, max-age=60"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@get("/jobs/{job_id:str}/preview.jpg")
async def job_preview(service: JobService, op: dict, job_id: str) -> Response:
    data = await asyncio.to_thread(views.read_preview, service, job_id)
    if data is None:
        return Response(b"", status_code=204, headers={"Cache-Control": "no-store"})
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store",
                                                            "X-Content-Type-Options": "nosniff"})


@get("/jobs/{job_id:str}/live.m3u8")
async def job_live_playlist(service: JobService, op: dict, job_id: str) -> Response:
    """A running job's growing HLS playlist (api/dashboard/livestream.py), for the job page's player."""
    return await livestream.playlist_response(service, job_id, f"/dashboard/api/jobs/{job_id}/live/")


@get("/jobs/{job_id:str}/live/{name:str}")
async def job_live_segment(service: JobService, op: dict, job_id: str, name: str) -> Response:
    return await livestream.segment_response(service, job_id, name)


@post("/jobs/{job_id:str}/cancel", status_code=200)
async def cancel(service: JobService, op: dict, job_id: str) -> Response:
    service.get(job_id)
    if not service.cancel(job_id):
        raise Conflict(f"job {job_id} has already ended")
    return json_response(views.job_detail(service, job_id))


@post("/jobs/{job_id:str}/retry", status_code=202)
async def retry(service: JobService, op: dict, job_id: str) -> Response:
    return json_response({"id": service.retry(job_id)["id"]}, 202)


@delete("/jobs/{job_id:str}", status_code=200)
async def remove(service: JobService, op: dict, job_id: str) -> Response:
    service.delete(job_id)
    return json_response({"deleted": job_id})


def _frame(job_id: str, type_: str, data: dict, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: job\ndata: {json.dumps({'job': job_id, 'type': type_, **data})}\n\n".encode()


def _eta(service: JobService, estimator: Estimator, job_id: str) -> dict[str, Any]:
    """A running job's ETA as its frames carry it ({"eta": {secondsLeft, totalSeconds, finishAt, basis}}), read
    anew with each frame: it moves with the progress the frame reports (services/estimate.py)."""
    job = jobs.get_job(service.db, job_id)
    eta = estimator.for_job(job) if job is not None else None
    return {"eta": eta} if eta is not None else {}


async def _merged(service: JobService, job_ids: list[str], estimator: Estimator) -> AsyncIterator[bytes]:
    """Each job's state now, then live events of the active ones (the hub's per-job queues, merged) until each
    has ended — or until LIVE_MAX_S: an open dashboard must not hold up a graceful stop (the server waits for
    open responses), so a stream ends by itself and the browser reconnects, starting from the state again.
    The frames of a job that has not ended carry its ETA."""
    queues, waiting = {}, {}
    deadline = asyncio.get_running_loop().time() + LIVE_MAX_S
    try:
        yield b"retry: 2000\n\n"
        for job_id in job_ids:
            job = jobs.get_job(service.db, job_id)
            if job is None:
                continue
            yield _frame(job_id, "state", {"status": job["status"], "phase": job["phase"],
                                           "progress": job["progress"] or 0.0, **_eta(service, estimator, job_id)})
            if job["status"] not in jobs.TERMINAL:
                queues[job_id] = service.hub.subscribe(job_id)
        waiting = {asyncio.ensure_future(q.get()): job_id for job_id, q in queues.items()}
        while waiting:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return  # not "end": the browser reconnects
            done, _ = await asyncio.wait(waiting, timeout=min(left, service.settings.sse_keepalive_s),
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                yield b": keepalive\n\n"
            for future in done:
                job_id = waiting.pop(future)
                event = future.result()
                if event is DROPPED:  # too slow a reader: it reconnects and starts from the state again
                    return
                ended = event["data"].get("status") in jobs.TERMINAL
                yield _frame(job_id, event["type"], event["data"] if ended else
                             {**event["data"], **_eta(service, estimator, job_id)}, event["id"])
                if not ended:
                    waiting[asyncio.ensure_future(queues[job_id].get())] = job_id
        yield b"event: end\ndata: {}\n\n"  # nothing left to follow: the page closes the stream (no reconnect)
    finally:
        for future in waiting:
            future.cancel()
        for job_id, queue in queues.items():
            service.hub.unsubscribe(job_id, queue)


@get("/live")
async def live(request: Request, service: JobService, op: dict) -> Response:
    """Server-sent events for the jobs named in ?ids=a,b,c (a list page, or one job): state, then progress."""
    wanted = [i for i in (request.query_params.get("ids") or "").split(",") if i][:MAX_LIVE]
    return Stream(_merged(service, wanted, request.app.state.core.estimator), media_type="text/event-stream",
                  headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ---- capacity -------------------------------------------------------------------------------------------------
@get("/capacity")
async def capacity(request: Request, op: dict) -> Response:
    return json_response(await views.capacity(request.app.state.core))


# ---- users, credits, keys -------------------------------------------------------------------------------------
@get("/users")
async def list_users(service: JobService, op: dict) -> Response:
    return json_response(views.user_list(service))


def _text(data: dict, name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApplianceError(f"{name} is required")
    return value.strip()


@post("/users", status_code=201)
async def create_user(request: Request, service: JobService, op: dict) -> Response:
    data = views.loads_body(await request.body())
    user = users.create_user(service.db, _text(data, "name"), plan=data.get("plan") or "studio")
    return json_response({"id": user["id"], "name": user["name"]}, 201)


@post("/users/{name:str}/plan", status_code=200)
async def set_plan(request: Request, service: JobService, op: dict, name: str) -> Response:
    users.set_plan(service.db, name, _text(views.loads_body(await request.body()), "plan"))
    return json_response({"name": name})


@post("/users/{name:str}/credits", status_code=200)
async def grant(request: Request, service: JobService, op: dict, name: str) -> Response:
    data = views.loads_body(await request.body())
    amount, bucket = data.get("amount"), data.get("bucket") or "paid"
    if type(amount) is not int or not 0 < amount <= 10 ** 9 or bucket not in ledger.BUCKETS:
        raise ApplianceError("amount must be a whole number from 1 to 1,000,000,000; bucket free or paid")
    user = users.require_user(service.db, name)
    ledger.grant(service.db, user["id"], amount, bucket=bucket, note=f"dashboard ({op['operator']})")
    return json_response(ledger.balance(service.db, user["id"]))


@post("/users/{name:str}/keys", status_code=201)
async def create_key(request: Request, service: JobService, op: dict, name: str) -> Response:
    """The plaintext key is in this answer only; the store keeps its SHA-256."""
    data = views.loads_body(await request.body())
    user = users.require_user(service.db, name)
    key, row = users.create_key(service.db, user["id"], _text(data, "dialect"),
                                scope=data.get("scope") or "full-access", name=str(data.get("name") or "")[:100])
    return json_response({"key": key, "keyId": row["id"], "prefix": row["prefix"]}, 201)


@post("/keys/{key_id:str}/revoke", status_code=200)
async def revoke_key(service: JobService, op: dict, key_id: str) -> Response:
    users.revoke_key(service.db, key_id)
    return json_response({"revoked": key_id})


# ---- quotes ----------------------------------------------------------------------------------------------------
@post("/estimate", status_code=200)
async def estimate(request: Request, service: JobService, op: dict) -> Response:
    """What rendering a Manim scene or a Movie document would take on this box: the admin API's quote
    (POST /admin/estimate's body and answer), for the capacity page's form; nothing is submitted."""
    data = views.loads_body(await request.body())
    return json_response(admin.quote_of(service, request.app.state.core.estimator, data))


# ---- RenderCAD device codes -----------------------------------------------------------------------------------
@get("/device")
async def pending_devices(service: JobService, op: dict) -> Response:
    now = time.time()
    return json_response({"pending": [{"code": d["code"], "appName": d["app_name"], "appType": d["app_type"],
                                       "appVersion": d["app_version"], "createdAt": d["created_at"],
                                       "expiresIn": int(d["expires_at"] - now)}
                                      for d in operators.pending_devices(service.db)]})


@post("/device/approve", status_code=200)
async def approve_device(request: Request, service: JobService, op: dict) -> Response:
    """An app's device code approved for a chosen user (the rule of `appliance device approve`)."""
    from appliance.api.rendercad.auth import approve

    data = views.loads_body(await request.body())
    user = users.require_user(service.db, _text(data, "user"))
    code = _text(data, "code").upper()
    try:
        approve(service.db, code, user["id"])
    except ApplianceError as exc:  # RenderCAD's own error: shown in the dashboard's shape
        raise ApplianceError(exc.message, status=exc.status, code="device") from None
    return json_response({"approved": code, "user": user["name"]})


router = Router(path="/dashboard/api", route_handlers=[
    list_jobs, filters, job, job_file, job_input, job_preview, job_live_playlist, job_live_segment, cancel, retry,
    remove, live, capacity, estimate, list_users,
    create_user, set_plan, grant, create_key, revoke_key, pending_devices, approve_device],
    dependencies={"op": Provide(session.operator_session)}, exception_handlers=handlers_for(error_response),
    request_max_body_size=64 * 1024, include_in_schema=False)
