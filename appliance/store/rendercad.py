"""RenderCAD's own tables: token metadata (integer ids, usage), device-code sign-in, what RenderCAD keeps of a job
beside the core job (its kind and settings), uploads and webhooks. The keys themselves live in api_keys."""
from __future__ import annotations

from typing import Any, TypedDict, cast

import sqlite_utils

from appliance.store import users
from appliance.store.db import Params, dumps, loads, now_iso, one, rows, transaction

DIALECT = "rendercad"


# ---- tokens ----------------------------------------------------------------------------------------------------
def _ensure_tokens(db: sqlite_utils.Database, user_id: str) -> None:
    """Keys made outside the API (CLI, first run) get their integer id the first time they are listed."""
    missing = rows(db, "select k.id, k.name from api_keys k left join rendercad_tokens t on t.key_id = k.id "
                       "where k.user_id = ? and k.dialect = ? and t.id is null order by k.created_at",
                   (user_id, DIALECT))
    if missing:
        with transaction(db):
            for key in missing:
                db.table("rendercad_tokens").insert({"key_id": key["id"], "user_id": user_id,
                                               "token_name": key["name"] or "API token", "usage_count": 0})


_TOKEN_SQL = ("select t.id, t.token_name, k.scope, k.created_at, t.last_used_at, t.usage_count, "
              "k.revoked_at is null as is_active, k.id as key_id from rendercad_tokens t "
              "join api_keys k on k.id = t.key_id where t.user_id = ?")


def list_tokens(db: sqlite_utils.Database, user_id: str) -> list[dict[str, Any]]:
    _ensure_tokens(db, user_id)
    return rows(db, _TOKEN_SQL + " order by t.id", (user_id,))


def find_token(db: sqlite_utils.Database, user_id: str, token_id: int) -> dict[str, Any] | None:
    _ensure_tokens(db, user_id)
    return one(db, _TOKEN_SQL + " and t.id = ?", (user_id, token_id))


def active_count(db: sqlite_utils.Database, user_id: str) -> int:
    return sum(1 for t in list_tokens(db, user_id) if t["is_active"])


def create_token(db: sqlite_utils.Database, user_id: str, name: str, scope: str) -> tuple[str, dict[str, Any]]:
    plaintext, key = users.create_key(db, user_id, DIALECT, scope=scope, name=name)
    with transaction(db):
        db.table("rendercad_tokens").insert({"key_id": key["id"], "user_id": user_id, "token_name": name,
                                       "usage_count": 0})
    row = one(db, _TOKEN_SQL + " and t.key_id = ?", (user_id, key["id"]))
    assert row is not None
    return plaintext, row


def rename_token(db: sqlite_utils.Database, token_id: int, name: str) -> None:
    with transaction(db):
        db.execute("update rendercad_tokens set token_name = ? where id = ?", (name, token_id))
        db.execute("update api_keys set name = ? where id = (select key_id from rendercad_tokens where id = ?)",
                   (name, token_id))


def touch(db: sqlite_utils.Database, key_id: str, user_id: str) -> None:
    """Usage of a token: counted per authenticated request."""
    _ensure_tokens(db, user_id)
    with transaction(db):
        db.execute("update rendercad_tokens set usage_count = usage_count + 1, last_used_at = ? where key_id = ?",
                   (now_iso(), key_id))


# ---- device-code sign-in ---------------------------------------------------------------------------------------
def create_device(db: sqlite_utils.Database, code: str, meta: dict[str, Any], expires_at: float) -> None:
    with transaction(db):
        db.table("rendercad_devices").insert({"code": code, "app_name": meta.get("app_name") or "",
                                        "app_type": meta.get("app_type") or "",
                                        "app_version": meta.get("app_version") or "", "created_at": now_iso(),
                                        "expires_at": expires_at, "user_id": None, "status": "pending"})


def get_device(db: sqlite_utils.Database, code: str) -> dict[str, Any] | None:
    return one(db, "select * from rendercad_devices where code = ?", (code,))


def approve_device(db: sqlite_utils.Database, code: str, user_id: str) -> bool:
    """False when the code is not pending any more (already approved or used)."""
    with transaction(db):
        cur = db.execute("update rendercad_devices set status = 'approved', user_id = ? "
                         "where code = ? and status = 'pending'", (user_id, code))
    return cur.rowcount == 1


def consume_device(db: sqlite_utils.Database, code: str) -> bool:
    """The one poll that receives the token; a second poll finds the code used."""
    with transaction(db):
        cur = db.execute("update rendercad_devices set status = 'used' where code = ? and status = 'approved'",
                         (code,))
    return cur.rowcount == 1


