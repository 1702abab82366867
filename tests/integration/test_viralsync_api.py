"""The ViralSync contract against a real server: the seed examples, errors, SSE, cancel, cache, plans."""
from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from renderers.ffmpeg import probe, video_stream

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINIMAL = {"kind": "movie", "projectId": "proj_abc123", "movie": {"width": 1920, "height": 1080, "fps": 30, "scenes": [
    {"id": "scene_1", "duration": 5, "bgColor": "#1a1a2e", "layers": [
        {"id": "headline", "type": "text", "text": "Hello from the API", "startTime": 0, "duration": 5, "zIndex": 1,
         "position": {"x": 360, "y": 460}, "size": {"width": 1200, "height": 160}, "fontSize": 80,
         "fontWeight": "bold", "color": "#ffffff", "textAlign": "center"}]}]}}


def small_movie(n_scenes: int = 2, seconds: float = 1.0, text: str = "scene") -> dict:
    scenes = [{"id": f"s{i}", "duration": seconds, "bgColor": "#203040", "layers": [
        {"id": "t", "type": "text", "text": f"{text} {i}", "startTime": 0, "duration": seconds,
         "position": {"x": 20, "y": 20}, "size": {"width": 300, "height": 80}, "fontSize": 32}]}
        for i in range(n_scenes)]
    return {"kind": "movie", "projectId": "p", "movie": {"width": 640, "height": 360, "fps": 15, "scenes": scenes}}


@pytest.fixture(scope="module")
def vs_box(make_module_server):
    return make_module_server({"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_PRELOAD": "PIL,numpy"})


@pytest.fixture
def vs(vs_box):
    """The module's server, with a user of this test's own: its own plan, job list, usage and rate limit."""
    vs_box.key = vs_box.new_key(vs_box.fresh_user(), "viralsync")
    vs_box.h = {"x-api-key": vs_box.key["key"]}
    return vs_box


def submit(server, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/render/jobs", json=body, headers=headers or server.h, timeout=30)


def wait(server, job_id: str, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=server.h).json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.25)
    raise AssertionError(job)


@pytest.fixture
def media_server(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "4",
                    "-pix_fmt", "yuv420p", str(media / "city.mp4")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "6",
                    str(media / "upbeat.mp3")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=white:s=200x60", "-frames:v", "1",
                    str(media / "logo-white.png")], check=True)
    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                                directory=str(media))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.slow
def test_seed_minimal_example_renders(vs):
    r = submit(vs, MINIMAL)
    assert r.status_code == 202 and set(r.json()) == {"jobId", "status"} and r.json()["status"] == "queued"
    job = wait(vs, r.json()["jobId"])
    assert job["status"] == "done", job
    assert job["outputUrl"] == f"{vs.url}/outputs/{job['jobId']}/output.mp4"
    assert job["mediaData"]["width"] == 1920 and abs(job["mediaData"]["duration"] - 5) < 0.05
    jid = job["jobId"]
    assert job["children"] == {"total": 2, "succeeded": 2, "running": 0, "queued": 0, "failed": 0,
                               "jobIds": [f"scene_{jid}_001", f"assemble_{jid}"]}
    video = httpx.get(job["outputUrl"])
    assert video.status_code == 200 and len(video.content) == job["mediaData"]["fileSize"]


@pytest.mark.slow
def test_seed_full_example_with_local_media(vs, media_server, tmp_path):
    body = json.loads((EXAMPLES.parent / "docs" / "viralsync-full-example.json").read_text())
    for scene in body["movie"]["scenes"]:
        for layer in scene["layers"]:
            if "source" in layer:
                layer["source"] = f"{media_server}/{layer['source'].rsplit('/', 1)[1]}"
    body.pop("callbackUrl")
    job = wait(vs, submit(vs, body).json()["jobId"], timeout=400)
    assert job["status"] == "done", job["error"]
    out = tmp_path / "out.mp4"
    out.write_bytes(httpx.get(job["outputUrl"]).content)
    info = probe(out)
    stream = video_stream(info)
    assert (stream["width"], stream["height"], stream["r_frame_rate"]) == (1920, 1080, "30/1")
    assert abs(float(info["format"]["duration"]) - 10.0) <= 1 / 30 + 0.05
    assert any(s["codec_type"] == "audio" for s in info["streams"])


