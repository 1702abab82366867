"""Per-job ordered events: stored in SQLite (replay with Last-Event-ID), then handed to the in-process hub
(``delivery.sse``) that fans them out to SSE streams and the dashboard, on the server's event-loop thread."""
from __future__ import annotations

from typing import TYPE_CHECKING

import sqlite_utils

from appliance.store.db import dumps, loads, now_iso, rows, transaction

if TYPE_CHECKING:
    from appliance.delivery.sse import Hub


def record(db: sqlite_utils.Database, hub: Hub | None, job_id: str, type_: str, data: dict) -> dict:
    with transaction(db):
        event_id = db.table("events").insert({"job_id": job_id, "type": type_, "data": dumps(data),
                                        "created_at": now_iso()}).last_pk
    event = {"id": event_id, "job_id": job_id, "type": type_, "data": data}
    if hub:
        hub.publish(job_id, event)
    return event


def since(db: sqlite_utils.Database, job_id: str, after_id: int = 0) -> list[dict]:
    return [{"id": r["id"], "job_id": job_id, "type": r["type"], "data": loads(r["data"])}
            for r in rows(db, "select * from events where job_id = ? and id > ? order by id", (job_id, after_id))]
