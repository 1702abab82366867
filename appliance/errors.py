"""The few errors of the core. Dialects map them to their own exact response shapes."""
from __future__ import annotations


class ApplianceError(Exception):
    """Base: carries an HTTP status and a machine code; the message is for a person."""

    status = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status or self.status
        self.code = code or self.code


class NotFound(ApplianceError):
    status, code = 404, "NOT_FOUND"


class Unauthorized(ApplianceError):
    status, code = 401, "UNAUTHORIZED"


class Forbidden(ApplianceError):
    status, code = 403, "FORBIDDEN"


class InsufficientCredits(ApplianceError):
    status, code = 402, "INSUFFICIENT_CREDITS"


class Unavailable(ApplianceError):
    status, code = 503, "UNAVAILABLE"


class Conflict(ApplianceError):
    status, code = 409, "CONFLICT"


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 500 characters) — how an unexpected error is shown in a job
    or a log."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")[:500]
