"""What this box has rendered before: the finished jobs the estimator learns from (services/estimate.py)."""
from __future__ import annotations

from typing import Any

import sqlite_utils

# A cached job took milliseconds and says nothing about rendering: a job any of whose tasks was a cache hit is
# left out, and so is a job without its payload (the features are read from it).
_FINISHED = """
select j.id, j.payload, j.duration_ms, j.max_parallel from jobs j
where j.kind = ? and j.status = 'completed' and j.duration_ms > 0 and j.payload is not null
  and not exists (select 1 from tasks t where t.job_id = j.id and t.cached = 1)
order by j.completed_at desc limit ?
"""


def finished_renders(db: sqlite_utils.Database, kind: str, limit: int = 200) -> list[dict[str, Any]]:
    """The newest ``limit`` completed, rendered (not cached) jobs of pipeline ``kind``: id, payload (JSON
    text), duration_ms (the job's render time, as billed), max_parallel (its tasks that could run at once)."""
    return list(db.query(_FINISHED, [kind, limit]))


def stamp(db: sqlite_utils.Database, kinds: tuple[str, ...]) -> tuple[int, str | None]:
    """(completed jobs, the newest completion) of these pipelines: changes whenever their history does."""
    marks = ",".join("?" * len(kinds))
    row = db.execute(f"select count(*), max(completed_at) from jobs where status = 'completed' and kind in ({marks})",
                     list(kinds)).fetchone()
    return int(row[0]), row[1]
