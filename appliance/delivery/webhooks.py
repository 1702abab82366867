"""Durable webhook outbox and its delivery loop.

A delivery row is written in the same breath as the job's terminal state, so a restart loses nothing;
the loop posts due rows, signs each attempt afresh, and reschedules failures on the dialect's schedule
(delays measured from the first attempt, multiplied by webhook_retry_scale).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from typing import Callable
from urllib.parse import urlsplit

import httpx
import sqlite_utils

from appliance import ids
from appliance.store.db import now_iso, one, rows, transaction
from appliance.settings import Settings

log = logging.getLogger("appliance.webhooks")

# Delays after the first attempt, in seconds (DECISIONS.md).
SCHEDULES: dict[str, tuple[float, ...]] = {
    "kodisc": (30, 300, 1800),
    "viralsync": (30, 120, 600),
    "rendercad": (60, 300, 900),
}
TIMEOUT_S = 10.0


def sign_kodisc(secret: str, body: bytes, delivery: dict) -> dict[str, str]:
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"kodisc-event": delivery["event"], "kodisc-signature": f"t={t},v1={mac}"}


def sign_viralsync(secret: str, body: bytes, delivery: dict) -> dict[str, str]:
    return {"x-render-signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def sign_rendercad(secret: str, body: bytes, delivery: dict) -> dict[str, str]:
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Webhook-Signature": f"sha256={mac}", "X-Webhook-Event": delivery["event"],
            "X-Webhook-Delivery": delivery["id"], "User-Agent": "RENDERCAD-Webhooks/1.0"}


SIGNERS: dict[str, Callable[[str, bytes, dict], dict[str, str]]] = {
    "kodisc": sign_kodisc, "viralsync": sign_viralsync, "rendercad": sign_rendercad,
}


class TargetRefused(ValueError):
    pass


def check_target(url: str, *, allow_loopback: bool, allow_http: bool = True) -> None:
    """http(s) only; loopback and link-local hosts refused unless allowed; LAN ranges are fine."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not allow_http):
        raise TargetRefused("URL must be https://" if not allow_http else "URL must be http(s)://")
    if not parts.hostname:
        raise TargetRefused("URL has no host")
    if allow_loopback:
        return
    for addr in _addresses(parts.hostname):
        if addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_multicast:
            raise TargetRefused(f"URL host {parts.hostname} is a loopback or link-local address")


def _addresses(host: str) -> list:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    if host in ("localhost",) or host.endswith(".localhost"):
        return [ipaddress.ip_address("127.0.0.1")]
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return []  # unresolvable now: the delivery will fail and retry
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def enqueue(db: sqlite_utils.Database, *, job_id: str, dialect: str, key_id: str | None, url: str, event: str,
            body: bytes) -> str:
    delivery_id = ids.delivery_id()
    with transaction(db):
        db["webhook_deliveries"].insert({
            "id": delivery_id, "job_id": job_id, "dialect": dialect, "key_id": key_id, "url": url,
            "event": event, "body": body.decode(), "status": "pending", "attempt": 0,
            "next_attempt_at": time.time(), "created_at": now_iso(), "updated_at": now_iso()})
    return delivery_id


def due(db: sqlite_utils.Database, now: float) -> list[dict]:
    return rows(db, "select * from webhook_deliveries where status = 'pending' and next_attempt_at <= ? "
                    "order by next_attempt_at limit 20", (now,))


class Deliverer:
    """Posts due deliveries. HTTP runs concurrently; every database write stays on the loop thread."""

    def __init__(self, settings: Settings, db: sqlite_utils.Database) -> None:
        self.settings, self.db = settings, db
        self._wake = asyncio.Event()
        self._inflight: set[str] = set()
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client:
            await self._client.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.25)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            for delivery in due(self.db, time.time()):
                if delivery["id"] not in self._inflight:
                    self._inflight.add(delivery["id"])
                    asyncio.create_task(self._deliver(delivery))

    async def _deliver(self, delivery: dict) -> None:
        try:
            status, error = await self._post(delivery)
            self._record(delivery, status, error)
        except Exception:
            log.exception("delivery %s crashed", delivery["id"])
        finally:
            self._inflight.discard(delivery["id"])

    async def _post(self, delivery: dict) -> tuple[int, str | None]:
        key = one(self.db, "select webhook_secret from api_keys where id = ?", (delivery["key_id"],))
        body = delivery["body"].encode()
        headers = {"content-type": "application/json"}
        headers.update(SIGNERS[delivery["dialect"]](key["webhook_secret"] if key else "", body, delivery))
        try:
            check_target(delivery["url"], allow_loopback=self.settings.allow_loopback_targets)
            response = await self._client.post(delivery["url"], content=body, headers=headers)
        except (httpx.HTTPError, TargetRefused, OSError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"[:300]
        return response.status_code, None if response.is_success else f"HTTP {response.status_code}"

    def _record(self, delivery: dict, status: int, error: str | None) -> None:
        attempt = delivery["attempt"] + 1
        schedule = SCHEDULES[delivery["dialect"]]
        values = {"attempt": attempt, "last_status": status, "last_error": error, "updated_at": now_iso()}
        if error is None:
            values["status"] = "delivered"
        elif attempt > len(schedule):
            values["status"] = "failed"
        else:
            first = delivery["next_attempt_at"] if attempt == 1 else self._first_attempt(delivery)
            values["next_attempt_at"] = first + schedule[attempt - 1] * self.settings.webhook_retry_scale
        with transaction(self.db):
            self.db["webhook_deliveries"].update(delivery["id"], values)

    def _first_attempt(self, delivery: dict) -> float:
        # delays are measured from the original attempt: recover it from the previous schedule step
        schedule = SCHEDULES[delivery["dialect"]]
        return delivery["next_attempt_at"] - schedule[delivery["attempt"] - 1] * self.settings.webhook_retry_scale
