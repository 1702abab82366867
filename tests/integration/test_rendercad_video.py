"""RenderCAD video.php against a real server: create (asset URLs or the upload slot) → finalize → status, the
MP4 probed (size, frames, duration, yuv420p, moov before mdat) and its frames decoded (loop closes, transition
goes first → last), convert to GIF decoded with Pillow, tokens reserved and refunded, video.* webhooks signed,
and the hostile cases with their exact codes."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.integration.test_kodisc_api import Receiver
from tests.integration.test_rendercad_render import act as render_act
from tests.integration.test_rendercad_render import photo, submit, upload
from tests.integration.test_rendercad_webhooks import hook, verify

V = "/backend/video.php"


@pytest.fixture(scope="module")
def rc_box(make_module_server):
    return make_module_server({"APPLIANCE_CPU_SLOTS": "2"})


@pytest.fixture
def rc(rc_box):
    """The module's server with a user of this test's own: 40 credits and a full-access token."""
    server = rc_box
    server.key = server.new_key(server.fresh_user(40), "rendercad")["key"]
    server.auth = {"Authorization": f"Bearer {server.key}"}
    return server


def act(server, action: str, body: dict | None = None, auth: dict | None = None, **params) -> httpx.Response:
    headers = auth if auth is not None else server.auth
    if body is None:
        return httpx.get(f"{server.url}{V}", params={"action": action, **params}, headers=headers, timeout=10)
    return httpx.post(f"{server.url}{V}?action={action}", json=body, headers=headers, timeout=10)


def asset(server, colour=None) -> str:
    """An image asset URL of the user's: a render job's uploaded input (no render needed)."""
    job_id = render_act(server, "create_job", {}).json()["job_id"]
    data = photo() if colour is None else solid(colour)
    assert upload(server, job_id, data).status_code == 200
    return f"{server.url}/renders/{job_id}_input"


def solid(colour, size=(640, 360)) -> bytes:
    """A flat picture with a darker block, so a frame can be told apart by its mean colour."""
    img = np.empty((size[1], size[0], 3), np.uint8)
    img[:] = colour
    img[100:260, 250:390] = np.array(colour) // 3
    out = io.BytesIO()
    Image.fromarray(img).save(out, "PNG")
    return out.getvalue()


def finish(server, job_id: str) -> dict:
    """Wait through the admin API (video.php status polling is rate-limited), then read video.php's status."""
    server.wait(job_id, timeout=180)
    got = act(server, "status", job_id=job_id).json()
    assert got["status"] == "completed", got
    return got


def download(server, url: str, tmp_path: Path, name: str) -> Path:
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200, r.text
    path = tmp_path / name
    path.write_bytes(r.content)
    return path


def probe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-print_format", "json", "-show_streams",
                          "-show_format", str(path)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def moov_first(path: Path) -> bool:
    data = path.read_bytes()
    return 0 <= data.find(b"moov") < data.find(b"mdat")


