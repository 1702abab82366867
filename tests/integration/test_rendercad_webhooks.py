"""RenderCAD webhooks.php against a real server: register/list/delete with their limits, and the deliveries a
local receiver gets (body, headers, an independent HMAC check, retries, durable across a restart)."""
from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest

from tests.conftest import free_port, until
from tests.integration.test_kodisc_api import Receiver
from tests.integration.test_rendercad_render import act, photo, submit, upload, wait

W = "/backend/webhooks.php"


@pytest.fixture
def rc(make_server):
    # RenderCAD retries 60, 300 and 900 s after the first attempt: 0.18, 0.9 and 2.7 s here
    server = make_server({"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_WEBHOOK_RETRY_SCALE": "0.003"})
    server.cli("users", "create", "ada", "--credits", "2")
    server.key = server.new_key("ada", "rendercad")["key"]
    server.auth = {"Authorization": f"Bearer {server.key}"}
    return server


def hook(server, action: str, body: dict | None = None, auth: dict | None = None) -> httpx.Response:
    headers = auth if auth is not None else server.auth
    if body is None:
        return httpx.get(f"{server.url}{W}", params={"action": action}, headers=headers, timeout=10)
    return httpx.post(f"{server.url}{W}?action={action}", json=body, headers=headers, timeout=10)


def verify(secret: str, headers: dict, body: bytes) -> dict:
    """The receiver's side, as the docs tell it: hex HMAC-SHA256 of the raw body after `sha256=`."""
    want = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-webhook-signature"] == f"sha256={want}"
    assert headers["user-agent"] == "RENDERCAD-Webhooks/1.0" and headers["content-type"] == "application/json"
    data = json.loads(body)
    assert headers["x-webhook-event"] == data["event_type"] and headers["x-webhook-delivery"] == data["delivery_id"]
    return data


def test_register_list_delete_and_their_limits(rc):
    r = hook(rc, "register", {"url": "https://hooks.example.com/rc", "events": ["render.completed"]})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["success"] and got["secret"].startswith("whsec_") and got["status"] == "active"
    assert got["events"] == ["render.completed"] and isinstance(got["id"], int)
    listed = hook(rc, "list").json()["webhooks"]
    assert listed == [{"id": got["id"], "url": got["url"], "events": ["render.completed"], "status": "active",
                       "created_at": got["created_at"], "last_triggered_at": None, "last_success_at": None,
                       "failure_count": 0}]  # the secret is shown once, never listed
    assert hook(rc, "register", {"url": "https://x.example.com", "events": ["render.done"]}).status_code == 400
    assert hook(rc, "register", {"url": "ftp://x.example.com", "events": ["render.failed"]}).status_code == 400
    assert hook(rc, "register", {"events": ["render.failed"]}).status_code == 400
    for i in range(4):
        r = hook(rc, "register", {"url": f"https://h{i}.example.com", "events": ["render.failed"]})
        assert r.status_code == 200
    sixth = hook(rc, "register", {"url": "https://h9.example.com", "events": ["render.failed"]})
    assert sixth.status_code == 400 and "5" in sixth.json()["error"]
    assert hook(rc, "delete", {"id": got["id"]}).json() == {"success": True, "message": "Webhook deleted"}
    assert hook(rc, "delete", {"id": got["id"]}).status_code == 404
    assert len(hook(rc, "list").json()["webhooks"]) == 4
    read_only = {"Authorization": f"Bearer {rc.new_key('ada', 'rendercad', scope='read-only')['key']}"}
    assert hook(rc, "list", auth=read_only).status_code == 200
    assert hook(rc, "register", {"url": "https://a.example.com", "events": ["render.failed"]},
                auth=read_only).status_code == 403


def test_https_only_unless_allowed(make_server):
    server = make_server({"APPLIANCE_ALLOW_HTTP_WEBHOOKS": "false"})
    server.cli("users", "create", "bo", "--credits", "1")
    server.auth = {"Authorization": f"Bearer {server.new_key('bo', 'rendercad')['key']}"}
    r = hook(server, "register", {"url": "http://hooks.example.com/rc", "events": ["render.completed"]})
    assert r.status_code == 400 and "https" in r.json()["error"]


