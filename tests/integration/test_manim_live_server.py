"""Watch a Manim render as it renders (issue #22 item 2), end to end: a real server renders a real Kodisc job in
its sandbox; the task's worker mirrors the finished pieces' fMP4 segments out of the task's filesystem; the
dashboard serves a growing HLS playlist; the job page's Media Source Extensions player plays it in Debian's
headless Chromium while later pieces are still being drawn. What the segments showed is the final video's
frames, packet for packet."""
from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest

from tests.conftest import frame_hashes, wait_for

PASSWORD = "correct horse battery staple"
ENV = {"APPLIANCE_MANIM_SPLIT_MAX_WORKERS": "1"}  # one whole-scene task: the one that streams its pieces
# 11 pieces of 1 s at 10 fps; the pause after each keeps the render going for ~10 s, so the first pieces are
# playable long before the last is drawn (x264 holds up to 40 frames back: a piece is out ~4 pieces later).
PIECES = 11
SCENE = '''import time
from manim import *

class Live(Scene):
    def construct(self):
        square = Square(side_length=3, color=BLUE, fill_opacity=0.6)
        self.play(Create(square), run_time=1)
        for i in range(10):
            self.play(square.animate.rotate(0.3).set_color([RED, GREEN, BLUE, YELLOW][i % 4]), run_time=1)
            time.sleep(0.7)
'''


def segments_of(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line and not line.startswith("#")]


@pytest.mark.slow
def test_the_job_page_plays_the_growing_playlist_while_the_scene_renders(make_server, browser):
    from selenium.webdriver.common.by import By

    server = make_server(ENV, start=False)
    server.cli("init")
    server.add_operator(password=PASSWORD)
    server.start()
    auth, job_id = server.kodisc_render(SCENE, "Live")
    base = f"{server.url}/dashboard/api/jobs/{job_id}"

    d = browser
    d.get(server.url + "/")
    d.find_element(By.NAME, "name").send_keys("ops")
    d.find_element(By.NAME, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "#signin button").click()
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-job="{job_id}"]'), what="jobs list")
    d.get(f"{server.url}/dashboard/jobs/{job_id}")
    cookie = {"appliance_session": d.get_cookie("appliance_session")["value"]}

    # the video element plays: frames decoded (readyState >= 2) and its clock moving, while the job renders
    playing = ("const v = document.getElementById('live-video');"
               "return v && !v.hidden && v.readyState >= 2 && v.currentTime > 0")
    wait_for(d, lambda d: d.execute_script(playing), 60, "the live video playing")
    assert server.job(job_id)["status"] == "running"
    playlist = httpx.get(f"{base}/live.m3u8", cookies=cookie, timeout=10)
    assert playlist.status_code == 200 and "#EXT-X-ENDLIST" not in playlist.text, "later pieces still to come"
    assert playlist.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    for tag in ("#EXT-X-VERSION:7", '#EXT-X-MAP:URI="', "#EXT-X-PLAYLIST-TYPE:EVENT", "#EXTINF:1.000000,"):
        assert tag in playlist.text
    shown = len(segments_of(playlist.text))
    assert 1 <= shown < PIECES
    assert "more to come" in d.find_element(By.ID, "live-note").text

    # a LAN player with the admin token: ffmpeg's own HLS reader finds the H.264 stream at /admin/…/live.m3u8
    admin_url = f"{server.url}/admin/jobs/{job_id}/live.m3u8"
    token = server.admin_headers()["Authorization"]
    probed = subprocess.run(["ffprobe", "-v", "error", "-headers", f"Authorization: {token}\r\n", "-of", "json",
                             "-show_streams", admin_url], capture_output=True, text=True, timeout=60)
    streams = json.loads(probed.stdout or "{}").get("streams", [])
    assert [(st["codec_name"], st["width"], st["height"]) for st in streams] == [("h264", 854, 480)], probed.stderr
    assert httpx.get(admin_url, timeout=10).status_code == 401
    assert httpx.get(admin_url, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401

    # what the segments show, fetched as they come: the final video's first frames, the same packets
    init = httpx.get(f"{server.url}/dashboard/api/jobs/{job_id}/live/init.mp4", cookies=cookie, timeout=10)
    assert init.status_code == 200
    fetched: dict[str, bytes] = {}
    while server.job(job_id)["status"] == "running":
        got = httpx.get(f"{base}/live.m3u8", cookies=cookie, timeout=10)
        if got.status_code != 200:
            break
        for url in segments_of(got.text):
            if url not in fetched:
                seg = httpx.get(server.url + url, cookies=cookie, timeout=10)
                if seg.status_code == 200:
                    fetched[url] = seg.content
        time.sleep(0.3)
    assert server.wait(job_id)["status"] == "completed"
    assert len(fetched) > shown
    video = httpx.get(f"{base}/files/video.mp4", cookies=cookie, timeout=10)
    assert video.status_code == 200
    final = frame_hashes(video.content)
    ordered = sorted(fetched)  # …/seg00000.m4s, …/seg00001.m4s: the index's order
    assert [u.rsplit("/", 1)[1] for u in ordered] == [f"seg{i:05d}.m4s" for i in range(len(ordered))]
    live = frame_hashes(init.content + b"".join(fetched[u] for u in ordered))
    assert len(live) == 10 * len(ordered) and live == final[:len(live)]

    # the job is over: no playlist (its workdir is gone); the page plays the final video instead
    assert httpx.get(f"{base}/live.m3u8", cookies=cookie, timeout=10).status_code == 404
    wait_for(d, lambda d: d.find_elements(By.ID, "preview-video"), 30, "the final video on the job page")

    # only a signed-in operator; only the names the index lists, never a path
    assert httpx.get(f"{base}/live.m3u8", timeout=10).status_code == 401
    for name in ("index.json", ".seg00000.m4s.tmp", "seg0.m4s", "seg99999.m4s", "%2e%2e%2fappliance.db",
                 "init.mp4%00", "..%2f..%2fappliance.db"):
        assert httpx.get(f"{base}/live/{name}", cookies=cookie, timeout=10).status_code in (401, 404), name
