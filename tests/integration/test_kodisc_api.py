"""The Kodisc contract against a real server: the quickstart with curl, errors, credits, webhooks, cache."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from renderers.ffmpeg import probe, video_stream
from tests.conftest import until
from tests.unit.test_kodisc_contract import _verify

QUICKSTART = json.loads((Path(__file__).resolve().parents[2] / "examples" / "kodisc-quickstart.json").read_text())
TINY = {"code": "from manim import *\n\nclass Dot1(Scene):\n    def construct(self):\n"
                "        self.add(Dot())\n        self.wait(0.5)\n", "className": "Dot1", "quality": "low", "fps": 5}


def curl(*args: str) -> tuple[int, dict | bytes]:
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, check=True)
    body, _, code = out.stdout.rpartition(b"\n")
    try:
        return int(code), json.loads(body)
    except ValueError:
        return int(code), body


@pytest.fixture(scope="module")
def kodisc_box(make_module_server):
    return make_module_server({"APPLIANCE_CPU_SLOTS": "2"})


@pytest.fixture
def kodisc(kodisc_box):
    """The module's server, with a user of this test's own (500 credits, its own cache and rate limit)."""
    server = kodisc_box
    server.key = server.new_key(server.fresh_user(500), "kodisc")
    server.auth = {"Authorization": f"Bearer {server.key['key']}"}
    return server


def poll(server, job_id: str, auth: dict, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = httpx.get(f"{server.url}/api/v2/render/{job_id}", headers=auth).json()
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['status']}")


@pytest.mark.slow
def test_quickstart_as_written_with_curl(kodisc, tmp_path):
    key = kodisc.key["key"]
    code, queued = curl(f"{kodisc.url}/api/v2/render", "-H", f"Authorization: Bearer {key}",
                        "-H", "Content-Type: application/json", "-d", json.dumps(QUICKSTART))
    assert code == 202 and queued["status"] == "queued" and queued["endpoint"] == "render"
    assert queued["jobId"].startswith("c") and len(queued["jobId"]) == 25
    deadline = time.time() + 240
    while True:
        code, job = curl(f"{kodisc.url}/api/v2/render/{queued['jobId']}", "-H", f"Authorization: Bearer {key}")
        if job["status"] in ("completed", "failed") or time.time() > deadline:
            break
        time.sleep(0.3)
    assert code == 200 and job["status"] == "completed", job
    assert list(job) == ["jobId", "endpoint", "status", "createdAt", "completedAt", "durationMs", "creditsCost",
                         "metadata", "result", "error"]
    assert job["creditsCost"] > 0 and job["durationMs"] > 0 and job["error"] is None
    subprocess.run(["curl", "-sS", "-O", job["result"]["video"]], cwd=tmp_path, check=True)
    info = probe(tmp_path / "video.mp4")
    stream = video_stream(info)
    assert (stream["codec_name"], stream["width"], stream["height"], stream["pix_fmt"]) == \
        ("h264", 1280, 720, "yuv420p")
    assert stream["r_frame_rate"] == "30/1" and float(info["format"]["duration"]) > 1.0
    code, me = curl(f"{kodisc.url}/api/v2/me", "-H", f"Authorization: Bearer {key}")
    assert me["credits"]["total"] == 500 - job["creditsCost"]


def test_auth_failures_are_401(kodisc):
    url = f"{kodisc.url}/api/v2/me"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer kdsc_live_nothex"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer kdsc_live_" + "0" * 48}).status_code == 401
    other = kodisc.new_key(kodisc.user, "viralsync")["key"]
    assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 401
    kodisc.cli("keys", "revoke", kodisc.key["keyId"])
    r = httpx.get(url, headers=kodisc.auth)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_me_shape(kodisc):
    me = httpx.get(f"{kodisc.url}/api/v2/me", headers=kodisc.auth).json()
    assert list(me) == ["userId", "keyId", "keyPrefix", "credits"]
    assert me["keyPrefix"] == kodisc.key["key"][:14] and me["keyId"] == kodisc.key["keyId"]
    assert me["credits"] == {"paid": 500, "free": 0, "total": 500}


def test_validation_413_402_and_404(kodisc):
    def post(body, auth=kodisc.auth):
        return httpx.post(f"{kodisc.url}/api/v2/render", content=body,
                          headers={**auth, "Content-Type": "application/json"})
    r = post(b"{nope")
    assert (r.status_code, r.json()) == (400, {"error": "JSON body required"})
    r = post(json.dumps({**TINY, "quality": "8k"}).encode())
    assert r.json()["error"] == "quality must be one of: low, medium, high, twok, fourk"
    r = post(json.dumps({**TINY, "code": "#" * 210_000}).encode())
    assert (r.status_code, r.json()) == (413, {"error": "Request body too large",
                                               "message": "Maximum request body is 200 KB"})
    kodisc.cli("users", "create", "broke")
    broke = {"Authorization": f"Bearer {kodisc.new_key('broke', 'kodisc')['key']}"}
    r = post(json.dumps(TINY).encode(), broke)
    assert r.status_code == 402 and r.json()["error"] == "insufficient_credits"
    assert json.loads(kodisc.cli("jobs", "list") or "[]") if False else "broke" not in kodisc.cli("jobs", "list")
    assert httpx.get(f"{kodisc.url}/api/v2/render/cnothere", headers=kodisc.auth).status_code == 404
    job_id = post(json.dumps(TINY).encode()).json()["jobId"]
    assert httpx.get(f"{kodisc.url}/api/v2/render/{job_id}", headers=broke).status_code == 404


def _delivered(server, job_id: str) -> bool:
    """The job's webhook is delivered: its outbox row is final, so no later attempt can come."""
    return bool(server.query("select 1 from webhook_deliveries where job_id = ? and status = 'delivered'", (job_id,)))


