"""Know before and during (issue #22 part 3): a quote from this box's finished jobs, and an ETA while a job runs."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import sqlite_utils

from appliance.services.estimate import Estimator, Quote, family_of, features_of, fit, work_of
from appliance.store.db import now_iso
from tests.conftest import ROOT
from tests.integration.test_dashboard import PASSWORD, signed_in

SCENE = ("from manim import *\n\nclass S(Scene):\n    def construct(self):\n        d = Dot()\n"
         "        for i in range({n}):\n            self.play(d.animate.shift(0.2 * RIGHT), run_time=0.4)\n# {tag}\n")


def manim_body(n: int, tag: str, width: int = 192, height: int = 108) -> dict:
    return {"user": "ada", "renderer": "manim", "input": {"code": SCENE.format(n=n, tag=tag), "className": "S",
                                                           "width": width, "height": height, "fps": 10}}


def test_the_fit_and_the_work_each_family_reads():
    # least squares, then again without the point a busy box slowed: it does not move the line
    line = fit([([x], 1.0 + x) for x in (1, 2, 3, 4, 5, 6)] + [([7.0], 60.0)])
    assert abs(line.coef[0] - 1.0) < 1e-6 and abs(line.intercept - 1.0) < 1e-6 and line.basis == 7
    assert abs(line.predict([10.0]) - 11.0) < 1e-6
    # two features need six points; with four the leading one is dropped, and with fewer the seconds are
    # proportional to the work (the median of seconds per unit of work: 5, 7, 3)
    two = fit([([s, w], 0.5 * s + 2 * w + 1) for s, w in ((1, 1), (2, 1), (1, 3), (3, 2), (2, 5), (4, 4))])
    assert [round(c, 6) for c in two.coef] == [0.5, 2.0] and two.spread < 1e-6
    assert len(fit([([1, w], 2.0 * w) for w in (1, 2, 3, 4)]).coef) == 1
    few = fit([([1.0], 5.0), ([1.0], 7.0), ([2.0], 6.0)])
    assert few.coef == (5.0,) and few.intercept == 0.0
    # more of anything never takes less time: a negative weight drops its feature
    assert all(c >= 0 for c in fit([([s, w], 3 * w - 0.4 * s) for s, w in
                                     ((1, 1), (5, 1), (2, 3), (6, 2), (1, 5), (4, 4))]).coef)
    scene = {"code": SCENE.format(n=6, tag=""), "className": "S", "width": 1280, "height": 720, "fps": 30}
    assert work_of("manim", scene) == 6 * 30 * 1280 * 720 / 1e6  # six animations counted from the loop
    assert family_of("tasks", {"tasks": [{"renderer": "manim", "input": scene}]}) == ("manim", scene)
    assert family_of("tasks", {"tasks": [{"renderer": "test.noop", "input": {}}]}) is None
    movie = {"movie": {"width": 640, "height": 360, "fps": 25, "scenes": [{"duration": 2}, {"duration": 3}]}}
    assert work_of("movie", movie) == 5 * 25 * 640 * 360 / 1e6
    assert features_of("movie", movie, parallel=2) == [1.0, 5 * 25 * 640 * 360 / 1e6 / 2]  # two at once
    assert features_of("manim", scene) == [6.0, 6 * 30 * 1280 * 720 / 1e6]
    assert work_of("image", {"settings": {"quality": "4k"}}) == 4096 ** 2 / 1e6
    assert work_of("video", {"settings": {"resolution": "720p", "duration": 4}}) == 4 * 24 * 1280 * 720 / 1e6
    assert work_of("movie", {"movie": {"scenes": "x"}}) is None


def test_the_eta_blends_the_quote_with_the_progress():
    now = 1_000_000.0
    db = sqlite_utils.Database(memory=True)  # eta() reads the job's tasks, never the history
    db["tasks"].create({"id": str, "idx": int, "job_id": str, "renderer": str, "status": str, "progress": float,
                        "depends_on": str, "input": str}, defaults={"status": "running", "depends_on": "[]",
                                                                     "input": "{}", "idx": 0})
    estimator = Estimator(db=db, clock=lambda: now)
    started = now_iso(now - 10)
    running = {"id": "j1", "kind": "movie", "status": "running", "started_at": started, "progress": 0.0}
    # no progress yet: the quote alone (at least what already passed)
    assert estimator.eta(running, Quote(30.0, 5))["seconds_left"] == 20.0
    # halfway after 10 s while the quote said 30 s: between the quote (30) and the extrapolation (20)
    half = estimator.eta({**running, "progress": 0.5}, Quote(30.0, 5))
    assert 20.0 < half["total_s"] < 30.0 and half["seconds_left"] == round(half["total_s"] - 10, 1)
    # almost done: the extrapolation wins
    assert abs(estimator.eta({**running, "progress": 0.99}, Quote(300.0, 5))["total_s"] - 10.1) < 3
    # no history: the extrapolation alone, once there is progress to extrapolate
    assert estimator.eta({**running, "progress": 0.01}, None) is None
    assert estimator.eta({**running, "progress": 0.25}, None)["total_s"] == 40.0
    assert estimator.eta({**running, "status": "completed"}, Quote(30.0, 5)) is None
    # a movie's assembly weighs less than a scene: one scene of one done is most of the work, not half
    db["tasks"].insert_all([{"job_id": "j1", "renderer": "movie.scene", "progress": 1.0},
                            {"job_id": "j1", "renderer": "movie.assemble", "progress": 0.0}])
    assert estimator.eta({**running, "progress": 0.5}, None)["total_s"] == 13.0  # 10 s / (1 / 1.3)
    # scenes weigh their expected work: the seed's 4 s text scene done and its 6 s video scene not begun is a
    # fifteenth of the job (weights 1440 and 120 over their mean, the assembly 0.3), not a half
    db["tasks"].insert_all([{"job_id": "v1", "renderer": "movie.scene", "progress": 0.0, "input": '{"_work": 1440}'},
                            {"job_id": "v1", "renderer": "movie.scene", "progress": 1.0, "input": '{"_work": 120}'},
                            {"job_id": "v1", "renderer": "movie.assemble", "progress": 0.0, "input": "{}"}])
    assert estimator.eta({**running, "id": "v1", "progress": 0.07}, None)["total_s"] == 149.5  # 10 s / (120/1794)
    # a whole Manim render reports a curve of the video seconds drawn (0.475: 5 s): of a 10-animation scene
    # (10 s of video) that is half of its drawing
    scene = {"code": SCENE.format(n=10, tag="eta"), "className": "S", "width": 192, "height": 108, "fps": 10}
    db["tasks"].insert({"job_id": "m1", "renderer": "manim", "progress": 0.475})
    manim = {**running, "id": "m1", "kind": "tasks", "progress": 0.475,
             "payload": json.dumps({"tasks": [{"renderer": "manim", "input": scene}]})}
    assert estimator.eta(manim, None)["total_s"] == 21.1  # 10 s / 0.475
    scene["code"] = SCENE.format(n=20, tag="eta")  # twice as long a scene: a quarter
    manim["payload"] = json.dumps({"tasks": [{"renderer": "manim", "input": scene}]})
    assert estimator.eta(manim, None)["total_s"] == 42.1


def test_a_quote_from_finished_jobs_an_eta_while_running_and_the_cli(server):
    server.cli("users", "create", "ada", "--credits", "1000")
    auth = {"Authorization": f"Bearer {(server.data_dir / 'admin.token').read_text().strip()}"}
    # nothing finished yet: no number, and why
    quote = httpx.post(f"{server.url}/admin/estimate", headers=auth, json=manim_body(4, "q")).json()
    assert quote["seconds"] is None and "fewer than 3 finished manim jobs" in quote["reason"]
    for n in (2, 4, 6):
        job = server.wait(server.submit("ada", "manim", manim_body(n, f"h{n}")["input"]))
        assert job["status"] == "completed", job
    # a Kodisc scene is a Manim job too, learnt from at once; the same scene again is a cache hit, which says
    # nothing about rendering: it is not
    kodisc = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
    for _ in range(2):
        r = httpx.post(f"{server.url}/api/v2/render", headers=kodisc, json={
            "code": SCENE.format(n=2, tag="kodisc"), "className": "S", "quality": "low", "fps": 10})
        assert r.status_code == 202 and server.wait(r.json()["jobId"])["status"] == "completed", r.text
    quote = httpx.post(f"{server.url}/admin/estimate", headers=auth, json=manim_body(8, "q")).json()
    assert quote["basis"] == 4 and quote["family"] == "manim" and quote["seconds"] > 0, quote
    small = httpx.post(f"{server.url}/admin/estimate", headers=auth, json=manim_body(2, "q")).json()
    assert small["seconds"] <= quote["seconds"]  # less work, no longer
    # a bad body is the admin API's 400, never a 500
    bad = httpx.post(f"{server.url}/admin/estimate", headers=auth, content=b"[1]")
    assert bad.status_code == 400 and bad.json()["message"] == "body must be a JSON object"
    for scene in ({"code": 1}, "x", {**manim_body(2, "q")["input"], "width": 10**30}):
        bad = httpx.post(f"{server.url}/admin/jobs", headers=auth, json={"user": "ada", "scene": scene})
        assert bad.status_code == 400 and bad.json()["message"].startswith("scene"), bad.text
    # while it runs, the admin API and the dashboard's job page carry an ETA
    server.add_operator(password=PASSWORD)
    dashboard, csrf = signed_in(server)
    # the dashboard's capacity page quotes the same body, with its session and CSRF token; a bad body is its 400
    same = dashboard.post("/dashboard/api/estimate", json=manim_body(8, "q"), headers={"X-CSRF-Token": csrf})
    assert same.status_code == 200 and same.json() == quote, same.text
    assert dashboard.post("/dashboard/api/estimate", json=manim_body(8, "q")).status_code == 403  # no CSRF token
    bad = dashboard.post("/dashboard/api/estimate", json={"user": "ada", "scene": "x"}, headers={"X-CSRF-Token": csrf})
    assert bad.status_code == 400 and "scene must be" in bad.text, bad.text
    job_id = server.submit("ada", "manim", manim_body(12, "live")["input"])
    etas: list[dict] = []  # and the dashboard's event stream carries it in each frame until the job ends

    def follow() -> None:
        with httpx.Client(base_url=server.url, cookies=dashboard.cookies) as own, \
                own.stream("GET", f"/dashboard/api/live?ids={job_id}", timeout=60) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ") and "eta" in (frame := json.loads(line[6:])):
                    etas.append(frame["eta"])
                if line.startswith("event: end"):
                    return
    frames = threading.Thread(target=follow)
    frames.start()
    seen, shown = [], []
    while (job := httpx.get(f"{server.url}/admin/jobs/{job_id}", headers=auth).json())["status"] != "completed":
        if job["status"] == "running" and job["eta"] is not None:
            seen.append(job["eta"])
            shown.append(dashboard.get(f"/dashboard/api/jobs/{job_id}").json()["job"]["eta"])
        time.sleep(0.05)
    assert seen and all(e["secondsLeft"] >= 0 and e["basis"] == 4 for e in seen), seen
    frames.join(timeout=60)
    assert not frames.is_alive() and etas, "the dashboard's event stream carried no ETA"
    assert all(e["basis"] == 4 and e["secondsLeft"] >= 0 for e in etas), etas
    assert any(e is not None and e["basis"] == 4 and e["finishAt"] > time.time() - 60 for e in shown), shown
    assert job["eta"] is None  # ended: no ETA
    assert dashboard.get(f"/dashboard/api/jobs/{job_id}").json()["job"]["eta"] is None
    # the CLI: --estimate prints the quote and submits nothing
    scene = server.data_dir / "scene.py"
    scene.write_text(SCENE.format(n=3, tag="cli"))
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "render", str(scene), "--user", "ada",
                          "--quality", "low", "--estimate", "--data-dir", str(server.data_dir),
                          "--port", str(server.port)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # the live job finished too, and the fit learns from it at once: five jobs now
    assert out.stdout.startswith("about ") and "5 finished manim jobs on this box" in out.stdout, out.stdout
