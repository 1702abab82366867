"""The dashboard's tables: operator accounts, their server-side sessions, and the all-users job listing.

Passwords are hashed with scrypt (stdlib, memory-hard); a session is stored as the SHA-256 of its cookie, so a
copy of the database signs nobody in. Operators are not users: an API key never names one.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from typing import Any

import sqlite_utils

from appliance.errors import ApplianceError, NotFound
from appliance.store.db import now_iso, one, rows, transaction
from appliance.store.users import NAME

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1  # 16 MiB of memory per check: ~50 ms, costly to guess in bulk
MIN_PASSWORD = 10


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(got.hex(), digest)


@functools.cache
def _dummy() -> str:
    """A check against this when the name is unknown takes as long as a real one: timing does not tell names apart.
    Made at the first sign-in, not at import: the scrypt (~45 ms) was paid by every CLI call and server start."""
    return hash_password(secrets.token_hex(8))


def add_operator(db: sqlite_utils.Database, name: str, password: str) -> dict[str, Any]:
    if not NAME.match(name or ""):
        raise ApplianceError("an operator name is 1-64 letters, digits, '_', '.', '@' or '-'")
    if len(password) < MIN_PASSWORD:
        raise ApplianceError(f"the password must have at least {MIN_PASSWORD} characters")
    if get_operator(db, name):
        raise ApplianceError(f"operator {name!r} already exists (change its password with: appliance operator "
                             f"passwd {name})")
    row = {"id": "op_" + secrets.token_hex(8), "name": name, "password_hash": hash_password(password),
           "created_at": now_iso(), "last_login_at": None}
    with transaction(db):
        db.table("operators").insert(row)
    return row


def set_password(db: sqlite_utils.Database, name: str, password: str) -> None:
    operator = get_operator(db, name)
    if operator is None:
        raise NotFound(f"no operator named {name!r}")
    if len(password) < MIN_PASSWORD:
        raise ApplianceError(f"the password must have at least {MIN_PASSWORD} characters")
    with transaction(db):
        db.table("operators").update(operator["id"], {"password_hash": hash_password(password)})
        db.execute("delete from operator_sessions where operator_id = ?", (operator["id"],))  # sign out everywhere


def remove_operator(db: sqlite_utils.Database, name: str) -> None:
    operator = get_operator(db, name)
    if operator is None:
        raise NotFound(f"no operator named {name!r}")
    with transaction(db):
        db.execute("delete from operator_sessions where operator_id = ?", (operator["id"],))
        db.execute("delete from operators where id = ?", (operator["id"],))


def get_operator(db: sqlite_utils.Database, name: str) -> dict[str, Any] | None:
    return one(db, "select * from operators where name = ?", (name,))


def list_operators(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return rows(db, "select id, name, created_at, last_login_at from operators order by name")


def count_operators(db: sqlite_utils.Database) -> int:
    got = one(db, "select count(*) as n from operators")
    return int(got["n"]) if got else 0


def authenticate(db: sqlite_utils.Database, name: str, password: str) -> dict[str, Any] | None:
    operator = get_operator(db, name)
    ok = check_password(password, operator["password_hash"] if operator else _dummy())
    return operator if operator and ok else None


# ---- sessions -------------------------------------------------------------------------------------------------
def _sid(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(db: sqlite_utils.Database, operator_id: str, lifetime_s: float) -> tuple[str, dict[str, Any]]:
    """Returns (cookie value, session row). The cookie value is never stored."""
    token = secrets.token_urlsafe(32)
    row = {"id": _sid(token), "operator_id": operator_id, "csrf": secrets.token_urlsafe(32),
           "created_at": now_iso(), "expires_at": time.time() + lifetime_s}
    with transaction(db):
        db.execute("delete from operator_sessions where expires_at < ?", (time.time(),))  # the table stays small
        db.table("operator_sessions").insert(row)
        db.execute("update operators set last_login_at = ? where id = ?", (now_iso(), operator_id))
    return token, row


def session(db: sqlite_utils.Database, token: str) -> dict[str, Any] | None:
    """The live session of a cookie value, with its operator's name; None when unknown or expired."""
    if not token or len(token) > 100:
        return None
    return one(db, "select s.*, o.name as operator from operator_sessions s join operators o on o.id = s.operator_id"
                   " where s.id = ? and s.expires_at > ?", (_sid(token), time.time()))


def close_session(db: sqlite_utils.Database, token: str) -> None:
    with transaction(db):
        db.execute("delete from operator_sessions where id = ?", (_sid(token),))


# ---- every user's jobs, for the dashboard ---------------------------------------------------------------------
def _json(column: str, path: str) -> str:
    return f"(case when json_valid({column}) then json_extract({column}, '{path}') end)"