class Receiver:
    """A local webhook receiver; answers 500 to the first `fail_first` deliveries."""

    def __init__(self, fail_first: int = 0, port: int = 0) -> None:
        self.calls: list[tuple[dict, bytes, int]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                status = 500 if len(outer.calls) < fail_first else 200
                outer.calls.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait(self, n: int, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while len(self.calls) < n and time.time() < deadline:
            time.sleep(0.1)
        assert len(self.calls) >= n, self.calls


@pytest.mark.slow
def test_failed_scene_refunds_and_webhook_is_signed_and_retried(kodisc):
    receiver = Receiver(fail_first=2)
    bad = {**TINY, "code": "from manim import *\n\nclass Dot1(Scene):\n    def construct(self):\n"
                           "        x = 1 / 0\n", "metadata": {"projectId": "p1"}, "webhookUrl": receiver.url}
    r = httpx.post(f"{kodisc.url}/api/v2/render", json=bad, headers=kodisc.auth)
    job = poll(kodisc, r.json()["jobId"], kodisc.auth)
    assert job["status"] == "failed" and "ZeroDivisionError" in job["error"] and "line 5" in job["error"]
    assert job["creditsCost"] == 0 and job["result"] is None and job["metadata"] == {"projectId": "p1"}
    me = httpx.get(f"{kodisc.url}/api/v2/me", headers=kodisc.auth).json()
    assert me["credits"]["total"] == 500
    receiver.wait(3)
    assert [c[2] for c in receiver.calls[:3]] == [500, 500, 200]
    headers, body, _ = receiver.calls[2]
    assert headers["kodisc-event"] == "failed"
    assert _verify(kodisc.key["webhookSecret"], body, headers["kodisc-signature"])
    assert json.loads(body) == job
    until(lambda: _delivered(kodisc, job["jobId"]), "the delivery recorded as delivered (no attempt after it)")
    assert len(receiver.calls) == 3  # delivered once, no more


@pytest.mark.slow
def test_completed_webhook_from_the_keys_default_url_and_cache_hit(kodisc):
    receiver = Receiver()
    key = kodisc.new_key(kodisc.user, "kodisc", webhook_url=receiver.url)
    auth = {"Authorization": f"Bearer {key['key']}"}
    first = poll(kodisc, httpx.post(f"{kodisc.url}/api/v2/render", json=TINY, headers=auth).json()["jobId"], auth)
    assert first["status"] == "completed", first
    receiver.wait(1)
    headers, body, _ = receiver.calls[0]
    assert headers["kodisc-event"] == "completed" and _verify(key["webhookSecret"], body, headers["kodisc-signature"])
    opted_out = {**TINY, "webhookUrl": None}
    second = poll(kodisc, httpx.post(f"{kodisc.url}/api/v2/render", json=opted_out, headers=auth).json()["jobId"], auth)
    assert second["status"] == "completed" and second["jobId"] != first["jobId"]
    assert second["creditsCost"] <= first["creditsCost"]
    assert kodisc.job(second["jobId"])["tasks"][0]["cached"] is True  # reused, not rendered again
    video = httpx.get(second["result"]["video"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    part = httpx.get(second["result"]["video"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100 and part.content == video.content[:100]
    assert httpx.get(second["result"]["video"], headers={"If-None-Match": video.headers["etag"]}).status_code == 304
    until(lambda: _delivered(kodisc, first["jobId"]), "the first job's webhook recorded as delivered")
    # the opted-out job enqueued nothing: the lifecycle tells the listener as it writes the completed status
    assert kodisc.query("select count(*) from webhook_deliveries where job_id = ?", (second["jobId"],)) == [(0,)]
    assert len(receiver.calls) == 1


@pytest.mark.slow
def test_final_cost_above_the_balance_fails_the_job_and_refunds_the_reserve(kodisc):
    kodisc.cli("users", "create", "tight", "--credits", "10")
    auth = {"Authorization": f"Bearer {kodisc.new_key('tight', 'kodisc')['key']}"}
    slow = {"code": "from manim import *\nimport time\n\nclass Slow(Scene):\n    def construct(self):\n"
                    "        time.sleep(3)\n        self.add(Dot())\n        self.wait(0.2)\n",
            "className": "Slow", "quality": "high", "fps": 5}  # >= 3 s at 4 credits/s = 12 > 10
    job = poll(kodisc, httpx.post(f"{kodisc.url}/api/v2/render", json=slow, headers=auth).json()["jobId"], auth)
    assert job["status"] == "failed" and "Insufficient credits" in job["error"], job
    assert job["creditsCost"] == 0 and job["result"] is None
    assert httpx.get(f"{kodisc.url}/api/v2/me", headers=auth).json()["credits"] == {"paid": 10, "free": 0, "total": 10}
    assert httpx.get(f"{kodisc.url}/r/{job['jobId']}/video.mp4").status_code == 404
