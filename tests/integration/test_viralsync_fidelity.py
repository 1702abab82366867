"""ViralSync fidelity against a real server: honest progress (SSE ids, replayed state, phases, keepalive), child
jobs, monthly minutes reserved at submit, listing filtered and paged in SQL."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.test_viralsync_api import small_movie, submit, wait


@pytest.fixture(scope="module")
def vs_box(make_module_server):
    return make_module_server({"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_PRELOAD": "PIL,numpy",
                               "APPLIANCE_SSE_KEEPALIVE_S": "0.05"})


@pytest.fixture
def vs(vs_box):
    """The module's server with a user of this test's own (its own plan, minutes and job list)."""
    server = vs_box
    server.key = server.new_key(server.fresh_user(), "viralsync")
    server.h = {"x-api-key": server.key["key"]}
    return server


def read_stream(server, job_id: str, last_id: int | None = None) -> tuple[list[dict], int]:
    """The frames ({id, event, data}) of the job's progress stream, and how many keepalives came between."""
    headers = {**server.h, **({"Last-Event-ID": str(last_id)} if last_id is not None else {})}
    frames, frame, keepalives = [], {}, 0
    with httpx.stream("GET", f"{server.url}/v1/jobs/{job_id}/progress", headers=headers, timeout=120) as r:
        for line in r.iter_lines():
            if line == ": keepalive":
                keepalives += 1
            elif line.startswith(("id: ", "event: ", "data: ")):
                name, _, value = line.partition(": ")
                frame[name] = int(value) if name == "id" else json.loads(value) if name == "data" else value
            elif not line and frame:
                frames.append(frame)
                frame = {}
    return frames, keepalives


def _state(frame: dict) -> dict:
    return {k: v for k, v in frame["data"].items() if k != "timestamp"}


@pytest.mark.slow
def test_sse_ids_increase_replay_sends_recorded_state_and_ends_done(vs):
    job_id = submit(vs, small_movie(3, 2.0, "honest")).json()["jobId"]
    frames, keepalives = read_stream(vs, job_id)
    ids = [f["id"] for f in frames]
    assert ids == sorted(set(ids)), ids  # strictly increasing: no id twice
    assert all(_state(a) != _state(b) for a, b in zip(frames, frames[1:], strict=False)), "two frames say the same"
    assert keepalives > 0  # sse_keepalive_s = 0.05
    assert (frames[0]["data"]["status"], frames[0]["data"]["phase"]) == ("running", "planning")  # as GET said
    final = frames[-1]
    assert final["event"] == "done" and final["data"]["phase"] == "done" and final["data"]["status"] == "done"
    rendering = [f["data"] for f in frames if f["data"]["phase"] == "rendering"]
    assert rendering and all(d["status"] == "waiting" for d in rendering)  # README: rendering is status waiting
    # a replay from the first id sends what each event recorded, not the finished job's state again and again
    replay, _ = read_stream(vs, job_id, last_id=ids[0])
    assert [f["id"] for f in replay] == ids[1:]
    assert [_state(f) for f in replay] == [_state(f) for f in frames[1:]]
    progress = [f["data"]["progress"] for f in replay]
    assert progress == sorted(progress) and progress[0] < 1.0 and progress[-1] == 1.0
    job = httpx.get(f"{vs.url}/v1/jobs/{job_id}", headers=vs.h).json()
    assert (job["status"], job["phase"]) == ("done", "done")


@pytest.mark.slow
def test_children_are_jobs_by_id_in_the_parent_and_in_the_list(vs):
    job = wait(vs, submit(vs, small_movie(2, 0.5, "kids")).json()["jobId"])
    jid = job["jobId"]
    assert job["status"] == "done"
    assert job["children"]["jobIds"] == [f"scene_{jid}_001", f"scene_{jid}_002", f"assemble_{jid}"]
    scene = httpx.get(f"{vs.url}/v1/jobs/scene_{jid}_002", headers=vs.h).json()
    assert (scene["type"], scene["status"], scene["parentJobId"], scene["payload"]) == (
        "render.scene", "done", jid, {"sceneId": "s1"})
    assemble = httpx.get(f"{vs.url}/v1/jobs/assemble_{jid}", headers=vs.h).json()
    assert (assemble["type"], assemble["status"], assemble["parentJobId"]) == ("render.assemble", "done", jid)
    for missing in (f"scene_{jid}_003", f"scene_{jid}_000", "assemble_job_000000000000"):
        r = httpx.get(f"{vs.url}/v1/jobs/{missing}", headers=vs.h)
        assert (r.status_code, r.json()["code"]) == (404, "JOB_NOT_FOUND")

    def listed(**params) -> list[str]:
        r = httpx.get(f"{vs.url}/v1/jobs", params=params, headers=vs.h)
        assert r.status_code == 200, r.text
        return [j["jobId"] for j in r.json()["jobs"]]

    assert sorted(listed(type="render.scene")) == [f"scene_{jid}_001", f"scene_{jid}_002"]
    assert listed(type="render.assemble", status="done") == [f"assemble_{jid}"]
    assert listed(type="render.scene", status="failed") == []
    assert listed(type="render") == [jid] and listed(type="agent.chat") == []
    page = httpx.get(f"{vs.url}/v1/jobs", params={"type": "render.scene", "limit": 1}, headers=vs.h).json()
    rest = httpx.get(f"{vs.url}/v1/jobs", params={"type": "render.scene", "cursor": page["nextCursor"]},
                     headers=vs.h).json()
    assert len(page["jobs"]) == len(rest["jobs"]) == 1 and rest["nextCursor"] is None
    assert page["jobs"][0]["jobId"] != rest["jobs"][0]["jobId"]


