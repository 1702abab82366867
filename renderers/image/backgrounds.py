"""The new backdrop (`background_style`, or a background image from the asset library) and the shadows that
seat the subject on it. Smooth things are computed at a quarter of the size and scaled up."""
from __future__ import annotations

import re

import cv2
import numpy as np

CUSTOM = re.compile(r"^custom:#([0-9A-Fa-f]{6})$")
SOLIDS = {"white": (255, 255, 255), "grey": (128, 128, 128), "gray": (128, 128, 128), "black": (0, 0, 0)}


def parse_color(style: str) -> tuple[int, int, int] | None:
    got = CUSTOM.match(style or "")
    if got:
        value = int(got.group(1), 16)
        return (value >> 16) & 255, (value >> 8) & 255, value & 255
    return SOLIDS.get(style)


def _radial(size: int, inner: np.ndarray, outer: np.ndarray, center_y: float = 0.42) -> np.ndarray:
    small = max(16, size // 4)
    ys, xs = np.mgrid[0:small, 0:small].astype(np.float32) / (small - 1)
    r = np.clip(np.hypot(xs - 0.5, (ys - center_y) * 1.1) / 0.75, 0, 1)[..., None] ** 1.5
    img = np.clip(inner * (1 - r) + outer * r + 0.5, 0, 255).astype(np.uint8)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)


def _vertical(size: int, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    column = np.clip(top * (1 - t) + bottom * t + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(column, (size, size, 3)))


def backdrop(style: str, size: int, subject_mean: np.ndarray, strength: float) -> np.ndarray:
    """uint8 RGB. Solid styles are exact colours (a client asked for that colour); auto is a soft
    studio sweep tinted towards the subject's complement so it stands out; gradient is a vertical fade."""
    solid = parse_color(style)
    if solid is not None:
        return np.full((size, size, 3), solid, np.uint8)
    tint = 255.0 - subject_mean
    if style == "gradient":
        top = 0.85 * np.array([245, 246, 250], np.float32) + 0.15 * tint
        return _vertical(size, top, top * 0.62)
    inner = np.array([243, 243, 241], np.float32) * (1 - 0.08 * strength) + 0.08 * strength * tint
    return _radial(size, inner, inner * 0.80)


def from_image(path: str, size: int) -> np.ndarray:
    """A library background, cover-fitted to the square canvas."""
    from PIL import Image

    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        rgb = np.asarray(img.convert("RGB"))
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = rgb[top:top + side, left:left + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


def shadow(alpha: np.ndarray, at: tuple[int, int], size: int, strength: float) -> np.ndarray:
    """Multiplier (uint8 RGB, 255 = no shadow) with a contact shadow under the subject and a soft drop shadow
    cast down and to the right, both drawn on a quarter-size canvas."""
    q = max(16, size // 4)
    k = q / size
    h, w = alpha.shape
    x0, y0 = int(at[0] * k), int(at[1] * k)
    sw, sh = max(1, min(q - x0, round(w * k))), max(1, min(q - y0, round(h * k)))
    small = np.zeros((q, q), np.float32)
    small[y0:y0 + sh, x0:x0 + sw] = cv2.resize(alpha, (sw, sh), interpolation=cv2.INTER_AREA)
    drop = np.zeros_like(small)
    shift_x, shift_y = int(q * 0.015), int(q * 0.02)
    drop[shift_y:, shift_x:] = small[:q - shift_y, :q - shift_x]
    drop = cv2.GaussianBlur(drop, (0, 0), q * 0.02) * 0.28
    contact = np.zeros_like(small)
    axes = (max(1, int(sw * 0.48)), max(1, int(sh * 0.035)))
    cv2.ellipse(contact, (x0 + sw // 2, y0 + sh), axes, 0, 0, 360, 1.0, -1)
    contact = cv2.GaussianBlur(contact, (0, 0), max(1.0, axes[1] * 1.2)) * 0.55
    total = np.clip((drop + contact) * (0.6 + 0.4 * strength), 0, 0.8)
    mult = ((1.0 - total) * 255 + 0.5).astype(np.uint8)
    return cv2.cvtColor(cv2.resize(mult, (size, size), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2RGB)
