"""Per-job ordered events: stored in SQLite (replay with Last-Event-ID) and fanned out in-process
to subscribers (SSE streams, the dashboard). Publishing happens on the server's event-loop thread."""
from __future__ import annotations

import asyncio
from collections import defaultdict

import sqlite_utils

from appliance.store.db import dumps, loads, now_iso, rows, transaction


class Hub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue]] = defaultdict(set)

    def subscribe(self, job_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers[job_id].add(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue) -> None:
        self._subscribers[job_id].discard(queue)
        if not self._subscribers[job_id]:
            del self._subscribers[job_id]

    def publish(self, job_id: str, event: dict) -> None:
        for queue in self._subscribers.get(job_id, ()):
            queue.put_nowait(event)


def record(db: sqlite_utils.Database, hub: Hub | None, job_id: str, type_: str, data: dict) -> dict:
    with transaction(db):
        event_id = db["events"].insert({"job_id": job_id, "type": type_, "data": dumps(data),
                                        "created_at": now_iso()}).last_pk
    event = {"id": event_id, "job_id": job_id, "type": type_, "data": data}
    if hub:
        hub.publish(job_id, event)
    return event


def since(db: sqlite_utils.Database, job_id: str, after_id: int = 0) -> list[dict]:
    return [{"id": r["id"], "job_id": job_id, "type": r["type"], "data": loads(r["data"])}
            for r in rows(db, "select * from events where job_id = ? and id > ? order by id", (job_id, after_id))]
