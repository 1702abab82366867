"""A RenderCAD job is a core job from create_job on (issue #20): uploading is its first phase, the one credit
check is finalize's reserve (RenderCAD's 429, and the job still uploading), a refused upload fails the core job
with the 422's words, and a job that never got past its uploads has nothing for the operator to retry."""
from __future__ import annotations

import httpx

from tests.integration.test_kodisc_api import Receiver
from tests.integration.test_rendercad_render import act, photo, upload
from tests.integration.test_rendercad_webhooks import hook, verify


def test_uploading_is_a_phase_of_the_core_job(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "1"})
    server.cli("users", "create", "eve")  # no credits
    server.auth = {"Authorization": f"Bearer {server.new_key('eve', 'rendercad')['key']}"}

    job_id = act(server, "create_job", {"model": "classic"}).json()["job_id"]
    core = server.job(job_id)
    assert (core["dialect"], core["kind"], core["status"], core["phase"]) == ("rendercad", "image", "uploading",
                                                                              "uploading")
    assert core["tasks"] == []
    assert upload(server, job_id, photo(size=(320, 240))).status_code == 200
    r = act(server, "finalize_job", {"job_id": job_id})
    assert r.status_code == 429, r.text
    assert r.json() == {"error": "Not enough tokens: this render needs 1. Ask the appliance admin for credits."}
    assert act(server, "status", job_id=job_id).json()["status"] == "uploading"  # the client may finalize again
    assert server.job(job_id)["tasks"] == []
    server.cli("credits", "grant", "--user", "eve", "1")
    r = act(server, "finalize_job", {"job_id": job_id})
    assert r.status_code == 200 and r.json()["status"] == "pending", r.text
    assert act(server, "finalize_job", {"job_id": job_id}).json() == {"error": "This job was already finalized"}
    assert server.wait(job_id)["status"] == "completed"

    refused = act(server, "create_job", {}).json()["job_id"]
    assert upload(server, refused, b"<html>not an image</html>").status_code == 200
    reason = act(server, "finalize_job", {"job_id": refused}).json()["error"]
    core = server.job(refused)
    assert (core["status"], core["error"], core["tasks"]) == ("failed", reason, [])
    retried = httpx.post(f"{server.url}/admin/jobs/{refused}/retry", headers=server.admin_headers(), timeout=10)
    assert retried.status_code == 409 and "never submitted" in retried.text
    assert httpx.get(f"{server.url}/renders/{refused}_input", timeout=10).status_code == 404  # never served


def test_a_refused_upload_sends_its_webhook_as_before(make_server):
    """A refused upload's render.failed is now sent by the job listener: the same fields in the same order as
    when finalize sent it itself (job_id, status, error, input_url, completed_at)."""
    server = make_server()
    server.cli("users", "create", "ada", "--credits", "5")
    server.auth = {"Authorization": f"Bearer {server.new_key('ada', 'rendercad')['key']}"}
    receiver = Receiver()
    try:
        secret = hook(server, "register", {"url": receiver.url, "events": ["render.failed"]}).json()["secret"]
        job_id = act(server, "create_job", {}).json()["job_id"]
        assert upload(server, job_id, b"not an image at all").status_code == 200
        reason = act(server, "finalize_job", {"job_id": job_id}).json()["error"]
        receiver.wait(1)
        data = verify(secret, *receiver.calls[0][:2])
        assert list(data) == ["event_type", "delivery_id", "timestamp", "job_id", "status", "error", "input_url",
                              "completed_at"], data
        assert (data["job_id"], data["status"], data["error"]) == (job_id, "failed", reason)
    finally:
        receiver.close()
