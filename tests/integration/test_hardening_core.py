"""Hardening of the core, each against a real server: a second server on the same data dir, billing after a
restart, a task that cannot start, a job cancelled while its media downloads, cache privacy, starvation-free
admission, the retention sweep."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psutil
import pytest

from tests.conftest import PYTHON, ROOT, Server, free_port, until
from tests.integration.test_durability import SLEEPY
from tests.integration.test_kodisc_api import TINY, poll
from tests.integration.test_metrics import scrape, value


def _kodisc(server: Server, user: str = "ada", credits: str = "100") -> dict:
    server.cli("users", "create", user, "--credits", credits)
    return {"Authorization": f"Bearer {server.new_key(user, 'kodisc')['key']}"}


def _credits(server: Server, auth: dict) -> int:
    return httpx.get(f"{server.url}/api/v2/me", headers=auth).json()["credits"]["total"]


def _db(server: Server) -> sqlite3.Connection:
    conn = sqlite3.connect(server.data_dir / "appliance.db")
    conn.row_factory = sqlite3.Row
    return conn


def test_a_second_server_on_the_same_data_dir_stops_before_touching_it(server):
    server.cli("users", "create", "ada")
    job_id = server.submit("ada", "test.sleep", {"seconds": 3})
    server.wait(job_id, ("running",))
    second = subprocess.run([PYTHON, "-m", "appliance.cli", "serve", "--data-dir", str(server.data_dir),
                             "--port", str(free_port())], cwd=ROOT, env=server.env, capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 2
    assert f"in use by the appliance server at {server.url} (pid {server.proc.pid})" in second.stderr
    job = server.wait(job_id)
    assert job["status"] == "completed" and job["tasks"][0]["attempts"] == 1  # never re-queued by the second one


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "graceful-stop"])
def test_after_a_crash_the_attempt_that_rendered_is_billed_not_the_downtime(make_server, sig):
    """kill -9 and a graceful stop (systemctl restart) alike: the running job is re-queued, never failed."""
    server = make_server()
    auth = _kodisc(server)
    quick = {**SLEEPY, "code": SLEEPY["code"].replace("time.sleep(30)", "time.sleep(2)")}
    job_id = httpx.post(f"{server.url}/api/v2/render", json=quick, headers=auth).json()["jobId"]
    while httpx.get(f"{server.url}/api/v2/render/{job_id}", headers=auth).json()["status"] != "running":
        time.sleep(0.1)
    until(lambda: server.query("select 1 from tasks where job_id = ? and pid is not null", (job_id,)),
          "the render forked (its pid recorded)")
    server.stop(sig)
    assert server.proc.returncode in (0, -signal.SIGKILL), server.proc.returncode
    time.sleep(1)  # downtime the user must not pay for
    restarted = time.time()
    again = Server(server.data_dir, server.env).start()
    try:
        job = poll(again, job_id, auth)
        assert job["status"] == "completed", job
        # Billed: the attempt after the restart alone, never the first attempt's seconds nor the downtime
        # (low quality = 1 credit per render-second).
        assert 0 < job["durationMs"] <= (time.time() - restarted) * 1000, job
        assert job["creditsCost"] == -(-job["durationMs"] // 1000)
        assert _credits(again, auth) == 100 - job["creditsCost"]
    finally:
        again.stop(signal.SIGKILL)


def test_a_warm_worker_that_cannot_start_is_named_and_fails_tasks_at_once(make_server):
    """The server serves while its warm worker starts (core.py): one that cannot (here the launcher socket is
    missing) is `failed` in health, and a task fails at once with the launcher's fix, never waits for ever."""
    server = make_server({"APPLIANCE_LAUNCHER_SOCKET": "/nonexistent/launcher.sock", "APPLIANCE_PRELOAD": "PIL"})
    health = until(lambda: (h := httpx.get(f"{server.url}/healthz").json())["worker"] != "starting" and h,
                   "the warm worker's start to end")
    assert health["status"] == "ok" and health["worker"] == "failed", health
    server.cli("users", "create", "ada")
    job = server.wait(server.submit("ada", "test.noop"), timeout=30)
    assert job["status"] == "failed" and "cannot reach the launcher at /nonexistent/launcher.sock" in job["error"] \
        and "systemctl start appliance-launcher" in job["error"], job