# What a person calls a job, from what its dialect stored: the scene class (Kodisc, and admin jobs of the manim
# renderer), the movie's title or else its projectId (ViralSync; a movie without a title is normalised to
# "Untitled Movie"), the model and quality, camera or converted video (RenderCAD), the dropped file (hot folder).
# Only viralsync rows read their payload (the movie).
TITLE = f"""coalesce(case dialect
  when 'kodisc' then {_json('request', '$.className')}
  when 'viralsync' then coalesce(nullif({_json('payload', '$.movie.title')}, 'Untitled Movie'),
                                 'project ' || {_json('request', '$.projectId')})
  when 'rendercad' then case kind
    when 'image' then {_json('request', '$.model')} || ' ' || {_json('request', '$.quality')}
      || coalesce(nullif(' · ' || {_json('request', '$.condition')}, ' · auto'), '')
    when 'video' then 'video ' || {_json('request', '$.camera')} || ' ' || {_json('request', '$.duration')} || ' s '
      || {_json('request', '$.resolution')}
    when 'video_convert' then 'GIF of ' || replace({_json('request', '$.video_url')}, rtrim(
      {_json('request', '$.video_url')}, replace({_json('request', '$.video_url')}, '/', '')), '')
    end
  when 'hotfolder' then {_json('request', '$.file')}
  else coalesce({_json('request', '$.tasks[0].input.className')}, {_json('request', '$.input.className')},
                {_json('request', '$.tasks[0].renderer')}, {_json('request', '$.renderer')})
  end, '')"""


def list_all_jobs(db: sqlite_utils.Database, *, dialect: str | None = None, user_id: str | None = None,
                  status: str | None = None, kind: str | None = None, before: tuple[str, str] | None = None,
                  search: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """A page of jobs of every user, newest first, keyset-paged by (created_at, id) and read from an index
    (m008/m009), so a page costs the same at 100,000 jobs as at 100. Each row has its ``title`` (TITLE) and the
    length of its output (``media_s``), not the request or payload. ``search`` matches the id or the title (case
    blind, anywhere in them): the index is walked newest first until a page has matched, so a rare term reads
    every row's title."""
    where, params = ["deleted_at is null"], []
    for column, value in (("dialect", dialect), ("user_id", user_id), ("status", status), ("kind", kind)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if before:
        where.append("(created_at, id) < (?, ?)")
        params += [before[0], before[1]]
    if search:
        term = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(f"(id like ? escape '\\' or {TITLE} like ? escape '\\')")
        params += [term, term]
    # A user's jobs: their own index; a status (few running among many finished): the status index; else time.
    index = "" if user_id else "indexed by idx_jobs_all_status" if status else "indexed by idx_jobs_all"
    columns = ("id, dialect, user_id, kind, status, phase, progress, error, created_at, started_at, completed_at, "
               f"duration_ms, expired_at, {TITLE} as title, {_json('result', '$.meta.duration')} as media_s")
    sql = (f"select {columns} from jobs {index} where {' and '.join(where)} "
           "order by created_at desc, id desc limit ?")
    return rows(db, sql, (*params, limit))


def job_summary(db: sqlite_utils.Database, job_id: str) -> dict[str, Any]:
    """One job's ``title`` and ``media_s``, as the listing has them."""
    return one(db, f"select {TITLE} as title, {_json('result', '$.meta.duration')} as media_s from jobs "
                   "where id = ?", (job_id,)) or {"title": "", "media_s": None}


def charged(db: sqlite_utils.Database, job_ids: list[str]) -> dict[str, int]:
    """What each of these jobs was charged (credits or RenderCAD tokens; the ledger's settled charges)."""
    if not job_ids:
        return {}
    marks = ", ".join("?" * len(job_ids))
    return {r["job_id"]: int(r["c"]) for r in rows(
        db, f"select job_id, -sum(amount) as c from ledger where kind = 'charge' and job_id in ({marks}) "
            "group by job_id", tuple(job_ids))}


def user_names(db: sqlite_utils.Database, user_ids: set[str]) -> dict[str, str]:
    if not user_ids:
        return {}
    marks = ", ".join("?" * len(user_ids))
    return {r["id"]: r["name"] for r in rows(db, f"select id, name from users where id in ({marks})",
                                             tuple(user_ids))}


def pending_devices(db: sqlite_utils.Database, limit: int = 50) -> list[dict[str, Any]]:
    """RenderCAD device codes still waiting for someone's approval (store/rendercad.py owns the table)."""
    return rows(db, "select code, app_name, app_type, app_version, created_at, expires_at from rendercad_devices "
                    "where status = 'pending' and expires_at > ? order by created_at desc limit ?",
                (time.time(), limit))
