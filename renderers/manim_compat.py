"""Compatibility shims between the installed Manim and its dependencies, applied before a scene's code runs.

``pillow_fromarray_mode`` — Manim 0.22's Cairo camera calls ``PIL.Image.fromarray(array, mode=...)`` in three
places (``manim/camera/camera.py``):

- ``Camera.display_image_mobject`` makes its canvas with ``Image.fromarray(np.zeros((h, w)), mode="RGBA")``: a
  2-D float64 array read as RGBA. Every scene that shows an ``ImageMobject`` goes through it;
- the same method reads the ImageMobject's pixels with ``mode="RGBA"``; ImageMobject keeps the dtype it was given,
  so ``ImageMobject(np.array([[0, 255]]))`` (int64) or a float array arrives here as something other than uint8;
- ``Camera.get_image(pixel_array)`` (also ``Mobject.get_image()``) passes ``mode=camera.image_mode``.

Before Pillow 11.3 ``mode`` was a cast: the array's bytes were read as that mode, whatever their dtype (the zero
canvas came out transparent black). Pillow 11.3 deprecated the argument, 12 restored it only where the mode
matches the array's dtype and shape, and 13 raises ``ValueError: Invalid mode for data type`` (or ``TypeError``
for an unsupported dtype) for the rest. So with Pillow 13 every ImageMobject scene fails, in the manim CLI too.

The shim gives Manim's camera module (only that module: user code and the rest of the process see Pillow
unchanged) an ``Image`` whose ``fromarray`` calls Pillow's and, only where Pillow refuses the mode, builds what
Manim meant: an all-zero 2-D array is a blank (transparent) image of that mode and size; other pixel data is
clipped to Manim's 0..255 channel scale (ImageMobject appends alpha 255 whatever the dtype), made uint8, read in
its natural mode (L, LA, RGB, RGBA) and converted to the asked one.

Remove it when the installed Manim no longer passes ``mode=`` to ``Image.fromarray`` in ``camera.py`` (a Manim
release after 0.22; ``test_manim_compat.py::test_shim_is_still_needed`` fails then, as a reminder), or if the
project pins Pillow below 13.
"""
from __future__ import annotations

import types
from typing import Any

import numpy as np

_applied = False


def pillow_refuses_cast() -> bool:
    """True with a Pillow that refuses ``fromarray(mode=...)`` for a mismatched array (Pillow >= 13)."""
    from PIL import Image

    try:
        Image.fromarray(np.zeros((1, 1)), mode="RGBA")
    except (ValueError, TypeError):
        return True
    return False


def fromarray(obj: Any, mode: str | None = None) -> Any:
    """``PIL.Image.fromarray`` with the pre-13 meaning of ``mode`` where Pillow 13 refuses it (see the module)."""
    from PIL import Image

    if mode is None:
        return Image.fromarray(obj)
    try:
        return Image.fromarray(obj, mode=mode)
    except (ValueError, TypeError):
        pass
    array = np.asarray(obj)
    if array.ndim == 2 and not array.any():  # Manim's blank canvas: np.zeros((h, w)) read as RGBA
        return Image.new(mode, (array.shape[1], array.shape[0]))
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64)), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(array)).convert(mode)


class _CompatImage(types.ModuleType):
    """``PIL.Image`` as Manim's camera module sees it: everything delegated, ``fromarray`` replaced."""

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__(real.__name__, real.__doc__)
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    @staticmethod
    def fromarray(obj: Any, mode: str | None = None) -> Any:
        return fromarray(obj, mode)


def apply() -> None:
    """Install every shim this Manim and Pillow need; idempotent, cheap after the first call. Called before a
    scene's code runs (``manim_scene.load_scene_class``), so the worker zygote's preload stays a plain import."""
    global _applied
    if _applied:
        return
    _applied = True
    if pillow_refuses_cast():
        import manim.camera.camera as camera_module

        if not isinstance(camera_module.Image, _CompatImage):
            camera_module.Image = _CompatImage(camera_module.Image)
