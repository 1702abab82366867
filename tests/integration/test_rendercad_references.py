"""RenderCAD create_job's references (library textures and backgrounds, uploaded and copied ones), source_url
and custom_instructions, against a real server: the finished images are decoded and compared."""
from __future__ import annotations

import io

import httpx
import numpy as np
from PIL import Image

from tests.integration import test_rendercad_render as base
from tests.integration.test_rendercad_render import act, fetch_image, photo, upload, wait

rc_box, rc = base.rc_box, base.rc  # the same server fixtures: a user with 40 credits and a full-access token

DISCOVERY = "/backend/api_discovery.php"
SUBJECT = (slice(560, 640), slice(470, 550))  # inside the red disc of photo(), as placed on the canvas
CORNER = (slice(10, 110), slice(10, 110))


def asset_id(server, kind: str, name: str) -> str:
    found = httpx.get(f"{server.url}{DISCOVERY}", params={"action": kind}, headers=server.auth, timeout=30).json()
    return next(a["id"] for a in found[kind] if a["name"] == name)


def render(server, data: bytes | None = None, **body) -> tuple[dict, np.ndarray]:
    created = act(server, "create_job", {"model": "pro", "background_style": "white", **body})
    assert created.status_code == 200, created.text
    job = created.json()
    for slot in job["required_uploads"]:
        assert slot == {"slot": "input_main"}, slot
        assert upload(server, job["job_id"], data or photo()).status_code == 200
    assert act(server, "finalize_job", {"job_id": job["job_id"]}).status_code == 200
    done = wait(server, job["job_id"])
    assert done["status"] == "completed", done
    return job, fetch_image(server, done["output_url"])


def mean(img: np.ndarray, region) -> np.ndarray:
    return img[region].reshape(-1, 3).mean(axis=0)


def test_library_texture_and_background(rc):
    _, plain = render(rc)
    denim = asset_id(rc, "textures", "Denim")
    _, textured = render(rc, references=[{"type": "material", "asset_kind": "texture", "asset_id": denim}])
    before, after = mean(plain, SUBJECT), mean(textured, SUBJECT)
    assert before[0] > before[2] + 80  # the red disc
    assert after[2] - after[0] > before[2] - before[0] + 60  # moved towards the blue denim
    assert np.abs(textured[CORNER] - plain[CORNER]).mean() < 1  # the backdrop did not change
    sky = asset_id(rc, "backgrounds", "Sky Blue")
    _, backed = render(rc, references=[{"type": "background", "asset_id": sky}])
    top = mean(backed, CORNER)
    assert top[2] > top[0] + 20 and top.min() > 150  # the library's light blue sweep, not white
    assert np.abs(mean(backed, SUBJECT) - before).max() < 25  # the subject is the same


def test_uploaded_and_copied_references_and_source_url(rc):
    first, _ = render(rc)
    asset = act(rc, "status", job_id=first["job_id"]).json()
    other_server_key = rc.new_key(rc.user, "rendercad")["key"]  # same user, another token: still the user's asset
    assert other_server_key
    tile = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 160, 60)).save(tile, "PNG")
    made = act(rc, "create_job", {"model": "pro", "background_style": "white", "source_url": asset["input_url"],
                                  "references": [{"type": "material", "file_name": "green.png"},
                                                 {"type": "background", "url": asset["asset_url"]}]})
    assert made.status_code == 200, made.text
    job = made.json()
    assert job["required_uploads"] == [{"slot": "reference", "index": 0, "type": "material"}]
    assert act(rc, "finalize_job", {"job_id": job["job_id"]}).status_code == 400  # the material is missing
    signed = act(rc, "presign_upload", {"job_id": job["job_id"], "slot": "reference", "index": 0,
                                        "content_type": "image/png"}).json()
    assert signed["slot"] == "reference" and signed["index"] == 0
    assert httpx.put(signed["presigned_url"], content=tile.getvalue(), headers={"Content-Type": "image/png"},
                     timeout=30).status_code == 200
    for wrong in ({"slot": "reference", "index": 1}, {"slot": "reference"}, {"slot": "input_main"}):
        r = act(rc, "presign_upload", {"job_id": job["job_id"], "content_type": "image/png", **wrong})
        assert r.status_code == 400, (wrong, r.text)
    assert act(rc, "finalize_job", {"job_id": job["job_id"]}).status_code == 200
    done = wait(rc, job["job_id"])
    assert done["status"] == "completed", done
    img = fetch_image(rc, done["output_url"])
    subject = mean(img, SUBJECT)
    assert subject[1] > subject[0]  # the red disc in the green material
    assert httpx.get(done["input_url"], timeout=10).content == photo()  # source_url: the first job's upload
    # the background is the first render itself (white backdrop), cover-fitted: its corner stays light
    assert mean(img, CORNER).min() > 200
    # another user's asset: 404; anything that is not an asset URL: 400; nothing is fetched
    rc.cli("users", "create", "eve", "--credits", "5")
    eve = {"Authorization": f"Bearer {rc.new_key('eve', 'rendercad')['key']}"}
    r = act(rc, "create_job", {"source_url": asset["input_url"]}, auth=eve)
    assert r.status_code == 404 and r.json() == {"error": "source_url: asset not found"}
    r = act(rc, "create_job", {"model": "pro", "references": [{"type": "background", "url": asset["asset_url"]}]},
            auth=eve)
    assert r.status_code == 404 and "asset not found" in r.json()["error"]
    for foreign in ("https://example.com/cat.jpg", "http://169.254.169.254/latest", 42):
        r = act(rc, "create_job", {"source_url": foreign})
        assert r.status_code == 400 and "RENDERCAD asset URL" in r.json()["error"], r.text


def test_reference_validation(rc):
    texture = {"type": "material", "asset_id": asset_id(rc, "textures", "Denim")}
    cases = [({"model": "classic", "references": [texture]}, 422, "pro model"),
             ({"references": "not json"}, 400, "JSON array"),
             ({"references": {"type": "material"}}, 400, "JSON array"),
             ({"references": [texture] * 7}, 400, "at most 6"),
             ({"references": ["x"]}, 400, "references[0] must be an object"),
             ({"references": [{"type": "glaze"}]}, 400, "references[0].type"),
             ({"references": [{"type": "material", "asset_kind": "hdri"}]}, 400, "asset_kind"),
             ({"references": [{"type": "material", "asset_id": "0" * 24}]}, 400, "not in the textures library"),
             ({"references": [{"type": "background", "asset_id": texture["asset_id"]}]}, 400, "backgrounds"),
             ({"references": [{"type": "background"}, {"type": "background"}]}, 400, "one background"),
             ({"custom_instructions": "x" * 1501}, 400, "1500")]
    for body, status, words in cases:
        r = act(rc, "create_job", {"model": "pro", **body})
        assert r.status_code == status and words in r.json()["error"], (body, r.text)


def test_custom_instructions_warm_shifts_the_colour_balance(rc):
    _, plain = render(rc)
    job, warm = render(rc, custom_instructions="Please make it warm and golden, keep it classy; no drop shadow.")
    assert job["instructions_applied"] == ["no shadow", "warm"]
    p, w = mean(plain, SUBJECT), mean(warm, SUBJECT)
    assert (w[0] - w[2]) - (p[0] - p[2]) > 8  # redder against blue
    under = (slice(906, 926), slice(440, 580))  # just below the subject: the contact shadow, or white
    assert mean(plain, under).max() < 235 and mean(warm, under).min() > 250
    job, _ = render(rc, custom_instructions="Make it more modern")  # nothing recognised: nothing claimed
    assert job["instructions_applied"] == []
