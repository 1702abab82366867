"""The address of a Manim animation's piece: what decides its pixels, hashed (see renderers/manim_segments.py).

A SHA-256 over the pickled state the animation starts from — its animations, every mobject of the scene and the
camera (each object's attributes recursively, arrays by their bytes), functions (rate functions, updaters,
``always_redraw`` builders) by their bytecode, constants, closure cells and the scene module's globals they
name, the methods of classes the scene code defines, the scene's own attributes, the scene clock and the state of
``random`` and ``numpy.random`` — and over the frame (width, height, fps), the encoder's resolved settings and
the versions of Manim, PyAV, libavcodec and this format (``FORMAT``). It is what Manim's own partial-movie cache
hashes (``get_hash_from_play_call``) and what that hash leaves out, 4x faster than Manim's JSON walk.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import random
import types
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any

import numpy as np

FORMAT = "manim-pieces-2"  # 2: a glyph's parsed SVG path is a SharedPath (renderers/manim_svgpaths.py)
SCENE_MODULE = "user_scene"  # manim_scene.SCENE_MODULE: classes defined there are hashed with their methods
WORKDIR = "<workdir>"  # the task's folder, in paths and strings of the hashed state
DEFAULT_SEED = 0  # a scene that sets no seed gets this one: its pieces then have a stable address
# Attributes whose values depend on the process, not on the picture (Manim's hash drops them too); the camera's
# own frame buffers are its output, not its input, and the display methods it looks up on its first frame a cache.
RUN_DEPENDENT = frozenset({"original_id"})
CAMERA_BUFFERS = frozenset({"pixel_array", "background", "pixel_array_to_cairo_context", "display_funcs"})
# Scene attributes Manim keeps (its renderer, the mobject lists hashed on their own, per-play bookkeeping):
# anything else on the scene is the scene code's own state and is hashed.
SCENE_INTERNALS = frozenset({
    "renderer", "mobjects", "foreground_mobjects", "animations", "moving_mobjects", "static_mobjects",
    "time_progression", "duration", "last_t", "stop_condition", "camera_class", "camera_target", "session_spec",
    "file_writer_settings", "output_plan", "manager", "queue", "widgets", "meshes", "mouse_point",
    "mouse_drag_point", "mouse_press_callbacks", "key_to_function_map", "quit_interaction", "interactive_mode",
    "dearpygui_imported", "skip_animation_preview", "_log_file_path", "updaters", "always_update_mobjects",
    "random_seed", "sender", "kwargs", "skip_animations",
})


class _Token:
    """What functions, methods, user classes, modules and the scene pickle as: a name and a state."""


def _code_digest(code: types.CodeType) -> bytes:
    parts = [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    for const in code.co_consts:
        parts.append(_code_digest(const) if isinstance(const, types.CodeType) else repr(const).encode())
    return hashlib.sha256(b"\0".join(parts)).digest()


class _Pickler(pickle.Pickler):
    """Pickles the state as it is, but for the kinds ``_kind`` names (decided once per type: a play pickles
    ~50,000 objects, most of them arrays and mobjects that need nothing)."""

    def __init__(self, file: io.BytesIO, scene: Any, workdir: str) -> None:
        super().__init__(file, protocol=5)
        self.scene, self.workdir = scene, workdir

    def reducer_override(self, obj: Any) -> Any:
        kind = _KINDS.get(type(obj))
        if kind is None:
            kind = _KINDS[type(obj)] = _kind(type(obj))
        if kind == "plain":
            return NotImplemented
        if kind == "mobject":
            state = obj.__dict__
            if "original_id" not in state and "id_to_vgroup_dict" not in state:
                return NotImplemented
            # A copy remembers its original's id(); an SVG's groups are keyed by the ids cairo gave the file's
            # elements ("surface7": a count of the surfaces this process made, drawn frames included). Neither
            # is part of the picture.
            state = {k: v for k, v in state.items() if k not in RUN_DEPENDENT}
            if isinstance(state.get("id_to_vgroup_dict"), dict):
                state["id_to_vgroup_dict"] = list(state["id_to_vgroup_dict"].values())
            return _Token, ("object", type(obj)), state
        if kind == "scene":
            return (_Token, ("scene",)) if obj is self.scene else NotImplemented
        if kind == "svgpath":  # a glyph's parsed path, shared by its copies (manim_svgpaths.py): its contents
            return _Token, ("svgpath",), dict(obj.__dict__)
        if kind == "path":  # a file Manim wrote (a Text's SVG): where the task ran does not matter
            return _Token, ("path", str(obj).replace(self.workdir, WORKDIR))
        if kind == "method":
            return _Token, ("method",), (obj.__func__, obj.__self__)
        if kind == "function":
            code, names = obj.__code__, obj.__globals__
            used = {n: names[n] for n in code.co_names if n in names} if names.get("__name__") == SCENE_MODULE \
                else obj.__module__ + "." + obj.__qualname__  # library code: its version is in the address
            cells = tuple(cell.cell_contents if _filled(cell) else None for cell in obj.__closure__ or ())
            return _Token, ("function", _code_digest(code)), (obj.__defaults__, obj.__kwdefaults__, cells, used)
        if kind == "module":
            return _Token, ("module", obj.__name__)
        if kind == "class":
            if obj.__module__ != SCENE_MODULE:
                return NotImplemented  # by reference (module and name)
            own = {k: v for k, v in vars(obj).items() if not k.startswith("__") or k == "__init__"}
            return _Token, ("class", obj.__qualname__), (obj.__bases__, own)
        if kind == "descriptor":
            return _Token, (type(obj).__name__,), (getattr(obj, "__func__", None), getattr(obj, "fget", None),
                                                   getattr(obj, "fset", None))
        state = {k: v for k, v in obj.__dict__.items() if k not in RUN_DEPENDENT | CAMERA_BUFFERS}
        return _Token, ("camera", type(obj)), state


_KINDS: dict[type, str] = {}


def _kind(cls: type) -> str:
    from manim.camera.camera import Camera
    from manim.mobject.mobject import Mobject
    from manim.scene.scene import Scene

    from renderers.manim_svgpaths import SharedPath

    checks: list[tuple[str, Any]] = [("svgpath", SharedPath),
        ("method", types.MethodType), ("function", types.FunctionType), ("module", types.ModuleType),
        ("class", type), ("descriptor", (staticmethod, classmethod, property)), ("path", PurePath),
        ("camera", Camera), ("scene", Scene), ("mobject", Mobject)]
    return next((name for name, base in checks if issubclass(cls, base)), "plain")


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def frame_identity(width: int, height: int, fps: int, encoder: Any) -> str:
    """What every piece of a render shares: the frame, the encoder's resolved settings, the versions."""
    import av
    from manim._config.video_encoder import video_encoder_fingerprint

    parts = [FORMAT, f"{width}x{height}@{fps}", video_encoder_fingerprint(encoder), metadata.version("manim"),
             av.__version__, repr(av.library_versions.get("libavcodec"))]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def address(scene: Any, identity: str, workdir: Path) -> str | None:
    """The piece address of the animation ``scene`` is about to play (its animations compiled, not begun), or
    None when some object of its state cannot be hashed (the piece is then always drawn)."""
    renderer = scene.renderer
    own = {k: v for k, v in vars(scene).items() if k not in SCENE_INTERNALS}
    state = (identity, repr(renderer.time), random.getstate(), np.random.get_state(), renderer.camera,  # noqa: NPY002
             scene.animations, scene.mobjects, scene.foreground_mobjects, own)
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, scene, str(workdir)).dump(state)
    except Exception:  # noqa: BLE001 - an unpicklable object (a generator, a lock, a local class): no address
        return None
    data = buffer.getvalue().replace(str(workdir).encode(), WORKDIR.encode())  # and in plain strings
    return hashlib.sha256(data).hexdigest()[:32]  # 128 bits: no collision among a box's pieces


def seed_module_code() -> None:
    """The scene module's own top-level code draws from the same seeds each run (Scene seeds again later)."""
    random.seed(DEFAULT_SEED)
    np.random.seed(DEFAULT_SEED)  # noqa: NPY002 - the global state is what scene code uses


def seed_if_unset() -> None:
    """A scene that sets no seed would start from fresh entropy each run, and no piece would match twice: it
    gets DEFAULT_SEED (Manim's Scene seeds ``random`` and ``numpy.random`` from ``config.seed``)."""
    from manim import config

    if config.seed is None:
        config.seed = DEFAULT_SEED
