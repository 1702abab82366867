"""An SVG glyph's parsed path is shared by a mobject's copies, not copied with them, and hashed once.

Every glyph of a ``Text``, ``MarkupText``, ``Tex`` or ``SVGMobject`` is a ``VMobjectFromSVGPath`` that keeps the
svgelements ``Path`` it was built from (``path_obj``: a few hundred small segment and point objects). Manim reads
it once, in ``__init__`` (``generate_points``), to make the glyph's points; nothing reads it again (Manim 0.22:
``generate_points`` of an SVG path is called only from ``Mobject.__init__``). Yet ``Mobject.copy()`` deep-copies it
with the glyph — a ``FadeIn`` or ``Transform`` of a caption copies the caption two or three times — and every piece
address (renderers/manim_address.py) pickled it again for each animation while the text was on screen. In the reuse
bench's edited render (20 animations, 10 texts) those copies took ~0.17 s and the addresses ~0.06 s of ~0.9 s.

``apply()`` makes each glyph's path a ``SharedPath``: the same object, whose ``deepcopy`` is itself (a copy of the
glyph shares it, as it would share a module or a class), and which the address pickles as a digest of its contents
taken the first time it is hashed (``digest``). The points, which are what is drawn, are copied and hashed as
before; the pixels do not change. What a scene could notice: ``copy.path_obj is original.path_obj``, so an in-place
change to one glyph's parsed path shows in its copies' (it changes no pixels: the points were made at ``__init__``);
and a path changed in place after it was first hashed keeps its first digest, which matters only to a scene that
makes points from it again in an updater — and those points are hashed in the next animation's address anyway.
"""
from __future__ import annotations

import hashlib
import pickle
from typing import Any

import svgelements as se

_applied = False
DIGEST = "_piece_digest"  # where a SharedPath keeps its digest: on itself, so it goes with the path


class SharedPath(se.Path):
    """A glyph's parsed SVG path that copies of the glyph share (see the module)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedPath:
        return self


def digest(path: SharedPath) -> bytes:
    """SHA-256 of the path's pickled contents (segments and attributes), computed once per path."""
    known = path.__dict__.get(DIGEST)
    if not isinstance(known, bytes):
        known = hashlib.sha256(pickle.dumps(_plain(path), protocol=5)).digest()
        path.__dict__[DIGEST] = known
    return known


def _plain(path: SharedPath) -> se.Path:
    """The path as the svgelements class (what it pickled as before): its segments and attributes, not copied."""
    plain = se.Path.__new__(se.Path)
    plain.__dict__.update({k: v for k, v in path.__dict__.items() if k != DIGEST})
    return plain


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
