"""Identifier formats of each dialect (DECISIONS.md); opaque to clients, fixed here."""
from __future__ import annotations

import secrets
import string

_ALNUM_LOWER = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits


def _pick(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def kodisc_job_id() -> str:
    return "c" + _pick(_ALNUM_LOWER, 24)


def viralsync_job_id() -> str:
    return "job_" + secrets.token_hex(6)


def user_id() -> str:
    return "usr_" + _pick(_ALNUM, 18)


def key_id() -> str:
    return "key_" + secrets.token_hex(8)


def task_id(job_id: str, idx: int) -> str:
    return f"{job_id}.t{idx:03d}"


def delivery_id() -> str:
    return "dlv_" + secrets.token_hex(10)


def api_key(dialect: str) -> str:
    if dialect == "kodisc":
        return "kdsc_live_" + secrets.token_hex(24)
    if dialect == "viralsync":
        return "vs_prod_" + _pick(_ALNUM, 32)
    if dialect == "rendercad":
        return "rendercad_" + _pick(_ALNUM, 32)
    raise ValueError(f"unknown dialect {dialect!r}")


def webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(24)
