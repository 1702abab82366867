"""The one table of renderers: name -> "module:function". Duplicate or unknown names fail loudly."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

Renderer = Callable[[dict, Any, Any], dict]

_BUILTIN: dict[str, str] = {
    "manim": "renderers.manim_scene:render",
    # A long scene split into animation ranges drawn in parallel (renderers/manim_split.py).
    "manim.plan": "renderers.manim_split:plan",
    "manim.range": "renderers.manim_split:render_range",
    "manim.assemble": "renderers.manim_split:assemble",
    "movie.scene": "renderers.movie.compose:render_scene",
    "movie.assemble": "renderers.movie.assemble:render_assemble",
    "image.render": "renderers.image.pipeline:render",
    "image.video": "renderers.image.video:render",
    "image.gif": "renderers.image.gif:render",
    # `appliance models add`: a studio's ONNX model loaded and run once in the sandbox (renderers/image/onnx_models.py)
    "model.check": "renderers.image.onnx_models:check",
    # the studio's img2img model (a diffusers folder) on a picture, before image.render finishes it
    "image.img2img": "renderers.image.img2img:render",
    # Test renderers: the only fakes allowed, used to exercise the scheduler.
    "test.noop": "renderers.testing:noop",
    "test.sleep": "renderers.testing:sleep",
    "test.encode": "renderers.testing:encode",
    "test.fail": "renderers.testing:fail",
    "test.crash": "renderers.testing:crash",
    "test.memhog": "renderers.testing:memhog",
    "test.spin": "renderers.testing:spin",
    "test.hostile": "renderers.testing:hostile",
    "test.flood": "renderers.testing:flood",
}


# The output files (result["files"] roles) each renderer must produce. The worker pipe is reachable from the
# untrusted code a renderer runs, so the core verifies a claimed result instead of trusting it.
REQUIRED_OUTPUTS: dict[str, tuple[str, ...]] = {
    "manim": ("video", "thumbnail", "captions", "image"),
    "manim.plan": ("plan", "captions"),
    "manim.range": (),  # a range the plan did not use returns no files; a segment returned is still checked
    "manim.assemble": ("video", "thumbnail", "captions", "image"),
    "movie.scene": ("scene",),
    "movie.assemble": ("video", "thumbnail"),
    "image.render": ("render",),
    "image.video": ("video",),
    "image.gif": ("gif",),
}


# Renderers that encode H.264 through renderers/encoder.py: they get an NVENC session when one is free (else
# libx264). Renderers that run faster on a GPU: they get a GPU's compute when a slot is free. Neither waits.
ENCODES_VIDEO = frozenset({"manim", "movie.scene", "image.video", "test.encode"})
GPU_OPTIONAL: frozenset[str] = frozenset({"image.render"})  # tone and sharpening on CuPy (renderers/image/gpu.py)


class RegistryError(Exception):
    pass


class Registry:
    def __init__(self) -> None:
        self._table: dict[str, str] = {}

    def register(self, name: str, target: str) -> None:
        if name in self._table:
            raise RegistryError(f"renderer {name!r} is already registered")
        self._table[name] = target

    def names(self) -> list[str]:
        return sorted(self._table)

    def target(self, name: str) -> str:
        try:
            return self._table[name]
        except KeyError:
            raise RegistryError(f"unknown renderer {name!r}") from None

    def load(self, name: str) -> Renderer:
        module, _, func = self.target(name).partition(":")
        return getattr(importlib.import_module(module), func)


def default_registry() -> Registry:
    registry = Registry()
    for name, target in _BUILTIN.items():
        registry.register(name, target)
    return registry
