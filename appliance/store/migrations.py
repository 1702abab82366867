"""The whole schema, as ordered named sqlite_utils migrations. Add new steps at the end; never edit old ones."""
from __future__ import annotations

from sqlite_migrate import Migrations

migrations = Migrations("appliance")


@migrations()
def m001_core(db) -> None:
    db["users"].create({"id": str, "name": str, "plan": str, "created_at": str}, pk="id")
    db["users"].create_index(["name"], unique=True)
    db["api_keys"].create(
        {"id": str, "user_id": str, "dialect": str, "hash": str, "prefix": str, "name": str,
         "scope": str, "webhook_secret": str, "webhook_url": str, "created_at": str, "revoked_at": str},
        pk="id", foreign_keys=[("user_id", "users", "id")],
    )
    db["api_keys"].create_index(["hash"], unique=True)
    db["jobs"].create(
        {"id": str, "dialect": str, "user_id": str, "key_id": str, "kind": str, "status": str,
         "phase": str, "progress": float, "priority": int, "request": str, "result": str,
         "error": str, "metadata": str, "webhook_url": str, "credit_rate": float,
         "max_parallel": int, "duration_ms": int, "created_at": str, "started_at": str, "updated_at": str,
         "completed_at": str, "deleted_at": str},
        pk="id", foreign_keys=[("user_id", "users", "id")], defaults={"progress": 0.0, "priority": 0},
    )
    db["jobs"].create_index(["user_id", "created_at"])
    db["jobs"].create_index(["status"])
    db["tasks"].create(
        {"id": str, "job_id": str, "idx": int, "name": str, "renderer": str, "input": str,
         "depends_on": str, "cpu": float, "mem_mb": int, "gpu": int, "status": str,
         "attempts": int, "progress": float, "pid": int, "log_path": str, "result": str,
         "error": str, "cache_key": str, "cached": int, "created_at": str, "started_at": str,
         "finished_at": str},
        pk="id", foreign_keys=[("job_id", "jobs", "id")],
        defaults={"attempts": 0, "progress": 0.0, "cached": 0, "gpu": 0},
    )
    db["tasks"].create_index(["status"])
    db["tasks"].create_index(["job_id", "idx"])
    db["ledger"].create(
        {"id": int, "user_id": str, "job_id": str, "kind": str, "bucket": str, "amount": int,
         "note": str, "created_at": str},
        pk="id", foreign_keys=[("user_id", "users", "id")],
    )
    db["ledger"].create_index(["user_id", "bucket"])
    db["ledger"].create_index(["job_id"])
    db["events"].create(
        {"id": int, "job_id": str, "type": str, "data": str, "created_at": str}, pk="id",
    )
    db["events"].create_index(["job_id", "id"])
    db["webhook_deliveries"].create(
        {"id": str, "job_id": str, "dialect": str, "key_id": str, "url": str, "event": str,
         "body": str, "status": str, "attempt": int, "next_attempt_at": float,
         "last_status": int, "last_error": str, "created_at": str, "updated_at": str},
        pk="id", defaults={"attempt": 0},
    )
    db["webhook_deliveries"].create_index(["status", "next_attempt_at"])
    db["cache"].create(
        {"key": str, "renderer": str, "path": str, "result": str, "created_at": str}, pk="key",
    )


@migrations()
def m002_job_payload(db) -> None:
    """The pipeline input a job was submitted with (what retry and deferred planning re-read)."""
    db["jobs"].add_column("payload", str)


@migrations()
def m003_expiry(db) -> None:
    """When the retention sweep removed a job's outputs (the job then says so instead of serving dead URLs)."""
    db["jobs"].add_column("expired_at", str)
    db["events"].create_index(["created_at"])
    db["webhook_deliveries"].create_index(["job_id"])


@migrations()
def m004_rendercad(db) -> None:
    """RenderCAD: integer token ids and usage, device-code sign-in, jobs while they collect uploads, uploads,
    webhooks (appliance/store/rendercad.py)."""
    db["rendercad_tokens"].create({"id": int, "key_id": str, "user_id": str, "token_name": str,
                                   "last_used_at": str, "usage_count": int}, pk="id", defaults={"usage_count": 0})
    db["rendercad_tokens"].create_index(["key_id"], unique=True)
    db["rendercad_devices"].create({"code": str, "app_name": str, "app_type": str, "app_version": str,
                                    "created_at": str, "expires_at": float, "user_id": str, "status": str},
                                   pk="code")
    db["rendercad_jobs"].create({"id": str, "user_id": str, "key_id": str, "kind": str, "params": str,
                                 "status": str, "error_message": str, "cost": int, "created_at": str,
                                 "finalized_at": str, "completed_at": str, "deleted_at": str}, pk="id")
    db["rendercad_jobs"].create_index(["user_id", "created_at"])
    db["rendercad_uploads"].create({"job_id": str, "slot": str, "content_type": str, "path": str, "size": int,
                                    "uploaded_at": str}, pk=("job_id", "slot"))
    db["rendercad_webhooks"].create({"id": int, "user_id": str, "key_id": str, "url": str, "events": str,
                                     "secret": str, "created_at": str, "last_triggered_at": str,
                                     "last_success_at": str, "failure_count": int, "deleted_at": str},
                                    pk="id", defaults={"failure_count": 0})


