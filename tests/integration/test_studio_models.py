"""The studio's own ONNX models (issue #23) against a real server: `appliance models add` checks a model in the
sandbox and refuses the bad ones by name, `models list`, /healthz and api_discovery.php show what is installed,
a RenderCAD render cuts its subject out with the model's matte (the classical matte without a model, and when
the model fails on the job's picture), the cache key follows the model, image → video takes its parallax from a
depth model, and `models remove` takes it away. Every model is built by the test (tests/tiny_models.py)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests import tiny_models as tm
from tests.conftest import ROOT
from tests.integration.test_rendercad_render import fetch_image, submit, wait
from tests.integration.test_rendercad_video import act as video_act
from tests.integration.test_rendercad_video import finish, frames_of, probe
from tests.integration.test_rendercad_video import upload as video_upload

PLAIN = ("--mean", "0,0,0", "--std", "1,1,1")  # the tiny models read x / 255 (tests/tiny_models.py)
RED, BLUE, GREY = (205, 35, 30), (30, 60, 180), (150, 150, 150)


def photo(central: bool = False) -> bytes:
    """A red box (left, 2:1) and a blue disc (right) on a grey backdrop, a white label in a corner (the NaN
    model's trigger); ``central``: both smaller, near the middle (room for a camera move)."""
    w, h = 960, 720
    ys, xs = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.float32)
    img[:] = GREY
    img *= (1 - 0.06 * ys / h)[..., None]
    if central:
        img[(xs > 330) & (xs < 480) & (ys > 330) & (ys < 420)] = RED
        img[(xs - 580) ** 2 + (ys - 380) ** 2 < 50 ** 2] = BLUE
    else:
        img[(xs > 120) & (xs < 420) & (ys > 300) & (ys < 450)] = RED
        img[(xs - 700) ** 2 + (ys - 380) ** 2 < 110 ** 2] = BLUE
        img[20:90, 20:90] = 255
    out = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def rc(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2"})
    server.cli("users", "create", "admin")  # the check jobs run as admin (`appliance init` makes it)
    server.cli("users", "create", "ada", "--credits", "60")
    server.key = server.new_key("ada", "rendercad")["key"]
    server.auth = {"Authorization": f"Bearer {server.key}"}
    return server


def models(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "models", *args, "--data-dir",
                           str(server.data_dir)], capture_output=True, text=True, cwd=ROOT, env=server.env,
                          timeout=120)


