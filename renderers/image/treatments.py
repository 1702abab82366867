"""Primitive surface treatments the condition presets are made of. Each takes (rgb, alpha, rng, s, **params)
with rgb float32 0..1 (H, W, 3), alpha float32 0..1 (H, W), s the strength, and returns (rgb, alpha)."""
from __future__ import annotations

import cv2
import numpy as np


def noise(shape: tuple[int, int], rng: np.random.Generator, scale: float = 12) -> np.ndarray:
    """Smooth value noise 0..1 (three octaves), cheap at any size: random cells scaled up."""
    h, w = shape
    out = np.zeros((h, w), np.float32)
    for octave, weight in ((1, 0.6), (2, 0.28), (4, 0.12)):
        cells = max(2, int(scale * octave))
        grid = rng.random((cells, cells)).astype(np.float32)
        out += weight * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def _mix(rgb, mask, color, mix, multiply=False):
    """rgb moved towards a colour (or a multiply by it) by mask * mix, in place where numpy allows."""
    layer = rgb * (np.asarray(color, np.float32) * 1.6) if multiply else np.asarray(color, np.float32)
    delta = layer - rgb
    delta *= (mask * np.float32(mix))[..., None]
    rgb += delta
    return rgb


def tone(rgb, a, rng, s, contrast=1.0, sat=1.0, bright=0.0):
    grey = rgb.mean(axis=2, keepdims=True)
    rgb = grey + (rgb - grey) * (1 + (sat - 1) * s)
    rgb = 0.5 + (rgb - 0.5) * (1 + (contrast - 1) * s) + bright * s
    return rgb, a


def tint(rgb, a, rng, s, color, mix):
    return _mix(rgb, np.ones(a.shape, np.float32), color, mix * s), a


def gloss(rgb, a, rng, s, amount):
    """A soft highlight from above-left where the surface is already bright."""
    h, w = a.shape
    ys, xs = np.ogrid[0:h, 0:w]
    light = np.clip(1.2 - (xs / w + ys / h), 0, 1).astype(np.float32)
    lum = rgb.mean(axis=2)
    spec = (np.clip(lum - 0.45, 0, 1) * light * amount * s)[..., None]
    return np.clip(rgb + spec, 0, 1), a


def grain(rgb, a, rng, s, amount):
    return rgb + rng.normal(0, amount * s, a.shape).astype(np.float32)[..., None], a


def patches(rgb, a, rng, s, color, cover, mix, scale=8, multiply=False, sharp=False):
    n = noise(a.shape, rng, scale)
    edge = 0.02 if sharp else 0.12
    mask = np.clip((n - (1 - cover * s)) / edge, 0, 1)
    return _mix(rgb, mask, color, mix, multiply), a


def speckle(rgb, a, rng, s, color, density, size=1):
    mask = (rng.random(a.shape) < density * s).astype(np.float32)
    if size > 1:
        mask = cv2.dilate(mask, np.ones((size, size), np.uint8))
    return _mix(rgb, cv2.GaussianBlur(mask, (0, 0), 0.6), color, 0.8), a


def _lines(a, rng, count, length, width, wander):
    h, w = a.shape
    mask = np.zeros((h, w), np.float32)
    ys, xs = np.nonzero(a > 0.5)
    if len(xs) == 0:
        return mask
    for _ in range(count):
        i = rng.integers(len(xs))
        pts, angle = [(int(xs[i]), int(ys[i]))], rng.uniform(0, np.pi)
        for _ in range(6 if wander else 1):
            angle += rng.normal(0, wander)
            step = length * max(h, w) / (6 if wander else 1)
            x, y = pts[-1]
            pts.append((int(x + np.cos(angle) * step), int(y + np.sin(angle) * step)))
        cv2.polylines(mask, [np.array(pts, np.int32)], False, 1.0, max(1, int(width * max(h, w) / 1024)),
                      cv2.LINE_AA)
    return mask


def scratches(rgb, a, rng, s, count, color, length=0.1, alpha=0.8):
    mask = _lines(a, rng, max(1, int(count * s)), length, 1, 0.0)
    return _mix(rgb, mask, color, alpha), a


def cracks(rgb, a, rng, s, count, color, width=1):
    mask = _lines(a, rng, max(1, int(count * s)), 0.25, width, 0.6)
    return _mix(rgb, mask, color, 0.9), a


