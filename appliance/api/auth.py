"""API-key authentication shared by the dialects (each decides its header names and error shape)."""
from __future__ import annotations

import re

from litestar import Request

from appliance.errors import Forbidden, Unauthorized
from appliance.store import users

KEY_PATTERNS = {
    "kodisc": re.compile(r"^kdsc_live_[0-9a-f]{48}$"),
    "viralsync": re.compile(r"^vs_prod_[A-Za-z0-9]{32}$"),
    "rendercad": re.compile(r"^rendercad_[A-Za-z0-9]{32}$"),
}


SCOPE_RANK = {"read-only": 0, "render-only": 1, "full-access": 2}
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authenticate(db, dialect: str, token: str | None) -> users.ApiKey:
    """The key, or Unauthorized naming why (missing, malformed, unknown, revoked, other dialect)."""
    if not token:
        raise Unauthorized("Missing API key", code="missing")
    if not KEY_PATTERNS[dialect].match(token):
        raise Unauthorized("Malformed API key", code="malformed")
    key = users.lookup_key(db, token)
    if key is None or key.dialect != dialect:
        raise Unauthorized("Unknown API key", code="unknown")
    if key.revoked:
        raise Unauthorized("This API key has been revoked", code="revoked")
    return key


def require_scope(key: users.ApiKey, method: str) -> None:
    """read-only keys read; render-only keys also start and stop renders; full-access keys do everything."""
    needed = "read-only" if method in SAFE_METHODS else "render-only"
    if SCOPE_RANK.get(key.scope, 0) < SCOPE_RANK[needed]:
        raise Forbidden(f"This API key is {key.scope}: {method} requests need a {needed} or full-access key")
