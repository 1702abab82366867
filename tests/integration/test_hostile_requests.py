"""Requests a stranger controls, each answered with the dialect's exact 4xx (or 503), never a 500 (issue #17 items
4, 8, 9): numbers of 310 digits, a content type that is a list, ids past SQLite's 64 bits, bodies far over what a
route takes, a page that must not be framed, and a full disk under every authenticated call."""
from __future__ import annotations

import contextlib
import os
import subprocess

import httpx
import psutil
import pytest

from tests.integration.test_viralsync_api import MINIMAL

HUGE = int("9" * 310)


@pytest.fixture(scope="module")
def box(make_module_server):
    """One server for the tests that only send requests (nothing here renders)."""
    server = make_module_server({"APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "ada", "--credits", "50")
    server.vs = {"x-api-key": server.new_key("ada", "viralsync")["key"]}
    server.rc = {"Authorization": f"Bearer {server.new_key('ada', 'rendercad')['key']}"}
    return server


def rc_post(server, path: str, action: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/backend/{path}?action={action}", json=body, headers=server.rc, timeout=10)


def movie_with(field: str, value) -> dict:
    body = {"kind": "movie", "projectId": "p", "movie": {**MINIMAL["movie"]}}
    scene = {**MINIMAL["movie"]["scenes"][0]}
    layer = {**scene["layers"][0]}
    where = {"movie": body["movie"], "scene": scene, "layer": layer}
    owner, _, key = field.partition(".")
    where[owner][key] = value
    body["movie"]["scenes"] = [{**scene, "layers": [layer]}]
    return body


@pytest.mark.parametrize("field", ["movie.width", "movie.fps", "scene.duration", "layer.startTime",
                                   "layer.fontSize", "layer.duration"])
def test_a_310_digit_number_is_a_400_in_viralsyncs_words(box, field):
    r = httpx.post(f"{box.url}/v1/render/jobs", json=movie_with(field, HUGE), headers=box.vs, timeout=10)
    assert (r.status_code, r.json()["code"]) == (400, "INVALID_MOVIE_JSON"), r.text
    assert "out of range" in r.json()["error"]


def test_rendercad_wrong_types_and_huge_ids_are_4xx(box):
    job_id = rc_post(box, "render.php", "create_job", {"model": "classic"}).json()["job_id"]
    for content_type in (["image/png"], {"a": 1}, 7):
        r = rc_post(box, "render.php", "presign_upload", {"job_id": job_id, "slot": "input_main",
                                                          "content_type": content_type})
        assert r.status_code == 400 and r.json()["error"].startswith("content_type must be one of"), r.text
        r = rc_post(box, "render.php", "presign_upload", {"content_type": content_type})  # the legacy flow
        assert r.status_code == 400 and r.json()["error"].startswith("content_type must be one of"), r.text
    for big in (2**63, 2**64, HUGE):
        r = rc_post(box, "auth.php", "revoke_api_token", {"token_id": big})
        assert (r.status_code, r.json()["error"]) == (404, "API token not found"), r.text
        r = rc_post(box, "webhooks.php", "delete", {"id": big})
        assert (r.status_code, r.json()["error"]) == (404, "Webhook not found"), r.text


def test_unauthenticated_bodies_are_refused_before_they_are_read(box):
    rss = psutil.Process(box.proc.pid).memory_info().rss
    big = b"code=" + b"A" * (8 << 20)
    r = httpx.post(f"{box.url}/auth_device.html", content=big, timeout=30,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    chunked = (b"token=" + b"B" * (1 << 20) for _ in range(8))  # no Content-Length: counted as it arrives
    with contextlib.suppress(httpx.HTTPError):  # the server may close the connection once over the limit
        r = httpx.post(f"{box.url}/auth_device.html", content=chunked, timeout=30,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413
    r = httpx.post(f"{box.url}/healthz", content=b"x" * (1 << 20), timeout=30)  # any app-level route
    assert r.status_code in (405, 413)
    grown = psutil.Process(box.proc.pid).memory_info().rss - rss
    assert grown < 40 << 20, f"the server grew by {grown >> 20} MB"


def test_the_device_page_cannot_be_framed(box):
    r = httpx.get(f"{box.url}/auth_device.html", params={"code": "ABCD-EFGH"}, timeout=10)
    assert r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root (CI runs as root)")
def test_a_full_disk_is_a_503_in_each_dialect_never_a_500(make_server, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(mount)], check=True)
    server = None
    try:
        server = make_server(data_dir=mount / "var")
        server.cli("users", "create", "ada", "--credits", "50")
        rc = {"Authorization": f"Bearer {server.new_key('ada', 'rendercad')['key']}"}
        kd = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
        assert httpx.get(f"{server.url}/backend/auth.php?action=usage", headers=rc, timeout=10).status_code == 200
        with open(mount / "filler", "wb") as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * (1 << 20))
                filler.flush()
        for _ in range(3):  # WAL pages already allocated may take a write or two more
            r = httpx.get(f"{server.url}/backend/auth.php?action=usage", headers=rc, timeout=10)
        assert r.status_code == 503 and "disk is full" in r.json()["error"], r.text
        r = httpx.post(f"{server.url}/backend/auth.php?action=request_device_code", json={"app_name": "x"},
                       timeout=10)
        assert r.status_code in (200, 503), r.text  # a code may still fit; never a 500
        r = httpx.post(f"{server.url}/api/v2/render", headers=kd, timeout=10,
                       json={"code": "from manim import *\nclass A(Scene):\n    def construct(self): self.wait()\n",
                             "className": "A"})
        assert r.status_code == 503, r.text
        (mount / "filler").unlink()
        r = httpx.get(f"{server.url}/backend/auth.php?action=usage", headers=rc, timeout=10)
        assert r.status_code == 200, r.text
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_failing_for_free_is_rate_limited_per_user(make_server):
    """Issue #17 item 3: a failed job costs nothing, so a loop of failing jobs filled the disk for free. Past
    max_failed_jobs_per_hour a user's new jobs get the dialect's 429; another user is not affected."""
    server = make_server({"APPLIANCE_MAX_FAILED_JOBS_PER_HOUR": "3"})
    for name in ("mallory", "ada"):
        server.cli("users", "create", name, "--credits", "50")
    mallory = {"Authorization": f"Bearer {server.new_key('mallory', 'kodisc')['key']}"}
    ada = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
    failing = {"code": "from manim import *\nclass F(Scene):\n    def construct(self):\n        1 / 0\n",
               "className": "F", "quality": "low"}
    for _ in range(3):
        job_id = httpx.post(f"{server.url}/api/v2/render", json=failing, headers=mallory, timeout=10).json()["jobId"]
        assert server.wait(job_id)["status"] == "failed"
    r = httpx.post(f"{server.url}/api/v2/render", json=failing, headers=mallory, timeout=10)
    assert r.status_code == 429 and r.json()["error"] == "rate_limited", r.text
    assert "Too many failed renders" in r.json()["message"]
    assert httpx.post(f"{server.url}/api/v2/render", json=failing, headers=ada, timeout=10).status_code == 202


def test_scene_code_with_a_null_byte_is_a_failed_job_not_a_500(make_server):
    """Found by `make fuzz`: the split rule parsed the source with ast, which raises ValueError on a NUL."""
    server = make_server({"APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "ada", "--credits", "50")
    auth = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
    r = httpx.post(f"{server.url}/api/v2/render", headers=auth, timeout=10,
                   json={"code": "from manim import *\x00\nclass A(Scene): pass\n", "className": "A"})
    assert r.status_code == 202, r.text
    job = server.wait(r.json()["jobId"])
    assert job["status"] == "failed" and "null bytes" in job["error"], job
