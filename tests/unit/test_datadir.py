"""A job's files go together (issue #17 item 3): deleting or expiring a job removes its tasks' logs with its
outputs, and no other job's."""
from __future__ import annotations

from appliance.datadir import DataDir


def test_remove_job_takes_its_task_logs_and_leaves_the_others(tmp_path):
    store = DataDir(tmp_path)
    for name in ("job_a.t000.log", "job_a.t001.log", "job_ab.t000.log", "job_b.t000.log"):
        (tmp_path / "logs" / name).write_text("x")
    store.job_dir("job_a").mkdir()
    store.remove_job("job_a")
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["job_ab.t000.log", "job_b.t000.log"]
    assert not store.job_dir("job_a").exists()