def test_errors_have_the_documented_codes(vs):
    r = httpx.post(f"{vs.url}/v1/render/jobs", json=MINIMAL)
    assert (r.status_code, r.json()["code"]) == (401, "UNAUTHORIZED")
    bad = copy.deepcopy(MINIMAL)
    bad["movie"]["scenes"][0]["layers"][0]["duration"] = 0
    r = submit(vs, bad)
    assert (r.status_code, r.json()["code"]) == (400, "INVALID_MOVIE_JSON")
    assert "movie.scenes[0].layers[0].duration" in r.json()["error"]
    vs.cli("users", "plan", vs.user, "pro")
    big = copy.deepcopy(MINIMAL)
    big["movie"].update(width=3840, height=2160)
    assert submit(vs, big).json()["code"] == "PLAN_RESOLUTION_EXCEEDED"
    portrait = copy.deepcopy(MINIMAL)
    portrait["movie"].update(width=1080, height=1920)
    long = copy.deepcopy(MINIMAL)
    long["movie"]["scenes"][0]["duration"] = 700
    assert submit(vs, long).json()["code"] == "PLAN_DURATION_EXCEEDED"
    vs.cli("users", "plan", vs.user, "free")
    r = submit(vs, MINIMAL)
    assert (r.status_code, r.json()["code"]) == (403, "FORBIDDEN")
    vs.cli("users", "plan", vs.user, "studio")
    r = httpx.get(f"{vs.url}/v1/jobs/job_000000000000", headers=vs.h)
    assert (r.status_code, r.json()["code"]) == (404, "JOB_NOT_FOUND")
    vs.cli("keys", "revoke", vs.key["keyId"])
    r = httpx.get(f"{vs.url}/v1/me", headers=vs.h)
    assert (r.status_code, r.json()["code"]) == (401, "API_KEY_REVOKED")


def test_me_usage_and_list(vs):
    me = httpx.get(f"{vs.url}/v1/me", headers={"Authorization": f"Bearer {vs.key['key']}"}).json()
    assert me["plan"] == "studio" and me["userId"].startswith("usr_")
    usage = httpx.get(f"{vs.url}/v1/usage", headers=vs.h).json()
    assert set(usage) == {"plan", "renderMinutesUsed", "renderMinutesLimit", "periodStart", "periodEnd"}
    ids = [submit(vs, small_movie(1, 0.5, f"list{i}")).json()["jobId"] for i in range(3)]
    page = httpx.get(f"{vs.url}/v1/jobs?limit=2", headers=vs.h).json()
    assert [j["jobId"] for j in page["jobs"]] == ids[::-1][:2] and page["nextCursor"]
    rest = httpx.get(f"{vs.url}/v1/jobs", params={"limit": 2, "cursor": page["nextCursor"]}, headers=vs.h).json()
    assert [j["jobId"] for j in rest["jobs"]] == [ids[0]] and rest["nextCursor"] is None


