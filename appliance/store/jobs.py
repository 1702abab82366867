"""Jobs and their tasks (a DAG): creation in one transaction, state changes, queries.

Core job status: queued → running → completed | failed | cancelled, and before queued, for a job opened to collect
its inputs (RenderCAD's uploads), uploading: no tasks, no reserve, no payload until it is submitted. Task status:
queued → running → done | failed | cancelled. Dialect adapters translate these into their own words.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import sqlite_utils

from appliance.errors import Conflict
from appliance.store import ids, ledger
from appliance.store.db import dumps, loads, now_iso, one, parse_iso, rows, transaction
from appliance.store.rows import JobRow, ReadyTask, TaskRow, TaskState, TaskWork

# A task's expected CPU work relative to its job's other tasks, in its input (a movie's scene tasks: frames, more for
# video). It weighs the task in its job's progress (``job_progress``) and sets its CPU weight (scheduler.py).
WORK_KEY = "_work"

TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class TaskDef:
    renderer: str
    input: dict[str, Any]  # JSON: what the renderer is given
    name: str = ""
    depends_on: list[int] = field(default_factory=list)  # indexes of earlier tasks of the same job
    cpu: float = 1.0
    mem_mb: int = 512
    gpu: int = 0
    cache_key: str | None = None


def create_job(db: sqlite_utils.Database, *, job_id: str, dialect: str, user_id: str, key_id: str | None,
               kind: str, request: dict[str, Any], tasks: list[TaskDef], metadata: Any = None,
               webhook_url: str | None = None, credit_rate: float | None = None, reserve: int = 0, priority: int = 0,
               max_parallel: int | None = None, phase: str = "queued", payload: dict[str, Any] | None = None,
               charge: int | None = None, status: str = "queued") -> JobRow:
    """Create the job and its tasks and reserve credits, all in one transaction (402 leaves nothing).
    ``status``: queued, or uploading for a job opened with no tasks (``submit_opened`` queues it)."""
    now = now_iso()
    job = {"id": job_id, "dialect": dialect, "user_id": user_id, "key_id": key_id, "kind": kind,
           "status": status, "phase": phase, "progress": 0.0, "priority": priority,
           "max_parallel": max_parallel,
           "request": dumps(request), "payload": dumps(payload) if payload is not None else None,
           "metadata": dumps(metadata), "webhook_url": webhook_url,
           "credit_rate": credit_rate, "charge": charge, "created_at": now, "updated_at": now}
    with transaction(db, durable=True):  # the 202 and the reserve the client is told of survive a power loss
        db.table("jobs").insert(job)
        for idx, t in enumerate(tasks):
            db.table("tasks").insert(_task_row(job_id, idx, t, now))
        if reserve:
            ledger.reserve(db, user_id, job_id, reserve)
        db.table("events").insert({"job_id": job_id, "type": status, "created_at": now,
                                   "data": dumps({"status": status, "phase": phase, "progress": 0.0})})
    return require_job(db, job_id)


def submit_opened(db: sqlite_utils.Database, job_id: str, *, tasks: list[TaskDef], payload: dict[str, Any],
                  request: dict[str, Any], reserve: int, charge: int | None, phase: str) -> JobRow:
    """An opened job submitted: queued with its payload, request, price and tasks, its credits reserved and its
    queued event recorded, all in one transaction, so a refusal leaves it uploading as it was (the client may
    finalize again). Conflict when it is not uploading any more (submitted already, cancelled or failed);
    InsufficientCredits when the reserve cannot be made."""
    now = now_iso()
    with transaction(db, durable=True):  # as create_job: the accepted job and its reserve survive a power loss
        job = get_job(db, job_id)
        if job is None or job["status"] != "uploading":
            raise Conflict(f"job {job_id} is not collecting its inputs any more")
        if reserve:
            ledger.reserve(db, job["user_id"], job_id, reserve)
        db.table("jobs").update(job_id, {"status": "queued", "phase": phase, "payload": dumps(payload),
                                         "request": dumps(request), "charge": charge, "updated_at": now})
        for idx, t in enumerate(tasks):
            db.table("tasks").insert(_task_row(job_id, idx, t, now))
        db.table("events").insert({"job_id": job_id, "type": "queued", "created_at": now,
                                   "data": dumps({"status": "queued", "phase": phase, "progress": 0.0})})
    return require_job(db, job_id)


def disk_by_user(db: sqlite_utils.Database) -> dict[str, int]:
    """user id -> bytes of the outputs of their completed jobs that are still on disk."""
    return {row[0]: int(row[1] or 0) for row in db.execute(
        "SELECT user_id, sum(output_bytes) FROM jobs WHERE status = 'completed' AND expired_at IS NULL "
        "AND deleted_at IS NULL GROUP BY user_id")}


def failed_since(db: sqlite_utils.Database, user_id: str, since: str) -> int:
    """How many of the user's jobs created since ``since`` (ISO) failed (the (user_id, created_at) index). A job
    failed while it collected its inputs (an upload that is no image: no payload yet) never ran: not counted."""
    row = db.execute("SELECT count(*) FROM jobs WHERE user_id = ? AND created_at >= ? AND status = 'failed' "
                     "AND payload IS NOT NULL", [user_id, since]).fetchone()
    return int(row[0])


def _task_row(job_id: str, idx: int, t: TaskDef, now: str) -> dict[str, Any]:
    return {"id": ids.task_id(job_id, idx), "job_id": job_id, "idx": idx, "name": t.name or f"task{idx}",
            "renderer": t.renderer, "input": dumps(t.input),
            "depends_on": dumps([ids.task_id(job_id, d) for d in t.depends_on]),
            "cpu": t.cpu, "mem_mb": t.mem_mb, "gpu": t.gpu, "status": "queued", "attempts": 0,
            "cache_key": t.cache_key, "created_at": now}


def add_tasks_unless_ended(db: sqlite_utils.Database, job_id: str, tasks: list[TaskDef]) -> bool:
    """Tasks planned after the job was created (a movie, once its media is fetched); False, adding nothing,
    when the job ended meanwhile (cancelled while planning)."""
    now = now_iso()
    with transaction(db):
        job = get_job(db, job_id)
        if job is None or job["status"] in TERMINAL:
            return False
        for idx, t in enumerate(tasks):
            db.table("tasks").insert(_task_row(job_id, idx, t, now))
        db.table("jobs").update(job_id, {"phase": "rendering", "updated_at": now})
    return True


def payload_of(job: JobRow) -> dict[str, Any]:
    """The pipeline input the job was submitted with."""
    return loads(job.get("payload"), {})


def clone_job(db: sqlite_utils.Database, job: JobRow, new_id: str) -> JobRow:
    """A new queued job with the same request and tasks (for retry); reserves what the original reserved."""
    tasks = [TaskDef(renderer=t["renderer"], input=loads(t["input"]), name=t["name"], cpu=t["cpu"],
                     mem_mb=t["mem_mb"], gpu=t["gpu"] or 0, cache_key=t["cache_key"],
                     depends_on=[int(d.rsplit(".t", 1)[1]) for d in loads(t["depends_on"], [])])
             for t in tasks_of(db, job["id"])]
    _relink(tasks, job["id"], new_id)
    return create_job(db, job_id=new_id, dialect=job["dialect"], user_id=job["user_id"], key_id=job["key_id"],
                      kind=job["kind"], request=loads(job["request"]), tasks=tasks, metadata=loads(job["metadata"]),
                      webhook_url=job["webhook_url"], credit_rate=job["credit_rate"], charge=job.get("charge"),
                      reserve=ledger.reserved(db, job["id"]), priority=job["priority"],
                      max_parallel=job["max_parallel"], phase="queued" if tasks else "planning",
                      payload=payload_of(job))


def _relink(tasks: list[TaskDef], old_id: str, new_id: str) -> None:
    """Inputs that name a task of the old job name the same task of the new one."""
    for t in tasks:
        for link in t.input.get("link_inputs", []):
            link["task"] = new_id + link["task"][len(old_id):]


def get_job(db: sqlite_utils.Database, job_id: str) -> JobRow | None:
    return cast("JobRow | None", one(db, "select * from jobs where id = ? and deleted_at is null", (job_id,)))


def require_job(db: sqlite_utils.Database, job_id: str) -> JobRow:
    """The job, which the caller knows exists (the scheduler, about its own jobs)."""
    job = get_job(db, job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    return job


def require_task(db: sqlite_utils.Database, task_id: str) -> TaskRow:
    task = get_task(db, task_id)
    if task is None:
        raise LookupError(f"no task {task_id}")
    return task


def get_user_job(db: sqlite_utils.Database, job_id: str, user_id: str,
                 dialect: str | None = None) -> JobRow | None:
    job = get_job(db, job_id)
    if not job or job["user_id"] != user_id or (dialect and job["dialect"] != dialect):
        return None
    return job


def list_jobs(db: sqlite_utils.Database, *, user_id: str | None = None, dialect: str | None = None,
              status: str | None = None, before: tuple[str, str] | None = None, limit: int = 50) -> list[JobRow]:
    where, params = ["deleted_at is null"], []
    for col, val in (("user_id", user_id), ("dialect", dialect), ("status", status)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    if before:  # keyset pagination: (created_at, id) strictly older than the cursor (a row value: an index range)
        where.append("(created_at, id) < (?, ?)")
        params += [before[0], before[1]]
    sql = f"select * from jobs where {' and '.join(where)} order by created_at desc, id desc limit ?"
    return cast("list[JobRow]", rows(db, sql, (*params, limit)))


# ViralSync's public statuses as conditions on a job row: queued/running/waiting depend on the job's phase and on
# whether a scene task is still unfinished (api-research.md §2.7), all of it in SQL so a filtered page is one query.
_EARLY = "phase in ('planning', 'dispatching')"
_SCENES_LEFT = ("exists (select 1 from tasks t where t.job_id = jobs.id and t.renderer = 'movie.scene' "
                "and t.status != 'done')")
VIRALSYNC_STATUS_SQL = {
    "done": "status = 'completed'", "failed": "status = 'failed'", "cancelled": "status = 'cancelled'",
    "queued": f"status = 'queued' and not {_EARLY}",
    "waiting": f"status = 'running' and not {_EARLY} and {_SCENES_LEFT}",
    "running": f"status in ('queued', 'running') and ({_EARLY} or (status = 'running' and not {_SCENES_LEFT}))",
}


def list_viralsync(db: sqlite_utils.Database, user_id: str, public_status: str | None,
                   before: tuple[str, str] | None, limit: int) -> list[JobRow]:
    """A page of the user's ViralSync jobs, newest first, filtered by public status (indexes of m007)."""
    where, params = ["deleted_at is null", "user_id = ?", "dialect = 'viralsync'"], [user_id]
    if public_status:
        where.append(f"({VIRALSYNC_STATUS_SQL[public_status]})")
    if before:
        where.append("(created_at, id) < (?, ?)")
        params += [before[0], before[1]]
    # a status filter reads the status index (few active jobs among 100,000 finished ones: no long scan)
    index = "idx_jobs_listing_status" if public_status else "idx_jobs_listing"
    sql = (f"select * from jobs indexed by {index} where {' and '.join(where)} "
           "order by created_at desc, id desc limit ?")
    return cast("list[JobRow]", rows(db, sql, (*params, limit)))


