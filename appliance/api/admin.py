"""Local admin API for the CLI (`appliance jobs cancel`, `appliance render`): bearer = data_dir/admin.token."""
from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from pathlib import Path

from litestar import Request, Response, Router, delete, get, post
from litestar.di import Provide

from appliance.api.common import handlers_for, json_response
from appliance.api.dashboard import livestream
from appliance.delivery import sse
from appliance.errors import ApplianceError, NotFound, Unauthorized
from appliance.services import model_folders, submissions
from appliance.services.estimate import Estimator
from appliance.services.jobs import JobService, NewJob
from appliance.services.models import (
    CHECK_RENDERER,
    MAX_FOLDER_BYTES,
    MAX_MODEL_BYTES,
    AddRequest,
    ModelRegistry,
    public,
)
from appliance.store import ids, pieces, users
from appliance.store.db import loads
from appliance.store.rows import JobRow, TaskRow

MAX_BODY = 10 * 1024 * 1024


def token_path(data_dir: Path) -> Path:
    return data_dir / "admin.token"


def ensure_token(data_dir: Path) -> str:
    path = token_path(data_dir)
    if not path.exists():
        path.write_text(secrets.token_hex(24))
        path.chmod(0o600)
    return path.read_text().strip()


async def operator(request: Request, service: JobService) -> str:
    sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(sent.encode(), ensure_token(service.settings.data_dir).encode()):
        raise Unauthorized("unauthorized")
    return "admin"


def error_response(exc: ApplianceError) -> Response:
    return json_response({"error": exc.code.lower(), "message": exc.message}, exc.status)


def _estimator(request: Request) -> Estimator:
    return request.app.state.core.estimator


def public_job(job: JobRow, tasks: list[TaskRow], eta: dict | None = None) -> dict:
    return {"id": job["id"], "dialect": job["dialect"], "kind": job["kind"], "status": job["status"],
            "phase": job["phase"], "progress": job["progress"], "eta": eta, "reuse": pieces.reuse_of(tasks),
            "error": job["error"],
            "createdAt": job["created_at"], "completedAt": job["completed_at"], "durationMs": job["duration_ms"],
            "result": loads(job["result"]),
            "tasks": [{"id": t["id"], "name": t["name"], "renderer": t["renderer"], "status": t["status"],
                       "attempts": t["attempts"], "progress": t["progress"], "error": t["error"],
                       "cached": bool(t["cached"]), "log": t["log_path"], "startedAt": t["started_at"],
                       "finishedAt": t["finished_at"]} for t in tasks]}


def proof_of(token: str, nonce: str) -> str:
    return hmac.new(token.encode(), b"appliance-admin:" + nonce.encode(), "sha256").hexdigest()


@get("/proof")
async def proof(service: JobService, nonce: str) -> Response:
    """The CLI's check that this server holds the data dir it read its admin token from, before it sends the
    token: an HMAC of the client's nonce under the token (whatever else listens on the port cannot make it)."""
    if not 16 <= len(nonce) <= 128 or not nonce.isalnum():
        raise ApplianceError("nonce must be 16 to 128 letters or digits")
    return json_response({"proof": proof_of(ensure_token(service.settings.data_dir), nonce)})


@get("/jobs/{job_id:str}")
async def show_job(service: JobService, estimator: Estimator, admin: str, job_id: str) -> Response:
    job = service.get(job_id)
    return json_response(public_job(job, service.tasks(job_id), estimator.for_job(job)))


@get("/jobs/{job_id:str}/live.m3u8")
async def live_playlist(service: JobService, admin: str, job_id: str) -> Response:
    """The running job's growing HLS playlist for a LAN player with the admin token (mpv's
    ``--http-header-fields``, ffmpeg's ``-headers``): the dashboard job page's stream, its segments under this path."""
    return await livestream.playlist_response(service, job_id, f"/admin/jobs/{job_id}/live/")


@get("/jobs/{job_id:str}/live/{name:str}")
async def live_segment(service: JobService, admin: str, job_id: str, name: str) -> Response:
    return await livestream.segment_response(service, job_id, name)


@post("/jobs/{job_id:str}/cancel", status_code=200)
async def cancel_job(service: JobService, admin: str, job_id: str) -> Response:
    service.get(job_id)
    if not service.cancel(job_id):
        return json_response({"error": "conflict", "message": f"job {job_id} has already ended"}, 409)
    return json_response(public_job(service.get(job_id), service.tasks(job_id)))