def test_rate_limit_with_retry_after(make_server):
    server = make_server({"APPLIANCE_RATE_LIMIT_REQUESTS": "5", "APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "ada")
    h = {"x-api-key": server.new_key("ada", "viralsync")["key"]}
    codes = [httpx.get(f"{server.url}/v1/me", headers=h).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    r = httpx.get(f"{server.url}/v1/me", headers=h)
    assert r.json()["code"] == "RATE_LIMITED" and int(r.headers["retry-after"]) >= 1


@pytest.mark.slow
def test_sse_stream_ends_with_done_and_resumes(vs):
    job_id = submit(vs, small_movie(2, 1.0, "sse")).json()["jobId"]
    frames = []
    with httpx.stream("GET", f"{vs.url}/v1/jobs/{job_id}/progress", headers=vs.h, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:") or line.startswith("id:"):
                frames.append(line)
    names = [f.split(": ")[1] for f in frames if f.startswith("event:")]
    assert names[-1] == "done" and "progress" in names
    ids = [int(f.split(": ")[1]) for f in frames if f.startswith("id:")]
    assert ids == sorted(set(ids))
    with httpx.stream("GET", f"{vs.url}/v1/jobs/{job_id}/progress", timeout=30,
                      headers={**vs.h, "Last-Event-ID": str(ids[-2])}) as r:
        replay = [line for line in r.iter_lines() if line.startswith("event:")]
    assert replay == ["event: done"]


@pytest.mark.slow
def test_cancel_mid_render_then_delete(vs):
    job_id = submit(vs, small_movie(3, 6.0, "cancel")).json()["jobId"]
    deadline = time.time() + 60
    while httpx.get(f"{vs.url}/v1/jobs/{job_id}", headers=vs.h).json()["children"]["running"] == 0:
        assert time.time() < deadline
        time.sleep(0.1)
    r = httpx.post(f"{vs.url}/v1/jobs/{job_id}/cancel", headers=vs.h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = httpx.post(f"{vs.url}/v1/jobs/{job_id}/cancel", headers=vs.h)
    assert (again.status_code, again.json()["code"]) == (409, "INVALID_STATE_TRANSITION")
    assert httpx.delete(f"{vs.url}/v1/jobs/{job_id}", headers=vs.h).status_code == 204
    assert httpx.get(f"{vs.url}/v1/jobs/{job_id}", headers=vs.h).status_code == 404


@pytest.mark.slow
def test_scene_cache_rerenders_only_the_changed_scene(vs):
    movie = small_movie(3, 0.5, "cache")
    first = wait(vs, submit(vs, movie).json()["jobId"])
    assert first["status"] == "done"
    movie["movie"]["scenes"][1]["layers"][0]["text"] = "changed"
    second_id = submit(vs, movie).json()["jobId"]
    assert wait(vs, second_id)["status"] == "done"
    admin = vs.job(second_id)
    cached = [t["cached"] for t in admin["tasks"] if t["renderer"] == "movie.scene"]
    assert cached == [True, False, True]


@pytest.mark.slow
def test_a_failing_scene_fails_the_job_naming_it(vs, media_server):
    movie = small_movie(2, 0.5, "fail")
    movie["movie"]["scenes"][1]["layers"].append({"id": "broken", "type": "image",
                                                   "source": f"{media_server}/upbeat.mp3",
                                                   "position": {"x": 0, "y": 0}, "size": {"width": 10, "height": 10}})
    job = wait(vs, submit(vs, movie).json()["jobId"])
    assert job["status"] == "failed" and job["error"].startswith("SCENE_RENDER_FAILED") and "s1" in job["error"]


@pytest.mark.slow
def test_callback_url_gets_signed_progress_and_done_events(vs):
    import hashlib
    import hmac

    from tests.integration.test_kodisc_api import Receiver

    receiver = Receiver(fail_first=1)  # the first delivery fails and is retried
    body = small_movie(2, 2.0, "hook")
    body["callbackUrl"] = receiver.url
    job = wait(vs, submit(vs, body).json()["jobId"])
    assert job["status"] == "done"
    deadline = time.time() + 30
    while not any(json.loads(c[1])["status"] == "done" and c[2] == 200 for c in receiver.calls):
        assert time.time() < deadline, receiver.calls
        time.sleep(0.2)
    for headers, raw, _ in receiver.calls:
        expected = hmac.new(vs.key["webhookSecret"].encode(), raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-render-signature"], expected)
    events = [json.loads(c[1]) for c in receiver.calls if c[2] == 200]
    done = next(e for e in events if e["status"] == "done")
    assert done["outputUrl"] == job["outputUrl"] and done["mediaData"]["fileSize"] > 0 and done["progress"] == 1.0
    assert set(done) >= {"jobId", "status", "progress", "outputUrl", "mediaData", "timestamp"}
    receiver.close()


@pytest.mark.slow
def test_cli_render_of_a_movie_file(vs, tmp_path):
    doc = tmp_path / "promo.json"
    doc.write_text(json.dumps(small_movie(2, 0.5, "cli")["movie"]))
    out = vs.cli("render", str(doc), "--user", vs.user).strip().splitlines()
    video = next(Path(p) for p in out if p.endswith(".mp4"))
    stream = video_stream(probe(video))
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 640, 360)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scenes": []}))
    proc = subprocess.run([sys.executable, "-m", "appliance.cli", "render", str(bad), "--user", vs.user,
                           "--data-dir", str(vs.data_dir)], capture_output=True, text=True, env=vs.env)
    assert proc.returncode == 2 and "scenes" in proc.stderr


def test_concurrency_limit_of_the_plan(vs):
    vs.cli("users", "plan", vs.user, "pro")  # 3 concurrent jobs
    ids = [submit(vs, small_movie(1, 8.0, f"busy{i}")).json()["jobId"] for i in range(3)]
    r = submit(vs, small_movie(1, 1.0, "one too many"))
    assert (r.status_code, r.json()["code"]) == (409, "CONCURRENCY_LIMIT_EXCEEDED")
    assert r.json()["error"] == "Concurrent job limit reached. Wait for a running job to complete."
    for job_id in ids:
        httpx.post(f"{vs.url}/v1/jobs/{job_id}/cancel", headers=vs.h)
    assert submit(vs, small_movie(1, 0.5, "room again")).status_code == 202
