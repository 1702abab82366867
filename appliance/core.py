"""The composition root, wired once per server: settings, database, store, executor, scheduler, webhooks and
the jobs service that every entry point uses."""
from __future__ import annotations

import asyncio
import logging
import time

from appliance.datadir import DataDir
from appliance.delivery.sse import Hub
from appliance.delivery.webhooks import Deliverer
from appliance.ingest.hotfolder import HotFolder
from appliance.observability.metrics import Metrics
from appliance.runtime import sandbox
from appliance.runtime.executors.dask import DaskExecutor, follow_capacity
from appliance.runtime.executors.local import LocalExecutor
from appliance.runtime.resources import Capacity, measure
from appliance.runtime.scheduler import Scheduler
from appliance.runtime.verifier import Verifier
from appliance.services.estimate import Estimator
from appliance.services.jobs import JobService
from appliance.services.lifecycle import JobLifecycle
from appliance.services.pipelines.image import ImagePipeline
from appliance.services.pipelines.image_video import GifPipeline, VideoPipeline
from appliance.services.pipelines.manim import ManimPipeline
from appliance.services.pipelines.movie import MoviePipeline
from appliance.services.pipelines.tasks import TasksPipeline
from appliance.settings import Settings
from appliance.store import cache
from appliance.store.db import now_iso, open_db
from appliance.store.lock import DataDirLock

log = logging.getLogger("appliance")
ARTIFACT_MIN_AGE_S = 3600  # an artifact younger than this may belong to a task being planned or staged