# ---- jobs and their uploads ------------------------------------------------------------------------------------
# rendercad_jobs holds only what RenderCAD has and the core does not: its kind (image | video | convert) and its
# settings (params, with the upload slots and references). The job itself — owner, key, state, error, times, price
# — is the core job of the same id (store/jobs.py): opened in phase uploading while it collects its uploads, and
# changed only through JobService. A RenderCAD job is read as the two joined.
class RcJob(TypedDict):
    id: str
    kind: str  # image | video | convert
    params: dict[str, Any]
    user_id: str
    key_id: str | None
    status: str  # the core job's status (uploading, queued, running, completed, failed, cancelled)
    error: str | None
    created_at: str
    completed_at: str | None


_JOB_SQL = ("select r.id, r.kind, r.params, j.user_id, j.key_id, j.status, j.error, j.created_at, j.completed_at "
            "from rendercad_jobs r join jobs j on j.id = r.id where j.deleted_at is null")


def _job(row: dict[str, Any] | None) -> RcJob | None:
    if row is None:
        return None
    row["params"] = loads(row["params"], {})
    return cast(RcJob, row)


def create_job(db: sqlite_utils.Database, job_id: str, kind: str, params: dict[str, Any]) -> None:
    """RenderCAD's part of a job whose core job (same id) the caller opened or submitted."""
    with transaction(db):
        db.table("rendercad_jobs").insert({"id": job_id, "kind": kind, "params": dumps(params)})


def set_params(db: sqlite_utils.Database, job_id: str, params: dict[str, Any]) -> None:
    """The settings of a job still collecting its upload (the legacy render names its settings last)."""
    with transaction(db):
        db.table("rendercad_jobs").update(job_id, {"params": dumps(params)})


def copy_job(db: sqlite_utils.Database, old_id: str, new_id: str, uploads: dict[str, str]) -> None:
    """A retried job (the operator's retry of a failed or cancelled one; the core made the copy's job): the
    same kind and settings; ``uploads``: slot -> the copy's path (made by the caller)."""
    row = one(db, "select * from rendercad_jobs where id = ?", (old_id,))
    if row is None:
        return
    with transaction(db):
        db.table("rendercad_jobs").insert({**row, "id": new_id})
        for slot, got in uploads_of(db, old_id).items():
            if slot in uploads:
                db.table("rendercad_uploads").insert({**got, "job_id": new_id, "path": uploads[slot]})


def get_job(db: sqlite_utils.Database, job_id: str, user_id: str) -> RcJob | None:
    return _job(one(db, _JOB_SQL + " and r.id = ? and j.user_id = ?", (job_id, user_id)))


def one_job(db: sqlite_utils.Database, job_id: str) -> RcJob | None:
    """A job by id alone (an upload URL is its own credential)."""
    return _job(one(db, _JOB_SQL + " and r.id = ?", (job_id,)))


def list_jobs(db: sqlite_utils.Database, user_id: str, kind: str | None, offset: int, limit: int) -> list[RcJob]:
    where, params = _history_where(user_id, kind)
    got = rows(db, f"{_JOB_SQL} and {where} order by j.created_at desc, j.id desc limit ? offset ?",
               (*params, limit, offset))
    return [job for job in map(_job, got) if job is not None]


def count_jobs(db: sqlite_utils.Database, user_id: str, kind: str | None) -> int:
    where, params = _history_where(user_id, kind)
    return _count(db, "select count(*) as n from rendercad_jobs r join jobs j on j.id = r.id "
                      f"where j.deleted_at is null and {where}", params)


def _history_where(user_id: str, kind: str | None) -> tuple[str, tuple[Any, ...]]:
    """The user's jobs (the core's listing index: user, dialect, created_at), of one kind or of every render."""
    if kind:
        return "j.user_id = ? and j.dialect = 'rendercad' and r.kind = ?", (user_id, kind)
    # a video's GIF conversion (video.php convert) is no render of its own: history lists images and videos
    return "j.user_id = ? and j.dialect = 'rendercad' and r.kind != 'convert'", (user_id,)


def put_upload(db: sqlite_utils.Database, job_id: str, slot: str, content_type: str, path: str, size: int) -> None:
    with transaction(db):
        db.table("rendercad_uploads").upsert({"job_id": job_id, "slot": slot, "content_type": content_type,
                                        "path": path, "size": size, "uploaded_at": now_iso()},
                                       pk=("job_id", "slot"))


def uploads_of(db: sqlite_utils.Database, job_id: str) -> dict[str, dict[str, Any]]:
    return {r["slot"]: r for r in rows(db, "select * from rendercad_uploads where job_id = ?", (job_id,))}