_TASK_STATE = ("id, job_id, idx, name, renderer, status, progress, error, cached, created_at, started_at, "
               "finished_at")


def list_child_tasks(db: sqlite_utils.Database, user_id: str, dialect: str, renderer: str, task_status: str | None,
                     before: tuple[str, str] | None, limit: int) -> list[TaskState]:
    """A page of the user's tasks of one renderer (a dialect's child jobs), newest first."""
    where = ["j.user_id = ?", "j.dialect = ?", "j.deleted_at is null", "t.renderer = ?"]
    params: list[Any] = [user_id, dialect, renderer]
    if task_status:
        where.append("t.status = ?")
        params.append(task_status)
    if before:
        where.append("(t.created_at, t.id) < (?, ?)")
        params += [before[0], before[1]]
    columns = ", ".join(f"t.{c.strip()}" for c in _TASK_STATE.split(","))
    sql = (f"select {columns} from tasks t join jobs j on j.id = t.job_id where {' and '.join(where)} "
           "order by t.created_at desc, t.id desc limit ?")
    return cast("list[TaskState]", rows(db, sql, (*params, limit)))


def count_active(db: sqlite_utils.Database, user_id: str, dialect: str) -> int:
    got = one(db, "select count(*) as n from jobs where user_id = ? and dialect = ? and deleted_at is null "
                  "and status in ('queued', 'running')", (user_id, dialect))
    return int(got["n"]) if got else 0


