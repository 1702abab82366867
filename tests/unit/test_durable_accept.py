"""What the appliance acknowledges is flushed before the acknowledgement (issue #17 item 10): the database runs
WAL with synchronous=NORMAL, and the accept path (a job with its tasks, credit reserve and first event; an
operator's grant) ends with an fsync of the write-ahead log that holds it. A power loss cannot be staged here, so
the test checks the mechanism: which file is flushed, after the commit, and that other writes pay nothing."""
from __future__ import annotations

import os

import pytest

from appliance.services.pipelines.tasks import TaskDef
from appliance.store import jobs, ledger, users
from appliance.store.db import open_db, transaction


@pytest.fixture
def flushed(monkeypatch):
    calls: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_an_accepted_job_and_a_grant_are_flushed_and_nothing_else_is(tmp_path, flushed):
    db = open_db(tmp_path / "app.db")
    user = users.create_user(db, "ada")
    flushed.clear()
    ledger.grant(db, user["id"], 10)
    assert flushed == [str(tmp_path / "app.db-wal")]
    flushed.clear()
    job = jobs.create_job(db, job_id="job_1", dialect="viralsync", user_id=user["id"], key_id=None, kind="x",
                          request={}, tasks=[TaskDef(renderer="test.noop", input={})], reserve=5)
    assert flushed == [str(tmp_path / "app.db-wal")]
    # flushed after the commit: a fresh connection (another process) reads the job and its reserve
    other = open_db(tmp_path / "app.db")
    assert jobs.get_job(other, job["id"])["status"] == "queued" and ledger.balance(other, user["id"])["total"] == 5
    flushed.clear()
    with transaction(db):
        jobs.update_job(db, job["id"], progress=0.5)
    assert flushed == []
