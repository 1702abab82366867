"""What every render pays before its first animation (an edited re-render pays little else): Manim's config is
set without the renderer setter's class conversion where the renderer is already Cairo, yet scene code that
switched to OpenGL at module level is switched back, classes and all (renderers/manim_scene.py)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def manim_config():
    from manim import tempconfig

    with tempconfig({}):
        yield


def test_configure_keeps_cairo_and_switches_back_from_opengl(manim_config: None, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from manim import Square, VMobject, config
    from manim.constants import RendererType
    from manim.mobject.opengl.opengl_compatibility import ConvertToOpenGL
    from manim.mobject.opengl.opengl_vectorized_mobject import OpenGLVMobject

    from renderers import manim_scene

    task = {"width": 320, "height": 180, "fps": 10}
    converted = []
    monkeypatch.setattr(ConvertToOpenGL, "_converted_classes", _Watched(ConvertToOpenGL._converted_classes,
                                                                         converted))
    manim_scene._configure(task, tmp_path)  # already Cairo: no class is converted
    assert config.renderer == RendererType.CAIRO and converted == []
    assert (config.pixel_width, config.pixel_height, config.frame_rate) == (320, 180, 10)

    config.renderer = "opengl"  # what a scene's module-level code may do
    assert OpenGLVMobject in Square.__mro__
    manim_scene._configure(task, tmp_path)
    assert config.renderer == RendererType.CAIRO and converted
    assert VMobject in Square.__mro__ and OpenGLVMobject not in Square.__mro__


class _Watched(list):
    """Manim's list of converted classes, noting each walk over it (the renderer setter's conversion)."""

    def __init__(self, classes: list, walks: list) -> None:
        super().__init__(classes)
        self.walks = walks

    def __iter__(self):
        self.walks.append(True)
        return super().__iter__()
