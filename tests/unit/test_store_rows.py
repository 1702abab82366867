"""The typed rows (store/rows.py) say what the store really reads: a column added by a migration, or a query that
drops one, fails here instead of leaving a TypedDict that lies to mypy."""
from __future__ import annotations

from typing import get_type_hints

from appliance.store import jobs, users
from appliance.store.db import open_db
from appliance.store.jobs import TaskDef
from appliance.store.rows import JobRow, ReadyTask, TaskRow, TaskState


def _keys(typed: type) -> set[str]:
    return set(get_type_hints(typed))


def test_rows_name_every_column_of_the_schema(tmp_path):
    db = open_db(tmp_path / "a.db")
    assert _keys(JobRow) == set(db["jobs"].columns_dict)
    assert _keys(TaskRow) == set(db["tasks"].columns_dict)


def test_each_read_returns_exactly_its_typed_keys(tmp_path):
    db = open_db(tmp_path / "a.db")
    user = users.create_user(db, "ada")["id"]
    job = jobs.create_job(db, job_id="j1", dialect="admin", user_id=user, key_id=None, kind="tasks",
                          request={}, tasks=[TaskDef(renderer="noop", input={}), TaskDef(renderer="noop", input={})])
    assert set(job) == _keys(JobRow)
    assert set(jobs.require_task(db, "j1.t000")) == _keys(TaskRow)
    assert [set(t) for t in jobs.tasks_of(db, "j1")] == [_keys(TaskRow)] * 2
    assert [set(t) for t in jobs.ready_tasks(db)] == [_keys(ReadyTask)] * 2
    assert [set(t) for t in jobs.tasks_of_jobs(db, ["j1"])["j1"]] == [_keys(TaskState)] * 2
    assert [set(t) for t in jobs.list_child_tasks(db, user, "admin", "noop", None, None, 10)] == [_keys(TaskState)] * 2
    assert [set(j) for j in jobs.list_jobs(db, user_id=user)] == [_keys(JobRow)]