def test_completed_render_and_exhausted_credits_are_delivered_signed_with_retries(rc):
    receiver = Receiver(fail_first=2)
    try:
        secret = hook(rc, "register", {"url": receiver.url,
                                       "events": ["render.completed", "credits.exhausted"]}).json()["secret"]
        other = Receiver()
        hook(rc, "register", {"url": other.url, "events": ["render.failed"]})
        job_id = submit(rc, model="pro")  # 2 tokens: the user's last
        assert wait(rc, job_id)["status"] == "completed"
        receiver.wait(4)  # two events; the first two attempts (whichever) fail and are retried
        by_event: dict[str, list] = {}
        for headers, body, status in receiver.calls:
            by_event.setdefault(verify(secret, headers, body)["event_type"], []).append((headers, body, status))
        done = json.loads(by_event["render.completed"][-1][1])
        assert done["job_id"] == job_id and done["status"] == "completed" and done["output_url"].endswith(job_id)
        assert isinstance(done["processing_time_ms"], int) and done["completed_at"]
        exhausted = json.loads(by_event["credits.exhausted"][-1][1])
        assert exhausted["credits_used"] == 2 and exhausted["credits_limit"] == 2 and exhausted["billing_cycle_end"]
        deliveries = {h["x-webhook-delivery"] for h, b, s in receiver.calls}
        assert len(deliveries) == 2  # retries resend the same delivery, each event its own
        assert all(calls[-1][2] == 200 for calls in by_event.values()) and len(receiver.calls) == 4
        listed = hook(rc, "list").json()["webhooks"][0]
        assert listed["last_success_at"] and listed["last_triggered_at"] and listed["failure_count"] == 0
        assert other.calls == []
        other.close()
    finally:
        receiver.close()


def test_failed_render_is_delivered_and_failures_are_counted(rc):
    receiver = Receiver(fail_first=99)
    try:
        secret = hook(rc, "register", {"url": receiver.url, "events": ["render.failed"]}).json()["secret"]
        job_id = act(rc, "create_job", {"model": "classic"}).json()["job_id"]
        assert upload(rc, job_id, b"not an image at all").status_code == 200
        reason = act(rc, "finalize_job", {"job_id": job_id}).json()["error"]
        receiver.wait(4)  # the first attempt and three retries, then it stops
        data = verify(secret, *receiver.calls[0][:2])
        assert data["event_type"] == "render.failed" and data["job_id"] == job_id and data["error"] == reason
        assert data["input_url"].endswith(f"{job_id}_input") and photo()
        listed = hook(rc, "list").json()["webhooks"][0]
        assert listed["failure_count"] == 4 and listed["last_success_at"] is None
    finally:
        receiver.close()


def test_a_pending_delivery_survives_a_restart(make_server):
    port = free_port()
    server = make_server({"APPLIANCE_WEBHOOK_RETRY_SCALE": "0.05"})  # first retry 3 s after the first attempt
    server.cli("users", "create", "cy", "--credits", "2")
    server.auth = {"Authorization": f"Bearer {server.new_key('cy', 'rendercad')['key']}"}
    secret = hook(server, "register", {"url": f"http://127.0.0.1:{port}/hook",
                                       "events": ["render.failed"]}).json()["secret"]
    job_id = act(server, "create_job", {"model": "classic"}).json()["job_id"]
    assert upload(server, job_id, b"still not an image").status_code == 200
    assert act(server, "finalize_job", {"job_id": job_id}).status_code == 422
    until(lambda: server.query("select 1 from webhook_deliveries where job_id = ? and attempt > 0", (job_id,)),
          "the first attempt, which finds nobody listening")
    server.stop()
    receiver = Receiver(port=port)
    try:
        server.start()
        receiver.wait(1, timeout=30)
        data = verify(secret, *receiver.calls[0][:2])
        assert data["job_id"] == job_id and data["event_type"] == "render.failed"
        listed = hook(server, "list").json()["webhooks"][0]
        assert listed["failure_count"] == 0 and listed["last_success_at"]
    finally:
        receiver.close()
