"""Admits ready tasks when their resources fit (admission.py decides which), launches them on the executor, and
drives jobs to a terminal state.

Runs on the server's event loop; it is the only writer of task/job state. Executor threads hand their
messages over with call_soon_threadsafe.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from appliance.errors import one_line
from appliance.runtime import admission, resume
from appliance.runtime.artifacts import Artifacts
from appliance.runtime.executors.base import Executor, Message, TaskSpec
from appliance.runtime.resources import Capacity, GpuPool
from appliance.runtime.sandbox import Limits
from appliance.runtime.sandbox.limits import LIMITS_KEY, lowered
from appliance.runtime.warm_memory import WarmMemory
from appliance.settings import Settings
from appliance.store import cache, events, jobs
from appliance.store.db import dumps, loads, now_iso
from appliance.store.jobs import WORK_KEY, known_work
from appliance.store.rows import JobRow, Link, ReadyTask, TaskRow

log = logging.getLogger("appliance.scheduler")


class JobListener(Protocol):
    """What a dialect adapter hears from the core (to enqueue webhooks in its own shape)."""

    def __call__(self, job: JobRow, event_type: str) -> None: ...


class WorkArea(Protocol):
    """The data dir's parts the scheduler touches (appliance/datadir.py DataDir): task logs, the scratch folders."""

    def log_path(self, task_id: str) -> Path: ...

    def clean_tmp(self) -> None: ...


class JobEvents(Protocol):
    """What the scheduler tells the job lifecycle (services/lifecycle.py), which publishes, settles or refunds,
    records events and tells the dialects."""
    listeners: dict[str, JobListener]
    hub: Any

    def started(self, job: JobRow, *, announce: bool = True) -> None: ...

    def task_done(self, task: TaskRow, result: dict[str, Any]) -> None: ...

    def task_failed(self, task: TaskRow, error: str) -> None: ...

    def progressed(self, job_id: str) -> None: ...

    def fail(self, job_id: str, error: str) -> None: ...

    def cancel(self, job_id: str) -> bool: ...

    def recover(self) -> None: ...


class _Unattached:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("the scheduler has no job lifecycle attached (Scheduler.lifecycle)")


