"""ViralSync's shapes of a job: the parent job object, its child jobs (one per scene task and the assemble task,
api-research.md §2.6), and the event body that SSE and webhooks share (§2.8).

Public status and phase follow the render pipeline (§2.7): planning and dispatching are `running`; while scenes
render the parent is `waiting` (phase `rendering`); assembling is `running`; a finished job is `done` with phase
`done`; failed and cancelled jobs have no phase.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from appliance.services.jobs import JobService
from appliance.store import jobs
from appliance.store.db import loads, now_iso
from appliance.store.rows import JobRow, TaskRow, TaskState

TERMINAL_EVENTS = {"completed": "done", "failed": "failed", "cancelled": "cancelled"}
CHILD_TYPES = {"movie.scene": "render.scene", "movie.assemble": "render.assemble"}
TASK_STATUS = {"queued": "queued", "running": "running", "done": "done", "failed": "failed", "cancelled": "cancelled"}


# ---- children ------------------------------------------------------------------------------------
def child_id(job_id: str, task: TaskState) -> str:
    """scene_job_<12hex>_001 for the first scene, assemble_job_<12hex> for the assembly."""
    if task["renderer"] == "movie.assemble":
        return f"assemble_{job_id}"
    return f"scene_{job_id}_{task['idx'] + 1:03d}"


def parse_child_id(child: str) -> tuple[str, str, int] | None:
    """(parent job id, renderer, scene index) of a child id, or None when it is not one."""
    if child.startswith("assemble_job_"):
        return child[len("assemble_"):], "movie.assemble", -1
    if child.startswith("scene_job_"):
        parent, _, number = child[len("scene_"):].rpartition("_")
        if parent and number.isascii() and number.isdigit() and len(number) >= 3 and int(number) >= 1:
            return parent, "movie.scene", int(number) - 1
    return None


def find_child(tasks: Sequence[TaskRow], renderer: str, idx: int) -> TaskRow | None:
    return next((t for t in tasks if t["renderer"] == renderer and (idx < 0 or t["idx"] == idx)), None)


def children(tasks: Sequence[TaskState], job_id: str | None = None) -> dict:
    def count(status: str) -> int:
        return sum(t["status"] == status for t in tasks)

    out: dict = {"total": len(tasks), "succeeded": count("done"), "running": count("running"),
           "queued": count("queued"), "failed": count("failed")}
    if job_id is not None:
        out["jobIds"] = [child_id(job_id, t) for t in tasks if t["renderer"] in CHILD_TYPES]
    return out


def child_object(job: Mapping[str, Any], task: TaskState) -> dict:
    status = TASK_STATUS.get(task["status"], "queued")
    payload = {"sceneId": task["name"]} if task["renderer"] == "movie.scene" else {}
    return {"jobId": child_id(job["id"], task), "type": CHILD_TYPES[task["renderer"]], "status": status,
            "phase": None, "progress": 1.0 if status == "done" else round(task["progress"] or 0.0, 4),
            "parentJobId": job["id"], "outputUrl": None, "error": task["error"] if status == "failed" else None,
            "mediaData": None, "payload": payload, "children": None, "createdAt": task["created_at"],
            "updatedAt": task["finished_at"] or task["started_at"] or task["created_at"]}


# ---- the parent ----------------------------------------------------------------------------------
def public_state(status: str, phase: str | None, counts: dict) -> tuple[str, str | None]:
    """(status, phase) from the core's status and phase and the task counts (total, done, queued): what GET
    answers now and what each stored event recorded. A movie's assemble task waits for every scene, so scenes
    are left while fewer than all but one task are done."""
    if status == "completed":
        return "done", "done"
    if status in TERMINAL_EVENTS:
        return TERMINAL_EVENTS[status], None
    if phase in ("planning", "dispatching"):
        return "running", phase
    if status == "queued":
        return "queued", None
    if counts["total"] and counts["done"] < counts["total"] - 1:
        return "waiting", "rendering"
    return "running", "assembling"


def counts_of(tasks: Sequence[TaskState]) -> dict[str, int]:
    return {"total": len(tasks), **{s: sum(t["status"] == s for t in tasks)
                                    for s in ("done", "running", "queued", "failed")}}


def job_object(service: JobService, job: JobRow, tasks: Sequence[TaskState] | None = None) -> dict:
    tasks = service.tasks(job["id"]) if tasks is None else tasks
    status, phase = public_state(job["status"], job["phase"], counts_of(tasks))
    result = loads(job["result"]) or {}
    done = status == "done"
    expired = done and bool(job["expired_at"])  # the retention sweep removed the files: no dead URLs
    meta = result.get("meta", {})
    return {"jobId": job["id"], "type": "render", "status": status, "phase": phase,
            "progress": 1.0 if done else round(job["progress"] or 0.0, 4), "parentJobId": None,
            "outputUrl": f"{service.settings.base_url}/outputs/{job['id']}/output.mp4" if done and not expired
            else None,
            "error": _error(job, tasks) if status == "failed" else
            f"OUTPUT_EXPIRED: {service.expired_message(job)}" if expired else None,
            "mediaData": {k: meta.get(k) for k in ("duration", "width", "height", "fileSize")} if done else None,
            "payload": {**loads(job["request"]), "movie": jobs.payload_of(job).get("movie")},
            "children": children(tasks, job["id"]), "createdAt": job["created_at"], "updatedAt": job["updated_at"]}


def _error(job: JobRow, tasks: Sequence[TaskState]) -> str | None:
    failed = next((t for t in tasks if t["status"] == "failed" and t["renderer"] == "movie.scene"), None)
    if failed:
        return f"SCENE_RENDER_FAILED: {failed['error']} on {failed['name']}"
    return job["error"]


# ---- listing -------------------------------------------------------------------------------------
PARENT_TYPES = (None, "render", "render.movie")
CHILD_RENDERERS = {"render.scene": "movie.scene", "render.assemble": "movie.assemble"}
CHILD_STATUS = {"queued": "queued", "running": "running", "done": "done", "failed": "failed",
                "cancelled": "cancelled"}


def list_page(service: JobService, user_id: str, type_: str | None, status: str | None,
              before: tuple[str, str] | None, limit: int) -> tuple[Sequence[Mapping[str, Any]], list[dict]]:
    """(rows with created_at and id for the cursor, their objects): parents (type render, the default)
    or one kind of child job (render.scene, render.assemble), filtered and paged in SQL; a type that does not
    exist here lists nothing."""
    if type_ in PARENT_TYPES:
        parents = jobs.list_viralsync(service.db, user_id, status, before, limit)
        tasks = jobs.tasks_of_jobs(service.db, [r["id"] for r in parents])
        return parents, [job_object(service, r, tasks[r["id"]]) for r in parents]
    if type_ not in CHILD_RENDERERS or (status and status not in CHILD_STATUS):
        return [], []
    rows = jobs.list_child_tasks(service.db, user_id, "viralsync", CHILD_RENDERERS[type_],
                                 CHILD_STATUS.get(status or ""), before, limit)
    of_job = {r["job_id"]: jobs.get_job(service.db, r["job_id"]) for r in rows}
    return rows, [child_object(of_job[r["job_id"]] or {"id": r["job_id"]}, r) for r in rows]


# ---- events --------------------------------------------------------------------------------------
def event_body(service: JobService, job: JobRow, event_type: str, recorded: dict | None = None) -> tuple[str, dict]:
    """(event name, JSON) shared by SSE and webhooks. ``recorded``: the state a stored event recorded (status,
    phase, progress, tasks); the body then says what the job was at that event, not what it is now."""
    tasks = service.tasks(job["id"])
    obj = job_object(service, job, tasks)
    name = TERMINAL_EVENTS.get(job["status"], "progress") if event_type != "progress" else "progress"
    status, phase, progress, counts = obj["status"], obj["phase"], obj["progress"], obj["children"]
    if recorded and "status" in recorded:  # the job's first event records its status only: no task yet
        t = recorded.get("tasks") or {"total": 0, "done": 0, "running": 0, "queued": 0, "failed": 0}
        status, phase = public_state(recorded["status"], recorded.get("phase"), t)
        name = TERMINAL_EVENTS.get(recorded["status"], "progress")
        progress = 1.0 if status == "done" else round(recorded.get("progress") or 0.0, 4)
        counts = {"total": t["total"], "succeeded": t["done"], "running": t["running"], "queued": t["queued"],
                  "failed": t["failed"]}
    body = {"jobId": obj["jobId"], "status": status, "phase": phase, "progress": progress,
            "outputUrl": obj["outputUrl"] if name == "done" else None, "timestamp": now_iso()}
    if name == "progress":
        body["children"] = {k: counts[k] for k in ("total", "succeeded", "running", "queued", "failed")}
    if name == "done":
        body["mediaData"] = obj["mediaData"]
    if name == "failed":
        body["error"] = obj["error"]
    return name, body
