"""The core, wired once per server: settings, database, store, executor, scheduler, webhooks, events."""
from __future__ import annotations

import asyncio
import logging

from appliance.store import events
from appliance.store.db import open_db
from appliance.errors import Unavailable
from appliance.runtime.executors.local import LocalExecutor
from appliance.delivery.outputs import Store
from appliance.runtime.resources import measure
from appliance.runtime.scheduler import Scheduler
from appliance.settings import Settings
from appliance.delivery.webhooks import Deliverer

log = logging.getLogger("appliance")


class Core:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_db(settings.db_path)
        self.store = Store(settings.data_dir)
        self.hub = events.Hub()
        self.capacity = measure(settings)
        self.executor = LocalExecutor(preload=settings.preload, sandbox=settings.sandbox)
        self.scheduler = Scheduler(settings, self.db, self.hub, self.executor, self.capacity, self.store)
        self.deliverer = Deliverer(settings, self.db)
        cap = settings.max_tasks_per_user or None
        self.scheduler.user_caps = lambda user_id: cap
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.executor.start)  # the warm worker preloads Manim: seconds, off the loop
        await self.scheduler.start()
        await self.deliverer.start()
        self._sweeper = asyncio.create_task(self._sweep_loop())
        log.info("appliance ready: capacity %s, sandbox %s", self.capacity.as_json(), self.executor.mechanism)

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        await self.deliverer.stop()
        await self.scheduler.stop()
        await asyncio.to_thread(self.executor.stop)

    def check_disk(self) -> None:
        free = self.store.free_disk_mb()
        if free < self.settings.min_free_disk_mb:
            raise Unavailable(f"Not enough free disk space to accept renders ({free} MB free, "
                              f"{self.settings.min_free_disk_mb} MB required); free space or raise min_free_disk_mb")

    def submitted(self) -> None:
        """A job was created: admit it now rather than at the next tick (submit→start latency)."""
        self.scheduler.wake()

    async def _sweep_loop(self) -> None:
        while True:
            removed = self.store.sweep(self.settings.retention_days * 86400)
            if removed:
                log.info("retention sweep removed outputs of %d jobs", len(removed))
            await asyncio.sleep(3600)
