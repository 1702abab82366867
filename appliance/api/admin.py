"""Local admin API for the CLI (`appliance jobs cancel`, `appliance render`): bearer = data_dir/admin.token."""
from __future__ import annotations

import hmac
import json
import secrets
from pathlib import Path

from typing import TYPE_CHECKING

from litestar import Request, Response, Router, get, post

from appliance.store import events, jobs, users
from appliance.store.db import loads
from appliance.errors import ApplianceError
from appliance.ids import viralsync_job_id
from appliance.store.jobs import TaskDef
from appliance.delivery.httpfiles import json_response

if TYPE_CHECKING:
    from appliance.core import Core


def token_path(data_dir: Path) -> Path:
    return data_dir / "admin.token"


def ensure_token(data_dir: Path) -> str:
    path = token_path(data_dir)
    if not path.exists():
        path.write_text(secrets.token_hex(24))
        path.chmod(0o600)
    return path.read_text().strip()


def _authorised(request: Request) -> bool:
    core: Core = request.app.state.core
    sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(sent, ensure_token(core.settings.data_dir))


def public_job(job: dict, tasks: list[dict]) -> dict:
    return {"id": job["id"], "dialect": job["dialect"], "kind": job["kind"], "status": job["status"],
            "phase": job["phase"], "progress": job["progress"], "error": job["error"],
            "createdAt": job["created_at"], "completedAt": job["completed_at"], "durationMs": job["duration_ms"],
            "result": loads(job["result"]),
            "tasks": [{"id": t["id"], "name": t["name"], "renderer": t["renderer"], "status": t["status"],
                       "attempts": t["attempts"], "progress": t["progress"], "error": t["error"],
                       "cached": bool(t["cached"]), "log": t["log_path"], "startedAt": t["started_at"],
                       "finishedAt": t["finished_at"]} for t in tasks]}


@get("/jobs/{job_id:str}")
async def show_job(request: Request, job_id: str) -> Response:
    if not _authorised(request):
        return json_response({"error": "unauthorized"}, 401)
    core: Core = request.app.state.core
    job = jobs.get_job(core.db, job_id)
    if not job:
        return json_response({"error": "not found", "message": f"no job {job_id}"}, 404)
    return json_response(public_job(job, jobs.tasks_of(core.db, job_id)))


@post("/jobs/{job_id:str}/cancel", status_code=200)
async def cancel_job(request: Request, job_id: str) -> Response:
    if not _authorised(request):
        return json_response({"error": "unauthorized"}, 401)
    core: Core = request.app.state.core
    if not jobs.get_job(core.db, job_id):
        return json_response({"error": "not found", "message": f"no job {job_id}"}, 404)
    if not core.scheduler.cancel_job(job_id):
        return json_response({"error": "conflict", "message": f"job {job_id} has already ended"}, 409)
    return json_response(public_job(jobs.get_job(core.db, job_id), jobs.tasks_of(core.db, job_id)))


@post("/jobs", status_code=202)
async def submit_job(request: Request) -> Response:
    """Submit a job for a named user: {"user", "renderer", "input", "tasks"?} — used by `appliance render`
    and by tests that exercise the scheduler with test renderers."""
    if not _authorised(request):
        return json_response({"error": "unauthorized"}, 401)
    core: Core = request.app.state.core
    data = await request.json()
    user = users.get_user_by_name(core.db, data.get("user", "admin"))
    if not user:
        return json_response({"error": "not found", "message": f"no user {data.get('user')!r}"}, 404)
    if "movie" in data:  # `appliance render movie.json`: the ViralSync pipeline, for a named user
        from appliance.api.viralsync import parse_submission

        try:
            movie = parse_submission(json.dumps({"kind": "movie", "projectId": "cli", **data}).encode())
        except ApplianceError as exc:
            return json_response({"error": exc.code, "message": exc.message}, exc.status)
        movie.pop("user", None)
        job = request.app.state.viralsync.create(user["id"], None, movie)
        core.submitted()
        return json_response({"id": job["id"], "status": job["status"]}, 202)
    specs = data.get("tasks") or [{"renderer": data["renderer"], "input": data.get("input", {})}]
    tasks = [TaskDef(renderer=s["renderer"], input=s.get("input", {}), name=s.get("name", ""),
                     depends_on=s.get("depends_on", []), cpu=s.get("cpu", 1.0), mem_mb=s.get("mem_mb", 256),
                     gpu=s.get("gpu", 0)) for s in specs]
    job = jobs.create_job(core.db, job_id=viralsync_job_id(), dialect="admin", user_id=user["id"], key_id=None,
                          kind=data.get("kind", specs[-1]["renderer"]), request=data, tasks=tasks,
                          priority=int(data.get("priority", 0)))
    core.submitted()
    return json_response({"id": job["id"], "status": job["status"]}, 202)


@get("/jobs/{job_id:str}/events")
async def job_events(request: Request, job_id: str) -> Response:
    if not _authorised(request):
        return json_response({"error": "unauthorized"}, 401)
    core: Core = request.app.state.core
    return json_response(events.since(core.db, job_id, int(request.query_params.get("after", 0))))


router = Router(path="/admin", route_handlers=[show_job, cancel_job, submit_job, job_events], include_in_schema=False)