def frames_of(path: Path, *indexes: int) -> list[np.ndarray]:
    import av

    want, got = set(indexes), {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in want or (-1 in want):
                got[i] = frame.to_ndarray(format="rgb24").astype(np.float32)
    last = max(got)
    return [got[last if i == -1 else i] for i in indexes]


def check_mp4(path: Path, size: tuple[int, int], seconds: float) -> None:
    info = probe(path)
    stream = info["streams"][0]
    assert (stream["codec_name"], stream["pix_fmt"]) == ("h264", "yuv420p")
    assert (stream["width"], stream["height"]) == size
    assert int(stream["nb_read_frames"]) == round(seconds * 30) and stream["r_frame_rate"] == "30/1"
    assert abs(float(info["format"]["duration"]) - seconds) < 0.05
    assert moov_first(path)  # faststart: playable while it downloads


def usage(server) -> dict:
    return httpx.get(f"{server.url}/backend/auth.php?action=usage", headers=server.auth, timeout=10).json()


def test_orbit_from_the_upload_slot_then_gif(rc, tmp_path):
    created = act(rc, "create_job", {"camera": "orbit", "motion": "hero-spin", "duration": 4})
    assert created.status_code == 200 and created.headers["X-RateLimit-Endpoint"] == "video_generate"
    job_id = created.json()["job_id"]
    assert created.json() == {"success": True, "job_id": job_id, "status": "uploading",
                              "required_uploads": [{"slot": "input_main"}]}
    assert act(rc, "finalize_job", {"job_id": job_id}).status_code == 400  # nothing uploaded yet
    assert upload(rc, job_id, photo()).status_code == 200
    done = act(rc, "finalize_job", {"job_id": job_id})
    assert done.status_code == 200, done.text
    assert done.json()["tokens_used"] == 4 and done.json()["status"] == "pending"  # 4 s at 720p: 4 tokens
    assert act(rc, "finalize_job", {"job_id": job_id}).status_code == 409
    got = finish(rc, job_id)
    assert got["video_url"] == f"{rc.url}/renders/{job_id}.mp4" and got["status_detail"] is None
    assert got["video_settings"]["camera"] == "orbit" and got["completed_at"]
    mp4 = download(rc, got["video_url"], tmp_path, "orbit.mp4")
    check_mp4(mp4, (1280, 720), 4)
    first, middle = frames_of(mp4, 0, 60)
    assert np.abs(first - middle).mean() > 2  # the camera moved
    assert usage(rc)["monthly_used"] == 4
    assert act(rc, "cancel", {"job_id": job_id}).status_code == 409  # finished: nothing to cancel
    row = render_act(rc, "history", filter="video").json()["renders"][0]  # the seed: video_settings is canonical
    assert row["job_id"] == job_id and row["background_style"] is None and row["video_settings"]["camera"] == "orbit"
    assert row["output_url"] == got["video_url"]

    conv = act(rc, "convert", {"video_url": got["video_url"], "format": "gif"})
    assert conv.status_code == 200 and conv.headers["X-RateLimit-Endpoint"] == "video_convert"
    gif_id = conv.json()["job_id"]
    assert conv.json() == {"success": True, "job_id": gif_id, "status": "pending", "format": "gif"}
    assert gif_id.startswith("vc_") and len(gif_id) == 15
    gif = finish(rc, gif_id)
    data = httpx.get(gif["gif_url"], timeout=30).content
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "GIF" and image.size == (480, 270) and image.n_frames == 60  # 4 s at 15 fps
    assert gif["size_bytes"] == len(data) and gif["width"] == 480 and gif["frame_count"] == 60
    assert usage(rc)["monthly_used"] == 4  # converting is free


def test_transition_and_loop(rc, tmp_path):
    red, blue = (200, 40, 30), (30, 60, 190)
    first, last = asset(rc, red), asset(rc, blue)
    r = act(rc, "create_job", {"video_mode": "transition", "first_frame_url": first, "last_frame_url": last,
                               "duration": 4, "camera": "pan-left"})
    assert r.json()["required_uploads"] == [], r.text  # asset URLs: copied at once, nothing to upload
    # without URLs, both frames are uploaded to the slots the job lists (render.php's presign_upload)
    r = act(rc, "create_job", {"video_mode": "transition", "duration": 4, "camera": "pan-left"})
    job_id = r.json()["job_id"]
    assert r.json()["required_uploads"] == [{"slot": "input_main"}, {"slot": "last_frame"}], r.text
    put = {"job_id": job_id, "content_type": "image/png"}
    for slot, colour in (("input_main", red), ("last_frame", blue)):
        url = render_act(rc, "presign_upload", {**put, "slot": slot}).json()["presigned_url"]
        assert httpx.put(url, content=solid(colour), headers={"Content-Type": "image/png"}).status_code == 200
        if slot == "input_main":  # the last frame is still missing
            missing = act(rc, "finalize_job", {"job_id": job_id})
            assert missing.status_code == 400 and "last_frame" in missing.json()["error"]
    assert render_act(rc, "presign_upload", {**put, "slot": "reference", "index": 0}).status_code == 400
    assert act(rc, "finalize_job", {"job_id": job_id}).status_code == 200
    loop_id = act(rc, "create_job", {"video_mode": "loop", "image_url": asset(rc), "duration": 4,
                                     "camera": "dolly", "motion": "float", "crossfade_duration": 1.0}).json()["job_id"]
    assert act(rc, "finalize_job", {"job_id": loop_id}).status_code == 200
    mp4 = download(rc, finish(rc, job_id)["video_url"], tmp_path, "transition.mp4")
    check_mp4(mp4, (1280, 720), 4)
    start, end = (f.mean(axis=(0, 1)) for f in frames_of(mp4, 0, -1))
    assert start[0] > start[2] + 60 and end[2] > end[0] + 60  # red first, blue last
    looped = download(rc, finish(rc, loop_id)["video_url"], tmp_path, "loop.mp4")
    check_mp4(looped, (1280, 720), 4)
    a, middle, b = frames_of(looped, 0, 45, -1)
    assert np.abs(a - b).mean() < 2 and np.abs(a - middle).mean() > np.abs(a - b).mean()  # it ends where it began


def test_1080p_from_a_finished_render_with_signed_webhooks(rc, tmp_path):
    rc.cli("users", "create", "cy", "--credits", "6")  # a render (1) and a 4 s 1080p clip (5): then none left
    rc.auth = {"Authorization": f"Bearer {rc.new_key('cy', 'rendercad')['key']}"}
    receiver = Receiver()
    try:
        secret = hook(rc, "register", {"url": receiver.url, "events": ["video.completed", "video.failed",
                                                                       "credits.exhausted"]}).json()["secret"]
        render_id = submit(rc)
        rc.wait(render_id)
        source = f"{rc.url}/renders/{render_id}"  # the finished 1024x1024 render itself
        job_id = act(rc, "create_job", {"image_url": source, "duration": 4, "resolution": "1080p",
                                        "camera": "zoom-in"}).json()["job_id"]
        assert act(rc, "finalize_job", {"job_id": job_id}).json()["tokens_used"] == 5  # + 1 at 1080p
        check_mp4(download(rc, finish(rc, job_id)["video_url"], tmp_path, "hd.mp4"), (1920, 1080), 4)
        bad = act(rc, "create_job", {"duration": 4}).json()["job_id"]
        assert upload(rc, bad, b"not an image").status_code == 200
        refused = act(rc, "finalize_job", {"job_id": bad})
        assert refused.status_code == 422
        receiver.wait(3)
        events = {d["event_type"]: d for d in (verify(secret, h, b) for h, b, _ in receiver.calls)}
        assert events["credits.exhausted"]["credits_used"] == 6 and events["credits.exhausted"]["credits_limit"] == 6
        assert events["video.completed"]["job_id"] == job_id
        assert events["video.completed"]["video_url"] == f"{rc.url}/renders/{job_id}.mp4"
        assert isinstance(events["video.completed"]["processing_time_ms"], int)
        assert events["video.failed"]["job_id"] == bad and events["video.failed"]["error"] == refused.json()["error"]
        assert act(rc, "status", job_id=bad).json()["status"] == "failed"
        assert usage(rc)["monthly_used"] == 1 + 5  # the render and the 1080p clip; the refused one costs nothing
        short = act(rc, "create_job", {"image_url": source, "duration": 4}).json()["job_id"]
        assert act(rc, "finalize_job", {"job_id": short}).status_code == 429  # no tokens left
    finally:
        receiver.close()


def test_hostile_requests_and_scopes(rc):
    url = asset(rc)
    bad_fields = [{"camera": "spin"}, {"motion": "wiggle"}, {"duration": 5}, {"duration": True},
                  {"resolution": "4k"}, {"style": "exact"}, {"video_mode": "boomerang"},
                  {"crossfade_duration": 3}, {"crossfade_duration": "1"}, {"prompt": "x" * 1501},
                  {"video_mode": "transition", "first_frame_url": url}, {"image_url": "https://example.com/a.jpg"},
                  {"image_url": 7}]
    for body in bad_fields:
        r = act(rc, "create_job", body)
        assert r.status_code == 400 and r.json()["error"], body
    gone = act(rc, "create_job", {"image_url": f"{rc.url}/renders/render_nope.00000000"})
    assert gone.status_code == 404
    assert act(rc, "nope", {}).status_code == 404 and act(rc, "nope", {}).json() == {"error": "Unknown action"}
    assert act(rc, "create_job").status_code == 405  # a GET
    form = httpx.post(f"{rc.url}{V}?action=create_job", content=b"duration=4",
                      headers={**rc.auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    assert act(rc, "status", auth={}, job_id="x").status_code == 401
    assert act(rc, "status", auth={"Authorization": "Bearer rendercad_" + "x" * 32}, job_id="x").status_code == 401
    assert act(rc, "status").status_code == 400 and act(rc, "status", job_id="nope").status_code == 404
    read_only = {"Authorization": f"Bearer {rc.new_key(rc.user, 'rendercad', scope='read-only')['key']}"}
    for action in ("create_job", "finalize_job", "convert", "cancel"):
        assert act(rc, action, {}, auth=read_only).status_code == 403, action
    job_id = act(rc, "create_job", {"image_url": url, "duration": 4}).json()["job_id"]
    assert act(rc, "status", auth=read_only, job_id=job_id).json()["status"] == "uploading"
    rc.cli("users", "create", "eve", "--credits", "40")
    eve = {"Authorization": f"Bearer {rc.new_key('eve', 'rendercad')['key']}"}
    assert act(rc, "status", auth=eve, job_id=job_id).status_code == 404  # not hers
    assert act(rc, "create_job", {"image_url": url}, auth=eve).status_code == 404  # nor is the asset
    assert act(rc, "convert", {"video_url": url}).status_code == 400  # an image is no video
    assert act(rc, "convert", {"video_url": f"{rc.url}/renders/{job_id}.mp4"}).status_code == 409  # not made yet
    assert act(rc, "convert", {"video_url": f"{rc.url}/renders/{job_id}.mp4", "format": "mp4"}).status_code == 400
    assert act(rc, "cancel", {"job_id": job_id}).json() == {"success": True, "job_id": job_id, "status": "canceled"}
    assert act(rc, "finalize_job", {"job_id": job_id}).status_code == 409
    wrong = render_act(rc, "finalize_job", {"job_id": job_id})  # a video job finalized at render.php: no 500
    assert wrong.status_code == 422 and "video.php" in wrong.json()["error"]
    for _ in range(9):  # 10 per 5 minutes, counted only when valid: one was used above
        assert act(rc, "create_job", {"duration": 4}).status_code == 200
    over = act(rc, "create_job", {"duration": 4})
    assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
    assert over.headers["X-RateLimit-Remaining"] == "0" and over.headers["X-RateLimit-Limit"] == "10"


def test_tokens_reserved_at_finalize_and_refunded_on_cancel(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "1"})
    server.cli("users", "create", "bob", "--credits", "10")
    server.auth = {"Authorization": f"Bearer {server.new_key('bob', 'rendercad')['key']}"}
    blocker = server.submit("bob", "test.sleep", {"seconds": 5})  # holds the only slot
    server.wait(blocker, ("running",))
    url = asset(server)
    pricey = act(server, "create_job", {"image_url": url, "duration": 8, "resolution": "1080p"}).json()["job_id"]
    job_id = act(server, "create_job", {"image_url": url, "duration": 6}).json()["job_id"]
    assert act(server, "finalize_job", {"job_id": job_id}).json()["tokens_used"] == 6
    assert usage(server)["monthly_remaining"] == 4  # reserved while it waits
    short = act(server, "finalize_job", {"job_id": pricey})  # 9 tokens, 4 left
    assert short.status_code == 429 and "9" in short.json()["error"]
    pending = act(server, "status", job_id=job_id).json()
    assert pending["status"] == "pending" and pending["status_detail"] == "Queued..." and "queue_depth" in pending
    assert act(server, "cancel", {"job_id": job_id}).json()["status"] == "canceled"
    assert act(server, "cancel", {"job_id": job_id}).status_code == 409
    assert act(server, "status", job_id=job_id).json()["status"] == "canceled"
    assert usage(server)["monthly_remaining"] == 10  # refunded


def test_an_nvenc_grant_that_fails_falls_back_to_x264(tmp_path):
    """The renderer in its own process, told it holds an NVENC session (as the executor says so): where
    h264_nvenc cannot open, the clip is encoded again with libx264 and the meta says why."""
    (tmp_path / "in.png").write_bytes(solid((90, 160, 60)))
    code = ("import json, sys; from pathlib import Path; from renderers.base import NullReporter; "
            "from renderers.image import video; print(json.dumps(video.render({'width': 320, 'height': 180, "
            "'fps': 30, 'frames': 15, 'first': 'in.png', 'camera': 'zoom-in', 'motion': 'none'}, "
            "Path(sys.argv[1]), NullReporter())['meta']))")
    env = {**os.environ, "RENDER_NVENC": "1", "CUDA_VISIBLE_DEVICES": "0"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[2], check=True).stdout
    meta = json.loads(out.strip().splitlines()[-1])
    assert meta["encoder"] in ("h264_nvenc", "libx264")
    if meta["encoder"] == "libx264":  # no NVENC here: the reason is kept
        assert meta["nvencFallback"].startswith("h264_nvenc failed")
    check_mp4(tmp_path / "video.mp4", (320, 180), 0.5)
