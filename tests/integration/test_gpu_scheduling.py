"""GPU and NVENC scheduling through a real server, with the only fakes allowed: a fake nvidia-smi and a fake
encoder probe. GPU 0 is an H200 (no encoder: the probe fails), GPU 1 opens two NVENC sessions. This machine has
no GPU, so a task granted NVENC really runs h264_nvenc, which really fails, and falls back to libx264."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import httpx
import pytest

from renderers import ffmpeg as ff
from tests.conftest import PYTHON, ROOT
from tests.unit.test_resources import FAKE_PROBE

FAKE_SMI = "#!/bin/sh\necho '0, NVIDIA H200, 143771'\necho '1, NVIDIA RTX A4000, 16376'\n"
X264_SEI = b"x264 - core"  # libx264 writes its banner into the stream; NVENC does not


@pytest.fixture
def gpu_server(make_server, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("nvidia-smi", FAKE_SMI), ("probe", FAKE_PROBE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "APPLIANCE_ENCODER_PROBE": str(bin_dir / "probe"),
           "APPLIANCE_CPU_SLOTS": "8", "APPLIANCE_PRELOAD": "PIL"}
    server = make_server(env)
    server.cli("users", "create", "ada")
    return server


def _task_results(server, job_id: str) -> list[dict]:
    """Each task's own record (its result), read from the appliance's SQLite file."""
    with sqlite3.connect(f"file:{server.data_dir / 'appliance.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT result FROM tasks WHERE job_id = ? ORDER BY idx", (job_id,)).fetchall()
    return [json.loads(row[0]) for row in rows]


def _artifact(server, digest: str):
    return server.data_dir / "artifacts" / digest[:2] / digest


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


def _codec(path) -> str:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,pix_fmt", "-of", "json", str(path)], capture_output=True, text=True)
    stream = json.loads(out.stdout)["streams"][0]
    return f"{stream['codec_name']}/{stream['pix_fmt']}"


@pytest.mark.slow
def test_nvenc_sessions_are_granted_per_gpu_and_a_failing_encoder_falls_back(gpu_server):
    health = httpx.get(gpu_server.url + "/healthz").json()["capacity"]
    assert [g["nvencSessions"] for g in health["gpus"]] == [0, 2]
    assert health["gpus"][0]["nvencReason"].startswith("h264_nvenc failed: [h264_nvenc @ 0x2] OpenEncodeSession")
    # Six encoding tasks, ready together and admitted in one pass: two NVENC sessions exist, both on GPU 1.
    tasks = [{"renderer": "test.encode", "input": {"hold": 1.0, "frames": 5}} for _ in range(6)]
    job = gpu_server.wait(gpu_server.submit("ada", tasks=tasks))
    assert job["status"] == "completed", job
    records = [r["meta"] for r in _task_results(gpu_server, job["id"])]
    nvenc = [r for r in records if r["nvenc"]]
    assert len(nvenc) == 2 and {r["cuda"] for r in nvenc} == {"1"}  # never GPU 0, whose probe failed
    assert _most_at_once([(r["start"], r["end"]) for r in nvenc]) <= 2
    assert {r["cuda"] for r in records if not r["nvenc"]} == {""}  # no GPU granted: none visible
    assert all(r["devices"] == [] for r in records)  # no /dev/nvidia* here; none bound without a grant anyway
    # Granted NVENC, h264_nvenc fails on this GPU-less machine at run time: the task encodes with libx264.
    assert all(r["encoder"] == "libx264" and r["nvencFallback"].startswith("h264_nvenc failed: ") for r in nvenc)
    assert all(r["encoder"] == "libx264" and "nvencFallback" not in r for r in records if not r["nvenc"])
    for result in _task_results(gpu_server, job["id"]):
        video = _artifact(gpu_server, result["outputs"]["video.mp4"])
        assert _codec(video) == "h264/yuv420p" and X264_SEI in video.read_bytes()


@pytest.mark.slow
def test_a_movie_scene_granted_nvenc_falls_back_and_the_movie_is_h264(gpu_server):
    scene = {"duration": 1, "bgColor": "#203040", "layers": [
        {"id": "t", "type": "text", "text": "GPU", "startTime": 0, "duration": 1, "position": {"x": 10, "y": 10},
         "size": {"width": 100, "height": 40}, "fontSize": 20}]}
    movie = {"width": 480, "height": 360, "fps": 10, "scenes": [{**scene, "id": "a"}, {**scene, "id": "b"}]}
    job = gpu_server.wait(gpu_server.submit("ada", movie=movie))
    assert job["status"] == "completed", job
    scenes = [r["meta"] for r in _task_results(gpu_server, job["id"]) if "nvencFallback" in r.get("meta", {})]
    assert len(scenes) == 2 and all(m["encoder"] == "libx264" for m in scenes)
    video = gpu_server.data_dir / "outputs" / job["id"] / job["result"]["files"]["video"]
    assert _codec(video) == "h264/yuv420p" and X264_SEI in video.read_bytes()


def test_doctor_shows_what_was_probed_and_why(gpu_server):
    out = subprocess.run([PYTHON, "-m", "appliance.cli", "doctor", "--data-dir", str(gpu_server.data_dir)],
                         capture_output=True, text=True, cwd=ROOT, env=gpu_server.env, timeout=120).stdout
    assert "GPU 0 NVIDIA H200: 143771 MB, 1 compute slot(s), NVENC 0 (h264_nvenc failed: [h264_nvenc @ 0x2] " \
           "OpenEncodeSessionEx failed: no encode device (2): (no details)), NVDEC no (h264_cuvid failed:" in out
    assert "GPU 1 NVIDIA RTX A4000: 16376 MB, 1 compute slot(s), NVENC 2 (probed: 3 sessions refused" in out


def test_scenes_from_different_encoders_still_concatenate(tmp_path):
    """An MP4 track holds one SPS/PPS: clips whose parameter sets differ (here two x264 profiles, as NVENC and
    x264 scenes would) are joined by re-encoding, not by a stream copy that would decode wrongly."""
    for name, profile in (("a.mp4", "high"), ("b.mp4", "baseline")):
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=10", "-f", "lavfi",
                        "-i", "anullsrc=r=48000:cl=stereo", "-t", "1", "-c:v", "libx264", "-profile:v", profile,
                        "-pix_fmt", "yuv420p", "-c:a", "aac", str(tmp_path / name)], check=True)
    listing = tmp_path / "list.txt"
    listing.write_text("file 'a.mp4'\nfile 'b.mp4'\n")
    ff.concat_copy(listing, tmp_path / "out.mp4")
    meta = ff.video_meta(tmp_path / "out.mp4")
    assert (meta["frames"], meta["width"]) == (20, 96) and ff.decodes_first_frame(tmp_path / "out.mp4")
