"""Prometheus metrics at /metrics.

Counters and the task-duration histogram are fed by hooks where the event happens (the scheduler's task end, the
webhook outbox's outcome, a 429 seen by the access middleware); job counts, queue depth and utilisation are read
at scrape time, so they are right after a restart. Each server has its own registry (tests build several).
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlite_utils
from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from appliance.api.admin import token_path
from appliance.runtime.resources import Capacity
from appliance.settings import Settings
from appliance.store import jobs, stats
from appliance.store.db import parse_iso
from appliance.store.rows import TaskRow

# Litestar appends "; charset=utf-8" to a text/* media type itself: prometheus_client's constant already has it.
MEDIA_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")

log = logging.getLogger("appliance.metrics")

DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# The executor's words for why it killed a task (runtime/executors/local.py, sandbox/quota.py, zygote.py).
KILL_REASONS = (("timed out", "timeout"), ("memory limit exceeded", "memory"), ("out of memory", "memory"),
                ("disk quota exceeded", "disk"), ("cpu time limit exceeded", "cpu"),
                ("file size limit exceeded", "file_size"), ("worker crashed", "crash"))


def kill_reason(error: str | None) -> str | None:
    """The sandbox's reason for killing a task, from its error line; None when the task failed by itself."""
    text = (error or "").lower()
    return next((reason for words, reason in KILL_REASONS if words in text), None)


class Metrics:
    """``used``: the CPU slots running tasks hold (the scheduler's); ``capacity``: the scheduler's capacity now.
    The composition root (core.py) connects task_ended and webhook_outcome where those events happen."""

    def __init__(self, db: sqlite_utils.Database, used: Callable[[], dict[str, float]],
                 capacity: Callable[[], Capacity]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.task_seconds = Histogram("appliance_task_duration_seconds", "Run time of a task that ended",
                                      ["renderer", "outcome"], buckets=DURATION_BUCKETS, registry=r)
        self.cache_hits = Counter("appliance_cache_hits", "Tasks answered from the render cache", ["renderer"],
                                  registry=r)
        self.webhooks = Counter("appliance_webhook_deliveries", "Webhook delivery attempts by outcome "
                                "(delivered, retrying, failed)", ["dialect", "outcome"], registry=r)
        self.refusals = Counter("appliance_rate_limit_refusals", "Requests refused with 429", ["dialect"],
                                registry=r)
        self.kills = Counter("appliance_sandbox_kills", "Tasks the sandbox killed, by reason", ["reason"],
                             registry=r)
        self.cache_evictions = Counter("appliance_cache_evictions", "Render cache entries evicted (size or age)",
                                       registry=r)
        self.cache_bytes = Gauge("appliance_cache_bytes", "Bytes of the artifacts the render cache holds, as the "
                                 "last hourly sweep counted them", registry=r)
        r.register(_StateCollector(db, used, capacity))

    def task_ended(self, task: TaskRow, error: str | None) -> None:
        """Called by the scheduler once per task end; ``error`` is None for a task that is done."""
        try:
            self._task_ended(task, error)
        except Exception:  # noqa: BLE001 - a metric must never stop a job from finishing
            log.exception("task metrics failed for %s", task.get("id"))

    def _task_ended(self, task: TaskRow, error: str | None) -> None:
        if task.get("cached") and error is None:
            self.cache_hits.labels(task["renderer"]).inc()
            return
        started = task["started_at"]
        if started:
            seconds = max(0.0, time.time() - parse_iso(started))
            self.task_seconds.labels(task["renderer"], "done" if error is None else "failed").observe(seconds)
        reason = kill_reason(error)
        if reason:
            self.kills.labels(reason).inc()

    def webhook_outcome(self, delivery: dict, outcome: str) -> None:
        self.webhooks.labels(delivery["dialect"], outcome).inc()

    def cache_swept(self, evicted: int, kept_bytes: int) -> None:
        self.cache_evictions.inc(evicted)
        self.cache_bytes.set(kept_bytes)

    def refused(self, dialect: str) -> None:
        self.refusals.labels(dialect).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """What the database and the scheduler say right now."""

    def __init__(self, db: sqlite_utils.Database, used: Callable[[], dict[str, float]],
                 capacity: Callable[[], Capacity]) -> None:
        self.db, self.used, self.capacity = db, used, capacity

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = GaugeMetricFamily("appliance_jobs", "Jobs by dialect and status", labels=["dialect", "status"])
        for row in stats.jobs_by_dialect_and_status(self.db):
            counts.add_metric([row["dialect"], row["status"]], row["n"])
        yield counts
        queue = GaugeMetricFamily("appliance_queue_tasks", "Tasks waiting or running", labels=["state"])
        for state, n in jobs.queue_counts(self.db).items():
            queue.add_metric([state], n)
        yield queue
        yield from self._slots()

    def _slots(self) -> Iterator[GaugeMetricFamily]:
        used, capacity = self.used()["cpu"], float(self.capacity().cpu)
        yield GaugeMetricFamily("appliance_cpu_slots_used", "CPU slots held by running tasks", value=used)
        yield GaugeMetricFamily("appliance_cpu_slots_capacity", "CPU slots for tasks", value=capacity)
        yield GaugeMetricFamily("appliance_worker_utilization", "CPU slots used / capacity (0-1)",
                                value=used / capacity if capacity else 0.0)


def allowed(settings: Settings, client: str | None, authorization: str) -> bool:
    """The admin token, or a client address listed in metrics_allow (an address or a network)."""
    sent = authorization.removeprefix("Bearer ").strip()
    token = token_path(settings.data_dir)
    if sent and token.is_file() and hmac.compare_digest(sent.encode(), token.read_text().strip().encode()):
        return True
    try:
        address = ipaddress.ip_address(client or "")
    except ValueError:
        return False
    return any(_contains(entry, address) for entry in settings.metrics_allow)


def _contains(entry: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return address in ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:  # a typo in metrics_allow allows nothing rather than failing every scrape
        return False


@get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    core: Any = request.app.state.core  # the composition root; this module reads its settings and metrics
    client = request.client.host if request.client else None
    if not allowed(core.settings, client, request.headers.get("authorization", "")):
        return Response({"error": "unauthorized", "message": "/metrics needs the admin token (Authorization: "
                         "Bearer <data_dir>/admin.token) or a client address in metrics_allow"}, status_code=401)
    return Response(core.metrics.render(), media_type=MEDIA_TYPE)