def refused(server, path: Path, *args: str) -> str:
    proc = models(server, "add", str(path), "--kind", "matte", *PLAIN, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    return proc.stderr


def kept_files(server) -> list[str]:
    folder = server.data_dir / "models"
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def render(server, data: bytes) -> tuple[np.ndarray, dict]:
    """A RenderCAD render of the picture on white: the decoded image and the admin API's view of its job."""
    job_id = submit(server, data, background_style="white")
    done = wait(server, job_id)
    assert done["status"] == "completed", done
    return fetch_image(server, done["output_url"]), server.job(job_id)


def is_blue(img: np.ndarray) -> np.ndarray:
    return (img[..., 2] > 120) & (img[..., 0] < 90)


def is_red(img: np.ndarray) -> np.ndarray:
    return (img[..., 0] > 140) & (img[..., 1] < 90) & (img[..., 2] < 90)


def test_add_refuse_list_render_fallback_remove(rc, tmp_path):
    assert models(rc, "list").stdout == ""
    before, job = render(rc, photo())  # the classical matte: both objects stand on the white backdrop
    assert is_blue(before).sum() > 5000 and is_red(before).sum() > 5000
    assert not job["tasks"][0]["cached"]

    # refused, each for its own reason, and nothing kept
    assert "does not load as an ONNX model" in refused(rc, tm.not_onnx(tmp_path / "notes.onnx"))
    assert "1×3×H×W (an RGB image) is needed" in refused(rc, tm.grey_input(tmp_path / "grey.onnx"))
    assert "has shape 1×2×320×320" in refused(rc, tm.two_maps(tmp_path / "two.onnx"))
    assert "NaN or infinite" in refused(rc, tm.nan_everywhere(tmp_path / "nan.onnx"))
    logits = tm.redness(tmp_path / "logits.onnx", logits=True)
    assert "outside 0..1" in refused(rc, logits) and "--post sigmoid" in refused(rc, logits)
    assert "fixed at 32×32" in refused(rc, tm.fixed_rectangle(tmp_path / "fixed.onnx"), "--input-size", "64")
    assert "is not a diffusers pipeline folder" in models(rc, "add", str(logits), "--kind", "img2img").stderr
    assert kept_files(rc) == [] and models(rc, "list").stdout == ""

    # a matte model: checked in the sandbox, kept under models/<sha256>.onnx with its manifest entry
    add = models(rc, "add", str(tm.redness(tmp_path / "red-detector.onnx")), "--kind", "matte", *PLAIN,
                 "--licence", "MIT (made by the test)", "--json")
    assert add.returncode == 0, add.stderr
    entry = json.loads(add.stdout)
    assert entry["name"] == "red-detector" and entry["kind"] == "matte" and entry["inputSize"] is None
    assert entry["runSize"] == [320, 320] and kept_files(rc) == [f"{entry['sha256']}.onnx", "manifest.json"]
    listed = json.loads(models(rc, "list", "--json").stdout)
    assert [(m["name"], m["runtime"], m["licence"], m["mean"], m["post"]) for m in listed] == \
        [("red-detector", "onnxruntime", "MIT (made by the test)", [0.0, 0.0, 0.0], "none")]
    assert listed[0]["input"] == {"name": "image", "shape": [1, 3, None, None]}
    assert listed[0]["added_by"] and listed[0]["check"]["map_range"][1] > 0.9
    assert "red-detector" in models(rc, "list").stdout
    assert [m["name"] for m in httpx.get(rc.url + "/healthz", timeout=10).json()["models"]] == ["red-detector"]
    studio = httpx.get(f"{rc.url}/backend/api_discovery.php?action=models", headers=rc.auth, timeout=10).json()
    assert studio["studio_models"] == [{"name": "red-detector", "kind": "matte", "runtime": "onnxruntime",
                                        "licence": "MIT (made by the test)"}]
    second = refused(rc, tm.redness(tmp_path / "other.onnx"))
    assert "a matte model (red-detector) is installed already" in second

    # the render uses it: the red box alone is cut out (2:1, 78 % of the canvas wide), no blue disc
    after, job = render(rc, photo())
    assert not job["tasks"][0]["cached"]  # the model's SHA-256 is part of the cache key
    red = np.argwhere(is_red(after))
    assert is_blue(after).sum() == 0 and len(red) > 200_000
    (y0, x0), (y1, x1) = red.min(axis=0), red.max(axis=0)
    assert abs((x1 - x0) / (y1 - y0) - 2.0) < 0.1 and abs((x1 - x0) - 0.78 * 1024) < 30

    # removed: the file and the entry go, renders are classical again (and served from the cache)
    assert models(rc, "remove", "red-detector").returncode == 0
    assert kept_files(rc) == ["manifest.json"] and models(rc, "list").stdout == ""
    assert "no model named" in models(rc, "remove", "red-detector").stderr
    again, job = render(rc, photo())
    assert job["tasks"][0]["cached"] and np.array_equal(again, before)

    # a model that passes the check but gives NaN on this picture (its white label): the classical matte
    add = models(rc, "add", str(tm.nan_on_white(tmp_path / "flaky.onnx")), "--kind", "matte", *PLAIN)
    assert add.returncode == 0 and "added flaky" in add.stdout, add.stderr
    fallback, job = render(rc, photo())
    assert not job["tasks"][0]["cached"] and np.array_equal(fallback, before)
    log = Path(job["tasks"][0]["log"]).read_text()
    assert "matte model 'flaky' failed, classical matte used: output 'mask' holds" in log and "NaN" in log


def test_fixed_size_matte_and_depth_parallax(rc, tmp_path):
    # a fixed 32×32 input: recorded so, the picture resized to it and the map back
    add = models(rc, "add", str(tm.fixed_rectangle(tmp_path / "box.onnx")), "--kind", "matte", *PLAIN, "--json")
    assert add.returncode == 0, add.stderr
    assert json.loads(add.stdout)["inputSize"] == [32, 32] and "32×32" in models(rc, "list").stdout
    img, _ = render(rc, photo())
    # the box is x 8..24, y 4..28 of 32: the cut-out is a 2:3 piece of the photo (grey with the red box's right
    # part), standing 78 % of the canvas tall on white
    dark = np.argwhere(img.sum(axis=2) < 600)
    (y0, x0), (y1, x1) = dark.min(axis=0), dark.max(axis=0)
    assert abs((x1 - x0) / (y1 - y0) - (16 * 960) / (24 * 720)) < 0.06 and abs((y1 - y0) - 0.78 * 1024) < 30
    assert models(rc, "remove", "box").returncode == 0

    # depth: the same orbit without and with a depth model that puts the red box in front of the backdrop and
    # the blue disc behind it. Without, the matte's one subject layer holds both still against the sliding
    # backdrop; with, each pixel moves by its own nearness: the disc slides with the backdrop, the box holds
    def video() -> tuple[Path, dict]:
        job_id = video_act(rc, "create_job", {"camera": "orbit", "motion": "none", "duration": 4}).json()["job_id"]
        assert video_upload(rc, job_id, photo(central=True), "image/png").status_code == 200
        assert video_act(rc, "finalize_job", {"job_id": job_id}).status_code == 200
        got = finish(rc, job_id)
        path = tmp_path / f"{job_id}.mp4"
        path.write_bytes(httpx.get(got["video_url"], timeout=30).content)
        return path, rc.job(job_id)

    def travel(path: Path) -> tuple[float, float]:
        """How far the red box and the blue disc move across the frame from the first frame to the last."""
        first, last = frames_of(path, 0, -1)
        return tuple(float(np.argwhere(m(last))[:, 1].mean() - np.argwhere(m(first))[:, 1].mean())
                     for m in (is_red, is_blue))

    flat, _ = video()
    add = models(rc, "add", str(tm.depth_from_redness(tmp_path / "midas-ish.onnx")), "--kind", "depth", *PLAIN)
    assert add.returncode == 0, add.stderr
    deep, job = video()
    assert not job["tasks"][0]["cached"]  # the depth model's SHA-256 is part of the cache key
    stream = probe(deep)["streams"][0]
    assert (stream["width"], stream["height"], stream["nb_read_frames"]) == (1280, 720, "120")
    (red_flat, blue_flat), (red_deep, blue_deep) = travel(flat), travel(deep)
    assert abs(blue_flat - red_flat) < 8  # one layer
    assert abs(blue_deep) > abs(red_deep) + 60  # per-pixel depth: the far disc travels much further
    assert "depth" in [m["kind"] for m in httpx.get(rc.url + "/healthz", timeout=10).json()["models"]]
