"""The dashboard helps find things (issue #21 item 4): the jobs list names each job (Kodisc's scene class, the
movie's title, RenderCAD's model and output), shows a thumbnail, the user, the output's length and the cost,
searches by id or title, lists and explains every dialect; a job's page uses the width, and a one-task job shows one
progress number. A real server, real renders, Debian's headless Chromium."""
from __future__ import annotations

import io
import re
import time

import httpx
import pytest
from PIL import Image

from tests.conftest import wait_for
from tests.integration.test_dashboard import PASSWORD, TINY_SCENE, signed_in, text_of, with_operator
from tests.integration.test_rendercad_render import photo

MOVIE = {"kind": "movie", "projectId": "proj_find", "movie": {
    "title": "Find me: teaser", "width": 640, "height": 360, "fps": 10, "scenes": [
        {"id": "s1", "duration": 1, "bgColor": "#1a1a2e", "layers": [
            {"id": "t", "type": "text", "text": "Teaser", "startTime": 0, "duration": 1, "zIndex": 1,
             "position": {"x": 10, "y": 40}, "size": {"width": 300, "height": 100}, "fontSize": 40,
             "color": "#ffffff"}]}]}}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    srv = with_operator(tmp_path_factory.mktemp("find"))
    kodisc = {"Authorization": f"Bearer {srv.new_key('admin', 'kodisc')['key']}"}
    r = httpx.post(srv.url + "/api/v2/render", headers=kodisc, timeout=30,
                   json={"code": TINY_SCENE, "className": "Tiny", "quality": "low"})
    srv.kodisc = r.json()["jobId"]
    r = httpx.post(srv.url + "/v1/render/jobs", json=MOVIE, timeout=30,
                   headers={"x-api-key": srv.new_key("admin", "viralsync")["key"]})
    assert r.status_code == 202, r.text
    srv.movie = r.json()["jobId"]
    untitled = {**MOVIE, "projectId": "proj_untitled", "movie": {k: v for k, v in MOVIE["movie"].items()
                                                                  if k != "title"}}
    srv.untitled = httpx.post(srv.url + "/v1/render/jobs", json=untitled, timeout=30,
                              headers={"x-api-key": srv.new_key("admin", "viralsync")["key"]}).json()["jobId"]
    rc = {"Authorization": f"Bearer {srv.new_key('admin', 'rendercad')['key']}"}
    base = srv.url + "/backend/render.php?action="
    srv.render = httpx.post(base + "create_job", json={"model": "classic"}, headers=rc, timeout=10).json()["job_id"]
    put = httpx.post(base + "presign_upload", json={"job_id": srv.render, "slot": "input_main",
                                                    "content_type": "image/jpeg"}, headers=rc, timeout=10).json()
    httpx.put(put["presigned_url"], content=photo(size=(320, 240)), headers={"Content-Type": "image/jpeg"},
              timeout=30).raise_for_status()
    httpx.post(base + "finalize_job", json={"job_id": srv.render}, headers=rc, timeout=10).raise_for_status()
    assert srv.wait(srv.render, timeout=180)["status"] == "completed"
    video = srv.url + "/backend/video.php?action="
    srv.video = httpx.post(video + "create_job", headers=rc, timeout=10, json={
        "image_url": f"{srv.url}/renders/{srv.render}", "camera": "zoom-in", "duration": 4}).json()["job_id"]
    httpx.post(video + "finalize_job", json={"job_id": srv.video}, headers=rc, timeout=10).raise_for_status()
    for job_id in (srv.kodisc, srv.movie, srv.untitled, srv.video):
        assert srv.wait(job_id, timeout=180)["status"] == "completed", job_id
    yield srv
    srv.stop()


def test_list_names_pictures_and_prices_each_job_and_searches(studio):
    client, _ = signed_in(studio)
    opts = client.get("/dashboard/api/filters").json()
    assert opts["dialects"] == ["kodisc", "viralsync", "rendercad", "hotfolder", "admin"]
    assert "admin API" in opts["dialectHelp"]["admin"] and "admin API" in opts["kindHelp"]["tasks"]
    rows = {j["id"]: j for j in client.get("/dashboard/api/jobs").json()["jobs"]}
    kodisc, movie, render = rows[studio.kodisc], rows[studio.movie], rows[studio.render]
    assert (kodisc["title"], kodisc["user"]) == ("Tiny", "admin") and re.fullmatch(r"\d+ credits?", kodisc["cost"])
    assert kodisc["mediaS"] == pytest.approx(1.0, abs=0.1)
    assert movie["title"] == "Find me: teaser" and movie["cost"] == "0.02 min" and movie["mediaS"] == 1.0
    assert rows[studio.untitled]["title"] == "project proj_untitled"  # no title: the projectId
    assert render["title"] == "classic standard · render.jpg" and render["cost"] == "1 token", render
    video = rows[studio.video]  # a video alone: the list shows its first frame
    assert video["title"].startswith("video zoom-in 4 s 720p · ") and video["thumbIsVideo"], video
    assert video["cost"] == "4 tokens" and video["mediaS"] == pytest.approx(4.0, abs=0.05)
    for row in (kodisc, movie, render):  # each thumbnail is a picture the signed-in page can load
        got = client.get(row["thumb"])
        assert got.status_code == 200 and Image.open(io.BytesIO(got.content)).size[0] > 0, row
    found = lambda q: [j["id"] for j in client.get("/dashboard/api/jobs", params={"q": q}).json()["jobs"]]  # noqa: E731
    assert found("tiny") == [studio.kodisc] and found("TEASER") == [studio.movie]
    assert found(studio.render[-8:]) == [studio.render] and found("classic standard") == [studio.render]
    assert found("%") == [] and found("Ti_y") == [] and found("no such job") == []  # LIKE wildcards are literal
    assert client.get("/dashboard/api/jobs", params={"q": "x" * 201}).status_code == 400
    detail = client.get(f"/dashboard/api/jobs/{studio.movie}").json()["job"]
    assert detail["title"] == "Find me: teaser" and detail["cost"] == "0.02 min"