def _use_minutes(server, minutes: float) -> None:
    """A completed movie of that length this month, written into the server's SQLite (WAL: beside the server)."""
    user_id = httpx.get(f"{server.url}/v1/me", headers=server.h).json()["userId"]
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    db = sqlite3.connect(server.data_dir / "appliance.db", timeout=10)
    with db:
        db.execute("insert into jobs (id, dialect, user_id, kind, status, phase, request, result, created_at, "
                   "updated_at, completed_at) values ('job_0000000000aa', 'viralsync', ?, 'movie', 'completed', "
                   "'done', '{}', ?, ?, ?, ?)",
                   (user_id, json.dumps({"meta": {"duration": minutes * 60}}), now, now, now))
    db.close()


def _movie_of(minutes: float, text: str) -> dict:
    body = small_movie(1, minutes * 60, text)
    body["movie"].update(width=360, height=360, fps=1)
    return body


def test_concurrent_submits_cannot_together_exceed_the_monthly_minutes(vs):
    vs.cli("users", "plan", vs.user, "pro")  # 200 minutes a month, 3 concurrent jobs
    _use_minutes(vs, 190)
    with ThreadPoolExecutor(3) as pool:  # 3 x 4 min: only two fit in the 10 minutes left
        answers = list(pool.map(lambda i: submit(vs, _movie_of(4, f"quota{i}")), range(3)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [202, 202, 402], [r.text for r in answers]
    refused = next(r for r in answers if r.status_code == 402)
    assert refused.json()["code"] == "RENDER_QUOTA_EXCEEDED"
    accepted = [r.json()["jobId"] for r in answers if r.status_code == 202]
    for job_id in accepted:  # a cancelled job releases its reservation and is not metered (a quick one may be done)
        assert httpx.post(f"{vs.url}/v1/jobs/{job_id}/cancel", headers=vs.h).status_code in (200, 409)
    used = httpx.get(f"{vs.url}/v1/usage", headers=vs.h).json()["renderMinutesUsed"]
    done = sum(wait(vs, job_id)["status"] == "done" for job_id in accepted)
    assert used == 190 + 4 * done
    again = submit(vs, _movie_of(200 - used - 1, "after the cancels"))  # what is left fits again
    assert again.status_code == 202, again.text
    assert submit(vs, _movie_of(2, "one too many")).json()["code"] == "RENDER_QUOTA_EXCEEDED"
    httpx.post(f"{vs.url}/v1/jobs/{again.json()['jobId']}/cancel", headers=vs.h)


def test_status_filter_pages_in_sql(vs):
    ids = [submit(vs, _movie_of(1, f"list{i}")).json()["jobId"] for i in range(5)]
    for job_id in ids[1::2]:
        httpx.post(f"{vs.url}/v1/jobs/{job_id}/cancel", headers=vs.h)
    first = httpx.get(f"{vs.url}/v1/jobs", params={"status": "cancelled", "limit": 1}, headers=vs.h).json()
    rest = httpx.get(f"{vs.url}/v1/jobs", params={"status": "cancelled", "cursor": first["nextCursor"]},
                     headers=vs.h).json()
    assert [j["jobId"] for j in first["jobs"] + rest["jobs"]] == [ids[3], ids[1]] and rest["nextCursor"] is None
    for job_id in ids[0::2]:
        assert wait(vs, job_id)["status"] == "done"

    def listed(status: str) -> list[str]:
        page = httpx.get(f"{vs.url}/v1/jobs", params={"status": status, "limit": 100}, headers=vs.h).json()
        assert all(j["status"] == status for j in page["jobs"])
        return [j["jobId"] for j in page["jobs"]]

    assert listed("done") == ids[0::2][::-1]
    assert listed("queued") == listed("running") == listed("waiting") == []


def test_an_open_progress_stream_does_not_hold_up_a_graceful_stop(make_server):
    """uvicorn waits for open responses before it shuts down; a stream that follows a queued job never ends on its
    own, so `serve` gives them a few seconds (timeout_graceful_shutdown) and then closes them."""
    server = make_server({"APPLIANCE_CPU_SLOTS": "1", "APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "ada")
    headers = {"x-api-key": server.new_key("ada", "viralsync")["key"]}
    server.submit("ada", "test.sleep", {"seconds": 300})  # holds the only slot: the movie below stays queued
    job_id = submit(server, small_movie(1), headers).json()["jobId"]
    opened = []

    def follow() -> None:
        with httpx.stream("GET", f"{server.url}/v1/jobs/{job_id}/progress", headers=headers, timeout=120) as r:
            for _ in r.iter_lines():
                opened.append(1)

    with ThreadPoolExecutor(1) as pool:
        reader = pool.submit(follow)
        deadline = time.time() + 30
        while not opened and time.time() < deadline:
            time.sleep(0.05)
        assert opened, "the stream did not open"
        server.proc.send_signal(15)
        try:
            server.proc.wait(timeout=45)  # it used to wait for the job, which could not run: forever
        except subprocess.TimeoutExpired:
            server.proc.kill()  # ends the stream too, so the reader thread can finish
            pytest.fail("SIGTERM did not stop a server with an open progress stream")
        try:
            reader.result(timeout=10)
        except httpx.HTTPError:
            pass  # the server closed the stream under it: what a client reconnects from with Last-Event-ID
