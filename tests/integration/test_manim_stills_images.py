"""Still scenes (no play()/wait()), the lossless last frame (image.png) and ImageMobject under Pillow 13.

Each render is a fresh ``python -m renderers manim`` process (``test_manim_renderer.render``); pixels are read
from the decoded outputs. ImageMobject scenes exercise every ``Image.fromarray(..., mode=...)`` call of Manim's
camera (``renderers/manim_compat.py`` lists them): the blank canvas of ``display_image_mobject`` (any
ImageMobject), its pixel read (uint8, int64 and float arrays), and ``Camera.get_image`` / ``Mobject.get_image``.
"""
from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from renderers import ffmpeg
from renderers.manim_compat import _CompatImage, fromarray, pillow_refuses_cast
from tests.integration.test_kodisc_api import poll
from tests.integration.test_manim_renderer import Run, assert_video, render

W, H, FPS = 160, 90, 10
IMAGE_HEIGHT = 4  # units of the 8-unit frame: the image covers the middle half of the picture's height


def image_png(run: Run) -> np.ndarray:
    path = run.workdir / run.outputs["files"]["image"]
    with Image.open(path) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (W, H))
        return np.asarray(image).astype(int)


def last_video_frame(run: Run, tmp_path: Path) -> np.ndarray:
    ffmpeg.extract_last_frame(run.workdir / run.outputs["files"]["video"], tmp_path / "last.png")
    with Image.open(tmp_path / "last.png") as image:
        return np.asarray(image.convert("RGB")).astype(int)


