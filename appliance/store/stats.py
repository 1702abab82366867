"""Counts read at /metrics scrape time (appliance/observability/metrics.py)."""
from __future__ import annotations

from typing import Any

import sqlite_utils

from appliance.store.db import rows


def jobs_by_dialect_and_status(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """[{dialect, status, n}] over every job the database still holds (deleted ones included: they ran)."""
    return rows(db, "select dialect, status, count(*) as n from jobs group by dialect, status")