def test_in_chromium(studio, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d, base = browser, studio.url
    d.get(base + "/")
    d.find_element(By.NAME, "name").send_keys("ops")
    d.find_element(By.NAME, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "#signin button").click()
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-job="{studio.render}"]'), 60, "jobs")
    for job_id in (studio.kodisc, studio.movie, studio.render):  # every finished job shows its picture
        wait_for(d, lambda d, job_id=job_id: d.execute_script(
            "return arguments[0].naturalWidth", d.find_element(
                By.CSS_SELECTOR, f'#jobs tr[data-job="{job_id}"] td.thumb img')) > 0, 30, "thumbnail")
    wait_for(d, lambda d: d.execute_script("return arguments[0].readyState", d.find_element(
        By.CSS_SELECTOR, f'#jobs tr[data-job="{studio.video}"] td.thumb video')) >= 1, 30, "video thumbnail")
    row = d.find_element(By.CSS_SELECTOR, f'#jobs tr[data-job="{studio.movie}"]')
    assert "Find me: teaser" in row.text and "admin" in row.text and "0.02 min" in row.text and "1.0 s" in row.text
    dialect = Select(d.find_element(By.CSS_SELECTOR, '#filters select[name="dialect"]'))
    assert [o.get_attribute("value") for o in dialect.options][1:] == ["kodisc", "viralsync", "rendercad",
                                                                       "hotfolder", "admin"]
    admin = next(o for o in dialect.options if o.get_attribute("value") == "admin")
    assert "admin API" in admin.get_attribute("title")  # a tooltip on the option, and a line under the filters
    assert "admin" in text_of(d, "#filter-help") and "tasks" in text_of(d, "#filter-help")
    search = d.find_element(By.NAME, "q")
    search.send_keys("teaser")
    d.find_element(By.CSS_SELECTOR, "#filters button").click()
    wait_for(d, lambda d: "q=teaser" in d.current_url and [r.get_attribute("data-job") for r in d.find_elements(
        By.CSS_SELECTOR, "#jobs tr[data-job]")] == [studio.movie], 30, "search")

    # the job page: the output at the page's width; a one-task job's bar and its task's show one number
    d.get(f"{base}/dashboard/jobs/{studio.kodisc}")
    video = wait_for(d, lambda d: d.find_element(By.ID, "preview-video"), 30, "video")
    assert video.size["width"] >= 600, video.size
    sleeper = studio.submit("admin", "test.sleep", {"seconds": 30})
    studio.wait(sleeper, ("running",), timeout=60)
    d.get(f"{base}/dashboard/jobs/{sleeper}")
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#tasks tbody .bar"), 30, "task row")
    seen = set()
    deadline = time.time() + 8
    while time.time() < deadline:
        job, task = d.execute_script("return [document.querySelector('#job-progress .pct').textContent,"
                                     " document.querySelector('#tasks tbody .bar .pct').textContent]")
        assert job == task, (job, task)
        seen.add(job)
        time.sleep(0.15)
    assert len(seen) >= 4, seen  # it moved while it was sampled
    assert not d.find_elements(By.ID, "progress-note")  # one task: no "mean of" note
    # the live frame (at most 320 px wide) is shown at the column's width, not at 320 x 180
    frame = studio.data_dir / "work" / f"{sleeper}.t000" / "preview.jpg"
    Image.new("RGB", (320, 180), "red").save(frame, "JPEG")
    live = wait_for(d, lambda d: d.find_element(By.ID, "live-frame"), 30, "live frame")
    wait_for(d, lambda d: d.execute_script("return arguments[0].naturalWidth", live) == 320, 30, "frame loads")
    assert live.size["width"] >= 600 and live.size["height"] >= 330, live.size
    d.find_element(By.ID, "cancel").click()
    wait_for(d, lambda d: text_of(d, ".jobhead .badge") == "cancelled", 30, "cancelled")
