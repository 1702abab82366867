"""The dashboard's store (appliance/store/operators.py) on a real SQLite file: scrypt passwords, sessions that
expire, and the all-users job listing — paged by keyset without gaps or repeats, every filter read from an index
(no full sort), so a page costs the same at 100,000 jobs."""
from __future__ import annotations

import time

import pytest

from appliance.errors import ApplianceError
from appliance.store import operators
from appliance.store.db import now_iso, open_db, rows, transaction


@pytest.fixture
def db(tmp_path):
    return open_db(tmp_path / "appliance.db")


def test_passwords_and_sessions(db):
    op = operators.add_operator(db, "ops", "a long enough password")
    assert op["password_hash"].startswith("scrypt$16384$8$1$") and "a long" not in op["password_hash"]
    assert operators.authenticate(db, "ops", "a long enough password")["id"] == op["id"]
    assert operators.authenticate(db, "ops", "a long enough passwore") is None
    assert operators.authenticate(db, "nobody", "a long enough password") is None
    for name, password in (("ops", "another long one"), ("bad name!", "a long enough password"), ("x", "short")):
        with pytest.raises(ApplianceError):
            operators.add_operator(db, name, password)
    token, row = operators.open_session(db, op["id"], 60)
    assert row["id"] != token and operators.session(db, token)["operator"] == "ops"
    assert operators.session(db, "") is None and operators.session(db, "x" * 1000) is None
    expired, _ = operators.open_session(db, op["id"], -1)
    assert operators.session(db, expired) is None
    operators.set_password(db, "ops", "a new long password")  # signs the operator out everywhere
    assert operators.session(db, token) is None
    assert operators.authenticate(db, "ops", "a new long password")


def _jobs(db, n: int) -> list[str]:
    stamp = now_iso()  # the same created_at for many jobs: the id breaks the tie
    with transaction(db):
        for u in range(3):
            db.execute("insert into users (id, name, plan, created_at) values (?, ?, 'studio', ?)",
                       (f"usr_{u}", f"user{u}", stamp))
        for i in range(n):
            db.execute("insert into jobs (id, dialect, user_id, kind, status, phase, progress, priority, request, "
                       "created_at, updated_at) values (?, ?, ?, ?, ?, 'done', 1, 0, '{}', ?, ?)",
                       (f"job_{i:04d}", ("kodisc", "viralsync")[i % 2], f"usr_{i % 3}", ("manim", "movie")[i % 2],
                        "failed" if i % 7 == 0 else "completed", stamp if i < n // 2 else now_iso(time.time() + i),
                        stamp))
    return [f"job_{i:04d}" for i in range(n)]


def test_keyset_pages_have_no_gaps_or_repeats(db):
    made = _jobs(db, 120)
    for filters, expected in (({}, made), ({"status": "failed"}, made[::7]), ({"dialect": "viralsync"}, made[1::2]),
                              ({"user_id": "usr_1", "kind": "manim"}, [j for i, j in enumerate(made)
                                                                       if i % 3 == 1 and i % 2 == 0])):
        seen, before = [], None
        while True:
            page = operators.list_all_jobs(db, before=before, limit=17, **filters)
            seen += [j["id"] for j in page]
            if len(page) < 17:
                break
            before = (page[-1]["created_at"], page[-1]["id"])
        assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen)), filters


@pytest.mark.parametrize("filters", [{}, {"status": "running"}, {"dialect": "kodisc"}, {"kind": "movie"},
                                     {"user_id": "u"}, {"user_id": "u", "dialect": "kodisc"},
                                     {"dialect": "kodisc", "status": "failed", "kind": "manim"},
                                     {"before": ("2026-01-01T00:00:00.000Z", "job_x")}])
def test_every_filter_reads_an_index(db, monkeypatch, filters):
    plans = []
    monkeypatch.setattr(operators, "rows", lambda db_, sql, params=(): plans.append(
        [r["detail"] for r in rows(db_, "explain query plan " + sql, params)]) or [])
    operators.list_all_jobs(db, **filters)
    plan = " | ".join(plans[0])
    assert "USING INDEX" in plan and "USE TEMP B-TREE FOR ORDER BY" not in plan, plan  # ties only: RIGHT PART


def test_failed_sign_ins_are_throttled_per_address():
    from appliance.api.dashboard import session

    for _ in range(session.FAILURES_MAX):
        assert not session.throttled("198.51.100.7")
        session.failed("198.51.100.7")
    assert session.throttled("198.51.100.7") and not session.throttled("198.51.100.8")
