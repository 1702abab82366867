"""Piece reuse in the Manim renderer (renderers/manim_segments.py), run for real: each render is a fresh
``python -m renderers manim`` process, given an earlier render's video and piece index as the scheduler would
stage them. Wrong reuse is worse than none: every input that decides pixels is changed in turn, and the pieces
it affects must be drawn again — and the video must decode to the same frames as a render with no reuse."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCENE = """\
import os
import random
from manim import *
from PIL import Image as Picture

SHIFT = {shift}

class Demo(Scene):
    def construct(self):
        title = Text("Reuse", font={font!r}).to_edge(UP)
        self.play(FadeIn(title))                                  # 0: the font
        square = Square(color={color})
        self.play(Create(square))                                 # 1: the animation's own code
        note = Text({note!r}).to_edge(DOWN)
        self.play(FadeIn(note), rate_func=there_and_back)         # 2: a temporary text
        self.remove(note)
        self.play(square.animate.shift(RIGHT * SHIFT))            # 3: a module constant used from here on
        random.seed({seed})
        dot = Dot(point=[random.uniform(-3, 3), -2, 0])
        self.play(FadeIn(dot))                                    # 4: a random seed
        path = os.path.join(config.media_dir, "asset.png")
        Picture.new("RGB", (8, 8), {pixel}).save(path)            # the scene writes an image, then reads it
        self.play(FadeIn(ImageMobject(path).scale(3)))            # 5: an asset's bytes
        self.wait(0.5)                                            # 6: a static wait