def tasks_of_jobs(db: sqlite_utils.Database, job_ids: list[str]) -> dict[str, list[TaskState]]:
    """The tasks of several jobs in one query (a listing's page), by job id; their state, not their inputs (a
    scene's input is its whole JSON)."""
    out: dict[str, list[TaskState]] = {job_id: [] for job_id in job_ids}
    if job_ids:
        marks = ", ".join("?" * len(job_ids))
        for t in rows(db, f"select {_TASK_STATE} from tasks where job_id in ({marks}) order by job_id, idx",
                      tuple(job_ids)):
            out[t["job_id"]].append(cast(TaskState, t))
    return out


def task_counts(db: sqlite_utils.Database, job_id: str) -> dict[str, int]:
    """How many of the job's tasks are in each state (what a job event records beside its status)."""
    got = {r["status"]: r["n"] for r in rows(db, "select status, count(*) as n from tasks where job_id = ? "
                                                 "group by status", (job_id,))}
    return {"total": sum(got.values()), **{s: got.get(s, 0) for s in ("done", "running", "queued", "failed")}}


def tasks_of(db: sqlite_utils.Database, job_id: str) -> list[TaskRow]:
    return cast("list[TaskRow]", rows(db, "select * from tasks where job_id = ? order by idx", (job_id,)))


