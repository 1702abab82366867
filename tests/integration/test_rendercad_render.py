"""RenderCAD render.php against a real server: upload, finalize, the finished image decoded and checked, and
the hostile cases (signatures, sizes, non-images, scopes, states)."""
from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image

R = "/backend/render.php"
RED, BLUE, BACKDROP = (200, 40, 30), (30, 60, 170), (215, 212, 205)


def photo(fmt: str = "JPEG", size=(960, 720)) -> bytes:
    """A product shot: a red disc with a blue cap on a light, slightly graded backdrop."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.float32)
    img[:] = BACKDROP
    img *= (1 - 0.08 * ys / h)[..., None]
    img[((xs - w / 2) / (w * 0.2)) ** 2 + ((ys - h * 0.6) / (h * 0.28)) ** 2 < 1] = RED
    img[(abs(xs - w / 2) < w * 0.05) & (ys > h * 0.22) & (ys < h * 0.36)] = BLUE
    img += np.random.default_rng(1).normal(0, 2.5, img.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return out.getvalue()


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
        return httpx.get(f"{server.url}{R}", params={"action": action, **params}, headers=headers, timeout=10)
    return httpx.post(f"{server.url}{R}?action={action}", json=body, headers=headers, timeout=10)


def upload(server, job_id: str, data: bytes, content_type: str = "image/jpeg") -> httpx.Response:
    url = act(server, "presign_upload", {"job_id": job_id, "slot": "input_main",
                                         "content_type": content_type}).json()["presigned_url"]
    return httpx.put(url, content=data, headers={"Content-Type": content_type}, timeout=30)


def submit(server, data: bytes | None = None, **settings) -> str:
    job_id = act(server, "create_job", {"model": "classic", **settings}).json()["job_id"]
    assert upload(server, job_id, data or photo()).status_code == 200
    r = act(server, "finalize_job", {"job_id": job_id})
    assert r.status_code == 200, r.text
    return job_id


def wait(server, job_id: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = act(server, "status", job_id=job_id).json()
        if got["status"] not in ("pending", "processing"):
            return got
        time.sleep(0.05)
    raise AssertionError(f"{job_id} still {got}")


def fetch_image(server, url: str) -> np.ndarray:
    r = httpx.get(url, headers=server.auth, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/jpeg")
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)


def test_render_keeps_the_subject_and_paints_the_asked_background(rc):
    job_id = submit(rc, background_style="custom:#3366CC")
    assert job_id.startswith("render_") and len(job_id) == len("render_") + 13 + 1 + 8
    done = wait(rc, job_id)
    assert done["status"] == "completed" and done["status_detail"] is None, done
    img = fetch_image(rc, done["output_url"])
    assert img.shape == (1024, 1024, 3)
    assert np.abs(img[20:120, 20:120].mean(axis=(0, 1)) - (0x33, 0x66, 0xCC)).max() < 6  # the new backdrop
    centre = img[560:640, 470:550].mean(axis=(0, 1))
    assert centre[0] > 150 and centre[1] < 90 and centre[2] < 90  # the red subject, kept
    cap = np.argwhere((img[:, :, 2] > 120) & (img[:, :, 0] < 90) & (img[:, :, 1] < 110))
    assert len(cap) > 1000 and cap[:, 0].mean() < 560  # the blue cap, still above the disc
    assert httpx.get(done["output_url"], timeout=10).status_code == 401  # the proxy needs the token
    public = httpx.get(done["asset_url"], timeout=10)
    assert public.status_code == 200 and Image.open(io.BytesIO(public.content)).size == (1024, 1024)
    assert httpx.get(done["input_url"], timeout=10).content == photo()
    usage = httpx.get(f"{rc.url}/backend/auth.php?action=usage", headers=rc.auth, timeout=10).json()
    assert usage["monthly_used"] == 1 and usage["monthly_remaining"] == 39  # classic costs 1 token


def test_png_with_transparency_pro_condition_and_history(rc):
    rgba = Image.new("RGBA", (400, 300), (0, 0, 0, 0))
    rgba.paste(Image.new("RGBA", (200, 150), (20, 180, 40, 255)), (100, 75))
    out = io.BytesIO()
    rgba.save(out, "PNG")
    job_id = submit(rc, out.getvalue(), model="pro", background_style="white", condition="rusty",
                    render_mode="creative")
    done = wait(rc, job_id)
    img = fetch_image(rc, done["output_url"])
    assert img[10:60, 10:60].mean() > 245  # white backdrop
    assert img[500:560, 480:540, 1].mean() > img[500:560, 480:540, 2].mean()  # still a green-ish, rusted subject
    history = act(rc, "history", page="1", limit="10", filter="image").json()
    row = history["renders"][0]
    assert row["job_id"] == job_id and row["model"] == "pro" and row["status"] == "completed"
    assert row["days_to_deletion"] == 90 and history["pagination"]["total_count"] == 1
    assert act(rc, "history", filter="video").json()["renders"] == []
    assert act(rc, "history", limit="0").status_code == 400


def test_upload_signature_slot_type_and_expiry(rc):
    job_id = act(rc, "create_job", {}).json()["job_id"]
    signed = act(rc, "presign_upload", {"job_id": job_id, "slot": "input_main", "content_type": "image/jpeg"}).json()
    url = signed["presigned_url"]
    assert signed["expires_in"] == 300 and signed["asset_url"].endswith(f"/renders/{job_id}_input")
    bad = [url.replace("sig=", "sig=0"), url.replace("/input_main?", "/input_other?"),
           url.replace("expires=", "expires=1"), url.split("&sig=")[0] + "&sig=%F3%83%AA%92G"]
    for wrong in bad:
        assert httpx.put(wrong, content=photo(), headers={"Content-Type": "image/jpeg"}).status_code == 403
    r = httpx.put(url, content=photo(), headers={"Content-Type": "image/png"})
    assert r.status_code == 403 and r.json()["error"]
    r = act(rc, "finalize_job", {"job_id": job_id})
    assert r.status_code == 400 and "Upload did not finish" in r.json()["error"]
    assert act(rc, "presign_upload", {"job_id": job_id, "slot": "x", "content_type": "image/jpeg"}).status_code == 400
    assert act(rc, "presign_upload", {"job_id": job_id, "slot": "input_main",
                                      "content_type": "text/html"}).status_code == 400


def test_non_images_and_oversized_uploads_fail_readably(rc):
    for data, content_type in ((b"<html>not an image</html>", "image/jpeg"), (photo()[:2000], "image/jpeg")):
        job_id = act(rc, "create_job", {}).json()["job_id"]
        assert upload(rc, job_id, data, content_type).status_code == 200
        r = act(rc, "finalize_job", {"job_id": job_id})
        assert r.status_code == 422 and "could not be read" in r.json()["error"]
        st = act(rc, "status", job_id=job_id).json()
        assert st["status"] == "failed" and st["error_message"] == r.json()["error"]
    job_id = act(rc, "create_job", {}).json()["job_id"]
    big = b"\xff\xd8" + b"\0" * (80 * 1024 * 1024 + 10)
    assert upload(rc, job_id, big).status_code == 413
    r = act(rc, "finalize_job", {"job_id": job_id})
    assert r.status_code == 422 and "80 MB" in r.json()["error"]
    assert act(rc, "status", job_id=job_id).json()["status"] == "failed"


def test_validation_scopes_and_states(rc):
    assert act(rc, "create_job", {"model": "turbo"}).status_code == 400
    assert act(rc, "create_job", {"background_style": "custom:#12"}).status_code == 400
    assert act(rc, "create_job", {"condition": "haunted"}).status_code == 400
    r = act(rc, "create_job", {"model": "classic", "quality": "4k"})
    assert r.status_code == 422 and "pro" in r.json()["error"]
    assert act(rc, "status", job_id="render_nope").status_code == 404
    ro = rc.new_key(rc.user, "rendercad", scope="read-only")["key"]
    r = act(rc, "create_job", {}, auth={"Authorization": f"Bearer {ro}"})
    assert r.status_code == 403 and "render-only" in r.json()["error"]
    ren = {"X-Auth-Token": rc.new_key(rc.user, "rendercad", scope="render-only")["key"]}
    job_id = submit(rc)
    done = wait(rc, job_id)
    assert act(rc, "delete", {"job_id": job_id}, auth=ren).status_code == 403
    r = act(rc, "cancel", {"job_id": job_id})
    assert r.status_code == 409 and r.json()["error"]
    assert act(rc, "delete", {"job_id": job_id}).json() == {"success": True}
    assert act(rc, "status", job_id=job_id).status_code == 404
    assert httpx.get(done["asset_url"]).status_code == 404
    pending = act(rc, "create_job", {}).json()["job_id"]
    assert act(rc, "delete", {"job_id": pending}).status_code == 409  # still uploading
    assert act(rc, "cancel", {"job_id": pending}).json()["status"] == "canceled"
    other = httpx.post(f"{rc.url}{R}?action=create_job", content=b"model=pro", headers={**rc.auth,
                       "Content-Type": "application/x-www-form-urlencoded"})
    assert other.status_code == 415


def test_cancel_a_pending_job_refunds(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "1"})
    server.cli("users", "create", "bob", "--credits", "10")
    server.auth = {"Authorization": f"Bearer {server.new_key('bob', 'rendercad')['key']}"}
    blocker = server.submit("bob", "test.sleep", {"seconds": 5})  # holds the only slot
    server.wait(blocker, ("running",))
    job_id = submit(server, model="pro")
    assert act(server, "status", job_id=job_id).json()["status"] == "pending"
    assert act(server, "cancel", {"job_id": job_id}).json() == {"success": True, "job_id": job_id,
                                                                "status": "canceled"}
    assert act(server, "status", job_id=job_id).json()["status"] == "canceled"
    usage = httpx.get(f"{server.url}/backend/auth.php?action=usage", headers=server.auth).json()
    assert usage["monthly_remaining"] == 10
    # The operator retries it (admin API; the dashboard's retry is the same call): the copy is a RenderCAD job
    # of its own, with a RenderCAD id, that the owner sees render and pays for once.
    httpx.post(f"{server.url}/admin/jobs/{blocker}/cancel", headers=server.admin_headers(), timeout=10)
    r = httpx.post(f"{server.url}/admin/jobs/{job_id}/retry", headers=server.admin_headers(), timeout=10)
    assert r.status_code == 202, r.text
    again = r.json()["id"]
    assert again.startswith("render_") and len(again) == len(job_id) and again != job_id
    done = wait(server, again)
    assert done["status"] == "completed", done
    assert fetch_image(server, done["output_url"]).shape == (1024, 1024, 3)
    assert httpx.get(done["input_url"], timeout=10).content == photo()  # its own link to the upload
    history = {row["job_id"]: row["status"] for row in act(server, "history", page="1", limit="10").json()["renders"]}
    assert history == {job_id: "canceled", again: "completed"}, history
    usage = httpx.get(f"{server.url}/backend/auth.php?action=usage", headers=server.auth).json()
    assert usage["monthly_remaining"] == 10 - 2  # pro costs 2 tokens: charged once, for the copy
