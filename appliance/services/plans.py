"""ViralSync plans: limits per plan and render-minute metering (api-research.md §2.10, DECISIONS.md)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from appliance.store import jobs
from appliance.store.db import now_iso


@dataclass(frozen=True)
class Plan:
    name: str
    minutes_per_month: float | None  # None = unlimited
    daily_minutes: float | None
    max_job_minutes: float
    max_pixels: int
    concurrency: int | None
    api: bool


PLANS = {
    "free": Plan("free", 30, 5, 10, 1280 * 720, 1, False),
    "pro": Plan("pro", 200, None, 10, 1920 * 1080, 3, True),
    "business": Plan("business", 600, None, 20, 2560 * 1440, 6, True),
    "enterprise": Plan("enterprise", None, None, 120, 3840 * 2160, None, True),
    "studio": Plan("studio", None, None, 120, 3840 * 2160, None, True),
}


def month_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    now = now or datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
    return start, end


def iso(dt: datetime) -> str:
    return now_iso(dt.timestamp())


def minutes_used(db: sqlite_utils.Database, user_id: str, since: datetime) -> float:
    """Render minutes = output duration / 60 of completed jobs; failed/cancelled jobs cost nothing."""
    return jobs.render_minutes(db, user_id, iso(since))


def minutes_reserved(db: sqlite_utils.Database, user_id: str, since: datetime) -> float:
    """Minutes held by unfinished jobs (reserved at submit, settled when they end)."""
    return jobs.reserved_minutes(db, user_id, iso(since))


def movie_minutes(movie: dict[str, Any]) -> float:
    """A movie's render minutes before it renders: its total scene duration / 60 (floats: a duration may be an
    integral 1e308, whose int sum is beyond a float)."""
    return sum(float(s["duration"]) for s in movie["scenes"]) / 60


def today_start() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
