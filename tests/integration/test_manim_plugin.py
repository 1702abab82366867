"""Kodisc's own Manim plugin (manim-kodisc, installed --no-deps by the Makefile): scenes that do
``from manim_kodisc import *`` render through the Kodisc API; its web helpers fail cleanly without a network;
its image mobjects work with the Pillow the project uses."""
from __future__ import annotations

import re
import threading
import tomllib
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from io import BytesIO

import httpx
import numpy as np
import pytest
from packaging.requirements import Requirement
from PIL import Image

from renderers.ffmpeg import probe, video_stream
from tests.conftest import ROOT
from tests.integration.test_kodisc_api import poll

CREDITS = 100
PIE = """from manim_kodisc import *

class Pie(Scene):
    def construct(self):
        chart = PiChart({"A": 3, "B": 1}, [RED, BLUE]).scale(1.5)
        self.play(FadeIn(chart), run_time=0.5)
        self.wait(0.5)
"""
WEB = """from manim_kodisc import *

class Web(Scene):
    def construct(self):
        logo = WebImage("http://example.com/logo.png")
        self.play(FadeIn(logo))
"""


@pytest.fixture
def kodisc(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2"})
    server.cli("users", "create", "ada", "--credits", str(CREDITS))
    server.auth = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
    return server


def render(server, code: str, class_name: str) -> dict:
    body = {"code": code, "className": class_name, "quality": "low", "fps": 10}
    r = httpx.post(f"{server.url}/api/v2/render", json=body, headers=server.auth)
    assert r.status_code == 202, r.text
    return poll(server, r.json()["jobId"], server.auth)


def test_installed_as_the_makefile_says_without_downgrading_the_project() -> None:
    """pip check, less the plugin's own stale pillow<10 pin: every requirement of the project (and its test
    extra) is still met, so installing the plugin changed nothing the project relies on."""
    pinned = re.search(r"^MANIM_KODISC := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert pinned and metadata.version("manim-kodisc") == pinned.group(1)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in map(Requirement, [*project["dependencies"], *project["optional-dependencies"]["test"]]):
        assert requirement.specifier.contains(metadata.version(requirement.name), prereleases=True), requirement
    assert int(metadata.version("pillow").split(".")[0]) >= 10  # what the plugin's metadata would have refused


def test_image_mobject_works_with_the_projects_pillow(tmp_path) -> None:
    """WebImage decodes with Pillow (the project's, not the <10 its metadata asks for) into an ImageMobject;
    here it fetches from a local HTTP server, as renders have no network."""
    from manim import ImageMobject
    from manim_kodisc import WebImage

    pixels = np.zeros((8, 12, 3), dtype=np.uint8)
    pixels[:, 6:] = (255, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "half.png")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        image = WebImage(f"http://127.0.0.1:{httpd.server_address[1]}/half.png")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert image.pixel_array.shape == (8, 12, 4)  # RGBA, as ImageMobject stores it
    assert (image.pixel_array[:, :6, :3] == 0).all() and (image.pixel_array[:, 6:, :3] == (255, 0, 0)).all()
    assert isinstance(image, ImageMobject) and image.height > 0


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_plugin_scene_renders_through_the_kodisc_api(kodisc) -> None:
    """PiChart: sectors plus MathTex labels (LaTeX and dvisvgm inside the sandbox)."""
    job = render(kodisc, PIE, "Pie")
    assert job["status"] == "completed", job
    video = httpx.get(job["result"]["video"]).content
    path = kodisc.data_dir / "probe.mp4"
    path.write_bytes(video)
    stream = video_stream(probe(path))
    assert (stream["codec_name"], stream["pix_fmt"], stream["width"], stream["height"]) == ("h264", "yuv420p", 854, 480)
    assert stream["r_frame_rate"] == "10/1" and int(stream["nb_read_frames"]) == 10
    thumb = Image.open(BytesIO(httpx.get(job["result"]["thumbnail"]).content)).convert("RGB")
    colors = np.asarray(thumb).reshape(-1, 3).astype(int)
    reddish = (colors[:, 0] > 180) & (colors[:, 2] < 120)
    bluish = (colors[:, 2] > 180) & (colors[:, 0] < 140)
    assert reddish.sum() > 3 * bluish.sum() > 0  # 3 : 1, as the data says


@pytest.mark.slow
def test_network_helper_fails_cleanly(kodisc) -> None:
    job = render(kodisc, WEB, "Web")
    assert job["status"] == "failed" and job["result"] is None and job["creditsCost"] == 0, job
    error = job["error"]
    assert "\n" not in error and "Traceback" not in error and len(error) <= 500, error
    assert error.startswith("ConnectionError: the scene tried to use the network to fetch "
                            "http://example.com/logo.png, but renders have no network access"), error
    assert error.endswith("(scene line 5)"), error
    me = httpx.get(f"{kodisc.url}/api/v2/me", headers=kodisc.auth).json()
    assert me["credits"]["total"] == CREDITS  # the reserve is refunded