def _zygote(server: Server) -> psutil.Process:
    until(lambda: httpx.get(f"{server.url}/healthz").json()["worker"] == "ready", "the warm worker")
    for child in psutil.Process(server.proc.pid).children():
        if "appliance.runtime.executors.zygote" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no zygote")


@pytest.mark.slow
def test_a_task_that_cannot_start_fails_with_a_refund_and_the_worker_is_replaced(make_server):
    server = make_server({"APPLIANCE_TASK_START_TIMEOUT_S": "2", "APPLIANCE_PRELOAD": "PIL"})
    auth = _kodisc(server)
    hung = _zygote(server)
    hung.suspend()  # alive but not answering: the start times out
    try:
        job_id = httpx.post(f"{server.url}/api/v2/render", json=TINY, headers=auth).json()["jobId"]
        job = poll(server, job_id, auth, timeout=60)
        assert job["status"] == "failed" and "could not start the task" in job["error"], job
        assert _credits(server, auth) == 100
        assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"  # the event loop never blocked
    finally:
        if hung.is_running():
            hung.resume()
    job_id = httpx.post(f"{server.url}/api/v2/render", json=TINY, headers=auth).json()["jobId"]
    assert poll(server, job_id, auth)["status"] == "completed"  # a fresh zygote took over
    assert _zygote(server).pid != hung.pid


class _Slow(BaseHTTPRequestHandler):
    """Serves a PNG after a delay (a media download still running when the job is cancelled), and records
    webhook posts."""
    png = b""
    delay = 0.0
    hooks: list[dict] = []
    requested: list[str] = []  # paths asked for, and served in full (what a test waits on)
    served: list[str] = []

    def do_GET(self):
        self.requested.append(self.path)
        time.sleep(self.delay)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.png)))
        self.end_headers()
        self.wfile.write(self.png)
        self.served.append(self.path)

    def do_POST(self):
        self.hooks.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_http(tmp_path):
    from PIL import Image

    path = tmp_path / "red.png"
    Image.new("RGB", (64, 64), "red").save(path)
    _Slow.png, _Slow.delay, _Slow.hooks, _Slow.requested, _Slow.served = path.read_bytes(), 3.0, [], [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def _movie(source: str, text: str = "hello") -> dict:
    return {"kind": "movie", "projectId": "p", "movie": {"width": 640, "height": 360, "fps": 10, "scenes": [
        {"id": "s0", "duration": 0.5, "layers": [
            {"id": "img", "type": "image", "source": source, "startTime": 0, "duration": 0.5,
             "position": {"x": 0, "y": 0}, "size": {"width": 64, "height": 64}},
            {"id": "t", "type": "text", "text": text, "startTime": 0, "duration": 0.5,
             "position": {"x": 80, "y": 20}, "size": {"width": 200, "height": 60}, "fontSize": 24}]}]}}


@pytest.mark.slow
def test_a_job_cancelled_while_its_media_downloads_stays_cancelled_with_one_webhook(make_server, slow_http):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2"})
    server.cli("users", "create", "ada")
    headers = {"x-api-key": server.new_key("ada", "viralsync")["key"]}
    body = {**_movie(f"{slow_http}/red.png"), "callbackUrl": f"{slow_http}/hook"}
    job_id = httpx.post(f"{server.url}/v1/render/jobs", json=body, headers=headers).json()["jobId"]
    until(lambda: _Slow.requested, "the media download to start (planning)")
    cancelled = httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    until(lambda: _Slow.served, "the download to finish meanwhile")
    time.sleep(2)  # and planning to end: it records nothing when it finds the job ended, so nothing to wait on
    assert httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers).json()["status"] == "cancelled"
    finals = [h for h in _Slow.hooks if h["status"] != "running"]
    assert [h["status"] for h in finals] == ["cancelled"]
    assert _db(server).execute("select count(*) from tasks where job_id = ?", (job_id,)).fetchone()[0] == 0


