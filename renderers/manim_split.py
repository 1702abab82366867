"""Long Manim scenes on many cores: a scene's animations split into ranges rendered by parallel tasks.

Manim draws a scene on about one core. A scene with many animations (``self.play``/``self.wait`` calls) is
rendered as a DAG instead of one task:

- ``manim.plan`` runs the scene once with every animation skipped (nothing is drawn), counts the animations and
  the frames each would draw, and cuts them into at most ``workers`` contiguous ranges of about equal drawing
  work — or leaves them one range where the cost model (renderers/manim_split_model.py) predicts no gain on the
  CPU slots that were free at submit (``cores``) unless the split is forced (``force``: an operator's explicit
  ``manim_split_max_workers``); it also writes the scene's WebVTT captions (subcaption times as the full render
  would have them);
- ``manim.range`` (one task per possible range) runs the scene again, fast-forwarding the animations before its
  range without drawing them (Manim's ``from_animation_number``), draws its range as pieces with the single
  render's encoder settings (renderers/manim_segments.py: each copied instead where the same user's earlier
  render, staged as ``reuse`` as for the single task, has its address), joins them into an H.264 segment and
  stops at the range's end (``upto_animation_number``); it reports ``pieces`` and ``reuse`` as the single task
  does, drops the dashboard's live frame (renderers/preview.py); a range the plan did not use returns no files;
- ``manim.assemble`` concatenates the segments by stream copy (ffmpeg's concat demuxer) and publishes the
  usual outputs: ``video.mp4``, ``thumb.jpg`` and ``image.png`` (the last range's last frame) and
  ``captions.vtt``.

A still scene (no animations: the plan counts none) is planned as one range, ``[0, 1)``, of the still's frames:
range 0 renders it as the single task does (``manim_scene.write_still``).

Fast-forwarding reaches the same state as drawing only for scenes whose animations are a function of the scene
code alone. ``split_refusal`` is the conservative rule, applied to the source before a job is planned (the
server never runs scene code): see its docstring. Splitting changes nothing but the encoder's choices at range
boundaries: the frames are the same and in the same number; decoded, split and unsplit renders differ by the
lossy encoding only (the test allows a mean absolute difference of at most ``FRAME_TOLERANCE`` per 8-bit
channel).
"""
from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from renderers import manim_address as addresses
from renderers import manim_scene as single  # the single render's config, encoder, errors and outputs
from renderers import manim_segments as pieces
from renderers import manim_split_model as model
from renderers.base import RenderError, Reporter
from renderers.preview import Preview

PLAN_FILE = "plan.json"
SEGMENT_FILE = "segment.mp4"
PLAN_FORMAT = 2  # 2: the cost model decides whether to split (a plan of format 1 always split)
FRAME_TOLERANCE = 3.0  # mean |split - unsplit| per decoded 8-bit channel value that the tests accept
SKIP_ALL = 10**9  # from_animation_number for the planning run: every animation is fast-forwarded

# -- the rule: which scenes may be split (static, on the source; the server never runs scene code) -------------

ANIMATION_CALLS = frozenset({"play", "wait", "pause", "wait_until"})
# Per-frame state: updaters get the whole skipped time as one dt step, custom interpolations see alpha=1 only,
# stop conditions and camera rotations are evaluated per frame, sections may skip their own animations.
PER_FRAME = frozenset({
    "add_updater", "UpdateFromFunc", "UpdateFromAlphaFunc", "turn_animation_into_updater", "cycle_animation",
    "wait_until", "stop_condition", "TracedPath", "AnimatedBoundary", "StreamLines", "AnimatedStreamLines",
    "start_animation", "ChangeSpeed", "begin_ambient_camera_rotation", "begin_3dillusion_camera_rotation",
    "next_section", "interactive_embed", "embed",
})
# Methods a scene or a custom animation may override to act per frame (or, tear_down, after a range ends).
PER_FRAME_METHODS = frozenset({"tear_down", "interpolate", "interpolate_mobject", "interpolate_submobject",
                               "update_to_time", "update_mobjects", "begin", "finish", "clean_up_from_scene"})
