"""The image renderer: upload in, a finished 1024x1024 (or 4096x4096) product shot out.

Steps: decode (at most the output size), matte (the upload's own transparency, else subject extraction),
condition preset and tone on the subject alone, placement on the square canvas, backdrop + shadows,
composite, pro finishing (local contrast, vignette, grain), one JPEG. Deterministic: the same input and
settings give the same bytes."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from renderers.base import RenderError
from renderers.image import backgrounds, conditions, matte

STRENGTH = {"preserve": 0.55, "creative": 0.8, "freeform": 1.0}
FIT = 0.78  # the subject's longest side, as a fraction of the canvas
FLOOR = 0.88  # where the subject stands, from the top
OUTPUT = "render.jpg"
UNREADABLE = "The uploaded image could not be read. Upload a JPEG, PNG, WebP or GIF image."


def load(path: Path, max_side: int) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB uint8 and the upload's own alpha (None when it has none), no larger than needed."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            img: Image.Image = opened
            img.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale straight away
            if img.getexif().get(0x0112, 1) != 1:  # only a rotated photo pays for the copy
                img = ImageOps.exif_transpose(img)
            has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            mode = "RGBA" if has_alpha else "RGB"
            img = img if img.mode == mode else img.convert(mode)
            if max(img.size) > max_side * 1.25:  # a little larger is fine: placing the subject resizes it
                img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
            arr = np.asarray(img)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise RenderError(UNREADABLE) from exc
    if has_alpha:
        return np.ascontiguousarray(arr[..., :3]), arr[..., 3]
    return arr, None


def subject(rgb: np.ndarray, own_alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The subject's pixels and alpha, cropped to its bounding box (the whole image when nothing stands out)."""
    alpha = matte.from_alpha_channel(own_alpha) if own_alpha is not None else None
    if alpha is None:
        alpha = matte.extract(rgb)
    seen = (alpha > 0.05).astype(np.uint8)
    if cv2.countNonZero(seen) < 0.002 * alpha.size:
        return rgb, np.ones(alpha.shape, np.float32)
    x, y, w, h = cv2.boundingRect(seen)
    return rgb[y:y + h, x:x + w], alpha[y:y + h, x:x + w]