def get_task(db: sqlite_utils.Database, task_id: str) -> TaskRow | None:
    return cast("TaskRow | None", one(db, "select * from tasks where id = ?", (task_id,)))


def ready_tasks(db: sqlite_utils.Database) -> list[ReadyTask]:
    """Queued tasks of live jobs whose dependencies are all done, with their job's user and priority."""
    candidates = rows(db, """
        select t.*, j.user_id, j.priority, j.max_parallel, j.created_at as job_created_at from tasks t
        join jobs j on j.id = t.job_id
        where t.status = 'queued' and j.status in ('queued', 'running')
        order by j.priority desc, j.created_at, t.idx""")
    # from the few live jobs to their done tasks (cross join: that order), never a scan of every done task ever
    done = {r["id"] for r in rows(db, """select t.id from jobs j cross join tasks t on t.job_id = j.id
        where j.status in ('queued', 'running') and t.status = 'done'""")}
    return [cast(ReadyTask, t) for t in candidates if all(d in done for d in loads(t["depends_on"], []))]


def update_task(db: sqlite_utils.Database, task_id: str, **values: Any) -> None:
    with transaction(db):
        db.table("tasks").update(task_id, values)


def update_job(db: sqlite_utils.Database, job_id: str, **values: Any) -> None:
    values["updated_at"] = now_iso()
    with transaction(db):
        db.table("jobs").update(job_id, values)


def running_tasks(db: sqlite_utils.Database) -> list[TaskRow]:
    return cast("list[TaskRow]", rows(db, "select * from tasks where status = 'running'"))


def unfinished_jobs(db: sqlite_utils.Database) -> list[JobRow]:
    return cast("list[JobRow]", rows(db, "select * from jobs where status not in ('completed', 'failed', 'cancelled')"))


def queue_counts(db: sqlite_utils.Database) -> dict[str, int]:
    got = {r["status"]: r["n"] for r in rows(db, "select status, count(*) as n from tasks "
                                                 "where status in ('queued', 'running') group by status")}
    return {"queued": got.get("queued", 0), "running": got.get("running", 0)}


def render_ms(tasks: Sequence[TaskState]) -> int:
    """Time spent by the attempts that produced the tasks' results (each attempt resets started_at); a cached
    task took no time."""
    total = 0.0
    for t in tasks:
        if t["started_at"] and t["finished_at"] and not t["cached"]:
            total += parse_iso(t["finished_at"]) - parse_iso(t["started_at"])
    return int(total * 1000)


def task_works(db: sqlite_utils.Database, job_id: str) -> list[TaskWork]:
    """The job's tasks with their expected work (``WORK_KEY``), in order; on every progress tick and task start."""
    return cast("list[TaskWork]", rows(db, f"""
        select id, renderer, status, progress, depends_on,
               case when json_valid(input) then json_extract(input, '$.{WORK_KEY}') end as work
        from tasks where job_id = ? order by idx""", (job_id,)))


