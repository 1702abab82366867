"""RenderCAD's legacy flows against a real server: action=render with a base64 data URL, with a multipart
`image`, and with the r2_input_url of a jobless presign_upload; each renders like the current flow."""
from __future__ import annotations

import base64

import httpx
import pytest

from tests.integration.test_rendercad_render import R, act, fetch_image, photo, wait


@pytest.fixture
def rc(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2"})
    server.cli("users", "create", "ada", "--credits", "20")
    server.key = server.new_key("ada", "rendercad")["key"]
    server.auth = {"Authorization": f"Bearer {server.key}"}
    return server


def rendered(rc, r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["success"] is True and got["job_id"].startswith("render_")
    done = wait(rc, got["job_id"])
    assert done["status"] == "completed", done
    image = fetch_image(rc, done["output_url"])
    assert image.shape[2] == 3 and image.std() > 5  # a real picture, not a blank
    return done


def test_json_data_url(rc):
    data_url = "data:image/png;base64," + base64.b64encode(photo("PNG", (480, 360))).decode()
    done = rendered(rc, act(rc, "render", {"image": data_url, "model": "classic",
                                           "background_style": "white"}))
    history = act(rc, "history").json()["renders"]
    assert history[0]["job_id"] == done["job_id"] and history[0]["background_style"] == "white"
    assert act(rc, "render", {"image": "data:image/png;base64,@@@"}).status_code == 400
    assert act(rc, "render", {"image": "http://example.com/x.png"}).status_code == 400
    assert act(rc, "render", {}).status_code == 400
    r = act(rc, "render", {"image": "data:image/jpeg;base64," + base64.b64encode(b"not an image").decode()})
    assert r.status_code == 422 and "could not be read" in r.json()["error"]
    r = act(rc, "render", {"image": data_url, "quality": "4k"})
    assert r.status_code == 422


def test_multipart_image(rc):
    r = httpx.post(f"{rc.url}{R}?action=render", headers=rc.auth, timeout=30,
                   files={"image": ("shot.jpg", photo(), "image/jpeg")}, data={"model": "pro"})
    rendered(rc, r)
    assert act(rc, "history").json()["renders"][0]["model"] == "pro"
    r = httpx.post(f"{rc.url}{R}?action=render", headers=rc.auth, data={"model": "pro"},
                   files={"other": ("x.jpg", b"x", "image/jpeg")}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "image is required"
    big = httpx.post(f"{rc.url}{R}?action=render", headers=rc.auth, timeout=30,
                     files={"image": ("big.jpg", b"\xff" * (10 * 1024 * 1024 + 1), "image/jpeg")})
    assert big.status_code == 413


def test_jobless_presign_then_render_by_r2_input_url(rc):
    signed = act(rc, "presign_upload", {"content_type": "image/jpeg"})
    assert signed.status_code == 200, signed.text
    got = signed.json()
    assert got["presigned_url"] and got["r2_input_url"].endswith("_input")
    put = httpx.put(got["presigned_url"], content=photo(), headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert put.status_code == 200
    done = rendered(rc, act(rc, "render", {"r2_input_url": got["r2_input_url"], "model": "pro",
                                           "render_mode": "creative", "custom_instructions": "studio light"}))
    assert got["r2_input_url"] == f"{rc.url}/renders/{done['job_id']}_input"
    assert httpx.get(got["r2_input_url"]).status_code == 200
    again = act(rc, "render", {"r2_input_url": got["r2_input_url"]})
    assert again.status_code == 409
    assert act(rc, "render", {"r2_input_url": f"{rc.url}/renders/render_nope_input"}).status_code == 404
    assert act(rc, "presign_upload", {"content_type": "text/plain"}).status_code == 400
