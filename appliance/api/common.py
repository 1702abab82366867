"""What every dialect router shares: JSON responses, the jobs service as a dependency, and the mapping of
Litestar's own errors (404, 405, 413, 415, 400) onto each dialect's error shape."""
from __future__ import annotations

import logging
from typing import Any, Callable

from litestar import Request, Response
from litestar.exceptions import HTTPException

from appliance.errors import ApplianceError

log = logging.getLogger("appliance.api")
ErrorShape = Callable[[ApplianceError], Response]

# Litestar's own HTTP errors, as the core's error with a stable machine code and a readable message.
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
              429: "rate_limited"}


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(content=data, status_code=status, headers=headers or {}, media_type="application/json")


def as_appliance_error(exc: HTTPException) -> ApplianceError:
    status = exc.status_code
    message = {404: "No such endpoint", 405: "Method not allowed on this endpoint",
               413: "Request body too large"}.get(status, str(exc.detail or "Bad request"))
    return ApplianceError(message, status=status, code=HTTP_CODES.get(status, "error"))


def handlers_for(shape: ErrorShape) -> dict:
    """A router's exception handlers: its own errors and Litestar's, both in the dialect's shape."""
    def appliance_error(request: Request, exc: ApplianceError) -> Response:
        return shape(exc)

    def http_error(request: Request, exc: HTTPException) -> Response:
        response = shape(as_appliance_error(exc))
        if exc.status_code == 405 and getattr(exc, "headers", None):
            response.headers.update(exc.headers or {})
        return response

    return {ApplianceError: appliance_error, HTTPException: http_error}
