"""/metrics against a real server after real jobs: families and values, and who may read it."""
from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_kodisc_api import TINY, Receiver, poll


def scrape(server, headers: dict | None = None) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}."""
    r = httpx.get(f"{server.url}/metrics", headers=headers or {}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain") and r.headers["content-type"].count("charset") == 1
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


@pytest.fixture
def busy(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_PRELOAD": "PIL", "APPLIANCE_RENDER_TIMEOUT_S": "2",
                          "APPLIANCE_RATE_LIMIT_REQUESTS": "3"})
    server.cli("users", "create", "alice")
    return server


def test_jobs_tasks_kills_and_refusals_are_counted(busy):
    done = [busy.wait(busy.submit("alice", "test.noop")) for _ in range(2)]
    failed = busy.wait(busy.submit("alice", "test.fail"))
    crashed = busy.wait(busy.submit("alice", "test.crash", {"signal": "SIGSEGV"}))
    slow = busy.wait(busy.submit("alice", "test.sleep", {"seconds": 30}), timeout=30)
    assert [j["status"] for j in (*done, failed, crashed, slow)] == ["completed"] * 2 + ["failed"] * 3
    key = {"x-api-key": busy.new_key("alice", "viralsync")["key"]}
    codes = [httpx.get(f"{busy.url}/v1/me", headers=key).status_code for _ in range(4)]
    assert codes[-1] == 429, codes

    m = scrape(busy)
    assert value(m, "appliance_jobs", dialect="admin", status="completed") == 2
    assert value(m, "appliance_jobs", dialect="admin", status="failed") == 3
    assert value(m, "appliance_queue_tasks", state="queued") == 0
    assert value(m, "appliance_queue_tasks", state="running") == 0
    assert value(m, "appliance_cpu_slots_capacity") == 2 and value(m, "appliance_cpu_slots_used") == 0
    assert value(m, "appliance_worker_utilization") == 0
    assert value(m, "appliance_task_duration_seconds_count", renderer="test.noop", outcome="done") == 2
    assert value(m, "appliance_task_duration_seconds_count", renderer="test.fail", outcome="failed") == 1
    assert value(m, "appliance_task_duration_seconds_bucket", renderer="test.sleep", outcome="failed",
                 le="1.0") == 0  # killed at the 2 s limit
    assert value(m, "appliance_task_duration_seconds_bucket", renderer="test.sleep", outcome="failed",
                 le="30.0") == 1
    assert value(m, "appliance_sandbox_kills_total", reason="timeout") == 1
    assert value(m, "appliance_sandbox_kills_total", reason="crash") == 1
    assert "appliance_sandbox_kills_total" in m and len(m["appliance_sandbox_kills_total"]) == 2  # not the fail
    assert value(m, "appliance_rate_limit_refusals_total", dialect="viralsync") == 1


def test_utilisation_while_a_task_runs(busy):
    job_id = busy.submit("alice", "test.sleep", {"seconds": 1.5})
    busy.wait(job_id, statuses=("running",))
    m = scrape(busy)
    assert value(m, "appliance_cpu_slots_used") == 1 and value(m, "appliance_worker_utilization") == 0.5
    assert value(m, "appliance_queue_tasks", state="running") == 1
    assert value(m, "appliance_jobs", dialect="admin", status="running") == 1
    busy.wait(job_id)


def test_only_the_admin_token_or_an_allowed_address_may_scrape(make_server):
    server = make_server({"APPLIANCE_METRICS_ALLOW": "10.0.0.0/8", "APPLIANCE_PRELOAD": "PIL"})
    r = httpx.get(f"{server.url}/metrics")
    assert r.status_code == 401 and "admin token" in r.json()["message"]
    assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert "appliance_cpu_slots_capacity" in scrape(server, server.admin_headers())


@pytest.mark.slow
def test_cache_hits_and_webhook_outcomes(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2"})
    server.cli("users", "create", "ada", "--credits", "500")
    receiver = Receiver(fail_first=1)
    key = server.new_key("ada", "kodisc", webhook_url=receiver.url)
    auth = {"Authorization": f"Bearer {key['key']}"}
    for _ in range(2):  # the second is answered from the cache
        job_id = httpx.post(f"{server.url}/api/v2/render", json=TINY, headers=auth).json()["jobId"]
        assert poll(server, job_id, auth)["status"] == "completed"
    receiver.wait(3)  # first: 500 then 200; second: 200
    receiver.close()
    m = scrape(server)
    assert value(m, "appliance_cache_hits_total", renderer="manim") == 1
    assert value(m, "appliance_task_duration_seconds_count", renderer="manim", outcome="done") == 1
    assert value(m, "appliance_webhook_deliveries_total", dialect="kodisc", outcome="delivered") == 2
    assert value(m, "appliance_webhook_deliveries_total", dialect="kodisc", outcome="retrying") == 1
    assert value(m, "appliance_jobs", dialect="kodisc", status="completed") == 2
