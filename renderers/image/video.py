"""The image → video renderer (RenderCAD video.php): a still becomes an H.264 clip with an eased camera move.

Every frame is one or two affine warps (OpenCV warpAffine, INTER_LINEAR) of a prepared "plate" with float
offsets and scales, so motion is sub-pixel smooth (ffmpeg's zoompan rounds to whole pixels and jitters). The
frames go raw into one ffmpeg encode (renderers/ffmpeg.py). Presets that need depth (`orbit`, `dolly`,
`hero-spin`, `float`) split the plate into a subject layer (the image pipeline's matte) and a background layer
whose hole behind the subject is inpainted, and move the two differently: 2.5D parallax.

Modes: `single` plays the move once; `transition` crossfades the first image into the last one under the same
move; `loop` takes a there-and-back path (zero speed at both ends) and crossfades its last
``crossfade_duration`` seconds into the first frame, so the clip ends where it starts."""
from __future__ import annotations

import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from renderers import encoder as enc
from renderers import ffmpeg as ff
from renderers.base import RenderError
from renderers.image import matte, onnx_models
from renderers.image.pipeline import load

OUTPUT = "video.mp4"
MARGIN = 1.2  # the plate is this much larger than the frame: room to pan and zoom without showing an edge
MATTE_SIDE = 640  # the subject matte (and its contact shadow) is found at this size, then scaled to the plate
FAILED = "Generation failed"
KEEP_CLEAR = 0.02  # the subject's box stays this far (a share of the frame) inside the frame during a move


@dataclass(frozen=True)
class Camera:
    """Where the view looks at a moment: zoom (1 = the whole plate), centre as a fraction of the plate."""
    zoom: float = 1.0
    cx: float = 0.5
    cy: float = 0.5


@dataclass(frozen=True)
class Layer:
    """The subject layer's own move, in plate pixels about the subject's centre (applied before the camera)."""
    dx: float = 0.0
    dy: float = 0.0
    scale_x: float = 1.0
    scale_y: float = 1.0
    shear: float = 0.0


@dataclass
class Plate:
    """Every layer is 4-channel BGRA once prepared: OpenCV's warpAffine has a vector path for 4 channels that
    makes it twice as fast as on 3, and BGR is what goes to ffmpeg."""
    rgb: np.ndarray  # uint8, the still contained in the plate, sides filled with a blurred copy
    subject: np.ndarray | None = None  # uint8: the subject's box of the still, with its alpha (None: none)
    box: tuple[int, int] = (0, 0)  # where that box starts in the plate
    background: np.ndarray | None = None  # uint8: the plate with the hole behind the subject filled
    centre: tuple[float, float] = (0.0, 0.0)  # the subject's centre, plate pixels
    extent: tuple[int, int, int, int] | None = None  # the subject's box (x0, y0, x1, y1), plate pixels: kept in view


def smoother(t: float) -> float:
    """Ken Perlin's smootherstep: zero speed and acceleration at both ends (no jerk when the move starts)."""
    t = min(1.0, max(0.0, t))
    return t * t * t * (t * (t * 6 - 15) + 10)


