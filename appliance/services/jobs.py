"""The one door for jobs: submit, cancel, delete, retry, and what a job's owner may read of them.

Every entry point — the three dialects, the admin API and CLI, later the dashboard and the hot folder — starts
and stops work here and nowhere else. A dialect validates its request and says which pipeline plans it; the
service creates the job (tasks, credit reserve and first event in one transaction) and wakes the scheduler. A job
whose inputs arrive after it exists (RenderCAD's uploads) is opened first (phase ``uploading``: no tasks, no
reserve) and finalized once they are in; cancelled or failed meanwhile, it ends like any job.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from appliance.datadir import DataDir
from appliance.delivery.webhooks import Deliverer
from appliance.errors import ApplianceError, Conflict, NotFound, Unavailable, one_line
from appliance.runtime.resources import Capacity
from appliance.runtime.scheduler import JobListener, Scheduler
from appliance.services.lifecycle import JobLifecycle
from appliance.services.pipelines import Pipeline
from appliance.settings import Settings
from appliance.store import events, ids, jobs
from appliance.store.db import now_iso
from appliance.store.jobs import TaskDef
from appliance.store.rows import JobRow, TaskRow

log = logging.getLogger("appliance.jobs")
TERMINAL = jobs.TERMINAL


class RetryHook(Protocol):
    """What a dialect with job records of its own does when the operator retries one of its jobs."""

    def new_id(self, job: JobRow) -> str: ...

    def cloned(self, old: JobRow, new: JobRow) -> None: ...


@dataclass
class NewJob:
    """What an entry point asks for. ``payload`` is the pipeline's validated input; ``request`` is what the
    job shows back to its owner."""
    job_id: str
    dialect: str
    user_id: str
    kind: str  # the pipeline: manim | movie | tasks | …
    payload: dict[str, Any]
    request: dict[str, Any]
    key_id: str | None = None
    metadata: Any = None
    webhook_url: str | None = None
    credit_rate: float | None = None  # credits per render-second, settled at the end
    charge: int | None = None  # or a fixed price, settled at the end
    reserve: int = 0
    priority: int = 0
    max_parallel: int | None = None


@dataclass(frozen=True)
class OpenJob:
    """A job opened to collect its inputs before it can be planned (``JobService.open``)."""
    job_id: str
    dialect: str
    user_id: str
    kind: str  # the pipeline that will plan it at finalize
    request: dict[str, Any]  # what the job shows back to its owner meanwhile
    key_id: str | None = None


# (path, formats, max pixels) -> None, "unreadable" or "too_many_pixels" (runtime/verify.image_problem)
ImageCheck = Callable[[Path, list[str], int], "str | None"]


def _refuse_images(path: Path, formats: list[str], max_pixels: int) -> str | None:
    return "unreadable"  # no verifier wired: nothing is decoded in the server


class JobService:
    def __init__(self, settings: Settings, db: sqlite_utils.Database, scheduler: Scheduler,
                 lifecycle: JobLifecycle, datadir: DataDir, webhooks: Deliverer, pipelines: dict[str, Pipeline],
                 untrusted_refusal: Callable[[], str | None] = lambda: None,
                 check_image: ImageCheck | None = None) -> None:
        self.settings, self.db, self.scheduler, self.datadir = settings, db, scheduler, datadir
        self.lifecycle = lifecycle  # what a job's end means: the same object the scheduler tells
        self._untrusted_refusal = untrusted_refusal
        # a client's picture, read where decoders cannot hurt the server (Core: the verifier's processes)
        self.check_image: ImageCheck = check_image or _refuse_images
        self.webhooks, self.pipelines = webhooks, pipelines
        self.hub = lifecycle.hub
        self._planning: set[asyncio.Task[None]] = set()
        self._retry_hooks: dict[str, RetryHook] = {}

    @property
    def capacity(self) -> Capacity:
        """The scheduler's, read each time: a Dask cluster's capacity changes while the server runs."""
        return self.scheduler.capacity

    # ---- starting work ---------------------------------------------------------------------------------------
    def submit(self, new: NewJob) -> JobRow:
        """Create the job (402 leaves nothing behind) and start it; a deferred pipeline plans in the background."""
        pipeline = self._admit(new.user_id, new.kind)
        tasks = self._private(new.user_id, self._plan_now(pipeline, new.job_id, new.payload))
        job = jobs.create_job(self.db, job_id=new.job_id, dialect=new.dialect, user_id=new.user_id,
                              key_id=new.key_id, kind=new.kind, request=new.request, tasks=tasks,
                              metadata=new.metadata, webhook_url=new.webhook_url, credit_rate=new.credit_rate,
                              charge=new.charge,
                              reserve=new.reserve, priority=new.priority, max_parallel=new.max_parallel,
                              phase="planning" if pipeline.deferred else "queued", payload=new.payload)
        if pipeline.deferred:
            self._plan_later(job["id"])
        self.scheduler.wake()
        return job

    def open(self, new: OpenJob) -> JobRow:
        """A job in phase (and status) ``uploading``: no tasks, no reserve, no payload. Nothing is checked yet
        (disk, failures, credits: ``finalize`` does); it is cancelled, failed and deleted like any job."""
        return jobs.create_job(self.db, job_id=new.job_id, dialect=new.dialect, user_id=new.user_id,
                               key_id=new.key_id, kind=new.kind, request=new.request, tasks=[],
                               status="uploading", phase="uploading")

    def finalize(self, job_id: str, payload: dict[str, Any], *, request: dict[str, Any], reserve: int = 0,
                 charge: int | None = None) -> JobRow:
        """Submit an opened job with its inputs: the checks ``submit`` makes and its plan, then the one credit
        check — the reserve — with its tasks, in one transaction. A refusal leaves it uploading: Conflict when it
        is not uploading any more (finalized already, cancelled, failed), InsufficientCredits, or submit's own."""
        job = self.get(job_id)
        pipeline = self._admit(job["user_id"], job["kind"])
        tasks = self._private(job["user_id"], self._plan_now(pipeline, job_id, payload))
        job = jobs.submit_opened(self.db, job_id, tasks=tasks, payload=payload, request=request, reserve=reserve,
                                 charge=charge, phase="planning" if pipeline.deferred else "queued")
        if pipeline.deferred:
            self._plan_later(job_id)
        self.scheduler.wake()
        return job

    def refuse(self, job_id: str, error: str) -> bool:
        """An opened job whose inputs cannot be used (an upload that is no image): failed with ``error``, which
        its dialect shows as it is, and its listeners told. False when it is not uploading any more."""
        job = self.find(job_id)
        if job is None or job["status"] != "uploading":
            return False
        self.fail(job_id, error)
        return True

    def _admit(self, user_id: str, kind: str) -> Pipeline:
        """What every new job passes before it is planned: disk, the user's recent failures, the sandbox."""
        self.check_disk()
        self.check_failures(user_id)
        pipeline = self.pipelines[kind]
        refusal = self._untrusted_refusal() if getattr(pipeline, "untrusted", False) else None
        if refusal:  # strangers' code never runs unsandboxed unless the operator said so
            raise Unavailable(refusal)
        return pipeline

    @staticmethod
    def _plan_now(pipeline: Pipeline, job_id: str, payload: dict[str, Any]) -> list[TaskDef]:
        # the job id, as deferred planning gets it: a DAG's tasks name each other's outputs (a split Manim scene)
        return [] if pipeline.deferred else pipeline.plan({**payload, "job_id": job_id})

    def retry(self, job_id: str) -> JobRow:
        """A failed or cancelled job again, as a new job with the same tasks (the old one stays as it ended),
        under an id of its dialect's shape; a dialect that keeps jobs of its own (RenderCAD) records the copy
        there too (``on_retry``), so the job's owner sees it through their API."""
        job = self.get(job_id)
        if job["status"] not in ("failed", "cancelled"):
            raise Conflict(f"job {job_id} is {job['status']}: only failed or cancelled jobs can be retried")
        if job["payload"] is None and not jobs.tasks_of(self.db, job_id):
            raise Conflict(f"job {job_id} ended while it collected its inputs (never submitted): nothing to retry")
        hook = self._retry_hooks.get(job["dialect"])
        new_id = hook.new_id(job) if hook else ids.kodisc_job_id() if job["dialect"] == "kodisc" \
            else ids.viralsync_job_id()
        copy = jobs.clone_job(self.db, job, new_id)
        if hook:
            hook.cloned(job, copy)
        if not jobs.tasks_of(self.db, new_id):
            self._plan_later(new_id)
        self.scheduler.wake()
        return copy

    def check_failures(self, user_id: str) -> None:
        """A failed job costs nothing, so failing is free to repeat (each one a task's start, a log, a row):
        past ``max_failed_jobs_per_hour`` failures a user's new jobs are refused until older ones age out."""
        cap = self.settings.max_failed_jobs_per_hour
        if cap > 0 and jobs.failed_since(self.db, user_id, now_iso(time.time() - 3600)) >= cap:
            raise ApplianceError(f"Too many failed renders in the last hour ({cap}); fix the failing request, "
                                 "then retry later", status=429, code="RATE_LIMITED")

    def check_disk(self) -> None:
        free = self.datadir.free_disk_mb()
        if free < self.settings.min_free_disk_mb:
            raise Unavailable(f"Not enough free disk space to accept renders ({free} MB free, "
                              f"{self.settings.min_free_disk_mb} MB required); free space or lower "
                              "min_free_disk_mb (APPLIANCE_MIN_FREE_DISK_MB)")

    def _private(self, user_id: str, tasks: list[TaskDef]) -> list[TaskDef]:
        """Cache keys are per user unless the operator shares the cache: otherwise a response's timing would
        tell one user that another rendered the same thing."""
        if not self.settings.shared_cache:
            for task in tasks:
                if task.cache_key:
                    task.cache_key = f"{user_id}/{task.cache_key}"
        return tasks

    # ---- stopping work ---------------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        """False when the job had already ended (terminal states are final)."""
        return self.lifecycle.cancel(job_id)

    def fail(self, job_id: str, error: str) -> None:
        self.lifecycle.fail(job_id, error)

    def delete(self, job_id: str) -> None:
        job = self.get(job_id)
        if job["status"] not in TERMINAL:
            raise Conflict(f"Job {job_id} is still active: cancel it first")
        jobs.mark_deleted(self.db, job_id)  # gone for its owner now; the files go off the event loop
        asyncio.get_running_loop().run_in_executor(None, self.datadir.remove_job, job_id)

    async def expire(self, retention_s: float) -> tuple[list[str], int]:
        """Retention (Core's hourly sweep): outputs and logs older than ``retention_s`` removed, their jobs
        marked expired, and the history (events, deliveries) of jobs that ended that long ago pruned. (removed
        job ids, history rows pruned); the file work runs off the event loop."""
        removed = await asyncio.to_thread(self.datadir.sweep, retention_s)
        jobs.mark_expired(self.db, removed)
        return removed, jobs.prune_history(self.db, now_iso(time.time() - retention_s))

    # ---- reading ---------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRow:
        job = jobs.get_job(self.db, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    def find(self, job_id: str, user_id: str | None = None, dialect: str | None = None) -> JobRow | None:
        """The job if it exists (and belongs to that user and dialect), else None."""
        job = jobs.get_job(self.db, job_id)
        if job is None or (user_id and job["user_id"] != user_id) or (dialect and job["dialect"] != dialect):
            return None
        return job

    def expired_message(self, job: JobRow) -> str:
        return (f"the outputs were removed on {job['expired_at']}, {self.settings.retention_days} days after the "
                "render (retention_days)")

    def tasks(self, job_id: str) -> list[TaskRow]:
        return jobs.tasks_of(self.db, job_id)

    def events_since(self, job_id: str, after: int) -> list[dict[str, Any]]:
        return events.since(self.db, job_id, after)

    def on_retry(self, dialect: str, hook: RetryHook) -> None:
        """The dialect names a retried job and records it in its own tables (see ``retry``)."""
        self._retry_hooks[dialect] = hook

    def listen(self, dialect: str, listener: JobListener) -> None:
        """The dialect hears each state change of its jobs (to send webhooks in its own shape)."""
        self.lifecycle.listeners[dialect] = listener

    # ---- deferred planning -----------------------------------------------------------------------------------
    def resume_planning(self) -> None:
        """After a restart: jobs still planning (no tasks yet) plan again."""
        for job in jobs.unfinished_jobs(self.db):
            if job["phase"] == "planning" and not jobs.tasks_of(self.db, job["id"]):
                self._plan_later(job["id"])

    def _plan_later(self, job_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._plan(job_id))
        self._planning.add(task)
        task.add_done_callback(self._planning.discard)

    async def _plan(self, job_id: str) -> None:
        job = self.get(job_id)
        payload = {**jobs.payload_of(job), "job_id": job_id}
        try:
            tasks = await asyncio.to_thread(self.pipelines[job["kind"]].plan, payload)
        except Exception as exc:  # noqa: BLE001 - a bad source fails the job readably
            self.fail(job_id, getattr(exc, "message", None) or str(exc) or one_line(exc))
            return
        if not jobs.add_tasks_unless_ended(self.db, job_id, self._private(job["user_id"], tasks)):
            return  # cancelled while planning
        self.scheduler.wake()

