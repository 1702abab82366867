"""The studio's img2img model (issue #23) against a real server: `appliance models add DIR --kind img2img` checks
a diffusers folder in the sandbox (refusing what does not load, and a GPU-only model where no GPU can be
granted), api_discovery lists it as a model, a RenderCAD render with model=<its name> runs it on the upload with
custom_instructions as its prompt (the task's record names the prompt the model's tokenizer read), the same
request gives the same picture, the job costs pro's 2 tokens, backgrounds still
apply, a creative video.php job redraws its first frame with the model (prompt as its text), and after
`models remove` the model id is refused again. The pipelines are built by the test (tests/tiny_diffusers.py):
random weights, nothing downloaded. One server (``studio``) serves every test but the faked-GPU one."""
from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import time

import httpx
import numpy as np
import pytest

from tests import tiny_diffusers as td
from tests.conftest import PYTHON, ROOT, Server
from tests.integration.test_dashboard import PASSWORD
from tests.integration.test_rendercad_render import act, fetch_image, photo, submit, upload
from tests.integration.test_rendercad_video import act as video_act
from tests.integration.test_rendercad_video import finish as video_finish
from tests.integration.test_studio_models import models

D = "/backend/api_discovery.php"


def task_results(server, job_id: str) -> list[dict]:
    with sqlite3.connect(f"file:{server.data_dir / 'appliance.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT renderer, result, gpu FROM tasks WHERE job_id = ? ORDER BY idx", (job_id,))
        return [{"renderer": r, "result": json.loads(res or "{}"), "gpu": g} for r, res, g in rows.fetchall()]


def model_ids(server) -> list[str]:
    got = httpx.get(f"{server.url}{D}?action=models", headers=server.auth, timeout=10).json()
    return [m["id"] for m in got["models"]]


def tokens(server) -> int:
    return httpx.get(f"{server.url}/backend/auth.php?action=usage", headers=server.auth,
                     timeout=10).json()["pooled_tokens_remaining"]


def finished(server, job_id: str) -> dict:
    """The job's RenderCAD status once it ended: polled twice a second (torch loads in each img2img task, and
    status is rate-limited)."""
    deadline = time.time() + 180
    while time.time() < deadline:
        got = act(server, "status", job_id=job_id).json()
        if got.get("status") not in ("pending", "processing"):
            return got
        time.sleep(0.5)
    raise AssertionError(f"{job_id} still {got}")


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """One server for the tests that do not change its environment (each sandboxed img2img task imports torch,
    and a server start is not free): `appliance init` (its admin runs the checks), a dashboard operator, and ada
    with a RenderCAD key. Each test leaves it with no model installed."""
    srv = Server(tmp_path_factory.mktemp("studio"), {"APPLIANCE_CPU_SLOTS": "2"})
    srv.cli("init")
    subprocess.run([PYTHON, "-m", "appliance.cli", "operator", "add", "ops", "--data-dir", str(srv.data_dir)],
                   input=PASSWORD + "\n", text=True, check=True, cwd=ROOT, env=srv.env, capture_output=True)
    srv.start()
    srv.cli("users", "create", "ada", "--credits", "60")
    srv.key = srv.new_key("ada", "rendercad")["key"]
    srv.auth = {"Authorization": f"Bearer {srv.key}"}
    yield srv
    srv.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("img2img")
    return {kind: td.build(root / f"tiny-{kind}", kind) for kind in ("sd", "controlnet")}


