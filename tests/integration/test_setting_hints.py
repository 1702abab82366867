"""Errors that name a fix name the setting (README "Configuration"), seen through the real APIs."""
from __future__ import annotations

import json
import time

import httpx

STRICT = {"APPLIANCE_ALLOW_HTTP_WEBHOOKS": "false", "APPLIANCE_ALLOW_LOOPBACK_TARGETS": "false"}
SCENE = {"code": "from manim import *\n\nclass A(Scene):\n    def construct(self):\n        self.wait(0.1)\n",
         "className": "A", "quality": "low"}


def movie_with_image(src: str) -> dict:
    layer = {"id": "logo", "type": "image", "source": src, "startTime": 0, "duration": 1,
             "position": {"x": 0, "y": 0}, "size": {"width": 32, "height": 32}}
    return {"kind": "movie", "projectId": "p", "movie": {"width": 640, "height": 360, "fps": 5, "scenes": [
        {"id": "s1", "duration": 1, "layers": [layer]}]}}


def test_refusals_name_their_settings(make_server):
    server = make_server(STRICT)
    server.cli("users", "create", "ada", "--credits", "100")
    kodisc = server.new_key("ada", "kodisc")["key"]
    r = httpx.post(f"{server.url}/api/v2/render", json={**SCENE, "webhookUrl": "http://hooks.example/k"},
                   headers={"Authorization": f"Bearer {kodisc}"}, timeout=10)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "webhookUrl must be an https:// URL", body  # the documented error, unchanged
    assert "allow_http_webhooks" in body["message"] and "APPLIANCE_ALLOW_HTTP_WEBHOOKS" in body["message"], body

    # Media on the appliance's own loopback: refused, naming the switch and the way meant for local files.
    vs = server.new_key("ada", "viralsync")["key"]
    headers = {"x-api-key": vs}
    r = httpx.post(f"{server.url}/v1/render/jobs", json=movie_with_image(f"http://127.0.0.1:{server.port}/x.png"),
                   headers=headers, timeout=10)
    assert r.status_code in (202, 400), r.text
    if r.status_code == 400:
        message = r.json()["error"]
    else:
        job_id, deadline = r.json()["jobId"], time.time() + 60
        while (job := httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers, timeout=10).json())[
                "status"] not in ("failed", "done", "cancelled") and time.time() < deadline:
            time.sleep(0.2)
        assert job["status"] == "failed", json.dumps(job)
        message = job["error"] if isinstance(job["error"], str) else json.dumps(job["error"])
    assert "APPLIANCE_ALLOW_LOOPBACK_TARGETS" in message and "assets_dir" in message, message


def test_low_disk_refusal_names_min_free_disk_mb(make_server):
    server = make_server({"APPLIANCE_MIN_FREE_DISK_MB": str(1 << 40)})  # more than any disk has
    server.cli("users", "create", "ada", "--credits", "100")
    key = server.new_key("ada", "kodisc")["key"]
    r = httpx.post(f"{server.url}/api/v2/render", json=SCENE, headers={"Authorization": f"Bearer {key}"},
                   timeout=10)
    assert r.status_code == 503, r.text
    assert "min_free_disk_mb" in r.text and "APPLIANCE_MIN_FREE_DISK_MB" in r.text, r.text
