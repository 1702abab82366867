"""The studio's own ONNX models (issue #23): a salient-object matte and a monocular depth map, on ONNX Runtime
inside the task's sandbox: its CPU provider, or its CUDA provider when the task was granted a GPU and the
installed build has it (``onnxruntime-gpu``; ``providers``).

The convention every model must follow (the one U²-Net, IS-Net, BiRefNet, MiDaS and Depth Anything exports
share): one RGB image in, 1×3×H×W float32, normalised as ``(x / 255 - mean) / std`` per channel; one map out,
the first output where there are several, 1×1×H×W (1×H×W is taken too: MiDaS-family exports drop the channel
axis). A model with a fixed H×W gets the picture resized to it, and its map resized back; a model with free axes
runs at ``run_size``. A matte is in 0..1 after ``post`` (none: as it comes; sigmoid: the model gives logits;
minmax: stretched to 0..1, as U²-Net's reference code does); a depth map is always stretched to 0..1, larger =
nearer (the models above output relative inverse depth).

``check`` is the ``model.check`` renderer: `appliance models add` runs it in the sandbox on the uploaded file
and a generated picture, and the server keeps the model only when its report says ok. ``matte`` and ``near``
are what the image renderers call; they raise ModelError, and the callers fall back to the classical path.

Threads: the tasks that run these are planned with cpu=1.0, so one intra-op thread is their share; ONNX
Runtime then starts no thread pool at all (the sandbox's nproc limit and the cgroup's quota stay meaningful).
onnxruntime is imported here, lazily, never by the warm worker: a task without a model pays nothing for it."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from renderers.base import Reporter

KINDS = ("matte", "depth")
POSTS = ("none", "sigmoid", "minmax")
DEFAULT_RUN_SIZE = {"matte": 320, "depth": 384}
MAX_SIDE = 2048  # a fixed input larger than this is refused: it would not fit a task's memory with the picture
TOLERANCE = 1e-3  # a matte may overshoot 0..1 by float rounding, no more


class TaskLog:
    """A reporter for code that has none at hand (video.frames): its lines go to stderr, which is the task's
    log."""

    def progress(self, fraction: float, phase: str | None = None) -> None:
        pass

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


class ModelError(Exception):
    """What is wrong with a model, in one line the operator can act on."""


@dataclass(frozen=True)
class Spec:
    """How a model is fed and read (the manifest's normalisation and post-processing)."""
    kind: str
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    post: str = "none"
    run_size: int = 320  # the side used when the model's input axes are free

    @classmethod
    def from_input(cls, data: dict[str, Any]) -> Spec:
        kind = str(data.get("kind"))
        if kind not in KINDS:
            raise ModelError(f"kind must be one of: {', '.join(KINDS)}")
        return cls(kind=kind, mean=_triple(data.get("mean", cls.mean)), std=_triple(data.get("std", cls.std)),
                   post=str(data.get("post") or "none"),
                   run_size=int(data.get("run_size") or DEFAULT_RUN_SIZE[kind]))


def _triple(value: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in value)
    return a, b, c


def providers() -> list[str]:
    """The execution providers for this task: CUDA first only when the scheduler granted it a GPU
    (CUDA_VISIBLE_DEVICES names one) and this ONNX Runtime build has the CUDA provider (``onnxruntime-gpu``);
    the CPU provider always, as the fallback for what CUDA does not run."""
    import onnxruntime as ort

    if os.environ.get("CUDA_VISIBLE_DEVICES") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def provider_of(sess) -> str:
    """The provider that runs the session's first node: "cuda" or "cpu" (what a report records as its device)."""
    first = (sess.get_providers() or ["CPUExecutionProvider"])[0]
    return "cuda" if first == "CUDAExecutionProvider" else "cpu"


def session(path: Path, threads: int = 1):
    """An InferenceSession with ``threads`` intra-op threads (see the module doc), on CUDA when a GPU was granted
    and the build can use it (``providers``), else on the CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about unused initialisers are not the operator's business
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no core burnt waiting
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers())
    except Exception as exc:  # noqa: BLE001 - ORT raises its own classes for every way a file is not a model
        text = _short(exc).replace(str(path), Path(path).name)  # the sandbox's workdir is nobody's business
        raise ModelError(f"the file does not load as an ONNX model: {text}") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "…") if len(text) > 300 else text or type(exc).__name__


def _dims(shape: list) -> str:
    return "×".join(str(d) if isinstance(d, int) else "?" for d in shape)


def signature(sess) -> dict[str, Any]:
    """The model's input and first output, checked against the convention: {input: {name, shape}, output:
    {name, shape}, fixed: [H, W] or None}. ModelError names what does not fit."""
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1:
        raise ModelError(f"the model takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                         "one image input (1×3×H×W float32) is needed")
    first, out = inputs[0], outputs[0]
    shape = list(first.shape)
    if first.type != "tensor(float)":
        raise ModelError(f"input {first.name!r} is {first.type}; a float32 tensor (1×3×H×W) is needed")
    if len(shape) != 4 or isinstance(shape[0], int) and shape[0] != 1 or isinstance(shape[1], int) and shape[1] != 3:
        raise ModelError(f"input {first.name!r} has shape {_dims(shape)}; 1×3×H×W (an RGB image) is needed")
    h, w = shape[2], shape[3]
    fixed = [h, w] if isinstance(h, int) and isinstance(w, int) else None
    if fixed and not (8 <= min(fixed) and max(fixed) <= MAX_SIDE):
        raise ModelError(f"input {first.name!r} has a fixed size of {h}×{w}; 8 to {MAX_SIDE} pixels a side")
    if out.type != "tensor(float)":
        raise ModelError(f"output {out.name!r} is {out.type}; a float32 map (1×1×H×W) is needed")
    return {"input": {"name": first.name, "shape": [d if isinstance(d, int) else None for d in shape]},
            "output": {"name": out.name, "shape": [d if isinstance(d, int) else None for d in out.shape]},
            "fixed": fixed}


def _run_hw(sig: dict[str, Any], spec: Spec) -> tuple[int, int]:
    fixed = sig["fixed"]
    return (fixed[0], fixed[1]) if fixed else (spec.run_size, spec.run_size)


def infer(sess, sig: dict[str, Any], spec: Spec, rgb: np.ndarray) -> np.ndarray:
    """The model's raw map for an RGB uint8 picture, at the model's own size (float32, H×W). ModelError when
    the run fails or the output is not one map of the input's shape and aspect."""
    h, w = _run_hw(sig, spec)
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if rgb.shape[0] > h else cv2.INTER_LINEAR)
    x = (small.astype(np.float32) / 255 - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    blob = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    try:
        out = sess.run([sig["output"]["name"]], {sig["input"]["name"]: blob})[0]
    except Exception as exc:  # noqa: BLE001 - any failure of the run is the model's
        raise ModelError(f"the model fails to run on a {w}×{h} picture: {_short(exc)}") from None
    out = np.asarray(out)
    shape = list(out.shape)
    if out.dtype != np.float32:
        raise ModelError(f"output {sig['output']['name']!r} came back as {out.dtype}; float32 is needed")
    if len(shape) == 4 and shape[:2] == [1, 1]:
        plane = out[0, 0]
    elif len(shape) == 3 and shape[0] == 1:
        plane = out[0]
    else:
        raise ModelError(f"output {sig['output']['name']!r} has shape {_dims(shape)} for a 1×3×{h}×{w} input; "
                         "one map (1×1×H×W) is needed")
    ph, pw = plane.shape
    if ph < max(1, h // 8) or pw < max(1, w // 8) or abs(ph / pw - h / w) > 0.02 * h / w:
        raise ModelError(f"output {sig['output']['name']!r} is {ph}×{pw} for a {h}×{w} input; a map of the "
                         "input's size (or a fraction of it, same aspect) is needed")
    if not np.isfinite(plane).all():
        bad = int((~np.isfinite(plane)).sum())
        raise ModelError(f"output {sig['output']['name']!r} holds {bad} NaN or infinite values")
    return plane.astype(np.float32, copy=False)


def post_process(plane: np.ndarray, spec: Spec) -> np.ndarray:
    """A matte in 0..1 (refused, not clipped, when the model's values leave it: a wrong ``post`` is the usual
    cause and the operator should hear of it); a depth map stretched to 0..1, larger = nearer."""
    if spec.kind == "depth" or spec.post == "minmax":
        lo, hi = float(plane.min()), float(plane.max())
        return (plane - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(plane)
    if spec.post == "sigmoid":
        return (1 / (1 + np.exp(-np.clip(plane, -60, 60)))).astype(np.float32)
    lo, hi = float(plane.min()), float(plane.max())
    if lo < -TOLERANCE or hi > 1 + TOLERANCE:
        raise ModelError(f"the matte's values run from {lo:.3g} to {hi:.3g}, outside 0..1; if the model gives "
                         "logits add it with --post sigmoid, if it needs stretching with --post minmax")
    return np.clip(plane, 0, 1)


def run_map(path: Path, rgb: np.ndarray, spec: Spec, threads: int = 1) -> np.ndarray:
    """The model's post-processed map for an RGB picture, resized back to the picture's size."""
    sess = session(path, threads)
    plane = post_process(infer(sess, signature(sess), spec, rgb), spec)
    return cv2.resize(plane, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)


def test_picture(side: int = 256) -> np.ndarray:
    """A generated product shot for the check: a graded backdrop with a disc and a box on it (no file needed,
    the same every time)."""
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) / side
    img = np.empty((side, side, 3), np.float32)
    img[:] = (0.86 - 0.1 * ys)[..., None] * 255
    img[(xs - 0.45) ** 2 + (ys - 0.58) ** 2 < 0.07] = (200, 40, 30)
    img[(abs(xs - 0.62) < 0.1) & (abs(ys - 0.3) < 0.08)] = (30, 60, 170)
    return np.clip(img, 20, 230).astype(np.uint8)  # never pure black or white: see the tests' NaN model


def check(task_input: dict, workdir: Path, report: Reporter) -> dict:
    """The ``model.check`` renderer: load the model, read its signature, run it once on test_picture() and
    check the map. Never raises for a bad model: the report says what is wrong (the job completes, and a refused
    model costs the operator no failed-job count)."""
    if task_input.get("kind") == "img2img":  # a diffusers folder: renderers/image/img2img.py
        from renderers.image import img2img

        return img2img.check(task_input, workdir, report)
    started = time.perf_counter()
    meta: dict[str, Any] = {"ok": False}
    try:
        spec = Spec.from_input(task_input)
        if spec.post not in POSTS:
            raise ModelError(f"post must be one of: {', '.join(POSTS)}")
        report.progress(0.1, "loading")
        sess = session(Path(workdir) / task_input["model"], threads=1)
        sig = signature(sess)
        wanted = task_input.get("input_size")
        if sig["fixed"] and wanted and sig["fixed"] != [int(wanted), int(wanted)]:
            raise ModelError(f"the model's input is fixed at {sig['fixed'][0]}×{sig['fixed'][1]}; "
                             f"--input-size {wanted} does not fit it")
        report.progress(0.4, "running")
        h, w = _run_hw(sig, spec)
        t0 = time.perf_counter()
        plane = post_process(infer(sess, sig, spec, test_picture()), spec)
        run_s = time.perf_counter() - t0
        meta = {"ok": True, "signature": {"input": sig["input"], "output": sig["output"]},
                "input_size": sig["fixed"], "run_size": [h, w], "map_shape": list(plane.shape),
                "map_range": [round(float(plane.min()), 4), round(float(plane.max()), 4)],
                "map_mean": round(float(plane.mean()), 4), "run_s": round(run_s, 4), "device": provider_of(sess),
                "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") or None}
    except ModelError as exc:
        meta = {"ok": False, "error": str(exc)}
    except (KeyError, TypeError, ValueError) as exc:
        meta = {"ok": False, "error": f"bad check request: {_short(exc)}"}
    meta["check_s"] = round(time.perf_counter() - started, 3)
    report.log(f"model.check: {'ok' if meta['ok'] else meta['error']} in {meta['check_s']} s")
    report.progress(1.0, "done")
    return {"files": {}, "meta": meta}


def matte_alpha(path: Path, rgb: np.ndarray, spec_input: dict, report: Reporter) -> np.ndarray | None:
    """The model's matte as an 8-bit alpha of the picture's size, or None (logged) when the model fails: the
    caller then uses the classical matte."""
    started = time.perf_counter()
    try:
        alpha = run_map(path, rgb, Spec.from_input(spec_input), threads=1)
    except ModelError as exc:
        report.log(f"matte model {spec_input.get('name')!r} failed, classical matte used: {exc}")
        return None
    report.log(f"matte model {spec_input.get('name')!r} in {time.perf_counter() - started:.3f} s")
    return (alpha * 255 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class Depth:
    """A plate's nearness (0 far .. 1 near, float32, plate size), the near-weighted centre the moves turn
    about, and the plate with its near things inpainted away (what shows where they move off)."""
    near: np.ndarray
    centre: tuple[float, float]
    fill: np.ndarray


def plate_depth(path: Path, plate_bgra: np.ndarray, spec_input: dict, report: Reporter) -> Depth | None:
    """The depth model's nearness of a video plate, smoothed (a sharp step in depth tears the picture when it
    moves), or None (logged) when the model fails: the caller keeps the matte's two layers."""
    started = time.perf_counter()
    rgb = cv2.cvtColor(plate_bgra, cv2.COLOR_BGRA2RGB)
    try:
        near = run_map(path, rgb, Spec.from_input(spec_input), threads=1)
    except ModelError as exc:
        report.log(f"depth model {spec_input.get('name')!r} failed, matte layers used: {exc}")
        return None
    ph, pw = near.shape
    near = cv2.GaussianBlur(near, (0, 0), max(1.0, max(ph, pw) / 300))
    weight = near * near
    total = float(weight.sum())
    ys, xs = np.mgrid[0:ph, 0:pw]
    centre = (float((weight * xs).sum() / total), float((weight * ys).sum() / total)) if total > 1e-6 \
        else (pw / 2, ph / 2)
    report.log(f"depth model {spec_input.get('name')!r} in {time.perf_counter() - started:.3f} s")
    return Depth(near=near, centre=centre, fill=_fill(plate_bgra, near))


def _fill(plate: np.ndarray, near: np.ndarray) -> np.ndarray:
    """The plate with what stands nearer than the middle of its depth inpainted at a quarter of the size and
    blurred, as video._split fills the subject's hole: soft, so nothing sharp shows where a near thing was."""
    ph, pw = near.shape
    grow = max(3, round(max(ph, pw) * 0.015)) | 1
    hole = cv2.dilate((near > 0.5 * (float(near.min()) + float(near.max()))).astype(np.uint8),
                      cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    q = (max(1, pw // 4), max(1, ph // 4))
    small = cv2.resize(cv2.cvtColor(plate, cv2.COLOR_BGRA2BGR), q, interpolation=cv2.INTER_AREA)
    filled = cv2.inpaint(small, cv2.resize(hole, q, interpolation=cv2.INTER_NEAREST), 3, cv2.INPAINT_TELEA)
    filled = cv2.resize(cv2.GaussianBlur(filled, (0, 0), 2), (pw, ph), interpolation=cv2.INTER_LINEAR)
    soft = cv2.GaussianBlur(hole.astype(np.float32), (0, 0), grow / 3)[..., None]
    out = cv2.cvtColor(plate, cv2.COLOR_BGRA2BGR) * (1 - soft) + filled * soft
    return cv2.cvtColor((out + 0.5).astype(np.uint8), cv2.COLOR_BGR2BGRA)


GRID = 420  # the maps' longer side: about a third of 720p, smooth fields lose nothing, silhouettes a pixel or two
STEPS = 16  # the ray's steps through the depth: a shift of D pixels is found to D / STEPS before refinement
# a crossing this far past the surface, or one where the nearness rises faster along the ray than EDGE_SLOPE
# (from far to near across the plate's width: a real surface, a floor or a table top, rises far slower; an
# object's silhouette far faster), is a depth edge: what shows there was hidden behind it (the fill)
STEEP = 0.15
EDGE_SLOPE = 15.0


def parallax_frame(plate: np.ndarray, depth: Depth, view: np.ndarray, move: np.ndarray,
                   size: tuple[int, int]) -> np.ndarray:
    """One frame where every plate pixel p moves by nearness(p) × (move·p − p) before the camera's view: the
    near things take all of the subject layer's move (video.layer_at), the far ones none of it, and what lies
    between in proportion. Found backwards, as parallax occlusion mapping does: for each frame pixel the ray
    t = 1 → 0 meets the first plate point p − t·D whose nearness reaches t (the nearest thing in front wins),
    refined linearly between the two steps around the crossing; a pixel whose ray crosses a depth edge shows
    the fill (what was behind the near thing). The maps are built small (GRID) and scaled up."""
    w, h = size
    k = max(2, round(max(w, h) / GRID))
    hw, hh = max(1, w // k), max(1, h // k)
    inv = cv2.invertAffineTransform(view)
    # the small grid's samples sit where cv2.resize reads them back from: an affine field comes back exact
    qx, qy = np.meshgrid((np.arange(hw, dtype=np.float32) + 0.5) * (w / hw) - 0.5,
                         (np.arange(hh, dtype=np.float32) + 0.5) * (h / hh) - 0.5)
    px = (inv[0, 0] * qx + inv[0, 1] * qy + inv[0, 2]).astype(np.float32)
    py = (inv[1, 0] * qx + inv[1, 1] * qy + inv[1, 2]).astype(np.float32)
    m = move.astype(np.float32)
    dx = (m[0, 0] - 1) * px + m[0, 1] * py + m[0, 2]
    dy = m[1, 0] * px + (m[1, 1] - 1) * py + m[1, 2]
    step_px = np.hypot(dx, dy) / STEPS + 0.25  # plate pixels the ray moves per step (a floor for a still one)
    edge = EDGE_SLOPE / max(depth.near.shape)
    t_hit = np.zeros_like(px)
    hidden = np.zeros(px.shape, bool)
    open_ = np.ones(px.shape, bool)
    prev_t, prev_f = 1.0, None
    for t in np.linspace(1.0, 0.0, STEPS + 1, dtype=np.float32):
        f = cv2.remap(depth.near, px - t * dx, py - t * dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) - t
        crossed = open_ & (f >= 0)
        if prev_f is None:
            t_hit[crossed] = t
        else:
            slope = np.where(f - prev_f > 1e-6, f - prev_f, 1.0)
            refined = t + (prev_t - t) * f / slope
            t_hit[crossed] = refined[crossed]
            rise = (f - prev_f) - (prev_t - t)  # how much nearer the plate got over this step of the ray
            hidden |= crossed & ((f > STEEP) | (rise > edge * step_px))  # a wall, not a surface: a depth edge
        open_ &= ~crossed
        prev_t, prev_f = float(t), f
    sx = cv2.resize(px - t_hit * dx, (w, h), interpolation=cv2.INTER_LINEAR)
    sy = cv2.resize(py - t_hit * dy, (w, h), interpolation=cv2.INTER_LINEAR)
    out = cv2.remap(plate, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if not hidden.any():
        return out
    behind = cv2.warpAffine(depth.fill, view, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask = cv2.resize(hidden.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR)
    alpha = cv2.cvtColor(mask, cv2.COLOR_GRAY2BGRA)
    return cv2.add(cv2.multiply(behind, alpha, scale=1 / 255), cv2.multiply(out, cv2.bitwise_not(alpha), scale=1 / 255))


__all__ = ["Depth", "ModelError", "Spec", "TaskLog", "check", "matte_alpha", "parallax_frame", "plate_depth"]