@pytest.mark.slow
def test_scenes_render_the_bytes_their_cache_key_names_and_the_cache_is_per_user(make_server, slow_http):
    _Slow.delay = 0.0
    server = make_server({"APPLIANCE_CPU_SLOTS": "2"})
    keys = {}
    for user in ("ada", "bob"):
        server.cli("users", "create", user)
        keys[user] = {"x-api-key": server.new_key(user, "viralsync")["key"]}
    first = httpx.post(f"{server.url}/v1/render/jobs", json=_movie(f"{slow_http}/red.png"), headers=keys["ada"])
    first_job = server.wait(first.json()["jobId"])
    scene = first_job["tasks"][0]
    task_input = json.loads(_db(server).execute("select input from tasks where id = ?", (scene["id"],)).fetchone()[0])
    assert list(task_input["artifacts"].values()) == [hashlib.sha256(_Slow.png).hexdigest()]
    same = httpx.post(f"{server.url}/v1/render/jobs", json=_movie(f"{slow_http}/red.png"), headers=keys["ada"])
    assert server.wait(same.json()["jobId"])["tasks"][0]["cached"] is True
    other = httpx.post(f"{server.url}/v1/render/jobs", json=_movie(f"{slow_http}/red.png"), headers=keys["bob"])
    assert server.wait(other.json()["jobId"])["tasks"][0]["cached"] is False  # no timing side channel


def test_a_large_task_is_not_starved_by_a_stream_of_small_ones(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "ada")
    early = [server.submit("ada", "test.sleep", {"seconds": 1.5}) for _ in range(2)]
    for job_id in early:
        server.wait(job_id, ("running",))
    big = server.submit("ada", tasks=[{"renderer": "test.sleep", "input": {"seconds": 0.2}, "cpu": 2}])
    late = [server.submit("ada", "test.sleep", {"seconds": 1.0}) for _ in range(4)]
    started = {job_id: server.wait(job_id)["tasks"][0]["startedAt"] for job_id in [big, *late]}
    assert all(started[big] < started[job_id] for job_id in late), started


def test_the_retention_sweep_expires_outputs_and_prunes_history(make_server):
    server = make_server()
    auth = _kodisc(server)
    job_id = server.wait(server.submit("ada", "test.noop"))["id"]
    assert (server.data_dir / "outputs" / job_id / "out.txt").is_file()
    render = httpx.post(f"{server.url}/api/v2/render", json=TINY, headers=auth).json()["jobId"]
    assert poll(server, render, auth)["result"]["video"]
    assert _db(server).execute("select count(*) from events where job_id = ?", (job_id,)).fetchone()[0] > 0
    server.stop()
    past = time.time() - 2 * 86400
    os.utime(server.data_dir / "outputs" / job_id, (past, past))
    os.utime(server.data_dir / "outputs" / render, (past, past))
    for log in (server.data_dir / "logs").iterdir():
        os.utime(log, (past, past))
    with _db(server) as conn:
        conn.execute("update jobs set completed_at = '2000-01-01T00:00:00.000Z' where id = ?", (job_id,))
    # and the render cache keeps nothing unused for 0 days: the Kodisc render's entry is evicted
    again = Server(server.data_dir, {**server.env, "APPLIANCE_RETENTION_DAYS": "1",
                                     "APPLIANCE_CACHE_MAX_DAYS": "0"}).start()
    try:
        def expired_at():  # the sweep removes the files first, then marks the job (one step after the other)
            return _db(again).execute("select expired_at from jobs where id = ?", (job_id,)).fetchone()["expired_at"]
        deadline = time.time() + 10
        while expired_at() is None and time.time() < deadline:
            time.sleep(0.2)
        assert expired_at() is not None
        assert not (server.data_dir / "outputs" / job_id).exists()
        assert _db(again).execute("select count(*) from events where job_id = ?", (job_id,)).fetchone()[0] == 0
        assert not list((server.data_dir / "logs").iterdir())
        expired = httpx.get(f"{again.url}/api/v2/render/{render}", headers=auth).json()
        assert expired["status"] == "completed" and expired["result"] is None  # no dead URLs
        assert "the outputs were removed" in expired["error"] and "retention_days" in expired["error"]
        assert _db(again).execute("select count(*) from cache").fetchone()[0] == 0
        samples = scrape(again)
        assert value(samples, "appliance_cache_evictions_total") >= 1 and "appliance_cache_bytes" in samples
        rerun = httpx.post(f"{again.url}/api/v2/render", json=TINY, headers=auth).json()["jobId"]
        assert poll(again, rerun, auth)["status"] == "completed"
        assert [t["cached"] for t in again.job(rerun)["tasks"]] == [False]  # rendered again, not from the cache
    finally:
        again.stop()