@post("/jobs/{job_id:str}/retry", status_code=202)
async def retry_job(service: JobService, admin: str, job_id: str) -> Response:
    job = service.retry(job_id)
    return json_response({"id": job["id"], "status": job["status"]}, 202)


@post("/jobs", status_code=202)
async def submit_job(request: Request, service: JobService, admin: str) -> Response:
    """Submit a job for a named user: {"user", "renderer", "input", "tasks"?} or {"user", "movie"} — used by
    `appliance render` and by tests that exercise the scheduler with test renderers."""
    data = await _body(request)
    job = service.submit(_new_job(service, data))
    return json_response({"id": job["id"], "status": job["status"]}, 202)


@post("/estimate", status_code=200)
async def estimate(request: Request, service: JobService, estimator: Estimator, admin: str) -> Response:
    """What POST /jobs with this body would take, learnt from this box's finished jobs; nothing is submitted.
    {"seconds", "credits", "basis", "family"}, or {"seconds": null, "reason"} while there is too little history."""
    return json_response(quote_of(service, estimator, await _body(request)))


def quote_of(service: JobService, estimator: Estimator, data: dict) -> dict:
    """The quote for a job body of POST /jobs (the admin API's and the dashboard's quote)."""
    new = _new_job(service, data)
    quote, family = estimator.explain(new.kind, new.payload, new.max_parallel)
    if quote is None:
        return {"seconds": None, "credits": None, "basis": 0, "reason": family}
    return {"seconds": round(quote.seconds, 1), "credits": quote.credits(new.credit_rate, new.charge),
            "basis": quote.basis, "spread": round(quote.spread, 3), "family": family}


