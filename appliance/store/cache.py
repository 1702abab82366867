"""The render cache table: cache key -> the result of the task that rendered it (its outputs are artifacts)."""
from __future__ import annotations

from typing import Any

import sqlite_utils

from appliance.store.db import dumps, loads, now_iso, one, rows, transaction


def lookup(db: sqlite_utils.Database, key: str) -> dict[str, Any] | None:
    row = one(db, "select result from cache where key = ?", (key,))
    return loads(row["result"]) if row else None


def store(db: sqlite_utils.Database, key: str, renderer: str, result: dict[str, Any]) -> None:
    with transaction(db):
        db.table("cache").upsert({"key": key, "renderer": renderer, "path": "", "result": dumps(result),
                            "created_at": now_iso()}, pk="key")


def referenced_artifacts(db: sqlite_utils.Database) -> set[str]:
    """Digests the cache and every unfinished job still need (the artifact sweep keeps these)."""
    keep: set[str] = set()
    for row in rows(db, "select result from cache"):
        keep.update(loads(row["result"], {}).get("outputs", {}).values())
    for row in rows(db, """select t.input, t.result from tasks t join jobs j on j.id = t.job_id
                           where j.status not in ('completed', 'failed', 'cancelled')"""):
        keep.update(loads(row["input"], {}).get("artifacts", {}).values())
        keep.update(loads(row["result"], {}).get("outputs", {}).values())
    return keep