"""
BASE = {"shift": 1, "font": "DejaVu Sans", "color": "BLUE", "note": "temporary", "seed": 3,
        "pixel": (200, 40, 40)}
FRAME = {"width": 256, "height": 144, "fps": 10}


def scene(**changes: object) -> str:
    return SCENE.format(**{**BASE, **changes})


def render(folder: Path, code: str, *, reuse: list[Path] = (), patch: str = "", stills: bool = False,
           **frame: int) -> dict:
    """Render in a fresh process; ``reuse``: earlier render folders whose video and pieces are staged; ``stills``:
    and their image.png and thumb.jpg where exact, as the pipeline stages them."""
    work = folder / "work"
    (work / "tmp").mkdir(parents=True)
    task: dict = {"code": code, "className": "Demo", **{**FRAME, **frame}}
    sources = []
    for index, earlier in enumerate(reuse):
        shutil.copy(earlier / "work" / "video.mp4", work / f"reuse_{index}.mp4")
        sources.append({"video": f"reuse_{index}.mp4", "pieces": result(earlier)["pieces"]})
        if stills and result(earlier)["lastFrameExact"]:
            shutil.copy(earlier / "work" / "image.png", work / f"reuse_{index}.png")
            shutil.copy(earlier / "work" / "thumb.jpg", work / f"reuse_{index}.jpg")
            sources[-1].update(image=f"reuse_{index}.png", thumbnail=f"reuse_{index}.jpg")
    if sources:
        task["reuse"] = {"sources": sources}
    (folder / "input.json").write_text(json.dumps(task))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(work), "TMPDIR": str(work / "tmp"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    program = f"import sys\n{patch}\nfrom renderers.__main__ import main\nsys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", program, "manim", "input.json", "work"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["type"] == "result", f"{last}\n{proc.stderr[-3000:]}"
    (folder / "result.json").write_text(json.dumps(last["outputs"]))
    return last["outputs"]


def result(folder: Path) -> dict:
    return json.loads((folder / "result.json").read_text())


def drawn(folder: Path, earlier: Path) -> list[int]:
    """The pieces this render drew: those whose address the earlier render had not (it copied the others)."""
    known = {piece[0] for piece in result(earlier)["pieces"]}
    pieces = result(folder)["pieces"]
    assert result(folder)["reuse"]["reusedPieces"] == sum(piece[0] in known for piece in pieces)
    return [i for i, piece in enumerate(pieces) if piece[0] not in known]


def frames(video: Path) -> list[np.ndarray]:
    import av

    with av.open(str(video)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


MIN_PSNR = 40.0  # dB, every frame: what copying an earlier encode of the same frames may cost


def assert_same_pictures(a: Path, b: Path, *, exact: bool = True) -> None:
    """Decoded frame for frame, the last frame lossless: a render with reuse is the render without it. ``exact``:
    bit for bit (the same pieces, encoded after the same frames); else within MIN_PSNR, as a copied piece after
    an edited one was encoded after other frames (x264's rate control remembers the frames before a piece)."""
    first, second = frames(a / "work" / "video.mp4"), frames(b / "work" / "video.mp4")
    assert len(first) == len(second)
    errors = [float(((x.astype(float) - y.astype(float)) ** 2).mean()) for x, y in zip(first, second, strict=True)]
    worst = max(errors)
    if exact:
        assert worst == 0.0, f"frames differ: mean squared error up to {worst:.3f}"
    else:
        assert worst == 0.0 or 10 * np.log10(255**2 / worst) >= MIN_PSNR, f"worst frame MSE {worst:.3f}"
    images = [np.asarray(Image.open(f / "work" / "image.png")) for f in (a, b)]
    assert np.array_equal(*images)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("base")
    outputs = render(folder, scene())
    assert outputs["reuse"] == {"pieces": 7, "reusedPieces": 0, "secondsSaved": 0.0}
    assert [n for _, n, _ in outputs["pieces"]] == [10, 10, 10, 10, 10, 10, 5]
    assert outputs["meta"]["frames"] == 65
    return folder


def test_the_same_scene_again_draws_nothing_and_gives_the_same_video(base: Path, tmp_path: Path) -> None:
    outputs = render(tmp_path, scene(), reuse=[base])
    assert outputs["reuse"]["pieces"] == outputs["reuse"]["reusedPieces"] == 7
    assert outputs["reuse"]["secondsSaved"] > 0
    assert [p[0] for p in outputs["pieces"]] == [p[0] for p in result(base)["pieces"]]
    assert_same_pictures(tmp_path, base)


def test_an_edited_temporary_text_redraws_only_its_animation(base: Path, tmp_path: Path) -> None:
    edited, fresh = tmp_path / "edited", tmp_path / "fresh"
    edited.mkdir()
    fresh.mkdir()
    outputs = render(edited, scene(note="changed"), reuse=[base])
    assert drawn(edited, base) == [2]
    assert outputs["reuse"]["reusedPieces"] == 6
    render(fresh, scene(note="changed"))
    assert_same_pictures(edited, fresh, exact=False)


# every input that decides pixels, and the first animation it touches (from there on, all are drawn)
CHANGES = {
    "font": ({"font": "DejaVu Serif"}, 0),
    "animation code": ({"color": "GREEN"}, 1),
    "constant used later": ({"shift": 2}, 3),
    "random seed": ({"seed": 4}, 4),
    "asset bytes": ({"pixel": (200, 40, 41)}, 5),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_each_input_that_decides_pixels_redraws_what_it_touches(base: Path, tmp_path: Path, name: str) -> None:
    changes, first = CHANGES[name]
    render(tmp_path, scene(**changes), reuse=[base])
    assert drawn(tmp_path, base) == list(range(first, 7))


@pytest.mark.parametrize("frame", [{"width": 320, "height": 180}, {"fps": 15}], ids=["quality", "fps"])
def test_another_frame_size_or_rate_reuses_nothing(base: Path, tmp_path: Path, frame: dict) -> None:
    outputs = render(tmp_path, scene(), reuse=[base], **frame)
    assert outputs["reuse"]["reusedPieces"] == 0


def test_another_library_version_reuses_nothing(base: Path, tmp_path: Path) -> None:
    patch = ("import types, renderers.manim_address as m\n"
             "m.metadata = types.SimpleNamespace(version=lambda name: '0.0.0-other')")
    outputs = render(tmp_path, scene(), reuse=[base], patch=patch)
    assert outputs["reuse"]["reusedPieces"] == 0


def test_a_forged_or_missing_source_is_drawn_again(base: Path, tmp_path: Path) -> None:
    """An index whose frame counts do not match, or a video that is not there, is ignored: drawn, not failed."""
    work = tmp_path / "work"
    (work / "tmp").mkdir(parents=True)
    shutil.copy(base / "work" / "video.mp4", work / "reuse_0.mp4")
    pieces = [[h, n + 1, ms] for h, n, ms in result(base)["pieces"]]
    task = {"code": scene(), "className": "Demo", **FRAME,
            "reuse": {"sources": [{"video": "reuse_0.mp4", "pieces": pieces},
                                  {"video": "../missing.mp4", "pieces": result(base)["pieces"]}]}}
    (tmp_path / "input.json").write_text(json.dumps(task))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(work), "TMPDIR": str(work / "tmp")}
    proc = subprocess.run([sys.executable, "-m", "renderers", "manim", "input.json", "work"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["outputs"]["reuse"]["reusedPieces"] == 0


UPDATER = """\
from manim import *

class Demo(Scene):
    def construct(self):
        dot = Dot(LEFT * 3)
        dot.add_updater(lambda m, dt: m.shift(RIGHT * dt))   # per-frame state: stepped, never fast-forwarded
        self.add(dot)
        self.play(Create(Square()))
        note = Text({note!r}).to_edge(DOWN)
        self.play(FadeIn(note), rate_func=there_and_back)
        self.remove(note)
        self.play(Create(Circle()), run_time=0.75)
        self.wait(0.5)
"""


def test_a_scene_with_updaters_is_stepped_frame_by_frame(tmp_path: Path) -> None:
    """An updater moves the dot by each frame's dt: a copied animation must leave it where drawing would."""
    first, edited, fresh = (tmp_path / name for name in ("first", "edited", "fresh"))
    for folder in (first, edited, fresh):
        folder.mkdir()
    render(first, UPDATER.format(note="one"))
    outputs = render(edited, UPDATER.format(note="two"), reuse=[first])
    assert drawn(edited, first) == [1]
    assert outputs["reuse"]["reusedPieces"] == 3
    render(fresh, UPDATER.format(note="two"))
    assert_same_pictures(edited, fresh, exact=False)


SHORT = """\
from manim import *

class Demo(Scene):
    def construct(self):
        self.play(FadeIn(Dot()), run_time=1 / 15)  # one frame: x264 reorders nothing in it
        self.pause(0.3)
        self.play(Create(Line(LEFT, RIGHT)), run_time=0.27)  # three frames, reordered
"""


def test_pieces_of_one_or_a_few_frames_join_and_are_reused(tmp_path: Path) -> None:
    """Pieces whose B-frame delays differ (none in a one-frame piece) are joined with decoding times that keep
    increasing, and copied the same way."""
    first, again = tmp_path / "first", tmp_path / "again"
    first.mkdir()
    again.mkdir()
    outputs = render(first, SHORT)
    assert [n for _, n, _ in outputs["pieces"]] == [1, 2, 3] and outputs["meta"]["frames"] == 6
    assert render(again, SHORT, reuse=[first])["reuse"]["reusedPieces"] == 3
    assert_same_pictures(again, first)
    assert len(frames(first / "work" / "video.mp4")) == 6