@pytest.mark.slow
def test_a_flood_on_the_result_channel_neither_starves_the_server_nor_fills_the_disk(make_server):
    server = make_server({"APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "ada")
    job_id = server.submit("ada", "test.flood", {"lines": 200_000})
    server.wait(job_id, ("running", "completed"))
    while server.job(job_id)["status"] == "running":
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200  # the event loop keeps serving
        time.sleep(0.2)
    job = server.wait(job_id)
    assert job["status"] == "completed", job
    progress_events = _db(server).execute("select count(*) from events where job_id = ? and type = 'progress'",
                                          (job_id,)).fetchone()[0]
    assert progress_events < 200  # coalesced: 200,000 lines became a few events
    log = server.data_dir / "logs" / f"{job['tasks'][0]['id']}.log"
    assert log.stat().st_size < 3 << 20  # capped, not 20 MB of flood


@pytest.mark.slow
def test_an_unresolvable_webhook_host_is_accepted_at_once_and_fails_in_bounded_attempts(make_server):
    server = make_server({"APPLIANCE_WEBHOOK_RETRY_SCALE": "0.001"})
    auth = _kodisc(server)
    body = {**TINY, "code": "raise SystemExit('quick')", "webhookUrl": "http://no-such-host.invalid/hook"}
    started = time.monotonic()
    r = httpx.post(f"{server.url}/api/v2/render", json=body, headers=auth)
    assert r.status_code == 202 and time.monotonic() - started < 5  # no DNS lookup on the request path
    job_id = r.json()["jobId"]
    poll(server, job_id, auth)
    deadline = time.time() + 60
    while time.time() < deadline:
        row = _db(server).execute("select status, attempt, last_error from webhook_deliveries where job_id = ?",
                                  (job_id,)).fetchone()
        if row and row["status"] != "pending":
            break
        time.sleep(0.3)
    assert row["status"] == "failed" and row["attempt"] == 4, dict(row)  # the first try + 3 retries, then stop
    assert "cannot resolve host" in row["last_error"]


def test_untrusted_code_is_refused_at_submit_without_a_sandbox_unless_the_operator_allows_it(make_server):
    server = make_server({"APPLIANCE_SANDBOX": "false", "APPLIANCE_PRELOAD": "PIL"})
    auth = _kodisc(server)
    refused = httpx.post(f"{server.url}/api/v2/render", json=TINY, headers=auth)
    assert refused.status_code == 503 and refused.json()["error"] == "unavailable"
    assert "APPLIANCE_ALLOW_UNSANDBOXED=true" in refused.json()["message"]
    assert _credits(server, auth) == 100  # nothing reserved, no job
    assert _db(server).execute("select count(*) from jobs").fetchone()[0] == 0
    server.stop()
    allowed = Server(server.data_dir, {**server.env, "APPLIANCE_ALLOW_UNSANDBOXED": "true"}).start()
    try:
        assert httpx.post(f"{allowed.url}/api/v2/render", json=TINY, headers=auth).status_code == 202
    finally:
        allowed.stop()


def test_a_viralsync_job_keeps_only_the_documented_fields_of_its_submission(make_server):
    server = make_server({"APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "ada")
    headers = {"x-api-key": server.new_key("ada", "viralsync")["key"]}
    body = {**_movie("red.png"), "junk": "x" * 100_000, "nested": {"deep": [1, 2, 3]}}
    body["movie"]["scenes"][0]["layers"].pop(0)  # no media: text only
    body["movie"]["extra"] = "y" * 1000  # unknown movie fields are dropped by normalization
    job_id = httpx.post(f"{server.url}/v1/render/jobs", json=body, headers=headers).json()["jobId"]
    payload = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers).json()["payload"]
    assert set(payload) <= {"kind", "projectId", "renderOptions", "callbackUrl", "movie"}
    assert "extra" not in payload["movie"]
    stored = _db(server).execute("select length(request) + length(payload) from jobs where id = ?",
                                 (job_id,)).fetchone()[0]
    assert stored < 5000
