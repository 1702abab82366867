"""The image renderer: upload in, a finished 1024x1024 (or 4096x4096) product shot out.

Steps: decode (at most the output size), matte (the upload's own transparency, else subject extraction),
placement on the square canvas, material overlays (textures.py), condition preset and tone on the subject
alone (local contrast for pro), backdrop + shadows, composite, vignette and grain, one JPEG. The
custom_instructions vocabulary (instructions.py) moves the tone, shadow, vignette, grain and placement
parameters. All 8-bit; smooth things are computed small. Deterministic: the same input and settings give the
same bytes. The filters of finish_subject (tone_lut, saturation, sharpen) and compose are the seam where a GPU
variant (gpu.py) can take over."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from renderers.base import RenderError
from renderers.image import backgrounds, conditions, edges, gpu, instructions, matte, textures

STRENGTH = {"preserve": 0.55, "creative": 0.8, "freeform": 1.0}
FIT = 0.78  # the subject's longest side, as a fraction of the canvas
FLOOR = 0.88  # where the subject stands, from the top
OUTPUT = "render.jpg"
# quality 92 with 4:2:0 chroma and no optimisation pass: the fast path of libjpeg-turbo
JPEG = [cv2.IMWRITE_JPEG_QUALITY, 92, cv2.IMWRITE_JPEG_OPTIMIZE, 0, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
UNREADABLE = "The uploaded image could not be read. Upload a JPEG, PNG, WebP or GIF image."


def load(path: Path, max_side: int) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB uint8 and the upload's own alpha (None when it has none), no larger than needed."""
    from PIL import Image, ImageOps

    if _is_jpeg(path):  # OpenCV decodes straight into an array, scaled by libjpeg, EXIF orientation applied
        arr = _load_jpeg(path, max_side)
        if arr is not None:
            return arr, None
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