def test_a_gpu_only_model_is_granted_a_gpu(make_server, folders, tmp_path):
    """With a (faked) GPU the GPU-only model's check is granted it: CUDA_VISIBLE_DEVICES names it, and this CPU
    build of torch cannot use it, so the model is refused by name rather than run on the CPU."""
    from tests.integration.test_gpu_scheduling import FAKE_PROBE, FAKE_SMI

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("nvidia-smi", FAKE_SMI), ("probe", FAKE_PROBE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    server = make_server({"PATH": f"{bin_dir}:{os.environ['PATH']}", "APPLIANCE_ENCODER_PROBE": str(bin_dir / "probe")})
    server.cli("users", "create", "admin")
    proc = models(server, "add", str(folders["sd"]), "--kind", "img2img", "--device", "gpu")
    assert proc.returncode == 2 and "GPU-only and no GPU is usable here (CUDA_VISIBLE_DEVICES=" in proc.stderr \
        and "was granted, but this torch build sees no CUDA device" in proc.stderr, proc.stderr


def test_add_render_prompt_seed_remove(studio, folders):
    rc = studio
    assert model_ids(rc) == ["classic", "pro"]
    r = act(rc, "create_job", {"model": "tiny-sd"})
    assert r.status_code == 400 and "model must be one of: classic, pro" in r.json()["error"]

    # refused: a reserved name; a GPU-only model on this GPU-less box (tests/unit/test_img2img.py: the rest)
    proc = models(rc, "add", str(folders["sd"]), "--kind", "img2img", "--name", "pro")
    assert proc.returncode == 2 and "classic and pro are RenderCAD's own models" in proc.stderr
    # GPU-only on this GPU-less box: the check itself is refused at admission, with the reason
    proc = models(rc, "add", str(folders["sd"]), "--kind", "img2img")
    assert proc.returncode == 2 and "needs a GPU and the appliance has none to grant" in proc.stderr, proc.stderr

    add = models(rc, "add", str(folders["controlnet"]), "--kind", "img2img", "--device", "any", "--steps", "4",
                 "--licence", "test weights", "--json")
    assert add.returncode == 0, add.stderr
    entry = json.loads(add.stdout)
    assert (entry["kind"], entry["runtime"], entry["device"], entry["pipeline"]) == \
        ("img2img", "diffusers", "any", "StableDiffusionControlNetImg2ImgPipeline")
    assert "tiny-controlnet" in models(rc, "list").stdout
    listed = httpx.get(f"{rc.url}{D}?action=models", headers=rc.auth, timeout=10).json()["models"]
    assert [m["id"] for m in listed] == ["classic", "pro", "tiny-controlnet"]
    assert listed[2]["cost_credits"] == 2 and not listed[2]["supports_4k"]
    assert "freeform 0.8" in listed[2]["description"]

    r = act(rc, "create_job", {"model": "tiny-controlnet", "quality": "4k"})
    assert r.status_code == 422 and "4K quality requires the pro model" in r.json()["error"]
    before = tokens(rc)
    job_id = submit(rc, model="tiny-controlnet", render_mode="creative", custom_instructions="make it red",
                    background_style="custom:#3366CC")
    done = finished(rc, job_id)
    assert done["status"] == "completed", done
    assert tokens(rc) == before - 2
    img = fetch_image(rc, done["output_url"])
    assert img.shape == (1024, 1024, 3)
    assert np.abs(img[20:120, 20:120].mean(axis=(0, 1)) - (0x33, 0x66, 0xCC)).max() < 6  # the background applies
    gen, render = task_results(rc, job_id)
    assert (gen["renderer"], render["renderer"], gen["gpu"]) == ("image.img2img", "image.render", 0)
    meta = gen["result"]["meta"]
    assert meta["prompt"] == "make it red" and meta["prompt_tokens"] == len("make it red") - 2  # 2 spaces
    assert meta["strength"] == 0.55 and meta["steps_run"] == 2 and meta["device"] == "cpu"
    assert meta["sha256"] == entry["sha256"]

    # the same request: the same seed, the same picture (served from the cache)
    again = finished(rc, submit(rc, model="tiny-controlnet", render_mode="creative", custom_instructions="make it red",
                            background_style="custom:#3366CC"))
    assert np.array_equal(fetch_image(rc, again["output_url"]), img)

    # video.php: style creative redraws the first frame with the model, prompt as its text; preserve does not
    # (both at once: the server has 2 CPU slots)
    jobs = [video_job(rc, style=style, prompt="make it red") for style in ("creative", "preserve")]
    (creative, tasks), (preserve, preserved) = [video_done(rc, job_id) for job_id in jobs]
    assert [t["renderer"] for t in tasks] == ["image.img2img", "image.video"]
    assert tasks[0]["result"]["meta"]["prompt"] == "make it red" and tasks[0]["result"]["meta"]["strength"] == 0.55
    assert [t["renderer"] for t in preserved] == ["image.video"]
    assert np.abs(creative.astype(int) - preserve.astype(int)).mean() > 10  # the model's picture moves, not the upload

    assert models(rc, "remove", "tiny-controlnet").returncode == 0
    assert model_ids(rc) == ["classic", "pro"] and not (rc.data_dir / "models" / entry["sha256"]).exists()
    assert act(rc, "create_job", {"model": "tiny-controlnet"}).status_code == 400
    # without the model, a creative video is the camera move over the upload, as before
    _, tasks = video_done(rc, video_job(rc, style="creative", prompt="make it red"))
    assert [t["renderer"] for t in tasks] == ["image.video"]


def video_job(server, **settings) -> str:
    """A 4 s video.php job over the test photo, submitted."""
    job_id = video_act(server, "create_job", {"camera": "orbit", "motion": "none", "duration": 4,
                                              **settings}).json()["job_id"]
    assert upload(server, job_id, photo(), "image/jpeg").status_code == 200
    assert video_act(server, "finalize_job", {"job_id": job_id}).status_code == 200
    return job_id


def video_done(server, job_id: str) -> tuple[np.ndarray, list[dict]]:
    """The finished video's first frame and its tasks' records."""
    import av

    got = video_finish(server, job_id)
    with av.open(io.BytesIO(httpx.get(got["video_url"], timeout=30).content)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return first, task_results(server, job_id)


def test_the_dashboards_capacity_page_lists_the_models(studio, tmp_path, browser):
    """An ONNX matte model (no torch: quick), seen on the capacity page by a signed-in operator in Chromium."""
    from selenium.webdriver.common.by import By

    from tests import tiny_models as tm
    from tests.conftest import wait_for

    server = studio
    try:
        add = models(server, "add", str(tm.redness(tmp_path / "red.onnx")), "--kind", "matte", "--mean", "0,0,0",
                     "--std", "1,1,1", "--licence", "MIT")
        assert add.returncode == 0, add.stderr
        browser.get(server.url + "/dashboard/login")
        browser.find_element(By.NAME, "name").send_keys("ops")
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        wait_for(browser, lambda d: "/dashboard/jobs" in d.current_url, 30, "signed in")
        browser.get(server.url + "/dashboard/capacity")
        row = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#models tr[data-model="red"]'), 60,
                       "models table")[0]
        assert [c.text for c in row.find_elements(By.TAG_NAME, "td")][:5] == \
            ["red", "matte", "onnxruntime", "CPU or GPU", "0 MiB"]
        assert "MIT" in row.text
    finally:
        models(server, "remove", "red")  # the next test on this server starts with no model
