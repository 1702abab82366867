"""What every dialect router shares: JSON responses and the mapping of Litestar's own errors (404, 405, 413, 415,
400) and of unexpected exceptions (500, logged) onto each dialect's error shape."""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from appliance.errors import ApplianceError, Unavailable

log = logging.getLogger("appliance.api")
ErrorShape = Callable[[ApplianceError], Response]

# Litestar's own HTTP errors, as the core's error with a stable machine code and a readable message.
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
              429: "rate_limited", 500: "internal_error"}
MESSAGES = {404: "No such endpoint", 405: "Method not allowed on this endpoint", 413: "Request body too large",
            415: "Unsupported media type", 500: "The appliance hit an internal error; see the server log"}
DISK_FULL = "The appliance's disk is full; retry later (the operator frees space)"


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(content=data, status_code=status, headers=headers or {}, media_type="application/json")


def as_appliance_error(exc: HTTPException) -> ApplianceError:
    status = exc.status_code
    message = MESSAGES.get(status) or str(exc.detail or "Bad request")
    return ApplianceError(message, status=status, code=HTTP_CODES.get(status, "error"))


def http_error_response(shape: ErrorShape, exc: HTTPException) -> Response:
    """Litestar's error in the dialect's shape, keeping its headers (a 405's Allow)."""
    response = shape(as_appliance_error(exc))
    response.headers.update(exc.headers or {})
    return response


def internal_error(request: Request, exc: Exception) -> ApplianceError:
    """A bug: logged with its traceback; the client gets a 500 that names no internals. A full disk is no bug:
    any write (a key's last use, a sign-in) can meet it, and every dialect answers it with its 503."""
    if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
        log.warning("%s %s: the disk is full", request.method, request.url.path)
        return Unavailable(DISK_FULL)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return ApplianceError(MESSAGES[500], status=500, code=HTTP_CODES[500])


def handlers_for(shape: ErrorShape) -> dict:
    """A router's exception handlers: its own errors, Litestar's and unexpected ones (the 500 key: Litestar picks
    it for exceptions without a status code), all in the dialect's shape."""
    def appliance_error(request: Request, exc: ApplianceError) -> Response:
        return shape(exc)

    def http_error(request: Request, exc: HTTPException) -> Response:
        return http_error_response(shape, exc)

    def unexpected(request: Request, exc: Exception) -> Response:
        return shape(internal_error(request, exc))

    return {ApplianceError: appliance_error, HTTPException: http_error, 500: unexpected}
