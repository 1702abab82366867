"""The render cache table: cache key -> the result of the task that rendered it (its outputs are artifacts).

Bounded: the hourly sweep (core.py) evicts entries unused for ``cache_max_days`` and then the least recently used
ones until the artifacts the cache holds fit ``cache_max_gb``; the artifact sweep that follows deletes what no
entry or unfinished job refers to (a completed job's published outputs are hard links: they stay). A Manim
render's pieces live in its cached video (renderers/manim_segments.py), so an evicted render is no longer reused.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from appliance.store.db import dumps, loads, now_iso, one, rows, transaction


def lookup(db: sqlite_utils.Database, key: str) -> dict[str, Any] | None:
    """The cached result, and the entry marked used (what the least-recently-used eviction reads)."""
    row = one(db, "select result from cache where key = ?", (key,))
    if row is None:
        return None
    with transaction(db):
        db.execute("update cache set used_at = ? where key = ?", (now_iso(), key))
    return loads(row["result"])


def store(db: sqlite_utils.Database, key: str, renderer: str, result: dict[str, Any]) -> None:
    with transaction(db):
        now = now_iso()
        db.table("cache").upsert({"key": key, "renderer": renderer, "path": "", "result": dumps(result),
                                  "created_at": now, "used_at": now}, pk="key")


def referenced_artifacts(db: sqlite_utils.Database) -> set[str]:
    """Digests the cache and every unfinished job still need (the artifact sweep keeps these)."""
    keep: set[str] = set()
    for row in rows(db, "select result from cache"):
        keep.update(loads(row["result"], {}).get("outputs", {}).values())
    for row in rows(db, """select t.input, t.result from tasks t join jobs j on j.id = t.job_id
                           where j.status not in ('completed', 'failed', 'cancelled')"""):
        keep.update(loads(row["input"], {}).get("artifacts", {}).values())
        keep.update(loads(row["result"], {}).get("outputs", {}).values())
    return keep


@dataclass(frozen=True)
class Eviction:
    evicted: int  # entries removed
    kept: int  # entries left
    kept_bytes: int  # bytes of the artifacts the entries left hold (each artifact once)


def evict(db: sqlite_utils.Database, size: Callable[[str], int], max_bytes: int, unused_before: str) -> Eviction:
    """Entries last used before ``unused_before`` (an ISO time), then the least recently used until the rest hold
    at most ``max_bytes`` (0: no size limit). ``size``: an artifact's bytes (0 when it is gone)."""
    entries = [(r["key"], set(loads(r["result"], {}).get("outputs", {}).values()))
               for r in rows(db, "select key, result from cache order by coalesce(used_at, created_at), key")]
    used = {r["key"]: r["used"] for r in rows(db, "select key, coalesce(used_at, created_at) as used from cache")}
    holders: dict[str, int] = {}
    for _, digests in entries:
        for digest in digests:
            holders[digest] = holders.get(digest, 0) + 1
    sizes = {digest: size(digest) for digest in holders}
    total = sum(sizes.values())
    gone: list[str] = []
    for key, digests in entries:  # oldest use first
        if used[key] >= unused_before and (not max_bytes or total <= max_bytes):
            break
        gone.append(key)
        for digest in digests:
            holders[digest] -= 1
            if holders[digest] == 0:  # no other entry holds it: its bytes go with this one
                total -= sizes[digest]
    with transaction(db):
        for start in range(0, len(gone), 500):
            chunk = gone[start:start + 500]
            db.execute(f"delete from cache where key in ({','.join('?' * len(chunk))})", chunk)
    return Eviction(len(gone), len(entries) - len(gone), total)
