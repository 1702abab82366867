"""The render cache is bounded (store/cache.py evict): entries unused past the age limit go, then the least
recently used until the artifacts the rest hold fit the size limit; an artifact two entries share counts once and
goes only with the last of them. A real database with the real migrations."""
from __future__ import annotations

from appliance.store import cache
from appliance.store.db import open_db

SIZES = {"a": 400, "b": 300, "c": 200, "shared": 100}


def _db(tmp_path):
    db = open_db(tmp_path / "appliance.db")
    for key, outputs, used in (("k1", ["a", "shared"], "2026-01-01T00:00:00.000Z"),
                               ("k2", ["b", "shared"], "2026-01-02T00:00:00.000Z"),
                               ("k3", ["c"], "2026-01-03T00:00:00.000Z")):
        cache.store(db, key, "manim", {"outputs": {f"{o}.mp4": o for o in outputs}})
        db.execute("update cache set used_at = ? where key = ?", (used, key))
    return db


def keys(db) -> list[str]:
    return [r[0] for r in db.execute("select key from cache order by key").fetchall()]


def test_nothing_goes_while_everything_is_recent_and_fits(tmp_path):
    db = _db(tmp_path)
    assert cache.evict(db, SIZES.get, 10_000, "2025-12-31T00:00:00.000Z") == cache.Eviction(0, 3, 1000)
    assert keys(db) == ["k1", "k2", "k3"]


def test_the_least_recently_used_go_until_the_rest_fit(tmp_path):
    db = _db(tmp_path)
    # 1000 bytes held; k1 going frees a (400) but not the shared artifact k2 still holds: 600, then k2: 200
    assert cache.evict(db, SIZES.get, 500, "2025-12-31T00:00:00.000Z") == cache.Eviction(2, 1, 200)
    assert keys(db) == ["k3"]


def test_unused_entries_go_by_age_and_a_hit_makes_an_entry_recent(tmp_path):
    db = _db(tmp_path)
    assert cache.lookup(db, "k1") is not None  # used now: the newest
    assert cache.evict(db, SIZES.get, 0, "2026-01-02T12:00:00.000Z") == cache.Eviction(1, 2, 700)  # k2 only
    assert keys(db) == ["k1", "k3"]
    assert cache.lookup(db, "k2") is None