def charged_since(db: sqlite_utils.Database, user_id: str, since: str) -> int:
    """Tokens charged for this user's renders since a date (the billing cycle's usage)."""
    got = one(db, "select coalesce(-sum(amount), 0) as n from ledger where user_id = ? and kind = 'charge' "
                  "and created_at >= ?", (user_id, since))
    return int(got["n"]) if got else 0


def active_count_jobs(db: sqlite_utils.Database, user_id: str) -> int:
    got = one(db, "select count(*) as n from jobs where user_id = ? and dialect = ? and deleted_at is null "
                  "and status in ('queued', 'running')", (user_id, DIALECT))
    return int(got["n"]) if got else 0


def queue_ahead(db: sqlite_utils.Database, created_at: str | None) -> tuple[int, int]:
    """(queued jobs in all, queued jobs created before this one): the queue depth and the job's position."""
    depth = _count(db, "select count(*) as n from jobs where status = 'queued' and deleted_at is null")
    if created_at is None:
        return depth, depth
    ahead = _count(db, "select count(*) as n from jobs where status = 'queued' and deleted_at is null "
                          "and created_at < ?", (created_at,))
    return depth, ahead


def avg_seconds(db: sqlite_utils.Database, user_id: str, kind: str) -> int:
    got = one(db, "select avg(duration_ms) as ms from jobs where user_id = ? and dialect = ? and kind = ? "
                  "and status = 'completed'", (user_id, DIALECT, kind))
    return round((got["ms"] or 0) / 1000) if got else 0


def _count(db: sqlite_utils.Database, sql: str, params: Params = ()) -> int:
    got = one(db, sql, params)
    return int(got["n"]) if got else 0


# ---- webhooks --------------------------------------------------------------------------------------------------
def create_webhook(db: sqlite_utils.Database, user_id: str, key_id: str, url: str, events: list[str],
                   secret: str) -> dict[str, Any]:
    with transaction(db):
        wid = db.table("rendercad_webhooks").insert({"user_id": user_id, "key_id": key_id, "url": url,
                                                     "events": dumps(events), "secret": secret,
                                                     "created_at": now_iso(), "failure_count": 0}).last_pk
    return {**(one(db, "select * from rendercad_webhooks where id = ?", (wid,)) or {}), "events": events}


def webhooks_of(db: sqlite_utils.Database, user_id: str, event: str | None = None) -> list[dict[str, Any]]:
    """The user's live webhooks (those subscribed to `event` when given), with their delivery figures."""
    got = rows(db, "select * from rendercad_webhooks where user_id = ? and deleted_at is null order by id",
               (user_id,))
    for row in got:
        row["events"] = loads(row["events"], [])
        row.update(_delivery_figures(db, row["secret"]))
    return [r for r in got if event is None or event in r["events"]]


def _delivery_figures(db: sqlite_utils.Database, secret: str) -> dict[str, Any]:
    """Derived from the outbox (each webhook's deliveries carry its unique secret): failure_count counts failed
    attempts since the last success, which resets it."""
    got = rows(db, "select status, attempt, updated_at from webhook_deliveries where secret = ? and attempt > 0 "
                   "order by updated_at", (secret,))
    success = [r["updated_at"] for r in got if r["status"] == "delivered"]
    last_ok = success[-1] if success else None
    failures = sum(r["attempt"] - (r["status"] == "delivered") for r in got if not last_ok or r["updated_at"] > last_ok)
    return {"last_triggered_at": got[-1]["updated_at"] if got else None, "last_success_at": last_ok,
            "failure_count": failures}


def delete_webhook(db: sqlite_utils.Database, user_id: str, webhook_id: int) -> bool:
    with transaction(db):
        cur = db.execute("update rendercad_webhooks set deleted_at = ? where id = ? and user_id = ? "
                         "and deleted_at is null", (now_iso(), webhook_id, user_id))
    return cur.rowcount == 1


# ---- rate limits -----------------------------------------------------------------------------------------------
def hit(db: sqlite_utils.Database, subject: str, bucket: str, window: int, now: float) -> tuple[int, float]:
    """Count one request in the subject's fixed window for this bucket: (count including this one, window start)."""
    with transaction(db):
        row = one(db, "select window_start, count from rendercad_ratelimits where subject = ? and bucket = ?",
                  (subject, bucket))
        if row is None or now >= row["window_start"] + window:
            row = {"window_start": now, "count": 0}
        count = row["count"] + 1
        db.execute("insert or replace into rendercad_ratelimits (subject, bucket, window_start, count) "
                   "values (?, ?, ?, ?)", (subject, bucket, row["window_start"], count))
    return count, row["window_start"]