async def _body(request: Request) -> dict:
    try:
        data = json.loads(await request.body())
    except (ValueError, RecursionError):
        raise ApplianceError("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApplianceError("body must be a JSON object")
    return data


def _new_job(service: JobService, data: dict) -> NewJob:
    priority = data.get("priority", 0)
    if type(priority) is not int or not -1000 <= priority <= 1000:  # SQLite integers are 64-bit
        raise ApplianceError("priority must be an integer from -1000 to 1000")
    user = users.get_user_by_name(service.db, str(data.get("user", "admin")))
    if not user:
        raise NotFound(f"no user {data.get('user')!r}")
    if "movie" in data:
        return _movie_job(service, user["id"], data)
    return _scene_job(user["id"], data["scene"]) if "scene" in data else _tasks_job(user["id"], data)


def _scene_job(user_id: str, scene: object) -> NewJob:
    """`appliance render scene.py`: the manim pipeline (as a Kodisc scene is: the render cache, the pieces of the
    user's earlier renders of the scene, a split where it wins), shown as an admin job of that user."""
    fields = {"code": str, "className": str, "width": int, "height": int, "fps": int}
    if not isinstance(scene, dict) or any(type(scene.get(k)) is not t for k, t in fields.items()):
        raise ApplianceError("scene must be an object with code, className (strings), width, height and fps "
                             "(integers)")
    if not (16 <= scene["width"] <= 7680 and 16 <= scene["height"] <= 4320 and 1 <= scene["fps"] <= 120):
        raise ApplianceError("scene: width 16-7680, height 16-4320 and fps 1-120")
    return NewJob(job_id=ids.viralsync_job_id(), dialect="admin", user_id=user_id, kind="manim",
                  payload={k: scene[k] for k in fields}, request={"scene": scene["className"]})


def _movie_job(service: JobService, user_id: str, data: dict) -> NewJob:
    """`appliance render movie.json`: the movie pipeline, shown as a ViralSync job of that user."""
    return submissions.movie_job(job_id=ids.viralsync_job_id(), dialect="viralsync", user_id=user_id,
                                 movie=data["movie"], request={"projectId": "cli", "renderOptions": {}},
                                 cpu_slots=service.capacity.cpu)


def _tasks_job(user_id: str, data: dict) -> NewJob:
    specs = data.get("tasks") or [{"renderer": data.get("renderer"), "input": data.get("input", {}),
                                   **({"limits": data["limits"]} if "limits" in data else {})}]
    return NewJob(job_id=ids.viralsync_job_id(), dialect="admin", user_id=user_id,
                  kind="tasks", payload={"tasks": specs}, request=data,
                  priority=data.get("priority", 0))


@get("/jobs/{job_id:str}/events")
async def job_events(request: Request, service: JobService, admin: str, job_id: str) -> Response:
    after = request.query_params.get("after", "0")
    return json_response(service.events_since(job_id, sse.parse_last_event_id(after if after.isascii() else "")))


# ---- the model registry (services/models.py): `appliance models add | remove`; list reads the manifest --------
def _registry(request: Request) -> ModelRegistry:
    return ModelRegistry.beside(request.app.state.core.artifacts)


@get("/models")
async def list_models(request: Request, admin: str) -> Response:
    return json_response({"models": [public(e) for e in _registry(request).entries()]})


@post("/models", status_code=202, request_max_body_size=None)
async def add_model(request: Request, service: JobService, admin: str) -> Response:
    """The model file as the body (an img2img model: its diffusers folder as an uncompressed tar); its options as
    query parameters (kind, name, licence, input_size, mean, std, post, device, steps, guidance, by, source,
    user). Answers the check job's id: the CLI follows it, then asks for install."""
    add = AddRequest.from_params(dict(request.query_params))
    registry = _registry(request)
    registry.ensure_free(add.name, add.kind)  # before a byte is taken in
    user = users.get_user_by_name(service.db, request.query_params.get("user") or "admin")
    if not user:
        raise NotFound(f"no user {request.query_params.get('user') or 'admin'!r} to run the model's check as "
                       "(--user NAME)")
    incoming = registry.root / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    partial, size = incoming / f"{secrets.token_hex(8)}.part", 0
    folder = add.kind == "img2img"
    limit = MAX_FOLDER_BYTES + (1 << 20) if folder else MAX_MODEL_BYTES  # a tar's headers: 1.5 kB a file
    try:
        with open(partial, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApplianceError(f"a model {'folder' if folder else 'file'} may be at most "
                                         f"{limit >> 30} GiB", status=413, code="TOO_LARGE")
                out.write(chunk)
        if size == 0:
            raise ApplianceError("the model file is empty")
        if folder:  # each member taken in as an artifact (model_folders says what a member may be)
            files = await asyncio.to_thread(model_folders.take_in, partial, request.app.state.core.artifacts,
                                            MAX_FOLDER_BYTES)
            digest, check_input = model_folders.folder_digest(files), add.folder_check_input(files)
        else:
            digest = await asyncio.to_thread(request.app.state.core.artifacts.put, partial)
            check_input = add.check_input(digest)
    finally:
        partial.unlink(missing_ok=True)
    # the graph, its weights and one run's activations; an img2img check asks for a GPU when the model is GPU-only
    # (where none can be granted, admission fails the check with the reason: the model would never run here)
    task = {"renderer": CHECK_RENDERER, "name": "check", "input": check_input, "cpu": 1.0,
            "mem_mb": (2048 if folder else 512) + 3 * (size >> 20),
            "gpu": 1 if folder and add.device == "gpu" else 0}
    job = service.submit(NewJob(job_id=ids.viralsync_job_id(), dialect="admin", user_id=user["id"], kind="tasks",
                                payload={"tasks": [task]}, request={"models": "add", "name": add.name}))
    return json_response({"check": job["id"], "name": add.name, "sha256": digest, "size": size}, 202)


@post("/models/checks/{job_id:str}/install", status_code=200)
async def install_model(request: Request, service: JobService, admin: str, job_id: str) -> Response:
    """Keep the model its finished check accepted; 409 while the check runs, 422 with the reason when it
    refused the model."""
    job = service.get(job_id)
    tasks = service.tasks(job_id)
    if job["kind"] != "tasks" or len(tasks) != 1 or tasks[0]["renderer"] != CHECK_RENDERER:
        raise NotFound(f"job {job_id} is not a model check")
    if job["status"] in ("queued", "running"):
        raise ApplianceError(f"the check {job_id} is still {job['status']}", status=409, code="CONFLICT")
    report = loads(tasks[0]["result"], {}).get("meta") if job["status"] == "completed" else \
        {"ok": False, "error": f"the check did not finish ({job['status']}): {job['error']}"}
    entry = await asyncio.to_thread(_registry(request).install, loads(tasks[0]["input"], {}), report,
                                    request.app.state.core.artifacts)
    return json_response(public(entry))


@delete("/models/{name:str}", status_code=200)
async def remove_model(request: Request, admin: str, name: str) -> Response:
    return json_response(public(await asyncio.to_thread(_registry(request).remove, name)))


router = Router(path="/admin", route_handlers=[proof, show_job, live_playlist, live_segment, cancel_job, retry_job,
                                               submit_job, estimate, job_events, list_models, add_model,
                                               install_model, remove_model],
                dependencies={"admin": Provide(operator), "estimator": Provide(_estimator, sync_to_thread=False)},
                exception_handlers=handlers_for(error_response),
                request_max_body_size=MAX_BODY, include_in_schema=False)
