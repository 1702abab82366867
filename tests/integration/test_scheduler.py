"""Scheduler behaviour through a real server process, with the test renderers (the only fakes)."""
from __future__ import annotations

import signal

import httpx
import pytest

from tests.conftest import until


def _started(server, job_id: str) -> float:
    """Seconds since epoch when the job's first task started (from its 'running' event)."""
    r = httpx.get(f"{server.url}/admin/jobs/{job_id}/events", headers=server.admin_headers())
    return next(e["id"] for e in r.json() if e["type"] == "running")


@pytest.fixture(scope="module")
def slots_box(make_module_server):
    server = make_module_server({"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_PRELOAD": "PIL"})
    for name in ("alice", "bob"):
        server.cli("users", "create", name)
    return server


@pytest.fixture
def two_slots(slots_box):
    """The module's server with two CPU slots, idle: whatever an earlier test submitted has ended, so each test
    judges the slots by its own jobs alone."""
    until(lambda: httpx.get(f"{slots_box.url}/healthz", timeout=10).json()["queue"] == {"queued": 0, "running": 0},
          "an idle server", timeout=60)
    return slots_box


def test_noop_job_completes_with_its_output_published(two_slots):
    job = two_slots.wait(two_slots.submit("alice", "test.noop"))
    assert job["status"] == "completed", job
    files = job["result"]["files"]
    out = two_slots.data_dir / "outputs" / job["id"] / files["out"]
    assert out.read_text().startswith("noop")
    assert not (two_slots.data_dir / "work" / job["tasks"][0]["id"]).exists()  # workdir cleaned


def test_admission_respects_cpu_slots(two_slots):
    ids = [two_slots.submit("alice", "test.sleep", {"seconds": 2.0}) for _ in range(3)]
    tasks = [two_slots.wait(i)["tasks"][0] for i in ids]
    assert all(t["status"] == "done" for t in tasks), tasks
    # Judged from the recorded start and end times, not from a poll at a guessed moment (a loaded machine):
    # never three at once, and two did run together, so both slots were used.
    spans = [(t["startedAt"], t["finishedAt"]) for t in tasks]
    overlapping = [sum(s <= start < e for s, e in spans) for start, _ in spans]
    assert max(overlapping) == 2, spans


def test_one_users_backlog_does_not_block_another_user(two_slots):
    backlog = [two_slots.submit("alice", "test.sleep", {"seconds": 1.0}) for _ in range(8)]  # 4 s on 2 slots
    bobs = two_slots.submit("bob", "test.sleep", {"seconds": 0.2})
    bob_job = two_slots.wait(bobs, timeout=60)
    assert bob_job["status"] == "completed"
    # bob took the next free slot: alice's jobs submitted before his still started after him (start times, so a
    # loaded machine that submits slowly does not change the verdict)
    bob_start = bob_job["tasks"][0]["startedAt"]
    alice_starts = [two_slots.wait(i, timeout=120)["tasks"][0]["startedAt"] for i in backlog]
    assert sum(start > bob_start for start in alice_starts) >= 3, (bob_start, alice_starts)


def test_failed_task_fails_the_job_with_its_message(two_slots):
    job = two_slots.wait(two_slots.submit("alice", "test.fail", {"message": "the scene is empty"}))
    assert job["status"] == "failed" and job["error"] == "the scene is empty"


def test_a_crash_by_signal_is_a_readable_failure_and_the_server_keeps_serving(two_slots):
    job = two_slots.wait(two_slots.submit("alice", "test.crash", {"signal": "SIGSEGV"}))
    assert job["status"] == "failed" and "SIGSEGV" in job["error"], job
    assert two_slots.wait(two_slots.submit("bob", "test.noop"))["status"] == "completed"


