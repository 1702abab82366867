"""A split scene's live frame: every ``manim.range`` task drops ``preview.jpg`` as the single task does, and the
dashboard's job page shows it while the scene renders (Debian's headless Chromium, as tests/integration/
test_dashboard.py drives it; a real server, a real Kodisc job, real range tasks)."""
from __future__ import annotations

import io
import sqlite3
import time

import httpx
import pytest
from PIL import Image

from tests.conftest import wait_for

PASSWORD = "correct horse battery staple"
# Forced split (an explicit max_workers: the model is not asked) into 2 ranges: 7 short animations, then one
# long rotation of a red square that keeps the second range drawing until the test cancels the job.
SPLIT_ENV = {"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_MANIM_SPLIT_MIN_ANIMATIONS": "4",
             "APPLIANCE_MANIM_SPLIT_MAX_WORKERS": "2"}
SCENE = '''from manim import *

class Spin(Scene):
    def construct(self):
        square = Square(side_length=3, color=RED, fill_color=RED, fill_opacity=1)
        self.play(FadeIn(square), run_time=0.3)
        for _ in range(6):
            self.play(square.animate.shift(RIGHT * 0.05), run_time=0.3)
        self.play(Rotate(square, 40 * PI), run_time=300)
'''


def running_tasks(server, job_id: str) -> list[str]:
    with sqlite3.connect(f"file:{server.data_dir / 'appliance.db'}?mode=ro", uri=True) as db:
        return [r for (r,) in db.execute("select renderer from tasks where job_id = ? and status = 'running'",
                                          (job_id,))]


@pytest.mark.slow
def test_a_split_scene_shows_its_live_frame_in_chromium(make_server, browser):
    from selenium.webdriver.common.by import By

    server = make_server(SPLIT_ENV, start=False)
    server.cli("init")
    server.add_operator(password=PASSWORD)
    server.start()
    auth, job_id = server.kodisc_render(SCENE, "Spin")

    d = browser
    d.get(server.url + "/")
    d.find_element(By.NAME, "name").send_keys("ops")
    d.find_element(By.NAME, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "#signin button").click()
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-job="{job_id}"]'), what="jobs list")
    d.get(f"{server.url}/dashboard/jobs/{job_id}")
    # 854x480 (low) shrunk to 320 px wide: a frame a range task drew, shown while the job renders. The page redraws
    # as progress arrives, so every element is looked up afresh inside the wait.
    size = "const i = document.getElementById('live-frame'); return i ? [i.naturalWidth, i.naturalHeight] : null"
    wait_for(d, lambda d: d.execute_script(size) == [320, 180], 180, "live frame")
    wait_for(d, lambda d: "Refreshed" in d.find_element(By.ID, "live-note").text, 30, "live note")
    assert "manim.range" in running_tasks(server, job_id)  # the plan is done: the frame is a range's
    assert "manim" not in running_tasks(server, job_id)  # (no single task: the job is split)

    # the same frame over HTTP, from the signed-in session: the red square, rotating
    cookie = {"appliance_session": d.get_cookie("appliance_session")["value"]}
    shot = httpx.get(f"{server.url}/dashboard/api/jobs/{job_id}/preview.jpg", cookies=cookie, timeout=10)
    assert shot.status_code == 200 and shot.content[:3] == b"\xff\xd8\xff"
    image = Image.open(io.BytesIO(shot.content)).convert("RGB")
    assert image.size == (320, 180)
    red, green, blue = image.getpixel((160, 90))
    assert red > 150 and green < 120 and blue < 120, (red, green, blue)
    # a newer frame follows while the range keeps drawing (at most one a second)
    deadline = time.time() + 60
    while time.time() < deadline:
        again = httpx.get(f"{server.url}/dashboard/api/jobs/{job_id}/preview.jpg", cookies=cookie, timeout=10)
        if again.status_code == 200 and again.content != shot.content:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the live frame did not change while the range rendered")

    wait_for(d, lambda d: d.find_element(By.ID, "cancel").click() or True, 30, "cancel clicked")
    wait_for(d, lambda d: d.find_element(By.CSS_SELECTOR, ".jobhead .badge").text == "cancelled", 30, "cancelled")
    assert server.job(job_id)["status"] == "cancelled"
