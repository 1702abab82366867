"""A RenderCAD job's uploads as the dashboard shows them, read only: the input pictures beside the output. (Kept
apart from store/rendercad.py, which writes them: the dashboard only ever reads.)"""
from __future__ import annotations

from typing import Any

import sqlite_utils

from appliance.store.db import rows

DIALECT = "rendercad"  # the core job's dialect of a RenderCAD job


def of_job(db: sqlite_utils.Database, job_id: str) -> list[dict[str, Any]]:
    """The job's uploads (slot, content_type, path, size), by slot; an upload refused for its size has no path."""
    return rows(db, "select slot, content_type, path, size from rendercad_uploads where job_id = ? order by slot",
                (job_id,))