class Core:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = DataDirLock(settings.data_dir)
        self.lock.acquire(f"the appliance server at {settings.base_url}")  # before the database is touched
        self.db = open_db(settings.db_path)
        self.datadir = DataDir(settings.data_dir)
        self.hub = Hub()
        capacity = measure(settings, gpus=settings.executor == "local")  # dask: the workers' GPUs
        self.executor: LocalExecutor | DaskExecutor
        self.verifier = Verifier()  # outputs are decoded in unprivileged processes of their own (verifier.py)
        self.executor = LocalExecutor(preload=settings.preload, sandbox=settings.sandbox, data_dir=settings.data_dir,
                                      verify=self.verifier, start_timeout_s=settings.task_start_timeout_s,
                                      allow_unsandboxed=settings.allow_unsandboxed,
                                      launcher_socket=settings.launcher_socket, task_fs=settings.task_fs,
                                      model_warm_idle_s=settings.model_warm_idle_s)
        if settings.executor != "local":  # "dask": tasks run on a Dask cluster's workers (runtime/executors/dask.py)
            self.executor = DaskExecutor.from_settings(settings, self.verifier)
        assert self.executor.artifacts is not None
        self.artifacts = self.executor.artifacts
        self.scheduler = Scheduler(settings, self.db, self.executor, capacity, self.datadir,
                                   self.artifacts)  # the one owner of capacity
        # what a job's end means (publish, settle or refund, events, dialects): the scheduler tells it
        self.lifecycle = JobLifecycle(self.db, self.hub, self.datadir, self.artifacts, self.scheduler)
        self.scheduler.lifecycle = self.lifecycle
        self.deliverer = Deliverer(settings, self.db)
        cap = settings.max_tasks_per_user or None
        self.scheduler.user_caps = lambda user_id: cap
        self.jobs = JobService(settings, self.db, self.scheduler, self.lifecycle, self.datadir, self.deliverer,
                               pipelines={
            "manim": ManimPipeline.from_settings(settings, self.scheduler.free_cpu_slots),
            "movie": MoviePipeline(settings, self.artifacts), "tasks": TasksPipeline(),
            "image": ImagePipeline(self.artifacts), "video": VideoPipeline(self.artifacts),
            "video_convert": GifPipeline(self.artifacts)},
            untrusted_refusal=lambda: sandbox.untrusted_allowed(self.executor.mechanism, settings.allow_unsandboxed),
            check_image=self.verifier.image)
        self.estimator = Estimator(self.db)  # quotes and ETAs from this box's finished jobs
        self.metrics = Metrics(self.db, self.scheduler.used, lambda: self.scheduler.capacity)
        self.scheduler.on_task_end = self.metrics.task_ended
        self.deliverer.on_outcome = self.metrics.webhook_outcome
        self.hotfolder = HotFolder(settings, self.db, self.jobs, self.datadir) if settings.hotfolder_dir else None
        self._sweeper: asyncio.Task | None = None
        self._warming: asyncio.Task | None = None

    @property
    def capacity(self) -> Capacity:
        """The scheduler's: it alone owns capacity (a Dask cluster's changes as workers join and leave)."""
        return self.scheduler.capacity

    async def start(self) -> None:
        if isinstance(self.executor, DaskExecutor):  # capacity is the cluster's, as workers join and leave
            self.executor.on_capacity = follow_capacity(lambda: self.scheduler.capacity,
                                                        self.scheduler.set_capacity, asyncio.get_running_loop())
        self.verifier.warm()  # its processes import PyAV while the zygote preloads
        if isinstance(self.executor, LocalExecutor):
            # The warm worker preloads Manim (a second or more, off the loop). HTTP answers meanwhile: a task
            # admitted before it is ready waits for it (the executor's lock), so a restart serves at once.
            self._warming = asyncio.create_task(self._warm_executor())
        else:
            await asyncio.to_thread(self.executor.start)  # the cluster's capacity is known once connected
        await self.scheduler.start()
        await self.deliverer.start()
        self.jobs.resume_planning()
        if self.hotfolder:
            await self.hotfolder.start()
        self._sweeper = asyncio.create_task(self._sweep_loop())
        log.info("appliance serving: capacity %s, sandbox %s", self.capacity.as_json(), self.executor.mechanism)

    @property
    def worker(self) -> str:
        """The warm worker, as health says it: ``starting`` (tasks wait for it), ``ready``, or ``failed`` (no
        start has succeeded yet: the next task tries again, and fails alone with the reason if it cannot)."""
        if self._warming is not None and not self._warming.done():
            return "starting"
        if isinstance(self.executor, LocalExecutor) and not self.executor.ready:
            return "failed"
        return "ready"

    async def _warm_executor(self) -> None:
        try:
            await asyncio.to_thread(self.executor.start)
        except Exception:  # noqa: BLE001 - the first task starts the zygote again and fails alone if it cannot
            log.exception("the warm worker did not start; the next task tries again")
            return
        log.info("warm worker ready: sandbox %s", self.executor.mechanism)

    async def stop(self) -> None:
        if self.hotfolder:
            await self.hotfolder.stop()
        if self._sweeper:
            self._sweeper.cancel()
        await self.deliverer.stop()
        await self.scheduler.stop()
        if self._warming:  # a start in its thread cannot be cancelled: stop what it started
            await asyncio.gather(self._warming, return_exceptions=True)
        await asyncio.to_thread(self.executor.stop)
        self.verifier.close()
        self.lock.release()

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - the next hour tries again
                log.exception("retention sweep failed")
            await asyncio.sleep(3600)

    async def sweep(self) -> None:
        """Retention: outputs and logs past retention_days (their jobs say they expired), the history of jobs
        that ended that long ago, and artifacts nothing refers to — all file work off the event loop."""
        retention_s = self.settings.retention_days * 86400
        removed, pruned = await self.jobs.expire(retention_s)
        eviction = await asyncio.to_thread(
            cache.evict, self.db, self._artifact_size, int(self.settings.cache_max_gb * 2**30),
            now_iso(time.time() - self.settings.cache_max_days * 86400))
        self.metrics.cache_swept(eviction.evicted, eviction.kept_bytes)
        swept = await asyncio.to_thread(self.artifacts.sweep, cache.referenced_artifacts(self.db),
                                        ARTIFACT_MIN_AGE_S)
        if removed or pruned or swept or eviction.evicted:
            log.info("retention sweep: outputs of %d jobs, %d history rows, %d cache entries, %d artifacts",
                     len(removed), pruned, eviction.evicted, swept)

    def _artifact_size(self, digest: str) -> int:
        try:
            return self.artifacts.path(digest).stat().st_size
        except OSError:
            return 0
