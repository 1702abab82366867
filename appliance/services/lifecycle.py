"""What happens to a job when its tasks end: its outputs published, its credits settled or refunded, its events
recorded and streamed, its dialect told. The scheduler (runtime/scheduler.py) only schedules: it tells this
lifecycle that a job started, that a task is done or failed, and that progress moved; everything a job's end
means to its owner happens here.

Runs on the server's event loop, like the scheduler; terminal states are final (a cancelled job never turns
failed, nor sends a second webhook).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import sqlite_utils

from appliance.datadir import DataDir
from appliance.delivery.sse import Hub
from appliance.runtime.artifacts import Artifacts
from appliance.runtime.scheduler import JobListener
from appliance.store import events, jobs, ledger
from appliance.store.db import dumps, loads, now_iso, parse_iso
from appliance.store.rows import JobRow, TaskRow

log = logging.getLogger("appliance.lifecycle")


class Tasks(Protocol):
    """The scheduler, as the lifecycle needs it: stop a job's running tasks, look again at the queue."""

    def stop_job_tasks(self, job_id: str, reason: str) -> None: ...

    def wake(self) -> None: ...


class JobLifecycle:
    def __init__(self, db: sqlite_utils.Database, hub: Hub, outputs: DataDir, artifacts: Artifacts,
                 tasks: Tasks) -> None:
        self.db, self.hub, self.outputs, self.artifacts, self.tasks = db, hub, outputs, artifacts, tasks
        self.listeners: dict[str, JobListener] = {}  # dialect -> its listener (JobService.listen)

    # ---- what the scheduler reports ------------------------------------------------------------------------------
    def started(self, job: JobRow, *, announce: bool = True) -> None:
        """A queued job's first task started; ``announce``: say so (not for a task answered from the cache,
        whose job ends at once)."""
        if job["status"] == "queued":
            jobs.update_job(self.db, job["id"], status="running", phase="rendering", started_at=now_iso())
            if announce:
                self.emit(job["id"], "running")

    def task_done(self, task: TaskRow, result: dict[str, Any]) -> None:
        """A task is done (its row says so): the job completes with its last task's result."""
        if all(t["status"] == "done" for t in jobs.tasks_of(self.db, task["job_id"])):
            self.complete(task["job_id"], result)
        else:
            self.tasks.wake()

    def task_failed(self, task: TaskRow, error: str) -> None:
        """A task failed for good (its row says so): the job fails, with the task's name when it has several."""
        job = jobs.require_job(self.db, task["job_id"])
        if job["status"] not in jobs.TERMINAL:
            multi = len(jobs.tasks_of(self.db, job["id"])) > 1
            self.fail(job["id"], f"{task['name']}: {error}" if multi else error)

    def progressed(self, job_id: str) -> None:
        """Its tasks' progress moved (coalesced by the scheduler): the job's mean, streamed."""
        job = jobs.get_job(self.db, job_id)
        if job and job["status"] == "running":
            jobs.update_job(self.db, job_id, progress=round(jobs.job_progress(jobs.task_works(self.db, job_id)), 4))
            self.emit(job_id, "progress")

    # ---- ends ---------------------------------------------------------------------------------------------------
    def complete(self, job_id: str, result: dict[str, Any]) -> None:
        job = jobs.get_job(self.db, job_id)
        if job is None or job["status"] in jobs.TERMINAL:
            return
        try:
            self.outputs.publish(self.artifacts, result, job_id)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            self.fail(job_id, f"could not store the output: {exc}")
            return
        finished = time.time()
        duration_ms = int((finished - parse_iso(job["started_at"] or job["created_at"])) * 1000)
        if job["credit_rate"] is not None:  # billed: the attempts that produced the output, not the downtime
            duration_ms = min(duration_ms, jobs.render_ms(jobs.tasks_of(self.db, job_id)))
        cost = _cost(job, duration_ms)
        if cost is not None and not ledger.settle(self.db, job["user_id"], job_id, cost):
            self.outputs.remove_job(job_id)
            self.fail(job_id, f"Insufficient credits to settle the render cost ({cost} credits); "
                              "the reserve was refunded")
            return
        jobs.update_job(self.db, job_id, status="completed", phase="done", progress=1.0, result=dumps(result),
                        duration_ms=duration_ms, completed_at=now_iso(finished),
                        output_bytes=self.outputs.size(job_id))
        self._end(job_id, "completed")

    def fail(self, job_id: str, error: str) -> None:
        self._terminate(job_id, "failed", error)

    def cancel(self, job_id: str) -> bool:
        job = jobs.get_job(self.db, job_id)
        if not job or job["status"] in jobs.TERMINAL:
            return False
        self._terminate(job_id, "cancelled", "cancelled")
        return True

    def _terminate(self, job_id: str, status: str, error: str) -> None:
        job = jobs.get_job(self.db, job_id)
        if job is None or job["status"] in jobs.TERMINAL:
            return  # terminal states are final: a cancelled job never turns failed (nor sends a second webhook)
        started = job["started_at"] or job["created_at"]
        jobs.end_job(self.db, job_id, status, error, int((time.time() - parse_iso(started)) * 1000))
        self.tasks.stop_job_tasks(job_id, status)
        ledger.refund(self.db, job["user_id"], job_id)
        self._end(job_id, status)

    def _end(self, job_id: str, status: str) -> None:
        self.emit(job_id, status)
        self.tasks.wake()

    def emit(self, job_id: str, event_type: str) -> None:
        """Record the job's event, stream it, and tell its dialect."""
        job = jobs.require_job(self.db, job_id)
        event = events.record(self.db, job_id, event_type, {"status": job["status"], "phase": job["phase"],
                                                             "progress": job["progress"],
                                                             "tasks": jobs.task_counts(self.db, job_id)})
        self.hub.publish(job_id, event)
        listener = self.listeners.get(job["dialect"])
        if listener:
            try:
                listener(job, event_type)
            except Exception:
                log.exception("listener for %s failed on %s", job["dialect"], job_id)

    # ---- after a crash ------------------------------------------------------------------------------------------
    def recover(self) -> None:
        """After the scheduler re-queued (or failed) the tasks a crash left running: complete the jobs whose
        tasks are all done, and close every reservation of a job that ended."""
        for job in jobs.unfinished_jobs(self.db):
            job_tasks = jobs.tasks_of(self.db, job["id"])
            if job_tasks and all(t["status"] == "done" for t in job_tasks):
                self.complete(job["id"], loads(job_tasks[-1]["result"], {}))
        for job_id in ledger.open_reservations(self.db):
            owner = jobs.get_job(self.db, job_id)
            if owner is None or owner["status"] in jobs.TERMINAL:
                ledger.refund(self.db, owner["user_id"] if owner else "", job_id)


def _cost(job: JobRow, duration_ms: int) -> int | None:
    """Per render-second (Kodisc), a fixed price (RenderCAD tokens), or nothing to settle."""
    if job["credit_rate"] is not None:
        return ledger.cost_for(duration_ms, job["credit_rate"])
    charge: int | None = job.get("charge")
    return charge