# ---- the plate -------------------------------------------------------------------------------------------------
def make_plate(path: Path, width: int, height: int, layered: bool) -> Plate:
    pw, ph = round(width * MARGIN), round(height * MARGIN)
    rgb, own_alpha = load(path, max_side=max(pw, ph))
    if own_alpha is not None:  # a cut-out: it stands on a light studio grey, not on whatever its clear pixels hold
        a = own_alpha.astype(np.float32)[..., None] * np.float32(1 / 255)
        rgb = (rgb * a + np.float32(236) * (1 - a) + 0.5).astype(np.uint8)
    h, w = rgb.shape[:2]
    scale = min(pw / w, ph / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    x0, y0 = (pw - nw) // 2, (ph - nh) // 2
    contained = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if (nw, nh) == (pw, ph):
        canvas = contained
    else:  # a still of another shape: its edges continue to the sides (a studio backdrop carries on), blurred
        # at a quarter of the size so a textured edge does not streak
        q = 4
        small = cv2.resize(contained, (max(1, nw // q), max(1, nh // q)), interpolation=cv2.INTER_AREA)
        top, left = y0 // q + 1, x0 // q + 1
        ext = cv2.copyMakeBorder(small, top, (ph - nh - y0) // q + 2, left, (pw - nw - x0) // q + 2,
                                 cv2.BORDER_REPLICATE)
        ext = cv2.GaussianBlur(ext, (0, 0), max(1.0, min(pw, ph) / q / 60))
        canvas = cv2.resize(ext, (ext.shape[1] * q, ext.shape[0] * q), interpolation=cv2.INTER_LINEAR)
        ty, tx = top * q - y0, left * q - x0  # where the plate starts, so the still lands on its own blur
        canvas = np.ascontiguousarray(canvas[ty:ty + ph, tx:tx + pw])
        canvas[y0:y0 + nh, x0:x0 + nw] = contained
    plate = Plate(rgb=np.ascontiguousarray(canvas))
    found = _subject_alpha(rgb, own_alpha, (nw, nh))
    if found is not None:
        full, shade = np.zeros((ph, pw), np.uint8), np.zeros((ph, pw), np.uint8)
        full[y0:y0 + nh, x0:x0 + nw], shade[y0:y0 + nh, x0:x0 + nw] = found
        x, y, w, h = cv2.boundingRect((full > 127).astype(np.uint8))
        if w and x > x0 + 1 and y > y0 + 1 and x + w < x0 + nw - 1 and y + h < y0 + nh - 1:
            plate.extent = (x, y, x + w, y + h)  # (a subject the photo itself cuts cannot be kept whole)
        if layered:
            _split(plate, full, shade)
    plate.rgb = cv2.cvtColor(plate.rgb, cv2.COLOR_RGB2BGRA)
    if plate.subject is not None and plate.background is not None:
        plate.subject = cv2.cvtColor(plate.subject, cv2.COLOR_RGBA2BGRA)
        plate.background = cv2.cvtColor(plate.background, cv2.COLOR_RGB2BGRA)
    return plate


def _subject_alpha(rgb: np.ndarray, own_alpha: np.ndarray | None,
                   size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The subject's alpha and its contact shadow's density (uint8) at the contained size, or None when no
    clear subject stands out."""
    if own_alpha is not None and own_alpha.min() < 250:
        alpha, shade = own_alpha.astype(np.float32) / 255, np.zeros(own_alpha.shape, np.float32)
    else:
        h, w = rgb.shape[:2]
        scale = min(1.0, MATTE_SIDE / max(h, w))
        small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        alpha, shade = matte.extract_with_shadow(small)
    share = float((alpha > 0.5).mean())
    if not 0.01 <= share <= 0.85:  # nothing found, or a full-bleed photo: parallax would tear it apart
        return None
    def sized(x: np.ndarray) -> np.ndarray:
        return (cv2.resize(x, size, interpolation=cv2.INTER_LINEAR) * 255 + 0.5).astype(np.uint8)

    return sized(alpha), sized(shade)


def _split(plate: Plate, alpha: np.ndarray, shade: np.ndarray) -> None:
    """Subject layer = the plate with the alpha, and the subject's contact shadow as black of the shadow's
    density (it travels with the subject: no ghost of it stays behind); background = the plate with the hole
    behind both inpainted at a quarter of the size (the fill is soft anyway) and blurred, so nothing sharp shows
    when the subject moves."""
    ph, pw = alpha.shape
    grow = max(3, round(max(ph, pw) * 0.015)) | 1
    hole = cv2.dilate(((alpha > 12) | (shade > 8)).astype(np.uint8),
                      cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    q = (max(1, pw // 4), max(1, ph // 4))
    small = cv2.resize(plate.rgb, q, interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole, q, interpolation=cv2.INTER_NEAREST)
    filled = cv2.GaussianBlur(cv2.inpaint(small, small_hole, 3, cv2.INPAINT_TELEA), (0, 0), 2)
    filled = cv2.resize(filled, (pw, ph), interpolation=cv2.INTER_LINEAR)
    # the fill covers the whole hole and feathers outwards only: a feather centred on the hole's edge let a ring
    # of the subject's own edge through, a ghost of its outline in every camera move
    soft = np.maximum(hole.astype(np.float32), cv2.GaussianBlur(hole.astype(np.float32), (0, 0), grow / 3))[..., None]
    plate.background = (plate.rgb * (1 - soft) + filled * soft + 0.5).astype(np.uint8)
    # over the background B the layer gives a*S + (1 - a)*(1 - d)*B: one RGBA of alpha a + (1 - a)*d and colour
    # a*S / that alpha (the shadow's own colour is black)
    a, d = alpha.astype(np.float32) * np.float32(1 / 255), shade.astype(np.float32) * np.float32(1 / 255)
    cover = a + (1 - a) * d
    colour = plate.rgb * (a / np.maximum(cover, 1e-3))[..., None]
    layer = np.dstack([np.clip(colour + 0.5, 0, 255).astype(np.uint8), (cover * 255 + 0.5).astype(np.uint8)])
    x, y, w, h = cv2.boundingRect((layer[..., 3] > 0).astype(np.uint8))
    plate.subject, plate.box = np.ascontiguousarray(layer[y:y + h, x:x + w]), (x, y)
    m = cv2.moments(alpha, binaryImage=False)
    plate.centre = (m["m10"] / m["m00"], m["m01"] / m["m00"]) if m["m00"] else (pw / 2, ph / 2)


# ---- the moves -------------------------------------------------------------------------------------------------
def camera_at(preset: str, u: float, amp: float) -> Camera:
    """The camera of a preset at progress u (0..1, already eased)."""
    if preset == "zoom-in":
        return Camera(1 + 0.22 * amp * u)
    if preset == "zoom-out":
        return Camera(1 + 0.22 * amp * (1 - u))
    if preset in ("pan-left", "pan-right"):
        zoom = 1.16
        reach = (1 - 1 / zoom) / 2 * 0.9 * min(1.0, amp)  # the most the centre may move, as a plate fraction
        sign = 1 if preset == "pan-right" else -1
        return Camera(zoom, 0.5 + sign * reach * (2 * u - 1))
    if preset == "orbit":  # the background slides past (the subject layer holds it back, see layer_at)
        zoom = 1.2  # room for a slide that reads at a glance (1.14 moved the background 11 % of the frame: subtle)
        reach = (1 - 1 / zoom) / 2 * 0.9
        return Camera(zoom + 0.03 * amp * math.sin(math.pi * u), 0.5 + reach * (2 * u - 1))
    if preset == "dolly":
        return Camera(1 + 0.08 * amp * u, 0.5, 0.5 - 0.01 * amp * u)
    return Camera()


def layer_at(camera: str, motion: str, u: float, t: float, amp: float, plate: Plate, cam: Camera) -> Layer:
    """The subject's own move on top of the camera's: what makes the parallax."""
    pw, ph = plate.rgb.shape[1], plate.rgb.shape[0]
    dx = dy = shear = 0.0
    sx = sy = 1.0
    if camera == "orbit":  # the subject travels with the view, the background does not: it seems to turn
        dx += (cam.cx - 0.5) * pw * 0.7
        shear += -0.06 * amp * (2 * u - 1)
    elif camera == "dolly":  # the nearer subject grows faster than the far background
        sx = sy = 1 + 0.12 * amp * u
    if motion == "hero-spin":  # a turn about the vertical axis: the width follows cos, the near edge leads
        angle = math.radians(28 * amp) * (2 * u - 1)
        sx *= 0.82 + 0.18 * math.cos(angle)
        shear += 0.08 * math.sin(angle)
        dx += 0.02 * pw * math.sin(angle)
    elif motion == "float":  # a gentle bob, one period over the clip (loops seamlessly)
        dy += -0.012 * amp * ph * math.sin(2 * math.pi * t)
    return Layer(dx, dy, sx, sy, shear)


def view_matrix(cam: Camera, size: tuple[int, int], plate_size: tuple[int, int]) -> np.ndarray:
    """Plate pixels → frame pixels: scale k = zoom / MARGIN about the camera's centre, in floats (sub-pixel)."""
    (w, h), (pw, ph) = size, plate_size
    k = cam.zoom * min(w / pw, h / ph)
    return np.array([[k, 0, w / 2 - k * cam.cx * pw], [0, k, h / 2 - k * cam.cy * ph]], np.float64)


def layer_matrix(layer: Layer, centre: tuple[float, float]) -> np.ndarray:
    """The subject's move in plate pixels: scale and shear about its centre, then a shift."""
    cx, cy = centre
    a = np.array([[layer.scale_x, layer.shear, 0], [0, layer.scale_y, 0], [0, 0, 1]], np.float64)
    a[0, 2] = cx - layer.scale_x * cx - layer.shear * cy + layer.dx
    a[1, 2] = cy - layer.scale_y * cy + layer.dy
    return a


def frame(plate: Plate, cam: Camera, layer: Layer | None, size: tuple[int, int]) -> np.ndarray:
    pw, ph = plate.rgb.shape[1], plate.rgb.shape[0]
    view = view_matrix(cam, size, (pw, ph))
    if layer is None or plate.subject is None or plate.background is None:
        return cv2.warpAffine(plate.rgb, view, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    back = cv2.warpAffine(plate.background, view, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    shift = np.array([[1, 0, plate.box[0]], [0, 1, plate.box[1]], [0, 0, 1]], np.float64)
    m = view @ layer_matrix(layer, plate.centre) @ shift  # subject-box pixels → frame pixels
    sh, sw = plate.subject.shape[:2]
    corners = m @ np.array([[0, sw, 0, sw], [0, 0, sh, sh], [1, 1, 1, 1]], np.float64)
    x0, y0 = (max(0, math.floor(v.min()) - 1) for v in corners)
    x1, y1 = min(size[0], math.ceil(corners[0].max()) + 1), min(size[1], math.ceil(corners[1].max()) + 1)
    if x1 <= x0 or y1 <= y0:
        return back
    m[:, 2] -= (x0, y0)  # only the subject's box of the frame is warped and blended: a third of the work
    front = cv2.warpAffine(plate.subject, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.cvtColor(np.ascontiguousarray(front[..., 3]), cv2.COLOR_GRAY2BGRA)
    region = back[y0:y1, x0:x1]
    fg = cv2.multiply(front, alpha, scale=1 / 255)  # 8-bit SIMD, off by <= 1
    region[:] = cv2.add(fg, cv2.multiply(region, cv2.bitwise_not(alpha), scale=1 / 255))
    return back


def scaled(cam: Camera, share: float) -> Camera:
    """`share` of the camera's move: 0 is the whole plate, still."""
    return Camera(1 + (cam.zoom - 1) * share, 0.5 + (cam.cx - 0.5) * share, 0.5 + (cam.cy - 0.5) * share)


def in_view(plate: Plate, cam: Camera, layer: Layer | None, size: tuple[int, int]) -> bool:
    """Whether the subject's box, moved by its layer and the camera, lies whole inside the frame."""
    if plate.extent is None:
        return True
    x0, y0, x1, y1 = plate.extent
    m = view_matrix(cam, size, (plate.rgb.shape[1], plate.rgb.shape[0]))
    if layer is not None and plate.subject is not None:
        m = m @ layer_matrix(layer, plate.centre)
    xs, ys = m @ np.array([[x0, x1, x0, x1], [y0, y0, y1, y1], [1, 1, 1, 1]], np.float64)
    room = KEEP_CLEAR * min(size)  # the subject's soft edge and a little air
    return bool(xs.min() >= room and ys.min() >= room and xs.max() <= size[0] - room and ys.max() <= size[1] - room)


def move_share(camera: str, motion: str, amp: float, plates: list[Plate], size: tuple[int, int]) -> float:
    """The largest share of the preset's move (1: all of it; the camera's path and the subject layer's
    amplitude scaled as a whole, so it stays smooth) under which no plate's subject is cut by the frame at any
    moment."""
    def whole(share: float) -> bool:
        for u in np.linspace(0, 1, 25):
            cam = scaled(camera_at(camera, float(u), amp), share)
            for plate in plates:
                layer = layer_at(camera, motion, float(u), float(u), amp * share, plate, cam) \
                    if plate.subject is not None else None
                if not in_view(plate, cam, layer, size):
                    return False
        return True

    if whole(1.0):
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(10):
        mid = (low + high) / 2
        low, high = (mid, high) if whole(mid) else (low, mid)
    return low


# ---- the clip --------------------------------------------------------------------------------------------------
LAYERED_CAMERAS = ("orbit", "dolly")
LAYERED_MOTIONS = ("hero-spin", "float")


def resolve(task_input: dict) -> tuple[str, str]:
    """`auto` made concrete: a single still gets a dolly (with the subject's parallax when it has one) and a
    hero-spin under an orbit; a transition a gentle zoom; a loop a dolly there and back."""
    mode, camera, motion = task_input.get("mode", "single"), task_input["camera"], task_input["motion"]
    if camera == "auto":
        camera = "zoom-in" if mode == "transition" else "dolly"
    if motion == "auto":
        motion = "hero-spin" if camera == "orbit" else "none"
    if mode == "transition":  # two different stills have no one subject: the move is the camera's alone
        camera = {"orbit": "pan-right", "dolly": "zoom-in"}.get(camera, camera)
        motion = "none"
    return camera, motion


def frames(task_input: dict, workdir: Path):
    """Yield the clip's frames (BGRA uint8), in order."""
    size = (int(task_input["width"]), int(task_input["height"]))
    fps, count = int(task_input["fps"]), int(task_input["frames"])
    mode = task_input.get("mode", "single")
    camera, motion = resolve(task_input)
    amp = 1.5 if task_input.get("style") == "creative" else 1.0
    layered = camera in LAYERED_CAMERAS or motion in LAYERED_MOTIONS
    first = make_plate(workdir / task_input["first"], *size, layered=layered)
    last = make_plate(workdir / task_input["last"], *size, layered=False) if task_input.get("last") else None
    depth = _depth(first, task_input, workdir)  # the studio's depth model: every pixel moves by its nearness
    if first.subject is None and depth is None:  # no subject found: the whole picture moves as one
        camera = {"orbit": "pan-right", "dolly": "zoom-in"}.get(camera, camera)
        motion = "none"
    fade = max(0, min(count - 1, round(float(task_input.get("crossfade", 0)) * fps))) if mode == "loop" else 0
    share = move_share(camera, motion, amp, [p for p in (first, last) if p is not None], size)
    start = None
    for i in range(count):
        t = i / count if mode == "loop" else i / max(1, count - 1)
        u = (1 - math.cos(2 * math.pi * t)) / 2 if mode == "loop" else smoother(t)
        cam = scaled(camera_at(camera, u, amp), share)
        layer = layer_at(camera, motion, u, t, amp * share, first, cam) \
            if first.subject is not None or depth is not None else None
        out = frame(first, cam, layer, size) if depth is None or layer is None else onnx_models.parallax_frame(
            first.rgb, depth, view_matrix(cam, size, first.rgb.shape[1::-1]), layer_matrix(layer, depth.centre), size)
        if last is not None:  # hold, crossfade through the middle, hold
            w = smoother((t - 0.2) / 0.6)
            if w > 0:
                out = cv2.addWeighted(out, 1 - w, frame(last, cam, None, size), w, 0)
        if start is None:
            start = out
        if fade and i >= count - fade:  # the tail dissolves into the first frame: the loop closes
            w = (i - (count - fade) + 1) / fade
            out = cv2.addWeighted(out, 1 - w, start, w, 0)
        yield out


def _depth(plate: Plate, task_input: dict, workdir: Path) -> onnx_models.Depth | None:
    """The plate's nearness from the studio's depth model (None: none installed, or it failed: the matte's
    two layers then)."""
    spec = task_input.get("depth_model")
    if not spec:
        return None
    return onnx_models.plate_depth(workdir / spec["file"], plate.rgb, spec, onnx_models.TaskLog())


def encode(task_input: dict, workdir: Path, report) -> None:
    """Synthesise the frames straight into one ffmpeg encode (FfmpegError when it fails)."""
    width, height, fps, count = (int(task_input[k]) for k in ("width", "height", "fps", "frames"))
    cmd = ff.raw_h264_command(workdir / OUTPUT, width, height, fps, pix_fmt="bgra")
    log_path = workdir / "ffmpeg.log"
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}  # see ff.run_with_progress: fewer arenas under RLIMIT_AS
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, env=env)
        assert proc.stdin is not None
        try:
            for i, image in enumerate(frames(task_input, workdir)):
                proc.stdin.write(image.data)
                if i % 15 == 0:
                    report.progress(0.95 * i / count, "rendering")
        except BrokenPipeError:
            pass  # ffmpeg died: its log says why, below
        except Exception:
            proc.kill()
            raise
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            proc.wait()
    if proc.returncode != 0:
        raise ff.FfmpegError(cmd, log_path.read_text(errors="replace"))


def render(task_input: dict, workdir, report) -> dict:
    started = time.perf_counter()
    workdir = Path(workdir)
    width, height, fps, count = (int(task_input[k]) for k in ("width", "height", "fps", "frames"))
    encoder = enc.preferred()
    try:
        encode(task_input, workdir, report)
    except ff.FfmpegError as exc:
        if encoder != enc.NVENC:
            raise
        lines = [line.strip() for line in exc.stderr.splitlines() if line.strip()]
        named = [line for line in lines if line.startswith("[h264_nvenc") or "cuda" in line.lower()]
        enc.nvenc_failed(f"{enc.NVENC} failed: {(named or lines or ['unknown error'])[0][:200]}")
        encoder = enc.X264  # the whole clip again, with libx264
        encode(task_input, workdir, report)
    enc.used(encoder)
    camera, motion = resolve(task_input)
    report.log(f"image.video {width}x{height} {count} frames ({camera}/{motion}) in "
               f"{time.perf_counter() - started:.2f} s")
    report.progress(1.0, "done")
    return {"files": {"video": OUTPUT}, "meta": {"width": width, "height": height, "fps": fps, "frames": count,
                                                 "duration": round(count / fps, 3), "camera": camera,
                                                 "motion": motion, **enc.encoder_meta()}}


__all__ = ["FAILED", "RenderError", "render"]
