"""Append-only credit ledger. A balance is a SUM of movements, never a mutable field.

Movements (amount is signed): grant (+), reserve (−, at enqueue), release (+, the whole reserve comes
back at settle or on failure), charge (−, the final cost). Free credits are spent before paid ones.
A job's reservation is open while it has a reserve row and no release row.
"""
from __future__ import annotations

import math

import sqlite_utils

from appliance.errors import ApplianceError, InsufficientCredits
from appliance.store.db import now_iso, one, rows, transaction

BUCKETS = ("free", "paid")


def balance(db: sqlite_utils.Database, user_id: str) -> dict[str, int]:
    got = {r["bucket"]: r["total"] for r in rows(
        db, "select bucket, coalesce(sum(amount), 0) as total from ledger where user_id = ? group by bucket",
        (user_id,))}
    free, paid = int(got.get("free", 0)), int(got.get("paid", 0))
    return {"paid": paid, "free": free, "total": paid + free}


def _append(db: sqlite_utils.Database, user_id: str, job_id: str | None, kind: str, bucket: str,
            amount: int, note: str = "") -> None:
    if amount:
        db.table("ledger").insert({"user_id": user_id, "job_id": job_id, "kind": kind, "bucket": bucket,
                             "amount": amount, "note": note, "created_at": now_iso()})


def grant(db: sqlite_utils.Database, user_id: str, amount: int, bucket: str = "paid", note: str = "") -> None:
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {BUCKETS}")
    if int(amount) <= 0:
        raise ApplianceError(f"a grant must be a positive number of credits, got {amount}")
    with transaction(db, durable=True):  # credits an operator was told of
        _append(db, user_id, None, "grant", bucket, int(amount), note)


def _spend(db: sqlite_utils.Database, user_id: str, job_id: str, kind: str, amount: int) -> None:
    """Take amount (free first, then paid) or raise InsufficientCredits; caller holds the transaction."""
    bal = balance(db, user_id)
    if bal["total"] < amount:
        raise InsufficientCredits(f"Not enough credits: {amount} needed, {bal['total']} available")
    from_free = min(bal["free"], amount)
    _append(db, user_id, job_id, kind, "free", -from_free)
    _append(db, user_id, job_id, kind, "paid", -(amount - from_free))


def reserve(db: sqlite_utils.Database, user_id: str, job_id: str, amount: int) -> None:
    with transaction(db):
        _spend(db, user_id, job_id, "reserve", amount)


def _release(db: sqlite_utils.Database, user_id: str, job_id: str) -> None:
    for r in rows(db, "select bucket, sum(amount) as total from ledger where job_id = ? and kind = 'reserve' "
                      "group by bucket", (job_id,)):
        _append(db, user_id, job_id, "release", r["bucket"], -int(r["total"]))
    db.table("ledger").insert({"user_id": user_id, "job_id": job_id, "kind": "release", "bucket": "free",
                         "amount": 0, "note": "closed", "created_at": now_iso()})


def is_open(db: sqlite_utils.Database, job_id: str) -> bool:
    got = one(db, "select sum(kind = 'reserve') as r, sum(kind = 'release') as rel from ledger where job_id = ?",
              (job_id,))
    return bool(got and got["r"] and not got["rel"])


def refund(db: sqlite_utils.Database, user_id: str, job_id: str) -> None:
    """Close the reservation with nothing charged (failed, cancelled or crashed job)."""
    with transaction(db):
        if is_open(db, job_id):
            _release(db, user_id, job_id)


def settle(db: sqlite_utils.Database, user_id: str, job_id: str, cost: int) -> bool:
    """Release the reserve and charge the final cost. False (reserve refunded, nothing charged) when the
    balance cannot cover the cost — the caller then fails the job, as Kodisc documents."""
    with transaction(db):
        if not is_open(db, job_id):
            return True
        _release(db, user_id, job_id)
        try:
            _spend(db, user_id, job_id, "charge", cost)
        except InsufficientCredits:
            return False
    return True


def reserved(db: sqlite_utils.Database, job_id: str) -> int:
    got = one(db, "select coalesce(-sum(amount), 0) as r from ledger where job_id = ? and kind = 'reserve'",
              (job_id,))
    return int(got["r"]) if got else 0


def charged(db: sqlite_utils.Database, job_id: str) -> int:
    got = one(db, "select coalesce(-sum(amount), 0) as c from ledger where job_id = ? and kind = 'charge'",
              (job_id,))
    return int(got["c"]) if got else 0


def open_reservations(db: sqlite_utils.Database) -> list[str]:
    return [r["job_id"] for r in rows(
        db, "select job_id from ledger where job_id is not null group by job_id "
            "having sum(kind = 'reserve') > 0 and sum(kind = 'release') = 0")]


def cost_for(duration_ms: int, rate_per_second: float) -> int:
    return math.ceil(duration_ms / 1000 * rate_per_second)
