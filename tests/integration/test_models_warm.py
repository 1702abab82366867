"""The warm model parent (issue #23, appliance/runtime/executors/model_parent.py) against a real server: once
it has imported torch and diffusers, an img2img task forks from it and reaches its first denoising step without
the imports; its worker is the zygote's to reap, as any other (the job completes with the model's picture); and
the parent goes with the server. A CPU task of a model the loaded parent holds (model_pipeline.py) skips the load
as well."""
from __future__ import annotations

import json
import re
import signal
import sqlite3
import time

import pytest

from tests import tiny_diffusers as td
from tests.integration.test_rendercad_render import fetch_image, submit
from tests.integration.test_studio_img2img import finished
from tests.integration.test_studio_models import models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return td.build(tmp_path_factory.mktemp("tiny") / "tiny", "sd")


def _img2img(server, job_id: str) -> dict:
    with sqlite3.connect(f"file:{server.data_dir / 'appliance.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT result FROM tasks WHERE job_id = ? AND renderer = 'image.img2img'",
                         (job_id,)).fetchone()
    return json.loads(row[0])["meta"]


def test_img2img_tasks_fork_from_the_warm_parent(make_server, tiny):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2"})
    server.cli("users", "create", "ada", "--credits", "60")
    add = models(server, "add", str(tiny), "--kind", "img2img", "--device", "any", "--steps", "4", "--user", "ada")
    assert add.returncode == 0, add.stderr
    server.auth = {"Authorization": f"Bearer {server.new_key('ada', 'rendercad')['key']}"}

    def job(words: str) -> tuple[dict, dict]:
        done = finished(server, submit(server, model="tiny", render_mode="creative", custom_instructions=words))
        assert done["status"] == "completed", done
        return done, _img2img(server, done["job_id"])

    _, cold = job("brass")  # the first model task forks cold and starts the parent
    assert not cold["startup"]["preloaded"], cold
    warm = None
    for words in ("steel", "chrome", "gold", "copper"):  # the parent imports meanwhile (seconds on a busy box)
        done, meta = job(words)
        if meta["startup"]["preloaded"]:
            warm = meta
            break
    assert warm is not None, "no task forked from the warm parent"
    # what it saves (no timing threshold here: `scripts/model_warm_figures.py` measures it on a quiet box)
    print(f"\nfirst denoising step: cold {cold['first_step_s']} s, warm {warm['first_step_s']} s")
    assert (warm["device"], warm["gpu"]) == ("cpu", None)
    # a task of the model after that one forks from the loaded parent: its pipeline is already in memory
    kept = None
    for words in ("silver", "bronze", "tin", "zinc"):
        done, meta = job(words)
        if meta["startup"]["kept"]:
            kept = meta
            break
    assert kept is not None, "no task forked with the model loaded"
    assert kept["startup"]["preloaded"], kept
    assert "kept loaded" in (server.data_dir / "server.log").read_text()

    picture = fetch_image(server, done["output_url"])
    assert picture.shape == (1024, 1024, 3)

    # the parent said so in the log, and goes with the server (it dies with the zygote)
    found = re.search(r"warm model parent (\d+) ready", (server.data_dir / "server.log").read_text())
    assert found, "the zygote did not log the warm parent"
    parent = int(found.group(1))
    assert _alive(parent)
    server.stop(signal.SIGTERM)
    deadline = time.time() + 20
    while time.time() < deadline and _alive(parent):
        time.sleep(0.2)
    assert not _alive(parent)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" not in status.read()
    except OSError:
        return False
