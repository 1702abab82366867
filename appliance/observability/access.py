"""The access log: one line per request to the ``appliance.access`` logger (stderr).

It wraps the app's whole ASGI handler rather than the routes, so unmatched paths (404), refused methods and
crashes are logged too. It never logs headers (API keys, Authorization) and masks every query value whose name
looks like a credential. It also counts 429 answers for /metrics, per dialect prefix.
"""
from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from litestar import Litestar

log = logging.getLogger("appliance.access")
SECRET_NAME = re.compile(r"key|token|secret|sig|pass|auth|code|credential", re.I)
PREFIXES = {"/api/v2": "kodisc", "/v1": "viralsync", "/backend": "rendercad", "/admin": "admin"}


def install(app: Litestar, enabled: bool, on_refused: Callable[[str], None]) -> None:
    """Wrap ``app``'s handler; ``on_refused(dialect)`` hears each 429."""
    if enabled and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # one line, even where the root logger also writes to stderr
    app.asgi_handler = _AccessLog(app.asgi_handler, enabled, on_refused)


def safe_target(path: str, query: bytes) -> str:
    """The path and query with credential-like values replaced by ***."""
    if not query:
        return path
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    masked = [(k, "***" if SECRET_NAME.search(k) else v) for k, v in pairs]
    return f"{path}?{urlencode(masked, safe='*/,:')}"


def dialect_of(path: str) -> str:
    return next((name for prefix, name in PREFIXES.items() if path == prefix or path.startswith(prefix + "/")),
                "other")


class _AccessLog:
    def __init__(self, inner: Any, enabled: bool, on_refused: Callable[[str], None]) -> None:
        self.inner, self.enabled, self.on_refused = inner, enabled, on_refused

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]  # a crash before any answer is logged as 500

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.inner(scope, receive, watch)
        finally:
            self._done(scope, status[0], (time.perf_counter() - started) * 1000)

    def _done(self, scope: Any, status: int, ms: float) -> None:
        if status == 429:
            self.on_refused(dialect_of(scope["path"]))
        if self.enabled:
            client = scope.get("client") or ("-", 0)
            log.info('%s "%s %s" %d %.1fms', client[0], scope["method"],
                     safe_target(scope["path"], scope.get("query_string", b"")), status, ms)
