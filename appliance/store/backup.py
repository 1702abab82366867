"""The database side of `appliance backup` / `restore`: SQLite's online backup API, and paths moved to the new
data dir."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from appliance.errors import ApplianceError
from appliance.store.db import transaction

MOVE_LOGS = "update tasks set log_path = ? || substr(log_path, ?) where log_path like ? escape '\\'"


def snapshot(src: Path, dest: Path) -> None:
    """A consistent copy of the live database (WAL readers and writers carry on meanwhile), checked whole."""
    source = sqlite3.connect(str(src), timeout=30)
    target = sqlite3.connect(str(dest))
    try:
        source.backup(target)
        ok = target.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise ApplianceError(f"the copy of {src} fails its integrity check: {ok}")
    finally:
        target.close()
        source.close()


def relocate(db: sqlite_utils.Database, old_roots: list[str], new_root: str) -> int:
    """Task log paths are stored whole: point those under the old data dir at the new one."""
    changed = 0
    with transaction(db):
        for old in {r.rstrip("/") for r in old_roots if r}:
            changed += db.execute(MOVE_LOGS, (new_root.rstrip("/"), len(old) + 1, _like_prefix(old) + "/%")).rowcount
    return changed


def _like_prefix(path: str) -> str:
    return path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
