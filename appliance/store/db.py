"""Opening the one SQLite file: WAL, busy timeout, migrations applied. Small shared helpers."""
from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance.store.migrations import migrations

# Query parameters: positional (a tuple) or named (a mapping), as sqlite3 takes them.
Params = tuple[Any, ...] | dict[str, Any]


def open_db(path: Path) -> sqlite_utils.Database:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=30000")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    migrations.apply(db)
    return db


@contextmanager
def transaction(db: sqlite_utils.Database, *, durable: bool = False) -> Iterator[None]:
    """A short BEGIN IMMEDIATE transaction: the writer lock is taken up front, so no upgrade deadlock.

    ``durable``: on disk before this returns, power loss included. The database runs WAL with
    synchronous=NORMAL (a commit is written, not flushed: an fsync per progress update would cost the event loop
    ~2 ms each); what the appliance acknowledges — an accepted job and its credit reserve — is flushed here by
    an fsync of the WAL, which holds this commit and every one before it."""
    conn = db.conn
    if conn.in_transaction:  # nested: join the outer transaction (the outer one decides durability)
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    if durable:
        sync(db)


def sync(db: sqlite_utils.Database) -> None:
    """fsync the write-ahead log: every commit so far survives a power loss (what synchronous=FULL does at each
    commit). A checkpoint flushes the database file itself before it resets the log, so nothing is lost there."""
    path = _paths.get(id(db.conn))
    if path is None:
        path = _paths[id(db.conn)] = next(row[2] for row in db.conn.execute("PRAGMA database_list")
                                           if row[1] == "main")
    if not path:  # an in-memory database: nothing to flush
        return
    for name in (path + "-wal", path):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # no log yet: the commit went to the database file
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return


_paths: dict[int, str] = {}


def now_iso(ts: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-04-28T17:14:02.118Z."""
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


def loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


def rows(db: sqlite_utils.Database, sql: str, params: Params = ()) -> list[dict[str, Any]]:
    return list(db.query(sql, params))


def one(db: sqlite_utils.Database, sql: str, params: Params = ()) -> dict[str, Any] | None:
    return next(iter(db.query(sql, params)), None)