def place(rgb: np.ndarray, alpha: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    h, w = alpha.shape
    scale = FIT * size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
    alpha = cv2.resize(alpha, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x0 = (size - nw) // 2
    y0 = max(int(size * 0.04), int(size * FLOOR) - nh)
    return rgb, alpha, (x0, y0)


def _curve(strength: float) -> np.ndarray:
    """A gentle S-curve (more contrast around mid-grey, ends fixed), as a lookup table."""
    x = np.arange(256, dtype=np.float32) / 255
    curved = x + 0.12 * strength * (x - 0.5) * (1 - np.abs(2 * x - 1))
    return np.clip(curved * 255 + 0.5, 0, 255).astype(np.uint8)


def finish_subject(rgb: np.ndarray, alpha: np.ndarray, settings: dict, strength: float):
    """Condition preset (float), then tone in 8-bit: S-curve, saturation and an unsharp mask by strength."""
    condition = settings.get("condition", "auto")
    if condition in conditions.PRESETS:
        f, alpha = conditions.apply(condition, rgb.astype(np.float32) * np.float32(1 / 255), alpha, strength)
        rgb = (f * 255 + 0.5).astype(np.uint8)
    if settings.get("model") == "pro":  # local contrast: CLAHE on lightness
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
        lab[..., 0] = cv2.createCLAHE(clipLimit=1.6, tileGridSize=(8, 8)).apply(lab[..., 0])
        rgb = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    rgb = cv2.LUT(rgb, _curve(strength))
    grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    rgb = cv2.addWeighted(rgb, 1 + 0.1 * strength, grey, -0.1 * strength, 0)
    blurred = cv2.GaussianBlur(rgb, (0, 0), max(0.8, rgb.shape[0] / 900))
    return cv2.addWeighted(rgb, 1 + 0.5 * strength, blurred, -0.5 * strength, 0), alpha


def compose(bg: np.ndarray, fg: np.ndarray, alpha: np.ndarray, at: tuple[int, int], strength: float) -> np.ndarray:
    """Shadows multiplied into the backdrop, then the subject blended over it by its alpha (8-bit)."""
    size = bg.shape[0]
    out = cv2.multiply(bg, backgrounds.shadow(alpha, at, size, strength), scale=1 / 255)
    x0, y0 = at
    h, w = min(alpha.shape[0], size - y0), min(alpha.shape[1], size - x0)
    a = np.ascontiguousarray(alpha[:h, :w])
    region = out[y0:y0 + h, x0:x0 + w]
    out[y0:y0 + h, x0:x0 + w] = cv2.blendLinear(np.ascontiguousarray(fg[:h, :w]), region, a, 1 - a)
    return out


def pro_finish(img: np.ndarray, style: str) -> np.ndarray:
    """Vignette only on generated sweeps (a solid colour the client chose stays that colour) and fine grain."""
    size = img.shape[0]
    if style in ("auto", "gradient"):
        q = max(16, size // 8)
        ys, xs = np.ogrid[0:q, 0:q]
        r = np.hypot(xs / (q - 1) - 0.5, ys / (q - 1) - 0.5) / 0.707
        small = ((1 - 0.18 * r ** 2.2) * 255 + 0.5).astype(np.uint8)
        vignette = cv2.cvtColor(cv2.resize(small, (size, size)), cv2.COLOR_GRAY2RGB)
        img = cv2.multiply(img, vignette, scale=1 / 255)
    tile = np.random.default_rng(7).normal(0, 1.6, (256, 256)).round()  # grain repeats unseen
    reps = -(-size // 256)
    grain = cv2.cvtColor(np.tile(tile, (reps, reps))[:size, :size].astype(np.float32), cv2.COLOR_GRAY2RGB)
    up, down = np.clip(grain, 0, 255).astype(np.uint8), np.clip(-grain, 0, 255).astype(np.uint8)
    return cv2.subtract(cv2.add(img, up), down)


def finish(rgb: np.ndarray, own_alpha: np.ndarray | None, task_input: dict, bg: np.ndarray | None = None):
    """The whole look, from decoded pixels to the finished uint8 RGB canvas."""
    size, style = int(task_input["size"]), task_input.get("background_style", "auto")
    strength = STRENGTH.get(task_input.get("render_mode", "preserve"), 0.55)
    cut, alpha = subject(rgb, own_alpha)
    placed, alpha, at = place(cut, alpha, size)
    fg, alpha = finish_subject(placed, alpha, task_input, strength)
    if bg is None:
        bg = backgrounds.backdrop(style, size, np.array(cv2.mean(cut)[:3], np.float32), strength)
    img = compose(bg, fg, alpha, at, strength)
    return (pro_finish(img, style) if task_input.get("model") == "pro" else img), at, alpha.shape


def render(task_input: dict, workdir, report) -> dict:
    started = time.perf_counter()
    workdir = Path(workdir)
    size = int(task_input["size"])
    rgb, own_alpha = load(workdir / task_input["input"], max_side=size)
    report.progress(0.2, "matte")
    bg = backgrounds.from_image(str(workdir / task_input["background"]), size) if task_input.get("background") \
        else None
    img, at, (h, w) = finish(rgb, own_alpha, task_input, bg)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RenderError("Render failed. You were not charged. Please try again.")
    (workdir / OUTPUT).write_bytes(data.tobytes())
    report.log(f"image.render {size}x{size} in {time.perf_counter() - started:.3f} s")
    report.progress(1.0, "done")
    return {"files": {"render": OUTPUT}, "meta": {"width": size, "height": size, "subject_box": [*at, w, h]}}


def warm() -> None:
    """Run every code path once on a tiny picture. The warm worker imports this module before it forks tasks,
    so OpenCV's colour tables, GrabCut and Pillow's codecs are initialised once instead of in every task
    (a third of a second each time otherwise)."""
    import io

    from PIL import Image

    tiny = np.full((48, 64, 3), 220, np.uint8)
    tiny[12:40, 20:44] = (200, 40, 30)
    buffer = io.BytesIO()
    Image.fromarray(tiny).save(buffer, "JPEG")
    Image.open(io.BytesIO(buffer.getvalue())).load()
    for model, condition in (("classic", "auto"), ("pro", "rusty")):
        finish(tiny, None, {"size": 64, "model": model, "condition": condition})


cv2.setNumThreads(0)  # one task, one core (the scheduler's cpu=1): no thread pool, safe to fork
warm()
