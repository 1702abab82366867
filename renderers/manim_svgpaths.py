"""An SVG glyph's parsed path is shared by the glyph's copies, not copied with them.

Every glyph of a ``Text``, ``MarkupText``, ``Tex`` or ``SVGMobject`` is a ``VMobjectFromSVGPath`` that keeps the
svgelements ``Path`` it was built from (``path_obj``: a few hundred small segment and point objects). Manim reads
it once, in ``__init__`` (``generate_points``), to make the glyph's points; nothing reads it again (Manim 0.22:
``generate_points`` of an SVG path is called only from ``Mobject.__init__``). Yet ``Mobject.copy()`` deep-copies it
with the glyph — a ``FadeIn`` or ``Transform`` of a caption copies the caption two or three times — and every piece
address (renderers/manim_address.py) pickled it again for each animation while the text was on screen. In the reuse
bench's edited render (20 animations, 10 texts) those copies took ~0.17 s and the addresses ~0.06 s of ~0.9 s.

``apply()`` makes each glyph's path a ``SharedPath``: the same object, whose ``deepcopy`` is itself (a copy of the
glyph shares it, as it would share a module or a class). An address (renderers/manim_address.py) still pickles
each path's contents, but once, however many copies of the glyph the state holds (the pickler's memo), where it
pickled a deep copy per copy. The points, which are what is drawn, are copied and hashed as before; the pixels do
not change. What a scene could notice: ``copy.path_obj is original.path_obj``, so an in-place change to one glyph's
parsed path shows in its copies' (it changes no pixels: the points were made at ``__init__``).
"""
from __future__ import annotations

from typing import Any

import svgelements as se

_applied = False


class SharedPath(se.Path):
    """A glyph's parsed SVG path that copies of the glyph share (see the module)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedPath:
        return self


def apply() -> None:
    """Make every SVG path mobject built from here on keep a SharedPath; idempotent. Called before a scene's code
    runs (``manim_scene.load_scene_class``), in the task's own process: the worker zygote's Manim stays unpatched."""
    global _applied
    if _applied:
        return
    _applied = True
    from manim.mobject.svg.svg_mobject import VMobjectFromSVGPath

    original = VMobjectFromSVGPath.__init__

    def __init__(self: Any, path_obj: se.Path, *args: Any, **kwargs: Any) -> None:
        original(self, path_obj, *args, **kwargs)
        if type(self.path_obj) is se.Path:  # a subclass of its own is left as it is
            self.path_obj.__class__ = SharedPath

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    VMobjectFromSVGPath.__init__ = __init__  # type: ignore[method-assign]
