"""The studio's models and the GPU, against a real server (issue #23): create_job refuses a GPU-only model where no
GPU can be granted (render.php and video.php, RenderCAD's 422); GPU memory is accounted (two tasks that together
exceed the card run one after the other, two that fit run at once, one no card holds is refused with the
sizes); a CPU-allowed (``any``) img2img model runs on a granted GPU when one is free and fits, and on the CPU
otherwise, never waiting, and its task's report says which device ran and why.

The only fakes are the GPU probes (a fake nvidia-smi and encoder probe, as tests/integration/test_gpu_scheduling.py
uses): this machine has no GPU, and its torch is a CPU build, so a task granted the fake GPU sees
CUDA_VISIBLE_DEVICES name it and runs on the CPU, saying so."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3

import httpx
import pytest

from tests import tiny_diffusers as td
from tests.integration.test_gpu_scheduling import _most_at_once
from tests.integration.test_rendercad_render import act, submit
from tests.integration.test_rendercad_video import act as video_act
from tests.integration.test_studio_img2img import finished
from tests.integration.test_studio_models import models
from tests.unit.test_resources import FAKE_PROBE

FAKE_SMI = "#!/bin/sh\necho '0, NVIDIA T4, 8192'\n"  # one small card (its memory is what the test is about)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return td.build(tmp_path_factory.mktemp("tiny") / "tiny", "sd")


def install_gpu_only(data_dir, folder, scratch) -> dict:
    """A GPU-only model installed into a data dir as the server does it (the folder taken in as artifacts, the
    check's real report, run here on the CPU), before the server starts: a box whose GPU has gone since."""
    from appliance.runtime.artifacts import Artifacts
    from appliance.services import model_folders
    from appliance.services.models import AddRequest, ModelRegistry
    from renderers.base import NullReporter
    from renderers.image import onnx_models

    artifacts = Artifacts(data_dir / "artifacts")
    body = scratch / "body.tar"
    body.write_bytes(b"".join(model_folders.tar_stream(folder, model_folders.wanted(folder))))
    files = model_folders.take_in(body, artifacts, 1 << 30)
    check_input = AddRequest.from_params({"kind": "img2img", "name": "tiny", "device": "gpu",
                                         "steps": "4"}).folder_check_input(files)
    work = scratch / "work"
    work.mkdir()
    for name, digest in check_input["artifacts"].items():
        shutil.copy(artifacts.path(digest), work / name)
    report = onnx_models.check({**check_input, "device": "any"}, work, NullReporter())["meta"]
    return ModelRegistry.beside(artifacts).install(check_input, report, artifacts)


def test_create_job_refuses_a_gpu_only_model_where_no_gpu_can_be_granted(make_server, tiny, tmp_path):
    server = make_server(start=False)
    entry = install_gpu_only(server.data_dir, tiny, tmp_path)
    assert entry["device"] == "gpu" and entry["gpu_mem_from"] == "estimate" and entry["gpu_mem_mb"] > 768
    server.start()
    server.cli("users", "create", "ada", "--credits", "20")
    server.auth = {"Authorization": f"Bearer {server.new_key('ada', 'rendercad')['key']}"}

    r = act(server, "create_job", {"model": "tiny"})
    assert (r.status_code, r.json()) == (422, {"error": "The model tiny needs a GPU and this appliance has none to "
                                                        "grant: use classic or pro"})
    r = video_act(server, "create_job", {"style": "creative", "prompt": "brushed steel", "duration": 4})
    assert (r.status_code, r.json()) == (422, {"error": "The model tiny needs a GPU and this appliance has none to "
                                                        "grant: use style=preserve"})
    # nothing was opened: the user's history is empty
    assert act(server, "history").json()["renders"] == []
    # the model is not asked for: preserve (the default) and the classic model go on as before
    r = video_act(server, "create_job", {"style": "preserve", "duration": 4})
    assert r.status_code == 200 and r.json()["status"] == "uploading", r.text
    assert act(server, "create_job", {"model": "classic"}).status_code == 200
    # a junk prompt in a creative request is still the request's 400 first, not the GPU's 422
    r = video_act(server, "create_job", {"style": "creative", "prompt": 7})
    assert r.status_code == 400, r.text


@pytest.fixture
def gpu_box(make_server, tmp_path):
    """A server on a (faked) 8 GiB card with two compute slots."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("nvidia-smi", FAKE_SMI), ("probe", FAKE_PROBE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    server = make_server({"PATH": f"{bin_dir}:{os.environ['PATH']}", "APPLIANCE_ENCODER_PROBE": str(bin_dir / "probe"),
                          "APPLIANCE_GPU_OVERRIDES": "0:compute_slots=2", "APPLIANCE_CPU_SLOTS": "4",
                          "APPLIANCE_PRELOAD": "PIL"})
    server.cli("users", "create", "ada", "--credits", "60")
    return server


def _records(server, job_id: str) -> list[dict]:
    with sqlite3.connect(f"file:{server.data_dir / 'appliance.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT result, error FROM tasks WHERE job_id = ? ORDER BY idx", (job_id,)).fetchall()
    return [{**json.loads(result or "{}"), "error": error} for result, error in rows]


def _holders(server, need: int, count: int, hold: float = 1.5) -> list[dict]:
    """``count`` GPU tasks (the test renderer that records when it ran and what it saw), each needing ``need`` MB
    of the card, ready at once; their records once the job ended."""
    tasks = [{"renderer": "test.encode", "gpu": 1, "input": {"hold": hold, "gpu_mem_mb": need}} for _ in range(count)]
    job = server.wait(server.submit("ada", tasks=tasks), timeout=120)
    assert job["status"] == "completed", job
    return [r["meta"] for r in _records(server, job["id"])]


def test_two_tasks_that_exceed_the_card_run_one_after_the_other(gpu_box):
    apart = _holders(gpu_box, 5000, 2)  # 10000 MB of an 8192 MB card: one at a time, though two slots are free
    assert {r["cuda"] for r in apart} == {"0"} and _most_at_once([(r["start"], r["end"]) for r in apart]) == 1
    together = _holders(gpu_box, 3000, 2)  # 6000 MB: both at once
    assert {r["cuda"] for r in together} == {"0"} and _most_at_once([(r["start"], r["end"]) for r in together]) == 2
    # a need no card here holds: refused at admission with the sizes, never left waiting
    job = gpu_box.wait(gpu_box.submit("ada", tasks=[{"renderer": "test.encode", "gpu": 1,
                                                     "input": {"gpu_mem_mb": 9000}}]), timeout=60)
    assert job["status"] == "failed" and "needs a GPU with 9000 MB of memory and the largest GPU the appliance can " \
        "grant has 8192 MB" in job["error"], job


def test_a_cpu_allowed_model_takes_a_free_gpu_and_never_waits_for_one(gpu_box, tiny):
    server = gpu_box
    add = models(server, "add", str(tiny), "--kind", "img2img", "--device", "any", "--steps", "4",
                 "--gpu-memory", "3000", "--user", "ada", "--json")
    assert add.returncode == 0, add.stderr
    entry = json.loads(add.stdout)
    assert (entry["device"], entry["gpuMemoryMb"]) == ("any", 3000)
    server.auth = {"Authorization": f"Bearer {server.new_key('ada', 'rendercad')['key']}"}

    # the card is free: the model's task is granted it (CUDA_VISIBLE_DEVICES=0); this torch cannot use it
    done = finished(server, submit(server, model="tiny", render_mode="creative", custom_instructions="brass"))
    assert done["status"] == "completed", done
    gen = _records(server, done["job_id"])[0]["meta"]
    assert (gen["gpu"], gen["device"]) == ("0", "cpu")
    assert gen["device_note"] == "GPU 0 granted, but this torch build sees no CUDA device: ran on the CPU"
    # what a warm worker would save (docs/models.md): the import and the load, before the first denoising step
    startup = gen["startup"]
    assert startup["import_s"] > 0 and gen["first_step_s"] >= startup["import_s"] + startup["load_s"]

    # 6000 MB of the card held by a long GPU task: the model's 3000 MB do not fit, so it runs on the CPU at once
    holder = server.submit("ada", tasks=[{"renderer": "test.encode", "gpu": 1,
                                          "input": {"hold": 300, "gpu_mem_mb": 6000}}])
    server.wait(holder, statuses=("running",), timeout=60)
    done = finished(server, submit(server, model="tiny", render_mode="creative", custom_instructions="steel"))
    assert done["status"] == "completed", done
    gen = _records(server, done["job_id"])[0]["meta"]
    assert (gen["gpu"], gen["device"]) == (None, "cpu") and gen["device_note"].startswith("no GPU granted")
    assert server.query("SELECT status FROM tasks WHERE job_id = ?", (holder,))[0][0] == "running"  # still held
    r = httpx.post(f"{server.url}/admin/jobs/{holder}/cancel", headers=server.admin_headers(), timeout=10)
    assert r.status_code == 200, r.text
