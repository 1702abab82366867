"""The Manim renderer, run for real: each render is a fresh ``python -m renderers manim`` process."""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from renderers import ffmpeg
from renderers.manim_scene import describe_error, to_vtt, vtt_time

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    returncode: int
    messages: list[dict]
    workdir: Path
    stderr: str

    @property
    def last(self) -> dict:
        return self.messages[-1]

    @property
    def outputs(self) -> dict:
        assert self.last["type"] == "result", f"{self.last}\n{self.stderr[-3000:]}"
        return self.last["outputs"]


def render(tmp_path: Path, code: str, *, width: int = 256, height: int = 144, fps: int = 10,
           class_name: str = "Demo") -> Run:
    """Run the renderer as the worker would: its own process, HOME and TMPDIR inside the task dir."""
    workdir = tmp_path / "work"
    (workdir / "tmp").mkdir(parents=True)
    task = {"code": textwrap.dedent(code), "className": class_name, "width": width,
            "height": height, "fps": fps}
    (tmp_path / "input.json").write_text(json.dumps(task))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(workdir), "TMPDIR": str(workdir / "tmp")}
    proc = subprocess.run([sys.executable, "-m", "renderers", "manim", "input.json", "work"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    messages = [json.loads(line) for line in proc.stdout.splitlines()]
    return Run(proc.returncode, messages, workdir, proc.stderr)


def assert_video(run: Run, *, width: int, height: int, fps: int, frames: int) -> None:
    video = run.workdir / run.outputs["files"]["video"]
    stream = ffmpeg.video_stream(ffmpeg.probe(video))
    assert (stream["codec_name"], stream["pix_fmt"]) == ("h264", "yuv420p")
    assert (stream["width"], stream["height"]) == (width, height)
    assert stream["r_frame_rate"] == f"{fps}/1"
    assert int(stream["nb_read_frames"]) == frames
    data = video.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "moov atom must come first (+faststart)"
    meta = run.outputs["meta"]
    assert meta == {"duration": pytest.approx(frames / fps, abs=0.01), "frames": frames,
                    "width": width, "height": height, "fps": fps}


def thumbnail(run: Run) -> Image.Image:
    image = Image.open(run.workdir / run.outputs["files"]["thumbnail"])
    image.load()
    assert image.format == "JPEG"
    return image


def bright_bbox(image: Image.Image) -> tuple[int, int, int, int] | None:
    return image.convert("L").point(lambda v: 255 if v > 128 else 0).getbbox()


# -- successful renders --------------------------------------------------------------------------

@pytest.mark.slow
def test_text_and_shapes(tmp_path: Path) -> None:
    run = render(tmp_path, """
        from manim import *

        class Demo(Scene):
            def construct(self):
                print("user output must not reach the message stream")
                self.play(Write(Text("Hello", color=WHITE)), run_time=0.5)
                self.play(Create(Square(color=BLUE)), FadeIn(Circle(fill_opacity=1)), run_time=0.5)
        """)
    assert run.returncode == 0
    assert run.outputs["files"] == {"video": "video.mp4", "thumbnail": "thumb.jpg",
                                    "captions": "captions.vtt", "image": "image.png"}
    assert_video(run, width=256, height=144, fps=10, frames=10)
    image = thumbnail(run)
    assert image.size == (256, 144)
    assert bright_bbox(image) is not None, "the last frame shows the drawn shapes"
    assert (run.workdir / "captions.vtt").read_text() == "WEBVTT\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.json", "work"]


@pytest.mark.slow
def test_progress_and_logs(tmp_path: Path) -> None:
    run = render(tmp_path, """
        class Demo(Scene):
            def construct(self):
                self.play(FadeIn(Square()), run_time=0.5)
                self.wait(0.5)
        """, width=128, height=72)
    progress = [m for m in run.messages if m["type"] == "progress"]
    fractions = [m["fraction"] for m in progress]
    assert fractions == sorted(fractions) and len(fractions) > 3
    assert progress[0] == {"type": "progress", "fraction": 0.0, "phase": "rendering"}
    assert progress[-1] == {"type": "progress", "fraction": 1.0, "phase": "encoding"}
    assert any(m["phase"] == "rendering" and 0 < m["fraction"] < 1 for m in progress)
    logs = [m["text"] for m in run.messages if m["type"] == "log"]
    assert logs == ["animation 1: FadeIn (0.50s)", "animation 2: Wait (0.50s)"]


@pytest.mark.slow
def test_mathtex(tmp_path: Path) -> None:
    run = render(tmp_path, r"""
        from manim import *

        class Demo(Scene):
            def construct(self):
                self.play(FadeIn(MathTex(r"\int_0^1 x^2\,dx = \frac{1}{3}").scale(2)), run_time=0.5)
        """)
    assert run.returncode == 0, run.last
    assert_video(run, width=256, height=144, fps=10, frames=5)
    assert bright_bbox(thumbnail(run)) is not None


@pytest.mark.slow
def test_portrait_keeps_circles_round(tmp_path: Path) -> None:
    run = render(tmp_path, """
        from manim import *

        class Demo(Scene):
            def construct(self):
                self.add(Circle(radius=2, color=WHITE, fill_opacity=1, stroke_width=0))
                self.wait(0.2)
        """, width=144, height=256)
    assert_video(run, width=144, height=256, fps=10, frames=2)
    image = thumbnail(run)
    assert image.size == (144, 256)
    ffmpeg.extract_last_frame(run.workdir / "video.mp4", tmp_path / "last.png")
    for frame in (image, Image.open(tmp_path / "last.png")):
        left, top, right, bottom = bright_bbox(frame)
        # radius 2 of a frame 8 units high is a quarter of 256 px: 128 px across, both ways
        assert abs((right - left) - (bottom - top)) <= 3
        assert abs((bottom - top) - 128) <= 4


@pytest.mark.slow
def test_custom_fps(tmp_path: Path) -> None:
    run = render(tmp_path, """
        from manim import *

        class Demo(Scene):
            def construct(self):
                self.play(FadeIn(Dot()), run_time=0.5)
        """, width=128, height=72, fps=24)
    assert_video(run, width=128, height=72, fps=24, frames=12)


@pytest.mark.slow
def test_subcaptions_become_vtt_cues(tmp_path: Path) -> None:
    run = render(tmp_path, """
        from manim import *

        class Demo(Scene):
            def construct(self):
                self.wait(0.5)
                self.add_subcaption("Hello <world> & co", duration=0.5)
                self.play(FadeIn(Square()), run_time=1, subcaption="The square appears")
        """, width=128, height=72)
    assert_video(run, width=128, height=72, fps=10, frames=15)
    assert (run.workdir / "captions.vtt").read_text() == (
        "WEBVTT\n\n"
        "00:00:00.500 --> 00:00:01.000\nHello &lt;world&gt; &amp; co\n\n"
        "00:00:00.500 --> 00:00:01.500\nThe square appears\n"
    )


# -- failures: one readable line -----------------------------------------------------------------

FAILURES = {
    "syntax error": ("""\
        from manim import *

        class Demo(Scene)
            def construct(self):
                pass
        """, "Demo", "SyntaxError: expected ':' (scene line 3)"),
    "runtime exception": ("""\
        from manim import *

        class Demo(Scene):
            def construct(self):
                self.play(FadeIn(Dot()), run_time=0.2)
                n = 0
                self.wait(1 / n)
        """, "Demo", "ZeroDivisionError: division by zero (scene line 7)"),
    "exception inside an animation": ("""\
        from manim import *

        def explode(mobject, dt):
            raise ValueError("updater failed")

        class Demo(Scene):
            def construct(self):
                self.add(Dot().add_updater(explode))
                self.play(FadeIn(Square()), run_time=0.5)
        """, "Demo", "ValueError: updater failed (scene line 4)"),
    "exception in tear_down, after the last play": ("""\
        from manim import *

        class Demo(Scene):
            def construct(self):
                self.play(FadeIn(Dot()), run_time=0.5)

            def tear_down(self):
                raise RuntimeError("cleanup failed")
        """, "Demo", "RuntimeError: cleanup failed (scene line 8)"),
    "missing class": ("""\
        from manim import *

        class Other(Scene):
            pass
        """, "Demo", "Scene class 'Demo' not found in code"),
    "not a scene": ("""\
        class Demo:
            pass
        """, "Demo", "'Demo' is not a Scene subclass"),
    "every animation skipped": ("""\
        from manim import *

        class Demo(Scene):
            def construct(self):
                self.next_section(skip_animations=True)
                self.play(FadeIn(Dot()), run_time=0.5)
        """, "Demo", "Scene drew no frames: every animation it played was skipped "
        "(next_section(skip_animations=True)); the manim CLI writes no video for it either"),
    "latex error": (r"""
        from manim import *

        class Demo(Scene):
            def construct(self):
                self.add(MathTex(r"\frac{1}{\nosuchmacro}"))
                self.wait(0.2)
        """, "Demo", r"LaTeX error: Undefined control sequence. near '\nosuchmacro' (scene line 6)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", FAILURES)
def test_failures_are_one_readable_line(tmp_path: Path, case: str) -> None:
    code, class_name, message = FAILURES[case]
    run = render(tmp_path, code, width=64, height=36, class_name=class_name)
    assert run.returncode == 1
    assert run.last == {"type": "error", "message": message}
    assert not (run.workdir / "video.mp4").exists()


# -- pure helpers --------------------------------------------------------------------------------

def test_vtt_time_format() -> None:
    assert vtt_time(timedelta(seconds=0.9999999999)) == "00:00:01.000"
    assert vtt_time(timedelta(hours=1, minutes=2, seconds=3.0456)) == "01:02:03.046"
    assert vtt_time(timedelta(seconds=-0.5)) == "00:00:00.000"


def test_vtt_cues_are_sorted_and_cannot_break_the_file() -> None:
    @dataclass
    class Cue:
        start: timedelta
        end: timedelta
        content: str

    cues = [Cue(timedelta(seconds=2), timedelta(seconds=3), "b --> c\n\nd"),
            Cue(timedelta(seconds=0), timedelta(seconds=1), "a")]
    assert to_vtt(cues) == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\na\n\n"
                            "00:00:02.000 --> 00:00:03.000\nb -&gt; c\nd\n")


def test_network_failures_say_renders_have_no_network() -> None:
    """A fetch in a scene (e.g. manim_kodisc's WebImage) fails inside the sandbox with a resolver or connect error,
    wrapped by urllib3/requests; the message says what happened, not the wrapping."""
    def wrapped(cause: OSError) -> OSError:
        try:
            try:
                raise cause
            except OSError as exc:
                raise OSError("HTTPConnectionPool(host='x', port=80): Max retries exceeded") from exc
        except OSError as outer:
            return outer

    for cause in (socket.gaierror(-3, "Temporary failure in name resolution"),
                  OSError(errno.ENETUNREACH, "Network is unreachable")):
        message = describe_error(wrapped(cause))
        assert message.startswith("OSError: the scene tried to use the network, but renders have no network access")
    assert describe_error(OSError(errno.ENOENT, "No such file")) == "FileNotFoundError: [Errno 2] No such file"
    bare = OSError(errno.ENETUNREACH, "Network is unreachable")  # a scene's own socket call: already plain
    assert describe_error(bare) == "OSError: [Errno 101] Network is unreachable"


def test_frame_width_is_the_clis_for_its_presets_else_square_pixels() -> None:
    """854x480 (Kodisc's and Manim's "low") is 16:9 to Manim: the CLI keeps its frame 14.22 units wide there, so
    the same scene lands on the same pixels; other sizes get square pixels."""
    from renderers.manim_scene import frame_width

    assert frame_width(854, 480) == frame_width(1920, 1080) == 8 * 16 / 9
    assert frame_width(480, 854) == 8 * 9 / 16
    assert frame_width(1000, 1000) == 8.0 and frame_width(800, 480) == 8 * 800 / 480
