"""Earlier renders of a Manim scene by the same user, whose pieces a new render may reuse (renderers/manim_segments.py).

Read-only over ``jobs`` and ``tasks``: a whole-scene ``manim`` task that finished keeps, beside its meta, its piece
index (``pieces``: address, frames, drawing ms) and its ``video.mp4`` artifact; so does each ``manim.range`` task
of a split render, for its segment. Only the user's own completed,
undeleted jobs count: one user never receives another's pixels, whatever the cache-sharing setting says.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from appliance.store.db import loads
from appliance.store.rows import TaskRow

SCAN = 50  # the user's latest whole-scene tasks looked at: past those, an older render is not worth finding


@dataclass(frozen=True)
class Render:
    """One earlier render (or a split render's range): its job, its video's artifact digest and its piece index."""
    job: str
    video: str
    pieces: list[list[Any]]
    stills: tuple[str, str] | None = None  # image.png and thumb.jpg digests, where made from its exact last frame


def recent_renders(conn: sqlite3.Connection, user_id: str, frame: dict[str, Any]) -> list[Render]:
    """The user's completed renders of the same scene class at the same width, height and fps, newest first (a split
    render's ranges in their order)."""
    rows = conn.execute(
        """select j.id, t.input, t.result from jobs j join tasks t on t.job_id = j.id
           where j.user_id = ? and j.status = 'completed' and j.deleted_at is null
             and t.renderer in ('manim', 'manim.range') and t.status = 'done'
           order by j.created_at desc, t.idx limit ?""", (user_id, SCAN)).fetchall()
    found: list[Render] = []
    for job, raw_input, raw_result in rows:
        task_input, result = loads(raw_input, {}), loads(raw_result, {})
        if not isinstance(task_input, dict) or not isinstance(result, dict) \
                or any(task_input.get(k) != frame.get(k) for k in ("className", "width", "height", "fps")):
            continue
        name = (result.get("files") or {}).get("video")
        digest = (result.get("outputs") or {}).get(name) if name else None
        pieces = result.get("pieces")
        if isinstance(digest, str) and isinstance(pieces, list) and pieces:
            found.append(Render(job, digest, pieces, _stills(result)))
    return found


def _stills(result: dict[str, Any]) -> tuple[str, str] | None:
    """The render's image and thumbnail digests, where its result says they are exact (``lastFrameExact``: drawn,
    not decoded from the lossy video)."""
    files, outputs = result.get("files") or {}, result.get("outputs") or {}
    if result.get("lastFrameExact") is not True or not isinstance(files, dict) or not isinstance(outputs, dict):
        return None
    digests = [outputs.get(files.get(role)) if isinstance(files.get(role), str) else None
               for role in ("image", "thumbnail")]
    return (digests[0], digests[1]) if isinstance(digests[0], str) and isinstance(digests[1], str) else None


def user_of(conn: sqlite3.Connection, job_id: str) -> str | None:
    row = conn.execute("select user_id from jobs where id = ?", (job_id,)).fetchone()
    return row[0] if row else None


def reuse_of(tasks: Sequence[TaskRow]) -> dict[str, Any] | None:
    """What the job's Manim renders reused of earlier ones (renderers/manim_segments.py): pieces in all, pieces
    copied, and the seconds their drawing took then; None where no task renders in pieces."""
    found = [r for r in (loads(t["result"], {}).get("reuse") for t in tasks) if isinstance(r, dict)]
    if not found:
        return None
    return {"pieces": sum(int(r.get("pieces", 0)) for r in found),
            "reusedPieces": sum(int(r.get("reusedPieces", 0)) for r in found),
            "secondsSaved": round(sum(float(r.get("secondsSaved", 0.0)) for r in found), 2)}
