"""The Manim that renders is the current line pinned in pyproject.toml, and scenes written against its API
render through the Kodisc API (in the sandbox) as they do on the hosted service."""
from __future__ import annotations

import tomllib
from importlib import metadata

import httpx
import manim
import pytest
from packaging.requirements import Requirement
from PIL import Image

from appliance.services.pipelines.manim import cache_key
from renderers.ffmpeg import probe, video_stream
from tests.conftest import ROOT
from tests.integration.test_kodisc_api import poll

# Mobject.always (an updater written as a method chain) is new since Manim 0.19: on 0.19 this scene fails
# with "AttributeError: 'Text' object has no attribute 'always'".
ALWAYS = """from manim import *

class Follow(Scene):
    def construct(self):
        square = Square(side_length=1, color=BLUE, fill_opacity=1).to_edge(LEFT)
        label = Text("hi", font_size=36)
        label.always.next_to(square, UP)
        self.add(square, label)
        self.play(square.animate.to_edge(RIGHT), run_time=0.6)
        self.wait(0.2)
"""


def manim_requirement() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return next(r for r in map(Requirement, project["dependencies"]) if r.name == "manim")


def test_installed_manim_is_the_pinned_line() -> None:
    """A stale venv (or a pin nobody moved) fails here, not as a subtly different render."""
    pin = manim_requirement()
    assert manim.__version__ == metadata.version("manim")
    assert pin.specifier.contains(manim.__version__), (manim.__version__, str(pin))
    assert pin.specifier.contains("0.22.0") and not pin.specifier.contains("0.19.2")


def test_cache_key_names_the_manim_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Renders cached under another Manim are not reused after an upgrade."""
    task = {"code": ALWAYS, "className": "Follow", "width": 854, "height": 480, "fps": 10}
    now = cache_key(task)
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "0.19.2" if name == "manim" else real(name))
    assert cache_key(task) != now


@pytest.mark.slow
def test_scene_using_the_current_api_renders(make_server, tmp_path) -> None:
    server = make_server()
    server.cli("users", "create", "ada", "--credits", "100")
    auth = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
    body = {"code": ALWAYS, "className": "Follow", "quality": "low", "fps": 10}
    job = poll(server, httpx.post(f"{server.url}/api/v2/render", json=body, headers=auth).json()["jobId"], auth)
    assert job["status"] == "completed", job
    video = tmp_path / "video.mp4"
    video.write_bytes(httpx.get(job["result"]["video"]).content)
    stream = video_stream(probe(video))
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 854, 480)
    assert stream["r_frame_rate"] == "10/1" and int(stream["nb_read_frames"]) == 8
    thumb = tmp_path / "thumb.jpg"
    thumb.write_bytes(httpx.get(job["result"]["thumbnail"]).content)
    image = Image.open(thumb).convert("RGB")
    # The last frame: the square at the right edge and the label that followed it, above it.
    blue = image.point(lambda v: 255 if v > 100 else 0).split()[2].getbbox()
    white = image.convert("L").point(lambda v: 255 if v > 200 else 0).getbbox()
    assert blue is not None and blue[0] > image.width * 0.75, blue
    assert white is not None and white[0] > image.width * 0.75 and white[3] < image.height / 2, white
