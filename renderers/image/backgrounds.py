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
    studio sweep tinted towards the subject's complement so it stands out; gradient is a vertical fade.
    `size` may be the quarter-size canvas that the shadows are drawn on (see `canvas`)."""
    solid = parse_color(style)
    if solid is not None:
        return np.full((size, size, 3), solid, np.uint8)
    tint = 255.0 - subject_mean
    if style == "gradient":
        top = 0.85 * np.array([245, 246, 250], np.float32) + 0.15 * tint
        return _vertical(size, top, top * 0.62)
    inner = np.array([243, 243, 241], np.float32) * (1 - 0.08 * strength) + 0.08 * strength * tint
    return _radial(size, inner, inner * 0.80)


def canvas(style: str, size: int, subject_mean: np.ndarray, strength: float, bg: np.ndarray | None,
           shade: np.ndarray | None) -> np.ndarray:
    """The full-size backdrop with its shadows. A generated backdrop is smooth, so it and the quarter-size
    shadow multiplier are combined small and scaled up once; a library image keeps its detail and takes the
    scaled-up multiplier."""
    if shade is None:
        return bg if bg is not None else backdrop(style, size, subject_mean, strength)
    if bg is None:
        small = backdrop(style, shade.shape[0], subject_mean, strength)
        small = cv2.multiply(small, cv2.cvtColor(shade, cv2.COLOR_GRAY2RGB), scale=1 / 255)
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    mult = cv2.resize(shade, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.multiply(bg, cv2.cvtColor(mult, cv2.COLOR_GRAY2RGB), scale=1 / 255)


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


SHADOW_SIDE = 320  # shadows are soft: drawn at most this large (blurs cost the square of the size), scaled up
SHADOW_KINDS = {None: (1.0, 1.0, 1.0), "soft": (1.8, 1.5, 0.7), "hard": (0.45, 0.7, 1.35)}  # blur, contact, opacity


def shadow(alpha: np.ndarray, at: tuple[int, int], size: int, strength: float, kind: str | None = None) -> np.ndarray:
    """Small (quarter-size, at most SHADOW_SIDE) multiplier (uint8 grey, 255 = no shadow) with a contact
    shadow under the subject and a soft drop shadow cast down and to the right. kind: None, soft or hard."""
    blur, contact_blur, opacity = SHADOW_KINDS.get(kind, SHADOW_KINDS[None])
    q = max(16, min(size // 4, SHADOW_SIDE))
    k = q / size
    h, w = alpha.shape
    x0, y0 = int(at[0] * k), int(at[1] * k)
    sw, sh = max(1, min(q - x0, round(w * k))), max(1, min(q - y0, round(h * k)))
    small = np.zeros((q, q), np.float32)
    small[y0:y0 + sh, x0:x0 + sw] = cv2.resize(alpha, (sw, sh), interpolation=cv2.INTER_AREA)
    drop = np.zeros_like(small)
    shift_x, shift_y = int(q * 0.015), int(q * 0.02)
    drop[shift_y:, shift_x:] = small[:q - shift_y, :q - shift_x]
    drop = cv2.GaussianBlur(drop, (0, 0), q * 0.02 * blur) * 0.28
    contact = np.zeros_like(small)
    axes = (max(1, int(sw * 0.48)), max(1, int(sh * 0.035)))
    cv2.ellipse(contact, (x0 + sw // 2, y0 + sh), axes, 0, 0, 360, 1.0, -1)
    contact = cv2.GaussianBlur(contact, (0, 0), max(1.0, axes[1] * 1.2 * contact_blur)) * 0.55
    total = np.clip((drop + contact) * (0.6 + 0.4 * strength) * opacity, 0, 0.85)
    return ((1.0 - total) * 255 + 0.5).astype(np.uint8)