@migrations()
def m005_hotfolder(db) -> None:
    """Every file the hot folder picked up: what it was (path, size, mtime, sha256), its job and where it stands,
    so a restart neither renders a file twice nor forgets one (appliance/store/hotfolder.py)."""
    db["hotfolder_files"].create({"id": int, "path": str, "user_name": str, "size": int, "mtime_ns": int,
                                  "sha256": str, "job_id": str, "state": str, "error": str, "created_at": str,
                                  "updated_at": str}, pk="id")
    db["hotfolder_files"].create_index(["path", "id"])
    db["hotfolder_files"].create_index(["state"])


@migrations()
def m006_job_charge(db) -> None:
    """A fixed price settled when the job completes (RenderCAD tokens), beside Kodisc's per-second rate."""
    db["jobs"].add_column("charge", int)


@migrations()
def m007_rendercad_webhooks_limits(db) -> None:
    """RenderCAD: a delivery signed with its registered webhook's own secret (not the key's), and the per-token
    rate-limit windows, kept in SQLite so a restart does not reset them."""
    db["webhook_deliveries"].add_column("secret", str)
    db["rendercad_ratelimits"].create({"subject": str, "bucket": str, "window_start": float, "count": int},
                                      pk=("subject", "bucket"))


@migrations()
def m008_job_listing(db) -> None:
    """A user's jobs of one dialect, newest first, paged by (created_at, id) and filtered by status, read from an
    index (GET /v1/jobs over 100,000 jobs)."""
    db.execute("create index if not exists idx_jobs_listing on jobs (user_id, dialect, created_at, id) "
               "where deleted_at is null")
    db.execute("create index if not exists idx_jobs_listing_status on jobs (user_id, dialect, status, created_at, id) "
               "where deleted_at is null")
    db.execute("create index if not exists idx_tasks_renderer on tasks (renderer, created_at, id)")


@migrations()
def m009_operators(db) -> None:
    """The dashboard: operator accounts (scrypt hashes), their server-side sessions (a cookie's SHA-256, its CSRF
    token, its expiry), and indexes that page every user's jobs newest first (appliance/store/operators.py)."""
    db["operators"].create({"id": str, "name": str, "password_hash": str, "created_at": str, "last_login_at": str},
                           pk="id")
    db["operators"].create_index(["name"], unique=True)
    db["operator_sessions"].create({"id": str, "operator_id": str, "csrf": str, "created_at": str,
                                    "expires_at": float}, pk="id", foreign_keys=[("operator_id", "operators", "id")])
    db["operator_sessions"].create_index(["expires_at"])
    db.execute("create index if not exists idx_jobs_all on jobs (created_at, id) where deleted_at is null")
    db.execute("create index if not exists idx_jobs_all_status on jobs (status, created_at, id) "
               "where deleted_at is null")


@migrations()
def m010_job_output_bytes(db) -> None:
    """What a completed job's outputs take on disk, recorded when they are published: the operator's per-user
    disk accounting (dashboard Users, `appliance users list`) reads a sum, never a walk of outputs/."""
    db["jobs"].add_column("output_bytes", int)


@migrations()
def m011_rendercad_jobs_are_core_jobs(db) -> None:
    """RenderCAD's collecting of uploads is a phase of the core job (status and phase ``uploading``), so
    rendercad_jobs keeps only RenderCAD's own columns (id, kind, params). A job that never reached the core
    (still uploading, an upload refused, cancelled while uploading) becomes a core job in that state; a finalized
    one keeps its core job, which takes the RenderCAD row's creation time (history's time and order) and its
    deletion. Nothing the owner saw is lost: status, error text, times and history read the same."""
    kinds = {"image": "image", "video": "video", "convert": "video_convert"}
    states = {"uploading": "uploading", "failed": "failed", "canceled": "cancelled", "submitted": "failed"}
    for row in list(db.query("select * from rendercad_jobs")):
        core = next(db.query("select id, deleted_at from jobs where id = ?", [row["id"]]), None)
        if core is not None:
            db.execute("update jobs set created_at = ?, deleted_at = coalesce(deleted_at, ?) where id = ?",
                       [row["created_at"], row["deleted_at"], row["id"]])
            continue
        status = states.get(row["status"], "failed")  # submitted with no core job: shown as failed, as it was
        ended = status in ("failed", "cancelled")
        error = row["error_message"] if status == "failed" else "cancelled" if ended else None
        db["jobs"].insert({"id": row["id"], "dialect": "rendercad", "user_id": row["user_id"], "key_id": row["key_id"],
                           "kind": kinds.get(row["kind"], row["kind"]), "status": status, "phase": status,
                           "progress": 0.0, "priority": 0, "request": row["params"], "error": error,
                           "created_at": row["created_at"], "updated_at": row["completed_at"] or row["created_at"],
                           "completed_at": row["completed_at"] if ended else None, "deleted_at": row["deleted_at"],
                           "duration_ms": 0 if ended else None})
    db.execute("drop index if exists idx_rendercad_jobs_user_id_created_at")
    db["rendercad_jobs"].transform(drop={"user_id", "key_id", "status", "error_message", "cost", "created_at",
                                         "finalized_at", "completed_at", "deleted_at"})


@migrations()
def m012_cache_use(db) -> None:
    """When a cache entry last answered a task (``used_at``): the hourly sweep evicts the least recently used
    entries past ``cache_max_gb`` and those unused for ``cache_max_days`` (store/cache.py ``evict``)."""
    db["cache"].add_column("used_at", str)
