"""RenderCAD jobs as core jobs: m011 upgrades a data dir whose rendercad_jobs kept a state of their own (nothing
the owner saw is lost), and an opened job is submitted in one transaction or not at all."""
from __future__ import annotations

import sqlite3

import pytest
import sqlite_utils

from appliance.errors import Conflict, InsufficientCredits
from appliance.store import jobs, ledger, users
from appliance.store import rendercad as store
from appliance.store.db import dumps, open_db
from appliance.store.jobs import TaskDef
from appliance.store.migrations import migrations

M011 = "m011_rendercad_jobs_are_core_jobs"
PARAMS = {"model": "classic", "quality": "standard", "slots": ["input_main"]}


def _old_row(user_id: str, job_id: str, status: str, **extra) -> dict:
    return {"id": job_id, "user_id": user_id, "key_id": "k1", "kind": "image", "params": dumps(PARAMS),
            "status": status, "error_message": None, "cost": 0, "created_at": "2026-01-01T00:00:00.000Z",
            "finalized_at": None, "completed_at": None, "deleted_at": None, **extra}


def test_m011_moves_every_state_into_core_jobs(tmp_path):
    db = sqlite_utils.Database(sqlite3.connect(str(tmp_path / "old.db"), isolation_level=None))
    migrations.apply(db, stop_before=M011)  # a data dir as it was before the change
    user = users.create_user(db, "ada")["id"]
    refused = "The uploaded image is larger than 80 MB. You were not charged."
    old = [_old_row(user, "render_up", "uploading"),
           _old_row(user, "render_refused", "failed", error_message=refused, completed_at="2026-01-01T00:00:05.000Z"),
           _old_row(user, "render_gone", "canceled", completed_at="2026-01-01T00:00:06.000Z",
                    deleted_at="2026-01-02T00:00:00.000Z"),
           _old_row(user, "render_done", "submitted", cost=1, finalized_at="2026-01-01T00:00:09.000Z",
                    completed_at="2026-01-01T00:00:20.000Z", deleted_at="2026-01-03T00:00:00.000Z"),
           {**_old_row(user, "vc_0123456789ab", "submitted"), "kind": "convert"}]
    for row in old:
        db["rendercad_jobs"].insert(row)
    jobs.create_job(db, job_id="render_done", dialect="rendercad", user_id=user, key_id="k1", kind="image",
                    request=PARAMS, tasks=[], payload={"settings": PARAMS})
    jobs.update_job(db, "render_done", status="completed", completed_at="2026-01-01T00:00:20.000Z")

    migrations.apply(db)

    assert set(db["rendercad_jobs"].columns_dict) == {"id", "kind", "params"}
    assert {r["id"]: r["kind"] for r in db.query("select id, kind from rendercad_jobs")} == {
        "render_up": "image", "render_refused": "image", "render_gone": "image", "render_done": "image",
        "vc_0123456789ab": "convert"}
    core = {r["id"]: r for r in db.query("select * from jobs")}
    assert (core["render_up"]["status"], core["render_up"]["phase"]) == ("uploading", "uploading")
    assert core["render_up"]["payload"] is None and core["render_up"]["dialect"] == "rendercad"
    assert (core["render_refused"]["status"], core["render_refused"]["error"]) == ("failed", refused)
    assert core["render_refused"]["completed_at"] == "2026-01-01T00:00:05.000Z"
    assert core["render_gone"]["status"] == "cancelled"
    assert core["render_gone"]["deleted_at"] == "2026-01-02T00:00:00.000Z"
    # the finalized job keeps its core job, with RenderCAD's creation time (history's) and its deletion
    assert core["render_done"]["status"] == "completed"
    assert core["render_done"]["created_at"] == "2026-01-01T00:00:00.000Z"
    assert core["render_done"]["deleted_at"] == "2026-01-03T00:00:00.000Z"
    # finalized with no core job (a crash between the two writes): failed, as its status showed it
    assert (core["vc_0123456789ab"]["status"], core["vc_0123456789ab"]["kind"]) == ("failed", "video_convert")
    for job_id in ("render_up", "render_refused"):
        assert store.get_job(db, job_id, user)["params"] == PARAMS
    assert store.get_job(db, "render_gone", user) is None  # deleted stays deleted
    # history: the user's live renders, newest first (a tie on the time: by id, descending); no GIF conversion
    assert [r["id"] for r in store.list_jobs(db, user, None, 0, 10)] == ["render_up", "render_refused"]
    assert store.count_jobs(db, user, None) == 2 and store.count_jobs(db, user, "convert") == 1


@pytest.fixture
def db(tmp_path):
    return open_db(tmp_path / "appliance.db")


def _open(db, user: str, job_id: str = "render_x") -> None:
    jobs.create_job(db, job_id=job_id, dialect="rendercad", user_id=user, key_id=None, kind="image",
                    request=PARAMS, tasks=[], status="uploading", phase="uploading")


def test_an_opened_job_is_submitted_whole_or_not_at_all(db):
    user = users.create_user(db, "ada")["id"]
    ledger.grant(db, user, 2)
    _open(db, user)
    task = TaskDef(renderer="image.render", input={})
    with pytest.raises(InsufficientCredits):
        jobs.submit_opened(db, "render_x", tasks=[task], payload={"p": 1}, request=PARAMS, reserve=3, charge=3,
                           phase="queued")
    job = jobs.require_job(db, "render_x")  # refused: still uploading, nothing reserved, no tasks
    assert job["status"] == "uploading" and job["payload"] is None and not jobs.tasks_of(db, "render_x")
    assert ledger.balance(db, user)["total"] == 2
    job = jobs.submit_opened(db, "render_x", tasks=[task], payload={"p": 1}, request=PARAMS, reserve=2, charge=2,
                             phase="queued")
    assert (job["status"], job["charge"], len(jobs.tasks_of(db, "render_x"))) == ("queued", 2, 1)
    assert ledger.reserved(db, "render_x") == 2
    with pytest.raises(Conflict):  # finalized twice
        jobs.submit_opened(db, "render_x", tasks=[task], payload={}, request=PARAMS, reserve=0, charge=0,
                           phase="queued")
    assert ledger.reserved(db, "render_x") == 2 and len(jobs.tasks_of(db, "render_x")) == 1


def test_a_job_failed_while_uploading_is_no_failed_render(db):
    user = users.create_user(db, "ada")["id"]
    _open(db, user)
    jobs.end_job(db, "render_x", "failed", "The uploaded image could not be read.", 0)
    assert jobs.failed_since(db, user, "2000-01-01T00:00:00.000Z") == 0
