"""Users and API keys (stored as SHA-256 only; plaintext is shown once)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from appliance.errors import ApplianceError, NotFound
from appliance.store import ids
from appliance.store.db import now_iso, one, rows, transaction

DIALECTS = ("kodisc", "viralsync", "rendercad")
SCOPES = ("read-only", "render-only", "full-access")
PLANS = ("free", "pro", "business", "enterprise", "studio")


@dataclass(frozen=True)
class ApiKey:
    id: str
    user_id: str
    dialect: str
    prefix: str
    scope: str
    webhook_secret: str
    webhook_url: str | None
    revoked: bool


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def create_user(db: sqlite_utils.Database, name: str, plan: str = "studio") -> dict[str, Any]:
    if not NAME.match(name or ""):
        raise ApplianceError("a user name is 1-64 letters, digits, '_', '.', '@' or '-', "
                             "starting with a letter or digit")
    if plan not in PLANS:
        raise ApplianceError(f"plan must be one of: {', '.join(PLANS)}")
    if get_user_by_name(db, name):
        raise ApplianceError(f"user {name!r} already exists")
    user = {"id": ids.user_id(), "name": name, "plan": plan, "created_at": now_iso()}
    with transaction(db):
        db.table("users").insert(user)
    return user


def get_user_by_name(db: sqlite_utils.Database, name: str) -> dict[str, Any] | None:
    return one(db, "select * from users where name = ?", (name,))


def get_user(db: sqlite_utils.Database, user_id: str) -> dict[str, Any] | None:
    return one(db, "select * from users where id = ?", (user_id,))


def require_user(db: sqlite_utils.Database, name: str) -> dict[str, Any]:
    user = get_user_by_name(db, name)
    if not user:
        raise NotFound(f"no user named {name!r} (create it with: appliance users create {name})")
    return user


def list_users(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return rows(db, "select * from users order by created_at")


def set_plan(db: sqlite_utils.Database, name: str, plan: str) -> None:
    if plan not in PLANS:
        raise ApplianceError(f"plan must be one of: {', '.join(PLANS)}")
    user = require_user(db, name)
    with transaction(db):
        db.table("users").update(user["id"], {"plan": plan})


def create_key(db: sqlite_utils.Database, user_id: str, dialect: str, *, scope: str = "full-access",
               name: str = "", webhook_url: str | None = None) -> tuple[str, dict[str, Any]]:
    """Returns (plaintext key, stored row). The plaintext is never stored."""
    if dialect not in DIALECTS:
        raise ApplianceError(f"dialect must be one of: {', '.join(DIALECTS)}")
    if scope not in SCOPES:
        raise ApplianceError(f"scope must be one of: {', '.join(SCOPES)}")
    plaintext = ids.api_key(dialect)
    row = {"id": ids.key_id(), "user_id": user_id, "dialect": dialect, "hash": hash_key(plaintext),
           "prefix": plaintext[:14], "name": name, "scope": scope, "webhook_secret": ids.webhook_secret(),
           "webhook_url": webhook_url, "created_at": now_iso(), "revoked_at": None}
    with transaction(db):
        db.table("api_keys").insert(row)
    return plaintext, row


def lookup_key(db: sqlite_utils.Database, plaintext: str) -> ApiKey | None:
    row = one(db, "select * from api_keys where hash = ?", (hash_key(plaintext),))
    if not row:
        return None
    return ApiKey(row["id"], row["user_id"], row["dialect"], row["prefix"], row["scope"],
                  row["webhook_secret"], row["webhook_url"], row["revoked_at"] is not None)


def get_key(db: sqlite_utils.Database, key_id: str) -> dict[str, Any] | None:
    return one(db, "select * from api_keys where id = ?", (key_id,))


def list_keys(db: sqlite_utils.Database, user_id: str | None = None) -> list[dict[str, Any]]:
    if user_id:
        return rows(db, "select * from api_keys where user_id = ? order by created_at", (user_id,))
    return rows(db, "select * from api_keys order by created_at")


def revoke_key(db: sqlite_utils.Database, key_id: str) -> None:
    if not get_key(db, key_id):
        raise NotFound(f"no key with id {key_id!r}")
    with transaction(db):
        db.execute("update api_keys set revoked_at = coalesce(revoked_at, ?) where id = ?", (now_iso(), key_id))
