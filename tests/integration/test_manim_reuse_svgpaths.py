"""Glyph paths shared by copies (renderers/manim_svgpaths.py), with real Manim and Pango in this process: a text's
copies share each glyph's parsed path instead of copying it, the pixels are stock Manim's, and the piece address
still hashes each path's contents."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _frame(mobject: object) -> np.ndarray:
    from manim import Camera

    camera = Camera()
    camera.capture_mobject(mobject)
    return np.array(camera.pixel_array)


@pytest.fixture
def manim_config(tmp_path: Path):
    from manim import tempconfig

    from renderers import manim_svgpaths

    manim_svgpaths.apply()
    with tempconfig({"text_dir": str(tmp_path), "pixel_width": 320, "pixel_height": 180, "frame_rate": 10}):
        yield


def test_copies_share_glyph_paths_and_draw_what_stock_manim_draws(manim_config: None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from manim import Text
    from manim.mobject.svg.svg_mobject import VMobjectFromSVGPath

    from renderers.manim_svgpaths import SharedPath

    text = Text("Reuse", font="DejaVu Sans")
    copy = text.copy()
    glyphs = [(a, b) for a, b in zip(text.family_members_with_points(), copy.family_members_with_points(),
                                     strict=True)]
    assert glyphs and all(isinstance(a.path_obj, SharedPath) and b.path_obj is a.path_obj for a, b in glyphs)
    assert all(b.points is not a.points and np.array_equal(a.points, b.points) for a, b in glyphs)
    copy.shift(np.array([1.0, 0.0, 0.0]))  # the copy's points are its own
    assert not np.array_equal(glyphs[0][0].points, glyphs[0][1].points)

    with monkeypatch.context() as stock_manim:  # the same text built by Manim's own __init__
        stock_manim.setattr(VMobjectFromSVGPath, "__init__", VMobjectFromSVGPath.__init__.__wrapped__)
        stock = Text("Reuse", font="DejaVu Sans")
    stock_copy = stock.copy()
    assert type(stock.submobjects[0].path_obj) is not SharedPath
    assert stock_copy.submobjects[0].path_obj is not stock.submobjects[0].path_obj
    drawn = _frame(text)
    assert drawn[..., :3].any() and np.array_equal(_frame(stock), drawn)
    assert np.array_equal(_frame(stock_copy), _frame(text.copy()))


def test_the_address_follows_a_glyph_paths_contents(manim_config: None, tmp_path: Path) -> None:
    """Two builds of a text share an address; a path changed in place (no new points: what a scene could still
    draw from it in an updater) changes it, and so does another text."""
    from manim import Scene, Text

    from renderers.manim_address import address

    def scene_of(text: str) -> tuple[Scene, Text]:
        scene, mobject = Scene(), Text(text)
        scene.add(mobject)
        return scene, mobject

    (scene, text), (again, _), (other, _) = scene_of("ab"), scene_of("ab"), scene_of("ac")
    before = address(scene, "frame", tmp_path)
    assert before is not None and before == address(again, "frame", tmp_path) != address(other, "frame", tmp_path)
    text.submobjects[0].path_obj *= "translate(1, 0)"  # in place: shared by its copies, the points as they were
    assert address(scene, "frame", tmp_path) != before