def known_work(value: object) -> float | None:
    """A task's expected work (``WORK_KEY``) when it is a positive number, else None (no part in weights or slack)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return None
    return float(value)


def work_weights(works: Sequence[object]) -> list[float]:
    """Each task's share of its job's progress, from its expected work (``WORK_KEY``, where its pipeline gave one):
    that work over the mean of those its job gives; 1.0 for a task without one (``known_work``).
    A job whose tasks give none, or all the same, is a plain mean."""
    known = [known_work(w) for w in works]
    given = [w for w in known if w is not None]
    mean = sum(given) / len(given) if given else 1.0
    return [1.0 if w is None else w / mean for w in known]


def job_progress(tasks: Sequence[TaskWork]) -> float:
    """The job's progress (``task_works``): its tasks' progress weighted by their expected work, so that a movie's
    short text scene, done first, does not make a third of a job whose 6 s video scene has barely begun."""
    weights = work_weights([t["work"] for t in tasks])
    return sum(w * (t["progress"] or 0.0) for w, t in zip(weights, tasks, strict=True)) / max(1e-9, sum(weights))


def mark_deleted(db: sqlite_utils.Database, job_id: str) -> None:
    update_job(db, job_id, deleted_at=now_iso())


def mark_expired(db: sqlite_utils.Database, job_ids: list[str]) -> None:
    now = now_iso()
    with transaction(db):
        for job_id in job_ids:
            db.execute("update jobs set expired_at = coalesce(expired_at, ?) where id = ?", (now, job_id))


def prune_history(db: sqlite_utils.Database, before: str) -> int:
    """Events and webhook deliveries of jobs that ended before ``before`` (an ISO time): the tables that would
    otherwise grow with every job ever run. Returns the rows removed."""
    with transaction(db):
        ended = "select id from jobs where status in ('completed', 'failed', 'cancelled') and completed_at < ?"
        removed = db.execute(f"delete from events where job_id in ({ended})", (before,)).rowcount
        removed += db.execute(f"delete from webhook_deliveries where status != 'pending' and job_id in ({ended})",
                              (before,)).rowcount
    return removed


def render_minutes(db: sqlite_utils.Database, user_id: str, since_iso: str) -> float:
    """ViralSync metering: output duration / 60 of the user's completed movie jobs since a time."""
    got = one(db, """select coalesce(sum(json_extract(result, '$.meta.duration')), 0) as seconds from jobs
                     where user_id = ? and dialect = 'viralsync' and status = 'completed' and completed_at >= ?""",
              (user_id, since_iso))
    return round(float(got["seconds"]) / 60, 4) if got else 0.0


def reserved_minutes(db: sqlite_utils.Database, user_id: str, since_iso: str) -> float:
    """ViralSync minutes held by the user's unfinished movie jobs created since a time (their total scene
    duration, recorded at submit as metadata.reserveMinutes): released when the job ends."""
    got = one(db, """select coalesce(sum(json_extract(metadata, '$.reserveMinutes')), 0) as minutes from jobs
                     where user_id = ? and dialect = 'viralsync' and status in ('queued', 'running')
                     and deleted_at is null and created_at >= ?""", (user_id, since_iso))
    return float(got["minutes"]) if got else 0.0


def end_job(db: sqlite_utils.Database, job_id: str, status: str, error: str, duration_ms: int) -> None:
    """Failed or cancelled: the job and every task not yet finished, in one transaction."""
    now = now_iso()
    with transaction(db):
        db.execute("update tasks set status = 'cancelled', finished_at = ? where job_id = ? "
                   "and status in ('queued', 'running')", (now, job_id))
        db.table("jobs").update(job_id, {"status": status, "phase": status, "error": error, "completed_at": now,
                                   "updated_at": now, "duration_ms": duration_ms})


def set_progress(db: sqlite_utils.Database, fractions: dict[str, float]) -> None:
    with transaction(db):
        for task_id, fraction in fractions.items():
            db.execute("update tasks set progress = ? where id = ? and status = 'running'", (fraction, task_id))
