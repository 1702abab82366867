"""The dashboard's RenderCAD job page shows the input beside the output (issue #19 item 5): the uploaded picture
is served like the output (the operator's session, nosniff, its accepted type), found by the job's own upload row
(the slot in the URL never becomes a path), and both pictures decode in Debian's headless Chromium."""
from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.conftest import wait_for
from tests.integration.test_dashboard import PASSWORD, signed_in, text_of, with_operator
from tests.integration.test_rendercad_render import photo


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    srv = with_operator(tmp_path_factory.mktemp("inputs"))
    rc = {"Authorization": f"Bearer {srv.new_key('admin', 'rendercad')['key']}"}
    base = srv.url + "/backend/render.php?action="
    srv.upload = photo(size=(320, 240))
    srv.render = httpx.post(base + "create_job", json={"model": "classic"}, headers=rc, timeout=10).json()["job_id"]
    put = httpx.post(base + "presign_upload", json={"job_id": srv.render, "slot": "input_main",
                                                    "content_type": "image/jpeg"}, headers=rc, timeout=10).json()
    httpx.put(put["presigned_url"], content=srv.upload, headers={"Content-Type": "image/jpeg"},
              timeout=30).raise_for_status()
    httpx.post(base + "finalize_job", json={"job_id": srv.render}, headers=rc, timeout=10).raise_for_status()
    assert srv.wait(srv.render, timeout=180)["status"] == "completed"
    yield srv
    srv.stop()


def test_input_served_like_the_output(studio):
    client, _ = signed_in(studio)
    page = client.get(f"/dashboard/api/jobs/{studio.render}").json()
    assert page["inputs"] == [{"slot": "input_main",
                               "url": f"/dashboard/api/jobs/{studio.render}/inputs/input_main"}]
    got = client.get(page["inputs"][0]["url"])
    assert got.status_code == 200 and got.content == studio.upload
    assert got.headers["content-type"] == "image/jpeg" and got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["cache-control"].startswith("private")
    assert httpx.get(studio.url + page["inputs"][0]["url"], timeout=10).status_code == 401  # no session
    for slot in ("input_other", "..%2F..%2Frendercad-upload.key", "input_main%00", "%2E%2E"):
        assert client.get(f"/dashboard/api/jobs/{studio.render}/inputs/{slot}").status_code == 404, slot
    assert client.get("/dashboard/api/jobs/nope/inputs/input_main").status_code == 404


def test_job_page_shows_input_beside_output_in_chromium(studio, browser):
    from selenium.webdriver.common.by import By

    d, base = browser, studio.url
    d.get(base + "/")
    d.find_element(By.NAME, "name").send_keys("ops")
    d.find_element(By.NAME, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "#signin button").click()
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs"), what="jobs list")
    d.get(f"{base}/dashboard/jobs/{studio.render}")
    wait_for(d, lambda d: d.find_elements(By.ID, "compare"), 30, "input beside output")
    shown = d.find_element(By.CSS_SELECTOR, "#compare img.input-image")
    output = d.find_element(By.CSS_SELECTOR, "#compare #preview-image")
    for img in (shown, output):  # both decoded: the browser accepted the bytes and their type
        wait_for(d, lambda d, img=img: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                                         img), 30, "image decoded")
    assert d.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", shown) == [320, 240]
    assert d.execute_script("return arguments[0].naturalWidth", output) > 0
    assert "Input" in text_of(d, "#compare") and "Output" in text_of(d, "#compare")
    # side by side: the input's figure is left of the output's, on the same row
    left, right = (d.execute_script("return arguments[0].closest('figure').getBoundingClientRect().toJSON()", e)
                   for e in (shown, output))
    assert left["right"] <= right["left"] and abs(left["top"] - right["top"]) < 2
    cookie = {"appliance_session": d.get_cookie("appliance_session")["value"]}
    got = httpx.get(shown.get_attribute("src"), cookies=cookie, timeout=10)
    assert Image.open(io.BytesIO(got.content)).size == (320, 240)
