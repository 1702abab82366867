"""The hot folder's record of every file it picked up (appliance/ingest/hotfolder.py).

One row per pick-up; the newest row of a path says where that file stands. States: ``submitting`` (the job id is
chosen, the job may or may not exist yet), ``submitted`` (a job renders it), ``delivered``, ``failed`` (its
error file was written), ``no_user`` (waiting for its user to be created).
"""
from __future__ import annotations

from typing import Any

import sqlite_utils

from appliance.store.db import now_iso, one, rows, transaction

IN_FLIGHT = ("submitting", "submitted")


def latest(db: sqlite_utils.Database, path: str) -> dict[str, Any] | None:
    return one(db, "select * from hotfolder_files where path = ? order by id desc limit 1", (path,))


def add(db: sqlite_utils.Database, *, path: str, user_name: str, size: int, mtime_ns: int, sha256: str,
        job_id: str | None, state: str, error: str | None = None) -> int:
    now = now_iso()
    with transaction(db):
        table = db.table("hotfolder_files").insert(
            {"path": path, "user_name": user_name, "size": size, "mtime_ns": mtime_ns, "sha256": sha256,
             "job_id": job_id, "state": state, "error": error, "created_at": now, "updated_at": now})
    assert table.last_pk is not None
    return int(table.last_pk)


def update(db: sqlite_utils.Database, row_id: int, **values) -> None:
    values["updated_at"] = now_iso()
    with transaction(db):
        db.table("hotfolder_files").update(row_id, values)


def by_job(db: sqlite_utils.Database, job_id: str) -> dict[str, Any] | None:
    return one(db, "select * from hotfolder_files where job_id = ? order by id desc limit 1", (job_id,))


def in_flight(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return rows(db, "select * from hotfolder_files where state in ('submitting', 'submitted') order by id")