def _is_jpeg(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(3) == b"\xff\xd8\xff"
    except OSError:
        return False


REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def _load_jpeg(path: Path, max_side: int) -> np.ndarray | None:
    """RGB uint8 at the smallest libjpeg scale (1/8..1) still at least max_side; None when OpenCV cannot
    read it (Pillow then tries, and words the error)."""
    from PIL import Image

    try:
        with Image.open(path) as img:  # the header only: the size picks the scale
            w, h = img.size
            if w * h > (Image.MAX_IMAGE_PIXELS or 2**31):
                return None
    except (OSError, ValueError, SyntaxError):
        return None
    flag = next((f for k, f in REDUCED if max(w, h) // k >= max_side), cv2.IMREAD_COLOR)
    bgr = cv2.imread(str(path), flag)
    if bgr is None:
        return None
    if max(bgr.shape[:2]) > max_side * 1.25:
        scale = max_side / max(bgr.shape[:2])
        bgr = matte.downscale(bgr, (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale)))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def subject(rgb: np.ndarray, own_alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The subject's pixels and alpha, cropped to its bounding box (the whole image when nothing stands out)."""
    cut, alpha, _ = cutout(rgb, own_alpha)
    return cut, alpha


def cutout(rgb: np.ndarray, own_alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """subject(), and where its box starts in the photo (x, y)."""
    alpha = matte.from_alpha_channel(own_alpha) if own_alpha is not None else None
    x0 = y0 = 0
    if alpha is None:  # the subject's own colour on the edge comes with the alpha (edges.py)
        alpha, fg, (x0, y0) = matte.extract_layers(rgb)
    else:
        fg = rgb
    seen = (alpha > 0.05).astype(np.uint8)
    if cv2.countNonZero(seen) < 0.002 * rgb.shape[0] * rgb.shape[1]:
        return rgb, np.ones(rgb.shape[:2], np.float32), (0, 0)
    x, y, w, h = cv2.boundingRect(seen)
    alpha = alpha[y:y + h, x:x + w]
    if fg is rgb:  # an upload's own transparency: its half-clear pixels take the subject's colour
        return edges.decontaminate(rgb[y:y + h, x:x + w], alpha), alpha, (x, y)
    return fg[y:y + h, x:x + w], alpha, (x0 + x, y0 + y)


def place(rgb: np.ndarray, alpha: np.ndarray, size: int, fit: float = FIT):
    """The subject scaled to `fit` of the canvas and stood on the floor line: (rgb, alpha, (x0, y0))."""
    h, w = alpha.shape
    scale = fit * size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if scale < 1:
        rgb, alpha = matte.downscale(rgb, (nw, nh)), matte.downscale(alpha, (nw, nh))
    else:
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_CUBIC)
        alpha = cv2.resize(alpha, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x0 = (size - nw) // 2
    y0 = max(int(size * 0.04), int(size * FLOOR) - nh)
    return rgb, alpha, (x0, y0)


def tone_lut(strength: float, adjust: instructions.Adjust) -> np.ndarray:
    """One lookup table per channel (1 x 256 x 3): the S-curve (its amount by strength and the contrast words),
    exposure as a gamma, and white balance (warm lifts red and lowers blue, cool the reverse)."""
    x = np.arange(256, dtype=np.float32) / 255
    x = x ** np.float32(1 - 0.16 * adjust.exposure)
    amount = 0.12 * strength + 0.14 * adjust.contrast
    x = x + amount * (x - 0.5) * (1 - np.abs(2 * x - 1))
    t = 0.07 * adjust.temperature
    gains = np.array([1 + t, 1 + 0.15 * t, 1 - t], np.float32)
    lut = np.clip(x[:, None] * gains[None, :] * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(lut[None, :, :])


def sharpen(rgb: np.ndarray, amount: float) -> np.ndarray:
    """Unsharp mask whose radius follows the image size. A wide blur is taken on a half-size copy (a Gaussian
    of sigma >= 2 loses nothing there) and scaled back: a third of the cost at 4K."""
    if amount <= 0:
        return rgb
    sigma = max(0.8, rgb.shape[0] / 900)
    if sigma >= 2:
        h, w = rgb.shape[:2]
        half = matte.shrink(rgb, 2)
        blurred = cv2.resize(cv2.GaussianBlur(half, (0, 0), sigma / 2), (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        blurred = cv2.GaussianBlur(rgb, (0, 0), sigma)
    return cv2.addWeighted(rgb, 1 + amount, blurred, -amount, 0)


def finish_subject(rgb: np.ndarray, alpha: np.ndarray, settings: dict, strength: float,
                   adjust: instructions.Adjust | None = None):
    """Condition preset, then tone in 8-bit: local contrast (pro), one per-channel curve, saturation and an
    unsharp mask by strength and by the instruction words."""
    adjust = adjust or instructions.Adjust()
    rgb, alpha = conditions.apply_u8(settings.get("condition", "auto"), rgb, alpha, strength)
    if settings.get("model") == "pro":  # local contrast: CLAHE on luma (YCrCb: a cheaper round trip than Lab)
        ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
        ycc[..., 0] = cv2.createCLAHE(clipLimit=1.6, tileGridSize=(8, 8)).apply(np.ascontiguousarray(ycc[..., 0]))
        rgb = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
    lut = tone_lut(strength, adjust)
    saturation = 0.0 if adjust.saturation <= -3 else 1 + 0.1 * strength + 0.25 * adjust.saturation
    amount = 0.5 * strength * (1 + 0.8 * adjust.sharpen)
    on_gpu = gpu.finish_subject(rgb, lut, saturation, amount)  # None unless this task holds a GPU and CuPy
    if on_gpu is not None:
        return on_gpu, alpha
    rgb = cv2.LUT(rgb, lut)
    if saturation != 1:
        grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        rgb = cv2.addWeighted(rgb, saturation, grey, 1 - saturation, 0)
    return sharpen(rgb, amount), alpha


def compose(canvas: np.ndarray, fg: np.ndarray, alpha: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    """The subject blended over the shadowed backdrop by its alpha (8-bit), in place."""
    size = canvas.shape[0]
    x0, y0 = at
    h, w = min(alpha.shape[0], size - y0), min(alpha.shape[1], size - x0)
    a = np.ascontiguousarray(alpha[:h, :w])
    region = canvas[y0:y0 + h, x0:x0 + w]
    canvas[y0:y0 + h, x0:x0 + w] = cv2.blendLinear(np.ascontiguousarray(fg[:h, :w]), region, a, 1 - a)
    return canvas


def _grain_tile() -> np.ndarray:
    """256-pixel tile of fine grain, offset by 128 (grain repeats unseen at that size)."""
    tile = np.random.default_rng(7).normal(0, 1.6, (256, 256)).round() + 128
    return cv2.cvtColor(np.clip(tile, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)


GRAIN = _grain_tile()


def vignette(img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    q = max(16, size // 8)
    ys, xs = np.ogrid[0:q, 0:q]
    r = np.hypot(xs / (q - 1) - 0.5, ys / (q - 1) - 0.5) / 0.707
    small = ((1 - 0.18 * r ** 2.2) * 255 + 0.5).astype(np.uint8)
    return cv2.multiply(img, cv2.cvtColor(cv2.resize(small, (size, size)), cv2.COLOR_GRAY2RGB), scale=1 / 255)


def grain(img: np.ndarray) -> np.ndarray:
    """Fine grain from the tile, repeated, added with one saturating add (no float image at 4K)."""
    size = img.shape[0]
    reps = -(-size // 256)
    return cv2.addWeighted(img, 1.0, cv2.repeat(GRAIN, reps, reps)[:size, :size], 1.0, -128.0)


def pro_finish(img: np.ndarray, style: str, model: str, adjust: instructions.Adjust) -> np.ndarray:
    """Vignette (pro: only on generated sweeps, a solid colour the client chose stays that colour) and grain;
    the instruction words switch either on or off."""
    pro = model == "pro"
    if adjust.vignette if adjust.vignette is not None else pro and style in ("auto", "gradient"):
        img = vignette(img)
    if adjust.grain if adjust.grain is not None else pro:
        img = grain(img)
    return img


def finish(rgb: np.ndarray, own_alpha: np.ndarray | None, task_input: dict, bg: np.ndarray | None = None,
           materials: list[np.ndarray] | None = None):
    """The whole look, from decoded pixels to the finished uint8 RGB canvas."""
    size, style = int(task_input["size"]), task_input.get("background_style", "auto")
    strength = STRENGTH.get(task_input.get("render_mode", "preserve"), 0.55)
    adjust = instructions.Adjust.from_params(task_input.get("adjust"))
    cut, alpha = subject(rgb, own_alpha)
    placed, alpha, at = place(cut, alpha, size, FIT + 0.08 * adjust.fit)
    placed = textures.overlay(placed, alpha, materials or [], strength)
    fg, alpha = finish_subject(placed, alpha, task_input, strength, adjust)
    shade = None if adjust.shadow == "none" else backgrounds.shadow(alpha, at, size, strength, adjust.shadow)
    mean = np.array(cv2.mean(cut)[:3], np.float32)
    img = compose(backgrounds.canvas(style, size, mean, strength, bg, shade), fg, alpha, at)
    return pro_finish(img, style, task_input.get("model", "classic"), adjust), at, alpha.shape


def render(task_input: dict, workdir, report) -> dict:
    started = time.perf_counter()
    workdir = Path(workdir)
    size = int(task_input["size"])
    rgb, own_alpha = load(workdir / task_input["input"], max_side=size)
    if own_alpha is None and task_input.get("matte_model"):  # the studio's model cuts it out, as an upload's own
        from renderers.image import onnx_models  # alpha would; None when it fails: the classical matte then

        own_alpha = onnx_models.matte_alpha(workdir / task_input["matte_model"]["file"], rgb,
                                            task_input["matte_model"], report)
    report.progress(0.2, "matte")
    bg = backgrounds.from_image(str(workdir / task_input["background"]), size) if task_input.get("background") \
        else None
    materials = [textures.load(str(workdir / name)) for name in task_input.get("textures", [])]
    img, at, (h, w) = finish(rgb, own_alpha, task_input, bg, materials)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), JPEG)
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
        finish(tiny, None, {"size": 64, "model": model, "condition": condition, "adjust": {"temperature": 1}},
               materials=[tiny] if model == "pro" else None)


cv2.setNumThreads(0)  # one task, one core (the scheduler's cpu=1): no thread pool, safe to fork
warm()
