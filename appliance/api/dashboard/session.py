"""Operator sign-in for the dashboard: the session cookie, the CSRF check, and the guards every route uses.

- The cookie holds a random token; the server keeps its SHA-256, the CSRF token and the expiry (store.operators).
  It is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), Secure behind https.
- Every state-changing request (POST, PUT, PATCH, DELETE) carries the session's CSRF token in the X-CSRF-Token
  header (the dashboard's script) or a ``csrf`` form field (the sign-out form); without it: 403.
- An ``Authorization`` header is never looked at: a user's API key does not open the dashboard.
"""
from __future__ import annotations

import hmac
import time
from collections import defaultdict, deque
from urllib.parse import urlsplit

from litestar import Request, Response

from appliance.errors import ApplianceError, Forbidden
from appliance.services.jobs import JobService
from appliance.store import operators

COOKIE = "appliance_session"
SAFE = ("GET", "HEAD", "OPTIONS")
CSRF_HEADER = "x-csrf-token"
# Failed sign-ins per client address: at most FAILURES_MAX in FAILURES_WINDOW_S (kept in memory: a restart
# resets it, which an attacker cannot cause).
FAILURES_MAX, FAILURES_WINDOW_S = 10, 300
_failures: dict[str, deque] = defaultdict(deque)


class SignInRequired(ApplianceError):
    """No live session: pages redirect to the sign-in page, the JSON API answers 401."""
    status, code = 401, "SIGN_IN_REQUIRED"


def lifetime_s(service: JobService) -> float:
    return service.settings.dashboard_session_hours * 3600


def current(request: Request, service: JobService) -> dict | None:
    return operators.session(service.db, request.cookies.get(COOKIE, ""))


def check_origin(request: Request, service: JobService) -> None:
    """A state change sent by a page of another site is refused even before the token is looked at (and the
    sign-in form, which has no session yet, gets this check alone)."""
    origin = request.headers.get("origin")
    if request.method in SAFE or not origin:
        return
    allowed = {request.headers.get("host", ""), urlsplit(service.settings.base_url).netloc}
    if urlsplit(origin).netloc not in allowed:
        raise Forbidden("Cross-site request refused")


async def operator_session(request: Request, service: JobService) -> dict:
    """The signed-in operator's session, or SignInRequired; and the CSRF token on every state change."""
    found = current(request, service)
    if found is None:
        raise SignInRequired("Sign in to the dashboard first")
    check_origin(request, service)
    if request.method not in SAFE:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            sent = str((await request.form()).get("csrf", ""))
        if not hmac.compare_digest(sent.encode(), str(found["csrf"]).encode()):
            raise Forbidden("Missing or wrong CSRF token: reload the page and try again")
    return found


def set_cookie(response: Response, service: JobService, token: str) -> Response:
    secure = service.settings.base_url.startswith("https://")
    response.set_cookie(COOKIE, token, max_age=int(lifetime_s(service)), path="/", httponly=True, samesite="strict",
                        secure=secure)
    return response


def clear_cookie(response: Response) -> Response:
    response.delete_cookie(COOKIE, path="/")
    return response


def throttled(address: str) -> bool:
    """True when this address failed to sign in FAILURES_MAX times within the window."""
    window = _failures.get(address)
    while window and window[0] < time.monotonic() - FAILURES_WINDOW_S:
        window.popleft()
    if not window:
        _failures.pop(address, None)  # addresses that stopped failing take no memory
        return False
    return len(window) >= FAILURES_MAX


def failed(address: str) -> None:
    _failures[address].append(time.monotonic())
