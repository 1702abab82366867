"""An edited render whose drawn pieces are separated by copied ones (renderers/manim_encoder.py): each stretch of
drawn pieces is a run of its own encoder, drained while the copied animations are stepped. The runs join into
one video that decodes as a render without reuse does, the live stream is that video frame for frame, and
nothing of the runs is left behind."""
from __future__ import annotations

from pathlib import Path

from tests.integration.test_manim_live import frame_hashes, live_video
from tests.integration.test_manim_reuse import assert_same_pictures, drawn, render

NOTES = """\
from manim import *

class Demo(Scene):
    def construct(self):
        square = Square(color=BLUE)
        self.play(Create(square))                                   # 0: copied
        first = Text({first!r}).to_edge(DOWN)
        self.play(FadeIn(first), rate_func=there_and_back)          # 1: edited, drawn (run 0)
        self.remove(first)
        self.play(square.animate.shift(LEFT))                       # 2: copied: run 0 ends
        second = Text({second!r}).to_edge(UP)
        self.play(FadeIn(second), rate_func=there_and_back)         # 3: edited, drawn (run 1)
        self.remove(second)
        self.play(square.animate.shift(RIGHT), run_time=0.5)        # 4: copied: run 1 ends
        self.wait(0.3)                                              # 5: copied, the last piece
"""


def test_drawn_pieces_between_copied_ones_join_as_a_render_without_reuse(tmp_path: Path) -> None:
    first, edited, fresh = (tmp_path / name for name in ("first", "edited", "fresh"))
    for folder in (first, edited, fresh):
        folder.mkdir()
    render(first, NOTES.format(first="one", second="two"))
    outputs = render(edited, NOTES.format(first="three", second="four"), reuse=[first])
    assert drawn(edited, first) == [1, 3]
    assert outputs["reuse"]["reusedPieces"] == 4
    assert outputs["meta"]["frames"] == sum(n for _, n, _ in outputs["pieces"]) == 10 + 10 + 10 + 10 + 5 + 2
    render(fresh, NOTES.format(first="three", second="four"))
    assert_same_pictures(edited, fresh, exact=False)
    index, joined = live_video(edited)
    assert index["done"] and index["failed"] is None
    assert [s["reused"] for s in index["segments"]] == [True, False, True, False, True, True]
    assert frame_hashes(joined) == frame_hashes(edited / "work" / "video.mp4")
    assert not (edited / "work" / "pieces").exists()  # every run's file went with the pieces folder


def test_a_render_that_ends_on_drawn_pieces_after_copied_ones(tmp_path: Path) -> None:
    """Copied, drawn, copied, drawn to the end: the last run is drained at the scene's end, as a render
    without reuse is."""
    first, edited, fresh = (tmp_path / name for name in ("first", "edited", "fresh"))
    for folder in (first, edited, fresh):
        folder.mkdir()
    last = NOTES.splitlines()[-1] + "\n"
    code = NOTES.replace(last, "        self.play(FadeIn(Text({last!r})), run_time=0.3)\n")
    render(first, code.format(first="one", second="two", last="end"))
    outputs = render(edited, code.format(first="three", second="two", last="END"), reuse=[first])
    assert drawn(edited, first) == [1, 5]
    render(fresh, code.format(first="three", second="two", last="END"))
    assert_same_pictures(edited, fresh, exact=False)
    index, joined = live_video(edited)
    assert index["done"] and index["failed"] is None
    assert frame_hashes(joined) == frame_hashes(edited / "work" / "video.mp4")
    assert outputs["meta"]["frames"] == len(frame_hashes(joined))


def test_an_encoder_without_runs_keeps_one_stream(tmp_path: Path) -> None:
    """Runs are for libx264 only: with another encoder (an NVENC session, here libx264 under another name) the
    copied pieces go between drawn ones of one encoder, as before, and the video is the same."""
    first, edited, fresh = (tmp_path / name for name in ("first", "edited", "fresh"))
    for folder in (first, edited, fresh):
        folder.mkdir()
    render(first, NOTES.format(first="one", second="two"))
    patch = "import renderers.manim_encoder as encoder\nencoder.X264 = 'not this one'"
    render(edited, NOTES.format(first="three", second="four"), reuse=[first], patch=patch)
    assert drawn(edited, first) == [1, 3]
    render(fresh, NOTES.format(first="three", second="four"))
    assert_same_pictures(edited, fresh, exact=False)
    index, joined = live_video(edited)
    assert index["done"] and index["failed"] is None
    assert frame_hashes(joined) == frame_hashes(edited / "work" / "video.mp4")