def cell_colors(pixels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The colours at the centres of a rows x cols image drawn IMAGE_HEIGHT units high in the frame's middle."""
    cell = H * IMAGE_HEIGHT / 8 / rows  # pixels per image pixel
    top, left = H / 2 - rows * cell / 2, W / 2 - cols * cell / 2
    return np.array([[pixels[int(top + (r + 0.5) * cell), int(left + (c + 0.5) * cell)] for c in range(cols)]
                     for r in range(rows)])


def image_scene(array_code: str, setup: str = "") -> str:
    return f"""
        from manim import *
        import numpy as np

        class Demo(Scene):
            def construct(self):
{setup}
                image = ImageMobject({array_code})
                image.set_resampling_algorithm(RESAMPLING_ALGORITHMS["nearest"])
                image.height = {IMAGE_HEIGHT}
                self.add(image)
                self.wait(0.2)
        """


# -- stills --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_still_scene_is_its_final_frame_for_a_second(tmp_path: Path) -> None:
    run = render(tmp_path, """
        from manim import *

        class Demo(Scene):
            def construct(self):
                self.add(Square(side_length=4, color=RED, fill_opacity=1, stroke_width=0))
                self.add(Dot(color=BLUE, radius=0.5))
        """, width=W, height=H, fps=FPS)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.outputs["files"] == {"video": "video.mp4", "thumbnail": "thumb.jpg", "captions": "captions.vtt",
                                    "image": "image.png"}
    assert_video(run, width=W, height=H, fps=FPS, frames=FPS)  # 1 s: Manim's default wait
    pixels = image_png(run)
    assert tuple(pixels[H // 2, W // 2]) == (0x58, 0xC4, 0xDD)  # BLUE, exactly: the PNG is lossless
    assert tuple(pixels[H // 2, W // 2 - 15]) == (0xFC, 0x62, 0x55)  # RED around it
    assert tuple(pixels[2, 2]) == (0, 0, 0)
    video = last_video_frame(run, tmp_path)
    assert np.abs(video - pixels).mean() < 3  # the video holds the same frame (lossy)
    with Image.open(run.workdir / "thumb.jpg") as thumb:
        assert thumb.format == "JPEG" and thumb.size == (W, H)
    logs = [m["text"] for m in run.messages if m["type"] == "log"]
    assert logs == []  # no animation to report


@pytest.mark.slow
def test_an_animated_scene_also_gets_its_last_frame_lossless(tmp_path: Path) -> None:
    run = render(tmp_path, """
        from manim import *

        class Demo(Scene):
            def construct(self):
                square = Square(side_length=2, color=GREEN, fill_opacity=1, stroke_width=0)
                self.play(square.animate.shift(LEFT * 3), run_time=0.5)
        """, width=W, height=H, fps=FPS)
    assert_video(run, width=W, height=H, fps=FPS, frames=5)
    pixels = image_png(run)
    x = W // 2 - int(3 * H / 8)  # 3 units left of the centre
    assert tuple(pixels[H // 2, x]) == (0x83, 0xC1, 0x67)  # GREEN where the square ended
    assert tuple(pixels[H // 2, W // 2 + 10]) == (0, 0, 0)
    assert np.abs(last_video_frame(run, tmp_path) - pixels).mean() < 3


# -- ImageMobject under Pillow 13 --------------------------------------------------------------------

DOC_ARRAY = [[0, 100, 30, 200], [255, 0, 5, 33]]  # Manim's own ImageMobject example


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["np.uint8", "np.int64", "np.float64"])
def test_image_mobject_from_an_array(tmp_path: Path, dtype: str) -> None:
    """uint8: the canvas call only; int64 and float: the pixel read too (ImageMobject keeps their dtype)."""
    run = render(tmp_path, image_scene(f"np.array({DOC_ARRAY}, dtype={dtype})"), width=W, height=H, fps=FPS)
    assert run.returncode == 0, run.last
    colors = cell_colors(image_png(run), 2, 4)
    assert (colors == np.array(DOC_ARRAY)[:, :, None]).all(), colors  # grey levels, exact


FILE_SCENE = """from manim import *
import numpy as np
from PIL import Image as PILImage

class Made(Scene):
    def construct(self):
        pixels = np.zeros((2, 3, 3), dtype=np.uint8)
        pixels[0] = (255, 0, 0)
        pixels[1] = (0, 0, 255)
        PILImage.fromarray(pixels).save("made_here.png")  # the task's working directory
        image = ImageMobject("made_here").set_resampling_algorithm(RESAMPLING_ALGORITHMS["nearest"])
        image.height = 4
        self.add(image)
"""
STILL_SCENE = """from manim import *

class Plain(Scene):
    def construct(self):
        self.add(Circle(radius=3, color=WHITE, fill_opacity=1))
"""


@pytest.fixture
def kodisc(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "2"})
    server.cli("users", "create", "ada", "--credits", "100")
    server.auth = {"Authorization": f"Bearer {server.new_key('ada', 'kodisc')['key']}"}
    return server


@pytest.mark.slow
def test_kodisc_still_and_an_image_file_the_scene_writes(kodisc, tmp_path: Path) -> None:
    """Through the API, on the real sandboxed worker (its working directory is the task's workdir, Manim's
    assets_dir): a still completes with a 1 s video and result.image; ImageMobject finds the file the scene
    wrote ("made_here" -> made_here.png)."""
    jobs = {name: submit(kodisc, code, cls) for name, code, cls in
            (("file", FILE_SCENE, "Made"), ("still", STILL_SCENE, "Plain"))}
    for name, job_id in jobs.items():
        job = poll(kodisc, job_id, kodisc.auth)
        assert job["status"] == "completed", job
        assert list(job["result"]) == ["video", "thumbnail", "captions", "image"]
        assert job["result"]["image"] == f"{kodisc.url}/r/{job_id}/image.png" and job["creditsCost"] >= 1
        response = httpx.get(job["result"]["image"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        (tmp_path / f"{name}.png").write_bytes(response.content)
        (tmp_path / f"{name}.mp4").write_bytes(httpx.get(job["result"]["video"]).content)
        stream = ffmpeg.video_stream(ffmpeg.probe(tmp_path / f"{name}.mp4"))
        assert (stream["width"], stream["height"], stream["r_frame_rate"]) == (854, 480, "15/1")
        assert int(stream["nb_read_frames"]) == 15  # a still's second, like self.wait()
        with Image.open(tmp_path / f"{name}.png") as image:
            assert (image.format, image.size) == ("PNG", (854, 480))
            jobs[name] = np.asarray(image.convert("RGB")).astype(int)
    made = jobs["file"]
    assert tuple(made[240 - 60, 427]) == (255, 0, 0) and tuple(made[240 + 60, 427]) == (0, 0, 255)
    assert tuple(jobs["still"][240, 427]) == (255, 255, 255) and tuple(jobs["still"][5, 5]) == (0, 0, 0)


def submit(server, code: str, class_name: str) -> str:
    body = {"code": code, "className": class_name, "quality": "low", "fps": 15, "aspectRatio": "16:9"}
    response = httpx.post(f"{server.url}/api/v2/render", json=body, headers=server.auth)
    assert response.status_code == 202, response.text
    return response.json()["jobId"]


@pytest.mark.slow
def test_camera_get_image_and_an_image_of_it(tmp_path: Path) -> None:
    """Camera.get_image: the frame so far as a PIL image (from the camera's array, and from a float copy of it),
    shown again as an ImageMobject (the camera's fromarray calls: get_image, the canvas, the pixel read).
    (Mobject.get_image() itself fails in Manim 0.22, with or without the shim: NameError, Camera is imported
    only for type checking in mobject.py.)"""
    run = render(tmp_path, """
        from manim import *
        import numpy as np

        class Demo(Scene):
            def construct(self):
                self.add(Square(side_length=8, color=YELLOW, fill_opacity=1, stroke_width=0))
                self.camera.capture_mobjects(self.mobjects)
                shot = self.camera.get_image()
                assert shot.mode == "RGBA" and shot.size == (160, 90), (shot.mode, shot.size)
                again = self.camera.get_image(np.asarray(shot, dtype=np.float64))  # a float array: the shim's
                assert np.array_equal(np.asarray(again), np.asarray(shot))          # cast, as before Pillow 13
                self.clear()
                copy = ImageMobject(np.array(shot)).scale_to_fit_height(2)
                self.add(copy)
                self.wait(0.2)
        """, width=W, height=H, fps=FPS)
    assert run.returncode == 0, run.last
    pixels = image_png(run)
    assert tuple(pixels[H // 2, W // 2]) == (0xF7, 0xD9, 0x6F)  # YELLOW: the middle of the captured square
    assert tuple(pixels[2, 2]) == (0, 0, 0)


# -- the shim itself -----------------------------------------------------------------------------

def test_shim_is_still_needed() -> None:
    """Fails once Manim no longer passes mode= to Image.fromarray, or Pillow accepts it again: then remove
    renderers/manim_compat.py's Pillow shim (see its docstring)."""
    import inspect

    import manim.camera.camera as camera_module

    source = inspect.getsource(camera_module.Camera.display_image_mobject)
    assert 'mode="RGBA"' in source and pillow_refuses_cast()


def test_fromarray_keeps_pillows_answers_and_fills_in_its_refusals() -> None:
    rgba = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert (np.asarray(fromarray(rgba, mode="RGBA")) == rgba).all()  # what Pillow accepts is Pillow's
    blank = fromarray(np.zeros((5, 7)), mode="RGBA")  # Manim's canvas
    assert (blank.mode, blank.size) == ("RGBA", (7, 5)) and not np.asarray(blank).any()
    grey = fromarray(np.array([[0, 300], [-4, 127.6]]), mode="RGBA")  # clipped to 0..255, rounded
    assert np.asarray(grey)[:, :, 0].tolist() == [[0, 255], [0, 128]] and (np.asarray(grey)[:, :, 3] == 255).all()
    rgb = fromarray(rgba[:, :, :3], mode="RGBA")
    assert rgb.mode == "RGBA" and (np.asarray(rgb)[:, :, :3] == rgba[:, :, :3]).all()
    with pytest.raises(TypeError):
        fromarray(np.zeros((2, 2, 7), dtype=np.uint8))  # no mode asked: Pillow's own refusal stands


def test_only_manims_camera_sees_the_shim() -> None:
    import subprocess
    import sys

    code = ("import PIL.Image, manim.camera.camera as c; from renderers import manim_compat; "
            "manim_compat.apply(); manim_compat.apply(); "
            "print(type(c.Image).__name__, c.Image.Transform is PIL.Image.Transform, "
            "PIL.Image.fromarray.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out == [_CompatImage.__name__, "True", "PIL.Image"]
