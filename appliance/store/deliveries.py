"""The webhook outbox table: one row per delivery, durable across restarts, with its attempts and outcome."""
from __future__ import annotations

import time
from typing import Any

import sqlite_utils

from appliance.store import ids
from appliance.store.db import now_iso, rows, transaction


def enqueue(db: sqlite_utils.Database, *, job_id: str, dialect: str, key_id: str | None, url: str, event: str,
            body: bytes, secret: str | None = None, delivery_id: str | None = None) -> str:
    """secret: the signing secret when it is not the key's (a RenderCAD registered webhook); delivery_id: when
    the body must name its own delivery."""
    delivery_id = delivery_id or ids.delivery_id()
    with transaction(db):
        db.table("webhook_deliveries").insert({
            "id": delivery_id, "job_id": job_id, "dialect": dialect, "key_id": key_id, "url": url,
            "event": event, "body": body.decode(), "status": "pending", "attempt": 0,
            "next_attempt_at": time.time(), "created_at": now_iso(), "updated_at": now_iso(), "secret": secret})
    return delivery_id


def due(db: sqlite_utils.Database, now: float) -> list[dict[str, Any]]:
    return rows(db, "select * from webhook_deliveries where status = 'pending' and next_attempt_at <= ? "
                    "order by next_attempt_at limit 20", (now,))


def record(db: sqlite_utils.Database, delivery_id: str, values: dict[str, Any]) -> None:
    with transaction(db):
        db.table("webhook_deliveries").update(delivery_id, {**values, "updated_at": now_iso()})


def of_job(db: sqlite_utils.Database, job_id: str) -> list[dict[str, Any]]:
    return rows(db, "select id, url, event, status, attempt, last_status, last_error, created_at, updated_at "
                    "from webhook_deliveries where job_id = ? order by created_at", (job_id,))
