"""What survives a SIGKILL of the server: webhook deliveries, credits, jobs."""
from __future__ import annotations

import signal
import time

import httpx
import pytest

from appliance.store import ledger
from appliance.store.db import open_db
from tests.conftest import Server, free_port, until
from tests.integration.test_kodisc_api import TINY, Receiver, poll

SLEEPY = {**TINY, "code": "from manim import *\nimport time\n\nclass Dot1(Scene):\n    def construct(self):\n"
                          "        time.sleep(30)\n        self.add(Dot())\n        self.wait(0.2)\n"}


def _restart(server: Server) -> Server:
    server.stop(signal.SIGKILL)
    return Server(server.data_dir, server.env).start()


@pytest.mark.slow
def test_a_pending_webhook_is_delivered_after_a_restart(make_server):
    port = free_port()
    server = make_server({"APPLIANCE_WEBHOOK_RETRY_SCALE": "0.1"})
    server.cli("users", "create", "ada", "--credits", "100")
    auth = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
    bad = {**TINY, "code": "raise SystemExit('no scene here')", "webhookUrl": f"http://127.0.0.1:{port}/hook"}
    job_id = httpx.post(f"{server.url}/api/v2/render", json=bad, headers=auth).json()["jobId"]
    assert poll(server, job_id, auth)["status"] == "failed"
    until(lambda: server.query("select 1 from webhook_deliveries where job_id = ? and attempt > 0", (job_id,)),
          "the first attempt, refused: nobody listens yet")
    again = _restart(server)
    try:
        receiver = Receiver(port=port)  # the receiver comes up only now
        receiver.wait(1, timeout=30)
        headers, body, _ = receiver.calls[0]
        assert headers["kodisc-event"] == "failed" and job_id.encode() in body
        receiver.close()
    finally:
        again.stop(signal.SIGKILL)


@pytest.mark.slow
def test_a_job_whose_attempts_run_out_in_crashes_fails_with_a_full_refund(make_server):
    server = make_server({"APPLIANCE_MAX_ATTEMPTS": "1"})
    server.cli("users", "create", "ada", "--credits", "100")
    auth = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
    job_id = httpx.post(f"{server.url}/api/v2/render", json=SLEEPY, headers=auth).json()["jobId"]
    deadline = time.time() + 60
    while httpx.get(f"{server.url}/api/v2/render/{job_id}", headers=auth).json()["status"] != "running":
        assert time.time() < deadline
        time.sleep(0.1)
    me = httpx.get(f"{server.url}/api/v2/me", headers=auth).json()
    assert me["credits"]["total"] == 90  # 10 reserved
    again = _restart(server)
    try:
        job = poll(again, job_id, auth, timeout=30)
        assert job["status"] == "failed" and "server stopped" in job["error"], job
        assert httpx.get(f"{again.url}/api/v2/me", headers=auth).json()["credits"]["total"] == 100
        assert ledger.open_reservations(open_db(server.data_dir / "appliance.db")) == []
    finally:
        again.stop(signal.SIGKILL)


def test_health_and_openapi(server):
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok" and set(health["queue"]) == {"queued", "running"}
    assert health["capacity"]["cpu"] >= 1 and "namespaces" in health["sandbox"]
    schema = httpx.get(f"{server.url}/schema/openapi.json").json()
    assert "/api/v2/render" in schema["paths"] and "/v1/render/jobs" in schema["paths"]


def test_submissions_are_refused_with_503_when_disk_is_low(make_server):
    server = make_server({"APPLIANCE_MIN_FREE_DISK_MB": str(10**9)})
    server.cli("users", "create", "ada", "--credits", "100")
    auth = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
    r = httpx.post(f"{server.url}/api/v2/render", json=TINY, headers=auth)
    assert r.status_code == 503 and "free disk" in r.json()["message"]
    assert httpx.get(f"{server.url}/api/v2/me", headers=auth).json()["credits"]["total"] == 100