CLOCK = frozenset({"perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "process_time", "time_ns",
                   "datetime", "now", "today", "utcnow", "urandom", "uuid1", "uuid4", "getrandbits", "token_hex",
                   "token_bytes", "SystemRandom", "getpid", "secrets", "uuid",
                   "id", "hash"})  # object addresses and salted hashes differ from one process to the next
CLOCK_MODULES = frozenset({"time", "datetime", "secrets", "uuid"})
DYNAMIC = frozenset({"exec", "eval", "compile", "__import__", "getattr", "setattr", "globals", "vars",
                     "import_module"})
SEED_CALLS = frozenset({"seed", "default_rng", "RandomState", "Random", "Generator"})


def _identifiers(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    found: list[tuple[str, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.append((node.id, node))
        elif isinstance(node, ast.Attribute):
            found.append((node.attr, node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append((node.name, node))
        elif isinstance(node, ast.keyword) and node.arg:
            found.append((node.arg, node))
        elif isinstance(node, ast.Import):
            found.extend((alias.name.split(".")[0], node) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append(((node.module or "").split(".")[0], node))
            found.extend((alias.name, node) for alias in node.names)
    return found


def _seeded(tree: ast.AST) -> bool:
    """A fixed seed: ``random.seed(3)``, ``np.random.seed(3)``, ``default_rng(3)``, ``config.seed = 3``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in SEED_CALLS and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, int):
                return True
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and any(
                isinstance(t, ast.Attribute) and t.attr in ("seed", "random_seed") for t in node.targets):
            return True
    return False


def split_refusal(code: str) -> str | None:
    """Why this scene must render on one worker, or None when it may be split. Conservative, on the source:

    - wall-clock time or per-process entropy (``time``, ``datetime``, ``uuid``, ``secrets``, ``os.urandom``,
      ``id()``, ``hash()``, ...);
    - randomness (any name containing ``random``: ``random``, ``np.random``, ``random_color``, ...) unless the
      code fixes a seed (``random.seed(3)``, ``np.random.seed(3)``, ``default_rng(3)``, ``config.seed = 3``);
    - per-frame state: updaters (``add_updater``, ``UpdateFromFunc``, ``TracedPath``, camera rotation, ...),
      custom ``interpolate*`` methods, stop conditions, sections, a ``tear_down`` override;
    - dynamic code (``exec``, ``eval``, ``getattr``, ``__import__``, ...), which could hide any of these.
    ``always_redraw`` and ``.always`` are allowed: they rebuild a mobject from the scene's state.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: a null byte in the source
        return "the code does not parse"
    names = _identifiers(tree)
    for name, node in names:
        if name in PER_FRAME or (name in PER_FRAME_METHODS and isinstance(node, (ast.FunctionDef,
                                                                                ast.AsyncFunctionDef))):
            return f"per-frame state ({name})"
        if name in DYNAMIC:
            return f"dynamic code ({name})"
        if name in CLOCK or (name in CLOCK_MODULES and isinstance(node, (ast.Name, ast.Import, ast.ImportFrom))):
            return f"wall-clock time or entropy ({name})"
    randomness = next((name for name, _ in names if "random" in name.lower()), None)
    if randomness and not _seeded(tree):
        return f"randomness without a fixed seed ({randomness})"
    return None


def animation_estimate(code: str) -> int | None:
    """How many animations the scene plays (at most), counted from its ``play``/``wait`` calls: a ``for`` loop
    over ``range(<constants>)`` or a literal list multiplies its body's count. None when that cannot be told
    from the source (a call in another loop, a comprehension or outside ``construct``): it may be many, and the
    plan task counts them by running the scene."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return 0
    return _count(tree, None)


def _iterations(loop: ast.For | ast.AsyncFor) -> int | None:
    """The number of iterations of ``for _ in range(<int constants>)`` or of a literal list/tuple, else None."""
    target = loop.iter
    if isinstance(target, (ast.List, ast.Tuple)):
        return len(target.elts)
    if isinstance(target, ast.Call) and isinstance(target.func, ast.Name) and target.func.id == "range" \
            and not target.keywords:
        try:
            return len(range(*(ast.literal_eval(arg) for arg in target.args)))  # ints only, else TypeError
        except (TypeError, ValueError, SyntaxError):
            return None
    return None


def _count(node: ast.AST, function: str | None) -> int | None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        function = getattr(node, "name", "<lambda>")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ANIMATION_CALLS \
            and function != "construct":
        return None  # a helper: called how many times?
    own = 1 if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
        and node.func.attr in ANIMATION_CALLS else 0
    if isinstance(node, (ast.For, ast.AsyncFor)):
        body = _sum([_count(child, function) for child in node.body])
        rest = _sum([_count(child, function) for child in (node.target, node.iter, *node.orelse)])
        times = _iterations(node)
        if body is None or rest is None or (body and times is None):
            return None
        return body * (times or 0) + rest
    counts = [_count(child, function) for child in ast.iter_child_nodes(node)]
    total = _sum(counts)
    if total and isinstance(node, (ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        return None
    return None if total is None else own + total


def _sum(counts: list[int | None]) -> int | None:
    return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


# -- the plan ------------------------------------------------------------------------------------------------

def choose_ranges(weights: list[float], workers: int, min_animations: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) animation ranges of about equal weight; one range below min_animations."""
    count = len(weights)
    parts = 1 if count < max(2, min_animations) else max(1, min(workers, count))
    total = sum(weights) or 1.0
    cuts, running, k = [0], 0.0, 1
    for index, weight in enumerate(weights):
        if k >= parts:
            break
        # cut before this animation when that lands closer to the k-th equal share than cutting after it
        if running + weight / 2 >= total * k / parts and index > cuts[-1] and count - index >= parts - k:
            cuts.append(index)
            k += 1
        running += weight
    while len(cuts) < parts:  # too few heavy animations to cut by weight: the tail, one animation each
        cuts.append(cuts[-1] + 1)
    cuts.append(count)
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def decide(plays: list[tuple[int, bool]], task_input: dict) -> model.Decision:
    """The ranges to draw: those of the 2..workers split the cost model predicts fastest on the free ``cores``,
    if it beats the whole render by the model's margin (or the split is forced); else one range."""
    split = task_input["split"]
    workers, minimum = int(split["workers"]), int(split["minAnimations"])
    cores, force = max(1.0, float(split.get("cores", workers))), bool(split.get("force", False))
    work = model.animation_work(plays, int(task_input["width"]), int(task_input["height"]))
    whole = model.whole_s(work, cores)
    best: tuple[float, list[tuple[int, int]]] | None = None
    for parts in [workers] if force else range(2, workers + 1):
        ranges = choose_ranges([w.total for w in work], parts, minimum)
        if len(ranges) >= 2 and (best is None or model.split_s(work, ranges, cores) < best[0]):
            best = (model.split_s(work, ranges, cores), ranges)
    if best is not None and (force or best[0] < model.MARGIN * whole):
        return model.Decision(best[1], whole, best[0])
    return model.Decision([(0, len(plays))] if plays else [], whole, best[0] if best else None)


def plan(task_input: dict, workdir: Path, report: Reporter) -> dict:
    workdir = Path(workdir).resolve()
    report.progress(0.0, "planning")
    with contextlib.redirect_stdout(sys.stderr):
        scene, tracker = _run(task_input, workdir, report, start=SKIP_ALL, stop=None, expected=None)
    decision = decide(tracker.plays, task_input)
    ranges = decision.ranges
    frames = [sum(f for f, _ in tracker.plays[a:b]) for a, b in ranges]
    if not tracker.plays:  # a still: one range, drawn by range 0 as the single task would
        ranges, frames = [(0, 1)], [still_frames(task_input)]
    predicted = {"whole": round(decision.whole_s, 3),
                 "split": None if decision.split_s is None else round(decision.split_s, 3)}
    document = {"format": PLAN_FORMAT, "animations": len(tracker.plays),
                "workers": int(task_input["split"]["workers"]), "predicted": predicted,
                "ranges": [[a, b, n] for (a, b), n in zip(ranges, frames, strict=True)]}
    (workdir / PLAN_FILE).write_text(json.dumps(document), encoding="utf-8")
    captions = single.to_vtt(scene.renderer.file_writer.subcaptions)
    (workdir / single.FILES["captions"]).write_text(captions, encoding="utf-8")
    report.log(f"plan: {len(tracker.plays)} animations in {len(ranges)} range(s): "
               + ", ".join(f"{a}-{b - 1} ({n} frames)" for (a, b), n in zip(ranges, frames, strict=True))
               + f"; model: whole {predicted['whole']} s, split {predicted['split']} s")
    report.progress(1.0, "planning")
    return {"files": {"plan": PLAN_FILE, "captions": single.FILES["captions"]},
            "meta": {"animations": len(tracker.plays), "ranges": len(ranges), "frames": sum(frames)}}


def read_plan(path: Path) -> list[tuple[int, int, int]]:
    """The plan's ranges, checked: it came out of a sandbox, like every task's output."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        ranges = [(int(a), int(b), int(n)) for a, b, n in document["ranges"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RenderError(f"split plan unreadable: {type(exc).__name__}") from None
    if not ranges or ranges[0][0] != 0 or any(b <= a or n < 1 for a, b, n in ranges) \
            or any(ranges[i][1] != ranges[i + 1][0] for i in range(len(ranges) - 1)):
        raise RenderError("split plan invalid: ranges must be contiguous and non-empty")
    return ranges


# -- a range ---------------------------------------------------------------------------------------------------

def render_range(task_input: dict, workdir: Path, report: Reporter) -> dict:
    workdir = Path(workdir).resolve()
    index = int(task_input["split"]["index"])
    ranges = read_plan(workdir / PLAN_FILE)
    if index >= len(ranges):  # the plan used fewer workers than were planned for
        report.progress(1.0, "rendering")
        return {"files": {}, "meta": {"frames": 0, "range": None}}
    start, stop, frames = ranges[index]
    last = index == len(ranges) - 1
    report.progress(0.0, "rendering")
    with contextlib.redirect_stdout(sys.stderr):
        _scene, tracker = _run(task_input, workdir, report, start=start, stop=None if last else stop,
                               expected=frames, segment=workdir / SEGMENT_FILE)
    assert tracker.encoder is not None and tracker.pieces is not None
    if not tracker.plays and ranges == [(0, 1, still_frames(task_input))]:  # the plan's still
        try:
            still = tracker.last_frame = single.write_still(_scene, tracker.encoder)
        except Exception as exc:  # noqa: BLE001 - the encoder's failure, in one line like the scene's own
            tracker.encoder.abort()
            raise RenderError(single.describe_error(exc)) from None
        tracker.offer(still, settled=True)
        tracker.drawn = tracker.encoder.frames
    made = tracker.pieces.pieces
    copied = sum(p.frames for p in made.items if p.source is not None)
    if tracker.drawn + copied != frames or not made.items:
        raise RenderError(f"animations {start}-{stop - 1} drew {tracker.drawn + copied} frames where the plan "
                          f"counted {frames}: the scene does not render the same way twice; set "
                          "manim_split_max_workers = 1 to render such scenes on one worker")
    segment = workdir / SEGMENT_FILE
    pieces.join(made.items, int(task_input["fps"]), segment)
    shutil.rmtree(workdir / pieces.PIECES_DIR, ignore_errors=True)
    exact = single.write_stills(tracker.pieces, tracker.last_frame, segment, workdir)  # the range's last frame
    report.progress(1.0, "rendering")
    return {"files": {"video": SEGMENT_FILE, "thumbnail": single.FILES["thumbnail"],
                      "image": single.FILES["image"]}, "meta": {"frames": frames, "range": [start, stop]},
            "pieces": made.index(), "reuse": made.reuse(), "lastFrameExact": exact}


# -- running the scene, fast-forwarding what is outside the range ---------------------------------------------

def _run(task_input: dict, workdir: Path, report: Reporter, *, start: int, stop: int | None, expected: int | None,
         segment: Path | None = None) -> tuple[Any, _RangeTracker]:
    """Run the scene, drawing animations [start, stop). ``segment``: a range, which draws its animations as
    pieces (renderers/manim_segments.py), each copied instead where an earlier render of the user's (the
    task's ``reuse``) has its address, as the single task does; without it (the plan) nothing is drawn."""
    from manim import config

    # Segments are joined by stream copy, so every range must come from the same encoder: libx264, never an
    # NVENC session that one range holds and another does not (renderers/encoder.py reads this variable).
    os.environ.pop("RENDER_NVENC", None)
    single._configure(task_input, workdir)
    encoder: single._SceneEncoder | None = None
    try:
        addresses.seed_module_code()  # the single task's seeds: the same state, so the same piece addresses
        scene_class = single.load_scene_class(task_input["code"], task_input["className"])
        single._configure(task_input, workdir)  # module-level code may have changed config; size/fps are ours
        addresses.seed_if_unset()
        config.from_animation_number = start
        config.upto_animation_number = stop - 1 if stop is not None else -1
        scene = scene_class()
        tracker = _RangeTracker(scene, report, expected)
        writer = scene.renderer.file_writer
        if segment is None:  # the plan: nothing is written
            encoder = tracker.encoder = single._SceneEncoder(writer, workdir / "unused.mp4")
        else:  # a range draws: the dashboard's live frame, as the single task drops it
            tracker.preview = Preview(workdir)
            (workdir / pieces.PIECES_DIR).mkdir(exist_ok=True)
            encoder = tracker.encoder = single._SceneEncoder(writer, workdir / pieces.PIECES_DIR / pieces.STREAM_FILE)
            identity = addresses.frame_identity(int(task_input["width"]), int(task_input["height"]),
                                                int(task_input["fps"]), writer.video_encoder)
            reuse = pieces.usable(pieces.read_reuse(task_input, workdir), writer.video_encoder)
            # split scenes pass split_refusal: a copied animation may be fast-forwarded
            tracker.pieces = pieces.Segmenter(scene, encoder, workdir, reuse, identity, tracker.set_last_frame,
                                              fast=True)
        scene.render()
    except RenderError:
        raise
    except (Exception, SystemExit) as exc:
        if encoder is not None:
            encoder.abort()
        raise RenderError(single.describe_error(exc)) from None
    return scene, tracker


def still_frames(task_input: dict) -> int:
    """The frames of a still scene's video (manim_scene.write_still)."""
    return max(1, round(single.STILL_SECONDS * int(task_input["fps"])))


class _RangeTracker:
    """Hooks the renderer so that a fast-forwarded animation costs no drawing and leaves the scene clock where
    drawing it would have (Manim adds the run time when skipping, the drawn frames' time when drawing: the two
    differ when a run time is not a whole number of frames, and subcaption times follow the clock)."""

    def __init__(self, scene: Any, report: Reporter, expected: int | None) -> None:
        self.renderer, self.report, self.expected = scene.renderer, report, expected
        self.plays: list[tuple[int, bool]] = []  # per animation: frames it draws, frozen frame (a static wait)
        self.drawn = 0
        self.last_frame: np.ndarray | None = None
        self.encoder: single._SceneEncoder | None = None
        self.pieces: pieces.Segmenter | None = None  # a range's pieces (drawn or copied)
        self.preview: Preview | None = None
        self._reported = 0.0
        originals = {name: getattr(self.renderer, name)
                     for name in ("play", "add_frame", "update_frame", "save_static_frame_data")}
        self._orig = originals
        # Instance attributes shadow the methods, so Manim's own calls go through the hooks.
        self.renderer.play, self.renderer.add_frame = self.play, self.add_frame
        self.renderer.update_frame, self.renderer.save_static_frame_data = self.update_frame, self.save_static

    def play(self, scene: Any, *args: Any, **kwargs: Any) -> None:
        before = self.renderer.time
        self._orig["play"](scene, *args, **kwargs)
        frozen = bool(scene.is_current_animation_frozen_frame())
        dt = 1 / self.renderer.camera.frame_rate
        if frozen:
            frames = int(scene.duration / dt)
        else:
            from manim import config
            frames = len(np.arange(0, scene.duration, 1 / config.frame_rate))
        self.plays.append((frames, frozen))
        if not self.renderer.skip_animations and self.last_frame is not None:
            self.offer(self.last_frame, settled=True)  # the frame the animation ends on
        if self.renderer.skip_animations:  # the clock as drawing would have moved it
            if frozen:
                self.renderer.time = before + frames * dt
            else:
                clock = before
                for _ in range(frames):
                    clock += dt
                self.renderer.time = clock

    def add_frame(self, frame: np.ndarray, num_frames: int = 1) -> None:
        self._orig["add_frame"](frame, num_frames)
        if self.renderer.skip_animations:
            return
        self.last_frame = frame
        self.drawn += num_frames
        self.offer(frame)
        if self.expected:
            fraction = 0.95 * self.drawn / self.expected
            if fraction - self._reported >= 0.01:
                self._reported = fraction
                self.report.progress(fraction, "rendering")

    def set_last_frame(self, frame: np.ndarray) -> None:
        """A copied piece's last frame, drawn where the scene ends on it (manim_segments.Segmenter)."""
        self.last_frame = frame

    def offer(self, frame: np.ndarray, settled: bool = False) -> None:
        """The live frame: at most once a second, and the frame each drawn animation ends on."""
        if self.preview is not None:
            self.preview.offer(lambda: Image.fromarray(frame), settled=settled)

    def update_frame(self, scene: Any, *args: Any, **kwargs: Any) -> None:
        if not self.renderer.skip_animations:  # a skipped animation's frame is never seen
            self._orig["update_frame"](scene, *args, **kwargs)

    def save_static(self, scene: Any, static_mobjects: Any) -> Any:
        if self.renderer.skip_animations:
            self.renderer.static_image = None
            return None
        return self._orig["save_static_frame_data"](scene, static_mobjects)


# -- assembly --------------------------------------------------------------------------------------------------

def segment_name(index: int) -> str:
    return f"segment_{index:03d}.mp4"


def thumbnail_name(index: int) -> str:
    return f"thumb_{index:03d}.jpg"


def image_name(index: int) -> str:
    return f"image_{index:03d}.png"


def assemble(task_input: dict, workdir: Path, report: Reporter) -> dict:
    from renderers import ffmpeg as ff

    workdir = Path(workdir).resolve()
    ranges = read_plan(workdir / PLAN_FILE)
    segments = [workdir / segment_name(i) for i in range(len(ranges))]
    missing = [p.name for p in segments if not p.is_file()]
    if missing:
        raise RenderError(f"split render incomplete: {', '.join(missing)} missing")
    report.progress(0.0, "encoding")
    video = workdir / single.FILES["video"]
    try:
        if len(segments) == 1:  # rendered on one worker: the segment is the video (faststart already)
            os.replace(segments[0], video)
        else:
            listing = workdir / "segments.txt"
            listing.write_text("".join(f"file '{p.name}'\n" for p in segments), encoding="utf-8")
            ff.concat_copy(listing, video)
        meta = ff.video_meta(video)
    except ff.FfmpegError as exc:
        report.log(str(exc))
        raise RenderError(f"joining {len(segments)} ranges failed: {str(exc).splitlines()[-1][:300]}") from None
    frames = sum(n for _, _, n in ranges)
    if meta["frames"] != frames:
        raise RenderError(f"joined video has {meta['frames']} frames where the ranges drew {frames}")
    last = len(ranges) - 1
    try:
        os.replace(workdir / thumbnail_name(last), workdir / single.FILES["thumbnail"])
        os.replace(workdir / image_name(last), workdir / single.FILES["image"])
    except FileNotFoundError as exc:
        raise RenderError(f"split render incomplete: {Path(str(exc.filename)).name} missing") from None
    fps = int(task_input["fps"])
    report.progress(1.0, "encoding")
    return {"files": dict(single.FILES), "meta": {"duration": round(frames / fps, 3), "frames": frames,
                                           "width": meta["width"], "height": meta["height"], "fps": fps,
                                           "ranges": len(ranges)}}