def test_timeout_kills_the_task(make_server):
    server = make_server({"APPLIANCE_RENDER_TIMEOUT_S": "1", "APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "alice")
    job = server.wait(server.submit("alice", "test.sleep", {"seconds": 30}), timeout=20)
    assert job["status"] == "failed" and "timed out" in job["error"], job


def test_cancel_kills_a_running_task(two_slots):
    job_id = two_slots.submit("alice", "test.sleep", {"seconds": 30})
    two_slots.wait(job_id, statuses=("running",))
    r = httpx.post(f"{two_slots.url}/admin/jobs/{job_id}/cancel", headers=two_slots.admin_headers())
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    until(lambda: two_slots.job(job_id)["tasks"][0]["status"] == "cancelled", "the task cancelled")
    again = httpx.post(f"{two_slots.url}/admin/jobs/{job_id}/cancel", headers=two_slots.admin_headers())
    assert again.status_code == 409


def test_dag_dependents_start_after_their_inputs(two_slots):
    tasks = [{"renderer": "test.sleep", "input": {"seconds": 0.3}, "name": "a"},
             {"renderer": "test.sleep", "input": {"seconds": 0.3}, "name": "b"},
             {"renderer": "test.noop", "input": {}, "name": "join", "depends_on": [0, 1]}]
    job = two_slots.wait(two_slots.submit("alice", tasks=tasks))
    assert job["status"] == "completed"
    assert [t["status"] for t in job["tasks"]] == ["done", "done", "done"]
    a, b, join = job["tasks"]
    assert a["startedAt"] < b["finishedAt"] and b["startedAt"] < a["finishedAt"]  # the inputs ran side by side
    assert join["startedAt"] >= max(a["finishedAt"], b["finishedAt"])  # the dependent waited for both


def test_a_failed_dependency_fails_the_job_and_skips_dependents(two_slots):
    tasks = [{"renderer": "test.fail", "input": {"message": "scene 1 broke"}, "name": "scene_1"},
             {"renderer": "test.noop", "input": {}, "name": "assemble", "depends_on": [0]}]
    job = two_slots.wait(two_slots.submit("alice", tasks=tasks))
    assert job["status"] == "failed" and job["error"] == "scene_1: scene 1 broke"
    assert job["tasks"][1]["status"] == "cancelled"


def test_memory_hog_is_contained(two_slots):
    hog = two_slots.submit("alice", "test.memhog", {"mb": 8000})
    ok = two_slots.submit("bob", "test.noop")
    hogged = two_slots.wait(hog)
    assert hogged["status"] == "failed" and "memory" in hogged["error"].lower(), hogged
    assert two_slots.wait(ok)["status"] == "completed"


def test_sigkill_of_the_server_loses_no_job(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "1", "APPLIANCE_PRELOAD": "PIL", "APPLIANCE_MAX_ATTEMPTS": "2"})
    server.cli("users", "create", "alice")
    running = server.submit("alice", "test.sleep", {"seconds": 1.0})
    queued = server.submit("alice", "test.sleep", {"seconds": 0.2})
    server.wait(running, statuses=("running",))
    server.stop(signal.SIGKILL)
    from tests.conftest import Server

    again = Server(server.data_dir, server.env).start()
    try:
        for job_id in (running, queued):
            job = again.wait(job_id)
            assert job["status"] == "completed", job
        assert again.job(running)["tasks"][0]["attempts"] == 2
        assert not list((server.data_dir / "tmp").iterdir())
    finally:
        again.stop(signal.SIGKILL)


def test_a_result_naming_files_outside_the_workdir_is_not_published(two_slots):
    outputs = two_slots.data_dir / "outputs"
    before = set(outputs.iterdir()) if outputs.exists() else set()  # earlier tests' outputs on this server
    for name in ("../../appliance.db", "/etc/passwd", ".hidden"):
        job = two_slots.wait(two_slots.submit("alice", "test.noop", {"result_name": name}))
        assert job["status"] == "failed" and "unsafe output name" in job["error"], job
    assert set(outputs.iterdir()) == before  # nothing published
    link = {"symlink_to": str(two_slots.data_dir / "appliance.db")}
    job = two_slots.wait(two_slots.submit("alice", "test.noop", link))
    assert job["status"] == "failed" and "is a symbolic link" in job["error"], job


def test_per_user_cap_limits_running_tasks(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_PRELOAD": "PIL", "APPLIANCE_MAX_TASKS_PER_USER": "1"})
    server.cli("users", "create", "alice")
    server.cli("users", "create", "bob")
    a = [server.submit("alice", "test.sleep", {"seconds": 1.0}) for _ in range(2)]
    b = server.submit("bob", "test.sleep", {"seconds": 1.0})
    server.wait(b, statuses=("running",))  # admitted together with alice's first: both slots are taken now
    server.wait(a[0], statuses=("running",))
    assert [server.job(i)["status"] for i in a] == ["running", "queued"]
    assert server.job(b)["status"] == "running"
    assert all(server.wait(i)["status"] == "completed" for i in [*a, b])


def test_a_task_needing_a_gpu_on_a_box_without_one_fails_and_blocks_nothing(make_server):
    """It can never fit: waiting would hold its reservation and stall every later task."""
    server = make_server({"APPLIANCE_GPUS": "0", "APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "alice")
    gpu_job = server.wait(server.submit("alice", tasks=[{"renderer": "test.noop", "input": {}, "gpu": 1, "cpu": 2}]))
    assert gpu_job["status"] == "failed" and "needs a GPU" in gpu_job["error"] and "gpus" in gpu_job["error"]
    assert server.wait(server.submit("alice", "test.noop"))["status"] == "completed"