class Scheduler:
    def __init__(self, settings: Settings, db: sqlite_utils.Database, executor: Executor, capacity: Capacity,
                 work: WorkArea, artifacts: Artifacts) -> None:
        self.settings, self.db, self.executor = settings, db, executor
        self.capacity, self.work, self.artifacts = capacity, work, artifacts
        self.gpu_pool = GpuPool(capacity.gpus)  # which GPU and NVENC session each running task holds
        # what this machine's zygote keeps warm for model tasks, outside every task (a Dask worker's its own)
        self.warm = WarmMemory(settings.model_warm_idle_s if settings.executor == "local" else 0)
        self.lifecycle: JobEvents = _Unattached()  # services/lifecycle.JobLifecycle, attached by the composition root
        self.user_caps: Callable[[str], int | None] = lambda user_id: None
        self.on_task_end: Callable[[TaskRow, str | None], None] = lambda task, error: None  # metrics
        self._running: dict[str, dict[str, Any]] = {}  # task_id -> {"handle", "task", "user_id"}
        self._progress: dict[str, tuple[float, str | None]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.recover()
        self._tasks = [asyncio.create_task(self._admit_loop()), asyncio.create_task(self._flush_loop())]

    async def stop(self) -> None:
        self.stopping = True  # from now on an attempt the executor's stop ends is left for recover()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    # ---- capacity --------------------------------------------------------------------------------
    def set_capacity(self, capacity: Capacity) -> None:
        """The one place capacity changes (a Dask cluster's workers joining and leaving): everything else reads
        ``capacity`` here, when it needs it, never a copy."""
        if capacity != self.capacity:
            log.info("capacity: %s CPU, %s MB, %d GPU(s)", capacity.cpu, capacity.mem_mb, len(capacity.gpus))
            self.gpu_pool.update(capacity.gpus)
        self.capacity = capacity
        self.wake()

    def free_cpu_slots(self) -> float:
        """The CPU slots no running task holds now (the manim pipeline's split model asks at submit)."""
        return self.capacity.cpu - self.used()["cpu"]

    def used(self) -> dict[str, float]:
        used = {"cpu": 0.0, "mem_mb": 0, "gpu": 0}
        for entry in self._running.values():
            task = entry["task"]
            used["cpu"] += task["cpu"]
            used["mem_mb"] += task["mem_mb"]
            used["gpu"] += entry.get("gpu_slots", 0)  # compute slots granted (resources.GpuPool)
        used["mem_mb"] += self.warm.held_mb()
        return used

    # ---- admission -------------------------------------------------------------------------------
    async def _admit_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                self.admit()
            except Exception:  # never let one bad task stop the scheduler
                log.exception("admission failed")

    def admit(self) -> None:
        """Start what fits, in fair order (admission.plan: fit, fairness, reservations)."""
        ready = [t for t in jobs.ready_tasks(self.db) if t["id"] not in self._running]
        running = admission.Running.of((e["task"], e.get("gpu_slots", 0)) for e in self._running.values())
        running.used.mem_mb += self.warm.held_mb()  # the warm model parents, beside the tasks
        for task, decision in admission.plan(ready, running, self.capacity, self.user_caps, self.gpu_pool):
            if decision == "no_gpu":
                self._task_failed(task, NO_GPU_DASK if self.settings.executor == "dask" else NO_GPU)
            elif decision == "gpu_too_small":
                self._task_failed(task, admission.too_small(task, self.capacity))
            else:
                self.start_task(task)

    # ---- starting a task -------------------------------------------------------------------------
    def start_task(self, task: ReadyTask) -> None:
        job = jobs.require_job(self.db, task["job_id"])
        if self._try_cache(task, job):
            return
        task_input = loads(task["input"])
        try:
            inputs = self._inputs(task_input)
        except (KeyError, ValueError, TypeError) as exc:  # bad inputs fail the job with a readable reason
            self._task_failed(task, f"input missing: {one_line(exc)}")
            return
        jobs.update_task(self.db, task["id"], status="running", attempts=task["attempts"] + 1,
                         started_at=now_iso(), progress=0.0, error=None,
                         log_path=str(self.work.log_path(task["id"])))
        self.lifecycle.started(job)
        grant = self.gpu_pool.grant(task["id"], **admission.gpu_ask(task, task_input))  # as admission planned
        self.warm.started(task["renderer"], task_input, grant.gpu)
        spec = TaskSpec(task_id=task["id"], renderer=task["renderer"], input=task_input,
                        limits=self._limits(task, task_input),
                        inputs=inputs, attempt=task["attempts"] + 1, mem_mb=int(task["mem_mb"]),
                        gpu=grant.gpu, nvenc=grant.nvenc, gpu_compute=grant.compute)
        entry: dict[str, Any] = {"handle": None, "task": task, "user_id": task["user_id"], "cancel": None,
                       "gpu_slots": int(grant.compute)}
        self._running[task["id"]] = entry  # counts against capacity from now on
        asyncio.get_running_loop().create_task(self._launch(spec, entry))

    async def _launch(self, spec: TaskSpec, entry: dict[str, Any]) -> None:
        """Start the task off the event loop (a fork, or a remote submit); a start that fails fails the job
        with a refund instead of leaving it running with its reserve held."""
        loop = asyncio.get_running_loop()

        def on_message(msg: Message) -> None:
            loop.call_soon_threadsafe(self._on_message, spec.task_id, msg)

        spec = self._with_thread_budget(spec)
        try:
            handle = await asyncio.to_thread(self.executor.submit, spec, on_message)
        except Exception as exc:  # noqa: BLE001 - the zygote down, a fork error, a start time-out
            log.warning("could not start %s: %s", spec.task_id, exc)
            if self._running.get(spec.task_id) is entry:
                del self._running[spec.task_id]
                self.gpu_pool.release(spec.task_id)
                task = jobs.get_task(self.db, spec.task_id)
                if task and task["status"] == "running":
                    self._task_failed(task, f"could not start the task: {one_line(exc)}")
            return
        entry["handle"] = handle
        if entry["cancel"]:  # cancelled while it was starting
            handle.kill(entry["cancel"])
        elif self._running.get(spec.task_id) is entry:
            jobs.update_task(self.db, spec.task_id, pid=handle.pid)

    def _with_thread_budget(self, spec: TaskSpec) -> TaskSpec:
        """A movie scene task's ``threads`` (see scene_thread_budget), counted after the admission pass that
        started it, so scenes admitted together see each other."""
        if spec.renderer not in THREAD_SHARING_RENDERERS or not self.settings.movie_scene_thread_sharing:
            return spec
        running = sum(e["task"]["renderer"] in THREAD_SHARING_RENDERERS for e in self._running.values())
        waiting = sum(t["renderer"] in THREAD_SHARING_RENDERERS and t["id"] not in self._running
                      for t in jobs.ready_tasks(self.db))
        threads = scene_thread_budget(int(self.capacity.cpu), running, waiting)
        return replace(spec, input={**spec.input, "threads": threads})

    def _limits(self, task: TaskRow, task_input: dict[str, Any]) -> Limits:
        s = self.settings
        limits = Limits(cpu_seconds=s.task_cpu_seconds, mem_mb=s.task_memory_mb, wall_seconds=s.render_timeout_s,
                        fsize_mb=s.task_file_size_mb, nofile=s.task_max_open_files, nproc=s.task_max_processes,
                        cpu=float(task["cpu"]), disk_mb=s.task_disk_mb, log_mb=s.task_log_mb,
                        weight=SLACK_WEIGHT if self._has_slack(task, task_input) else 1.0)
        return lowered(limits, task_input.get(LIMITS_KEY))

    def _has_slack(self, task: TaskRow, task_input: dict[str, Any]) -> bool:
        """Whether a sibling task of the same job that runs beside it is expected to work longer (``WORK_KEY``):
        one running, or one ready to start while the job may run another task (its ``max_parallel``) and a CPU
        slot is left. A sibling that must wait for this task's slot does not count: this task is then on the job's
        critical path."""
        work = task_input.get(WORK_KEY)
        if work is None:
            return False
        siblings = [t for t in jobs.task_works(self.db, task["job_id"]) if t["id"] != task["id"]]
        status = {t["id"]: t["status"] for t in siblings}
        running = [t for t in siblings if t["status"] == "running"]
        limit = jobs.require_job(self.db, task["job_id"])["max_parallel"]
        used = float(task["cpu"]) + sum(float(e["task"]["cpu"]) for e in self._running.values())
        room = (not limit or len(running) + 1 < limit) and used < self.capacity.cpu
        ready = [t for t in siblings if room and t["status"] == "queued"
                 and all(status.get(d) == "done" for d in loads(t["depends_on"], []))]
        return has_slack(work, [t["work"] for t in running + ready])

    def _inputs(self, task_input: dict[str, Any]) -> dict[str, str]:
        """The task's input artifacts: those its pipeline named (``artifacts``: name -> digest) and the outputs
        of its dependencies named in ``link_inputs`` ({task, file (the role), as, optional})."""
        inputs = dict(task_input.get("artifacts", {}))
        links: list[Link] = task_input.get("link_inputs", [])  # written by the pipelines, as rows.Link
        for link in links:
            result = loads(jobs.require_task(self.db, link["task"])["result"], {})
            name = result.get("files", {}).get(link["file"])
            if name is None and link.get("optional"):
                continue
            inputs[link["as"]] = result["outputs"][name]
        return inputs

    def _try_cache(self, task: TaskRow, job: JobRow) -> bool:
        result = cache.lookup(self.db, task["cache_key"]) if task["cache_key"] else None
        if not result or not all(self.artifacts.has(d) for d in result.get("outputs", {}).values()):
            return False
        self.lifecycle.started(job, announce=False)
        jobs.update_task(self.db, task["id"], status="running", attempts=task["attempts"] + 1,
                         started_at=now_iso(), cached=1)
        self._task_done(jobs.require_task(self.db, task["id"]), result)
        return True

    # ---- messages from the executor ------------------------------------------------------------
    def _on_message(self, task_id: str, msg: Message) -> None:
        try:
            self._handle_message(task_id, msg)
        except Exception as exc:  # a job must never be left running because of a bug here
            log.exception("handling %s for %s failed", msg["type"], task_id)
            job = jobs.get_job(self.db, task_id.rsplit(".", 1)[0])
            if job and job["status"] not in jobs.TERMINAL:
                self.lifecycle.fail(job["id"], f"internal error while finishing the task: {type(exc).__name__}: {exc}")

    def _handle_message(self, task_id: str, msg: Message) -> None:
        """progress (coalesced: the latest per task is written every 0.5 s; checked by the executor, a number in
        0..1), exit (verified and staged out by the executor)."""
        if msg["type"] == "progress":
            self._progress[task_id] = (msg["fraction"], None)
            return
        entry = self._running.pop(task_id, None)
        if entry:
            self.gpu_pool.release(task_id)
        if self.stopping and not msg["ok"]:
            # A graceful stop (systemctl restart) is no failure of the task: its row stays "running", and
            # the next start re-queues it exactly as after a crash (recover()).
            log.info("task %s left for the next start: %s", task_id, msg.get("error"))
            return
        task = jobs.get_task(self.db, task_id)
        if task and task["status"] == "running":
            self._flush_progress()
            if msg["ok"]:
                self._task_done(task, {**msg["result"], "outputs": msg["outputs"]})
            elif msg.get("retry") and task["attempts"] < self.settings.max_attempts:
                self._retry(task, msg.get("error") or "worker lost", msg.get("salvaged"))
            else:
                self._task_failed(task, msg.get("error") or "task failed")
        if entry:
            self.wake()

    def _task_done(self, task: TaskRow, result: dict[str, Any]) -> None:
        jobs.update_task(self.db, task["id"], status="done", progress=1.0, result=dumps(result),
                         finished_at=now_iso())
        self.on_task_end(task, None)
        if task["cache_key"] and not task["cached"]:
            cache.store(self.db, task["cache_key"], task["renderer"], result)
        self.lifecycle.task_done(task, result)

    def _retry(self, task: TaskRow, error: str, salvaged: dict[str, Any] | None = None) -> None:
        """An attempt the executor lost through no fault of the task (a Dask worker or the local zygote died
        under it): queued again like a task the appliance's own crash interrupted, under a new attempt (and key),
        and like it resuming from the pieces it had finished where the executor kept them (``salvaged``)."""
        if salvaged is not None:
            self._resume_with(task, salvaged)
        jobs.update_task(self.db, task["id"], status="queued", progress=0.0, pid=None, error=error)
        events.record(self.db, task["job_id"], "retrying",  # stored like recover()'s, not streamed
                      {"task": task["id"], "attempt": task["attempts"], "error": error})
        self.wake()

    def _task_failed(self, task: TaskRow, error: str) -> None:
        jobs.update_task(self.db, task["id"], status="failed", error=error, finished_at=now_iso())
        self.on_task_end(task, error)
        self.lifecycle.task_failed(task, error)

    # ---- the job lifecycle's side ------------------------------------------------------------------
    def stop_job_tasks(self, job_id: str, reason: str) -> None:
        """Kill the job's running tasks (its end was decided: cancelled, failed); their slots free as they exit."""
        for task_id, entry in list(self._running.items()):
            if entry["task"]["job_id"] == job_id:
                entry["cancel"] = reason
                if entry["handle"] is not None:
                    self.executor.cancel(task_id, reason)

    # ---- progress --------------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                self._flush_progress()
            except Exception:
                log.exception("progress flush failed")

    def _flush_progress(self) -> None:
        if not self._progress:
            return
        pending, self._progress = self._progress, {}
        jobs.set_progress(self.db, {task_id: fraction for task_id, (fraction, _phase) in pending.items()})
        for job_id in {task_id.rsplit(".", 1)[0] for task_id in pending}:
            self.lifecycle.progressed(job_id)

    # ---- crash recovery ----------------------------------------------------------------------------
    def _salvage(self, task: TaskRow) -> None:
        """A Manim render about to run again keeps what its lost attempt finished: the pieces its worker had
        mirrored out become the next attempt's first reuse source (runtime/resume.py), before the workdir goes."""
        if task["renderer"] != "manim":
            return
        salvaged = resume.salvage(self.settings.data_dir / "work" / task["id"], self.settings.data_dir / "tmp",
                                  self.artifacts)
        if salvaged is not None:
            self._resume_with(task, salvaged)

    def _resume_with(self, task: TaskRow, salvaged: dict[str, Any]) -> None:
        jobs.update_task(self.db, task["id"], input=dumps(resume.resumed_input(loads(task["input"]), salvaged)))
        log.info("task %s resumes with %d pieces", task["id"], len(salvaged["pieces"]))

    def recover(self) -> None:
        """After a crash: re-queue tasks left running (up to max_attempts), finish or fail their jobs,
        and close every reservation of a terminal job. A Manim render resumes from its first missing piece: the
        pieces its worker had mirrored out are salvaged before work/ goes (runtime/resume.py)."""
        for task in jobs.running_tasks(self.db):
            if task["attempts"] < self.settings.max_attempts:
                self._salvage(task)
        self.work.clean_tmp()  # and work/: every task left running re-runs from its inputs
        for task in jobs.running_tasks(self.db):
            if task["attempts"] < self.settings.max_attempts:
                jobs.update_task(self.db, task["id"], status="queued", progress=0.0, pid=None)
                events.record(self.db, task["job_id"], "retrying",
                              {"task": task["id"], "attempt": task["attempts"]})
            else:
                self._task_failed(task, f"worker lost when the server stopped (attempt {task['attempts']} "
                                        f"of {self.settings.max_attempts})")
        self.lifecycle.recover()


THREAD_SHARING_RENDERERS = frozenset({"movie.scene"})
# WORK_KEY (store/jobs.py): a task's expected CPU work relative to its siblings, in its input (a movie's scene tasks).
# A job ends when its longest task does, so a task with a sibling of more work still to finish has slack: its
# cgroup gets SLACK_WEIGHT of its CPU weight, and where both want the cores the longer one gets most of them; the
# shorter one still runs on what the longer leaves idle (x264's start, its flush, waits on I/O). The seed's
# example: its text scene (~0.35 CPU-s) no longer slows its 6 s video scene. 0.25, not less: under load from other
# jobs a slack task keeps a fifth of a contended core instead of starving behind them.
SLACK_WEIGHT = 0.25
NO_GPU = ("this task needs a GPU and the appliance has none to grant (no GPU found, or the gpus / "
          "gpu_compute_slots settings allow none)")
NO_GPU_DASK = ("this task needs a GPU and no worker of the Dask cluster offers one (start a worker on a GPU "
               "machine with `appliance worker`, which declares the GPU resource it measured)")


def has_slack(work: object, siblings: list[object]) -> bool:
    """A task with a ``WORK_KEY`` has slack when a sibling still to finish has more work (``jobs.known_work``: a
    task without a positive number takes no part)."""
    mine = known_work(work)
    return mine is not None and any((other := known_work(sibling)) is not None and other > mine
                                    for sibling in siblings)


def scene_thread_budget(cores: int, running: int, waiting: int) -> int:
    """Threads for a movie scene task's ffmpeg (decoders, filters, x264); 0 means all cores (ffmpeg's choice).

    Why: one scene's ffmpeg alone keeps about 3/4 of the cores busy, so scenes running side by side each
    starting a thread pool per core oversubscribe the box; they share the cores instead. But a fixed share
    made the seed's two unequal scenes 40 % slower (the heavy one kept one thread after the light one ended),
    so the share only applies while more scene tasks wait to take a core that frees up; the last scenes of a
    batch, and a scene alone, get every core.
    """
    if running <= 1 or waiting == 0:
        return 0
    return max(1, cores // running)


