"""Watch a movie render (issue #22 item 2): while a ViralSync job renders, the scenes already finished play in
order from the dashboard's growing HLS playlist (delivery/scenestream.py: the scene clips' packets remuxed into
fMP4 segments, never re-encoded), and what they show is the assembled output's first frames, frame for frame."""
from __future__ import annotations

import time

import httpx
import pytest

from appliance.delivery import scenestream
from tests.conftest import frame_hashes
from tests.integration.test_dashboard import PASSWORD, signed_in
from tests.integration.test_viralsync_api import small_movie, wait


def test_scene_clips_become_one_stream_of_their_own_packets(tmp_path):
    import subprocess

    clips = []
    for n, colour in enumerate(("red", "blue", "green")):  # three x264 clips as the scene renderer makes them
        clip = tmp_path / f"scene_{n}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=160x90:rate=10:d={n + 1}",
                        "-vf", f"drawbox=c={colour}:t=4", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt",
                        "yuv420p", str(clip)], check=True)
        clips.append(clip)
    folder = tmp_path / "live"
    index = scenestream.build(clips, 10, folder, "k1")
    assert [s["frames"] for s in index["segments"]] == [10, 20, 30] and index["codec"].startswith("avc1.")
    joined = (folder / "init.mp4").read_bytes() + b"".join((folder / s["name"]).read_bytes()
                                                          for s in index["segments"])
    assert frame_hashes(joined) == [h for clip in clips for h in frame_hashes(clip)]
    # the first segment alone plays the first scene: each segment ends where its scene does
    assert frame_hashes((folder / "init.mp4").read_bytes() + (folder / "seg00000.m4s").read_bytes()) \
        == frame_hashes(clips[0])
    assert scenestream.build(clips, 10, folder, "k1") == index  # built once per set of finished scenes
    assert scenestream.build([tmp_path / "missing.mp4"], 10, tmp_path / "none", "k2") is None


@pytest.mark.slow
def test_a_rendering_movie_plays_its_finished_scenes(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "1", "APPLIANCE_PRELOAD": "PIL,numpy"}, start=False)
    server.cli("init")
    server.add_operator(password=PASSWORD)
    server.start()
    server.cli("users", "create", "ada")
    headers = server.h = {"x-api-key": server.new_key("ada", "viralsync")["key"]}  # as wait() reads it
    body = small_movie(n_scenes=4, seconds=1.0)
    body["movie"]["scenes"][3]["duration"] = 24  # one scene at a time: the last one keeps the job rendering
    body["movie"]["scenes"][3]["layers"][0]["duration"] = 24
    r = httpx.post(f"{server.url}/v1/render/jobs", json=body, headers=headers, timeout=30)
    assert r.status_code == 202, r.text
    job_id = r.json()["jobId"]
    dashboard, _ = signed_in(server)
    assert dashboard.get(f"/dashboard/api/jobs/{job_id}").json()["liveUnit"] == "scene"
    base = f"/dashboard/api/jobs/{job_id}"
    deadline, text = time.time() + 120, ""
    while time.time() < deadline:
        got = dashboard.get(f"{base}/live.m3u8")
        if got.status_code == 200 and got.text.count("#EXTINF") >= 3:
            text = got.text
            break
        time.sleep(0.05)
    assert text and "#EXT-X-ENDLIST" not in text, text  # three scenes to watch while the fourth renders
    assert httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers).json()["status"] != "done"
    names = [line for line in text.splitlines() if line and not line.startswith("#")]
    live = dashboard.get(f"{base}/live/init.mp4").content + b"".join(dashboard.get(u).content for u in names[:3])
    assert dashboard.get(f"{base}/live/..%2Findex.json").status_code == 404  # only the names the index lists

    job = wait(server, job_id)
    assert job["status"] == "done", job
    shown = frame_hashes(live)
    assert len(shown) == 3 * 15 and frame_hashes(httpx.get(job["outputUrl"], timeout=30).content)[:45] == shown
    assert dashboard.get(f"{base}/live.m3u8").status_code == 404  # the page plays the output now
    assert not list((server.data_dir / "tmp").glob("live-*"))