def smudges(rgb, a, rng, s, count):
    h, w = a.shape
    mask = np.zeros((h, w), np.float32)
    for _ in range(int(count * s)):
        c = (int(rng.uniform(0.2, 0.8) * w), int(rng.uniform(0.2, 0.8) * h))
        r = int(max(h, w) * rng.uniform(0.015, 0.03))
        for ring in range(1, 6):
            cv2.ellipse(mask, c, (r * ring // 5, int(r * ring / 5 * 1.3)), rng.uniform(0, 180), 0, 300, 1.0, 1)
    return _mix(rgb, cv2.GaussianBlur(mask, (0, 0), 1.0) * a, (0.9, 0.9, 0.88), 0.25), a


def dents(rgb, a, rng, s, count):
    """Shading from a height map of soft pits, lit from the top left."""
    h, w = a.shape
    height = np.zeros((h, w), np.float32)
    for _ in range(max(1, int(count * s))):
        c = (int(rng.uniform(0.2, 0.8) * w), int(rng.uniform(0.2, 0.8) * h))
        cv2.circle(height, c, int(max(h, w) * rng.uniform(0.03, 0.07)), -1.0, -1)
    height = cv2.GaussianBlur(height, (0, 0), max(h, w) * 0.02)
    shade = (cv2.Sobel(height, cv2.CV_32F, 1, 0) + cv2.Sobel(height, cv2.CV_32F, 0, 1)) * 6.0
    return np.clip(rgb - (shade * a)[..., None], 0, 1), a


def droplets(rgb, a, rng, s, count, radius=0.008):
    h, w = a.shape
    dark, light = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    ys, xs = np.nonzero(a > 0.5)
    for _ in range(int(count * s) if len(xs) else 0):
        i = rng.integers(len(xs))
        r = max(1, int(max(h, w) * radius * rng.uniform(0.5, 1.5)))
        cv2.circle(dark, (int(xs[i]), int(ys[i])), r, 1.0, -1, cv2.LINE_AA)
        cv2.circle(light, (int(xs[i] - r / 3), int(ys[i] - r / 3)), max(1, r // 3), 1.0, -1, cv2.LINE_AA)
    rgb = _mix(rgb, dark, (0.0, 0.0, 0.0), 0.18)
    return _mix(rgb, light, (1.0, 1.0, 1.0), 0.7), a


def _rim(a, rng, depth, direction):
    """The part of the subject within `depth` of its top (direction 1) or the lower part (direction -1)."""
    h = a.shape[0]
    px = max(1, int(depth * h))
    if direction > 0:
        shifted = np.zeros_like(a)
        shifted[px:] = a[:-px]
        rim = np.clip(a - shifted, 0, 1)
    else:
        rows = np.linspace(0, 1, h, dtype=np.float32)[:, None]
        ys = np.nonzero(a.max(axis=1) > 0.5)[0]
        bottom = ys.max() / h if len(ys) else 1.0
        rim = np.clip((rows - (bottom - depth)) / max(depth, 1e-3), 0, 1) * a
    return cv2.GaussianBlur(rim, (0, 0), 2.0) * (0.6 + 0.6 * noise(a.shape, rng, 10))


def top(rgb, a, rng, s, color, depth):
    return _mix(rgb, np.clip(_rim(a, rng, depth * s, 1), 0, 1), color, 0.95), a


def bottom(rgb, a, rng, s, color, depth):
    return _mix(rgb, np.clip(_rim(a, rng, depth * s, -1), 0, 1), color, 0.85), a


def edges(rgb, a, rng, s, color, width, mix):
    dist = cv2.distanceTransform((a > 0.5).astype(np.uint8), cv2.DIST_L2, 3) / max(a.shape)
    mask = np.clip(1 - dist / max(width * s, 1e-3), 0, 1) * (0.5 + 0.5 * noise(a.shape, rng, 20))
    return _mix(rgb, mask * a, color, mix), a


def erode_edges(rgb, a, rng, s, amount):
    """Bites out of the silhouette: the alpha loses noisy chunks along its edge."""
    n = noise(a.shape, rng, 24)
    dist = cv2.distanceTransform((a > 0.5).astype(np.uint8), cv2.DIST_L2, 3) / max(a.shape)
    bite = (dist < 0.012 * amount * s) & (n > 0.6)
    return rgb, np.where(bite, 0.0, a).astype(np.float32)


def warp(rgb, a, rng, s, amp, waves):
    h, w = a.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    map_y = ys + amp * s * h * np.sin(2 * np.pi * waves * xs / w + phase)
    map_x = xs + amp * s * 0.5 * w * np.sin(2 * np.pi * waves * ys / h + phase)
    rgb = cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return rgb, cv2.remap(a, map_x, map_y, cv2.INTER_LINEAR, borderValue=0)


def melt(rgb, a, rng, s, amount):
    """Drips: each column slides down by a noisy amount, growing towards the bottom."""
    h, w = a.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    drip = cv2.resize(rng.random((1, max(2, w // 24))).astype(np.float32), (w, 1), interpolation=cv2.INTER_CUBIC)
    map_y = ys - amount * s * h * drip * (ys / h) ** 2
    rgb = cv2.remap(rgb, xs, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return rgb, cv2.remap(a, xs, map_y, cv2.INTER_LINEAR, borderValue=0)
