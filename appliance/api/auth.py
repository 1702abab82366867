"""API-key authentication shared by the dialects (each decides its header names and error shape)."""
from __future__ import annotations

import re

from litestar import Request

from appliance.errors import Unauthorized
from appliance.store import users

KEY_PATTERNS = {
    "kodisc": re.compile(r"^kdsc_live_[0-9a-f]{48}$"),
    "viralsync": re.compile(r"^vs_prod_[A-Za-z0-9]{32}$"),
    "rendercad": re.compile(r"^rendercad_[A-Za-z0-9]{32}$"),
}


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
