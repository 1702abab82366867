"""Per-job ordered events, stored in SQLite (replay with Last-Event-ID). Whoever records one publishes it (the
scheduler hands it to the in-process hub, ``delivery.sse``, that fans it out to SSE streams and the dashboard):
the store only stores."""
from __future__ import annotations

from typing import Any

import sqlite_utils

from appliance.store.db import dumps, loads, now_iso, rows, transaction


def record(db: sqlite_utils.Database, job_id: str, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    """Store the event; returns it ({"id", "job_id", "type", "data"}) for the caller to publish."""
    with transaction(db):
        event_id = db.table("events").insert({"job_id": job_id, "type": type_, "data": dumps(data),
                                        "created_at": now_iso()}).last_pk
    return {"id": event_id, "job_id": job_id, "type": type_, "data": data}


def since(db: sqlite_utils.Database, job_id: str, after_id: int = 0) -> list[dict[str, Any]]:
    return [{"id": r["id"], "job_id": job_id, "type": r["type"], "data": loads(r["data"])}
            for r in rows(db, "select * from events where job_id = ? and id > ? order by id", (job_id, after_id))]
