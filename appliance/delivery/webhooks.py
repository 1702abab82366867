"""Durable webhook outbox and its delivery loop.

A delivery row is written in the same breath as the job's terminal state, so a restart loses nothing;
the loop posts due rows, signs each attempt afresh, and reschedules failures on the dialect's schedule
(delays measured from the first attempt, multiplied by webhook_retry_scale).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable

import httpx
import sqlite_utils

from appliance.delivery import netpolicy
from appliance.errors import one_line
from appliance.settings import Settings
from appliance.store import deliveries, users

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


class Deliverer:
    """Posts due deliveries. HTTP runs concurrently; every database write stays on the loop thread."""

    def __init__(self, settings: Settings, db: sqlite_utils.Database) -> None:
        self.settings, self.db = settings, db
        self._wake = asyncio.Event()
        self._inflight: set[str] = set()
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None
        self.on_outcome: Callable[[dict, str], None] = lambda delivery, outcome: None  # metrics

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client:
            await self._client.aclose()

    def wake(self) -> None:
        self._wake.set()

    def enqueue(self, *, job_id: str, dialect: str, key_id: str | None, url: str, event: str, body: bytes,
                secret: str | None = None, delivery_id: str | None = None) -> None:
        """Write the delivery durably, then post it soon (a restart in between loses nothing). secret: a
        per-webhook secret that overrides the key's."""
        deliveries.enqueue(self.db, job_id=job_id, dialect=dialect, key_id=key_id, url=url, event=event, body=body,
                           secret=secret, delivery_id=delivery_id)
        self.wake()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.25)
            except TimeoutError:
                pass
            self._wake.clear()
            for delivery in deliveries.due(self.db, time.time()):
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
        secret = delivery.get("secret")
        if not secret:
            key = users.get_key(self.db, delivery["key_id"]) if delivery["key_id"] else None
            secret = key["webhook_secret"] if key else ""
        body = delivery["body"].encode()
        headers = {"content-type": "application/json"}
        headers.update(SIGNERS[delivery["dialect"]](secret, body, delivery))
        try:  # resolved off the loop, and the connection goes to the address the policy checked
            target = await asyncio.to_thread(netpolicy.resolve, delivery["url"],
                                             allow_loopback=self.settings.allow_loopback_targets)
            url, host, extensions = target.pinned()
            if self._client is None:  # made at the first delivery: its TLS context costs ~0.1 s of every start
                self._client = httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
            response = await self._client.post(url, content=body, headers={**headers, **host}, extensions=extensions)
        except Exception as exc:  # noqa: BLE001 - any delivery error is a recorded, bounded failure
            return 0, one_line(exc)[:300]
        return response.status_code, None if response.is_success else f"HTTP {response.status_code}"

    def _record(self, delivery: dict, status: int, error: str | None) -> None:
        attempt = delivery["attempt"] + 1
        schedule = SCHEDULES[delivery["dialect"]]
        values: dict = {"attempt": attempt, "last_status": status, "last_error": error}
        if error is None:
            values["status"] = "delivered"
        elif attempt > len(schedule):
            values["status"] = "failed"
        else:
            first = delivery["next_attempt_at"] if attempt == 1 else self._first_attempt(delivery)
            values["next_attempt_at"] = first + schedule[attempt - 1] * self.settings.webhook_retry_scale
        deliveries.record(self.db, delivery["id"], values)
        self.on_outcome(delivery, values.get("status", "retrying"))

    def _first_attempt(self, delivery: dict) -> float:
        # delays are measured from the original attempt: recover it from the previous schedule step
        schedule = SCHEDULES[delivery["dialect"]]
        return delivery["next_attempt_at"] - schedule[delivery["attempt"] - 1] * self.settings.webhook_retry_scale
