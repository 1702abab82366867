"""How good the RenderCAD cut-out is on a synthetic photo with a known truth (tests/media/products.py).

- iou: the cut-out (alpha > 0.5, at the photo's own size) against the true subject;
- fringe: on a backdrop that contrasts with the old one, no shadow, the mean absolute distance (0..255 levels,
  over pixels and channels) of the ring 2..6 px outside the true subject (in the finished canvas) from the new
  backdrop colour: the old backdrop's colour carried on the cut-out's edge shows here;
- outside: how many canvas pixels a condition + a material + tone change (by any amount) where the cut-out's
  alpha is 0, against the same render without them (no shadow: the new shadow is the renderer's own);
- spill: the same change (by more than 3 levels) farther than 2 px from the TRUE subject: rust painted on what
  the cut-out wrongly kept (the old backdrop, its shadow, a hole) or on a wide soft edge.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from renderers.image import backgrounds, pipeline
from tests.media.products import Photo

TREATED = {"condition": "rusty", "render_mode": "creative", "adjust": {"shadow": "none", "temperature": 2,
                                                                       "contrast": 1}}


@dataclass
class Score:
    name: str
    iou: float
    fringe: float
    outside: int
    spill: int
    outside_4k: int | None = None


def material() -> np.ndarray:
    """A wood-like material (stripes with a little noise), deterministic."""
    ys, xs = np.mgrid[0:256, 0:256].astype(np.float32)
    grain = 0.5 + 0.5 * np.sin(xs * 0.15 + 3 * np.sin(ys * 0.02))
    base = np.array([120, 80, 40], np.float32) + grain[..., None] * np.array([70, 50, 30], np.float32)
    return np.clip(base, 0, 255).astype(np.uint8)


def iou(photo: Photo) -> float:
    cut, alpha, (x0, y0) = pipeline.cutout(photo.rgb, photo.alpha)
    full = np.zeros(photo.truth.shape, bool)
    full[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]] = alpha > 0.5
    inter = np.logical_and(full, photo.truth).sum()
    return float(inter / max(np.logical_or(full, photo.truth).sum(), 1))


def _truth_on_canvas(photo: Photo, size: int, at: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """The true subject where the renderer placed the cut-out: the same crop, the same scale, the same spot."""
    _, alpha, (x0, y0) = pipeline.cutout(photo.rgb, photo.alpha)
    crop = photo.truth[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]].astype(np.float32)
    h, w = shape
    placed = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if w < crop.shape[1] else cv2.INTER_LINEAR)
    out = np.zeros((size, size), bool)
    ph, pw = min(h, size - at[1]), min(w, size - at[0])
    out[at[1]:at[1] + ph, at[0]:at[0] + pw] = placed[:ph, :pw] > 0.5
    return out


def _render(photo: Photo, size: int, **settings) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    task = {"size": size, "model": "classic", "render_mode": "preserve", "background_style": photo.contrast,
            "adjust": {"shadow": "none"}, **settings}
    materials = [material()] if settings.get("condition") else None
    img, at, shape = pipeline.finish(photo.rgb, photo.alpha, task, None, materials)
    return img, at, shape


def fringe(photo: Photo, size: int = 1024) -> float:
    img, at, shape = _render(photo, size)
    truth = _truth_on_canvas(photo, size, at, shape)
    dist = cv2.distanceTransform((~truth).astype(np.uint8), cv2.DIST_L2, 5)
    ring = (dist > 2) & (dist <= 6)
    color = np.array(backgrounds.parse_color(photo.contrast), np.float32)
    return float(np.abs(img[ring].astype(np.float32) - color).mean()) if ring.any() else 0.0


def _matte_on_canvas(photo: Photo, size: int, at: tuple[int, int]) -> np.ndarray:
    """The cut-out's alpha where the renderer placed it (the plain render's: no condition moves it)."""
    cut, alpha, _ = pipeline.cutout(photo.rgb, photo.alpha)
    _, placed, _ = pipeline.place(cut, alpha, size)
    out = np.zeros((size, size), np.float32)
    h, w = min(placed.shape[0], size - at[1]), min(placed.shape[1], size - at[0])
    out[at[1]:at[1] + h, at[0]:at[0] + w] = placed[:h, :w]
    return out


def outside(photo: Photo, size: int = 1024) -> tuple[int, int]:
    """(outside, spill): see the module's description."""
    plain, at, shape = _render(photo, size)
    treated, _, _ = _render(photo, size, **TREATED)
    change = np.abs(treated.astype(np.int16) - plain.astype(np.int16)).max(axis=2)
    truth = _truth_on_canvas(photo, size, at, shape)
    far = cv2.distanceTransform((~truth).astype(np.uint8), cv2.DIST_L2, 5) > 2
    return int(((change > 0) & (_matte_on_canvas(photo, size, at) == 0)).sum()), int(((change > 3) & far).sum())


def score(photo: Photo, four_k: bool = False) -> Score:
    out, spill = outside(photo)
    return Score(photo.name, iou(photo), fringe(photo), out, spill, outside(photo, 4096)[0] if four_k else None)


def table(scores: list[Score]) -> list[str]:
    four_k = any(s.outside_4k is not None for s in scores)
    rows = [f"{'photo':<36} {'IoU':>6} {'fringe':>7} {'outside':>8} {'spill':>7}" + (" outside@4K" if four_k else "")]
    for s in scores:
        extra = f" {s.outside_4k:>10}" if s.outside_4k is not None else ""
        rows.append(f"{s.name:<36} {s.iou:6.3f} {s.fringe:7.1f} {s.outside:8d} {s.spill:7d}{extra}")
    rows.append(f"{'mean':<36} {np.mean([s.iou for s in scores]):6.3f} {np.mean([s.fringe for s in scores]):7.1f} "
                f"{np.mean([s.outside for s in scores]):8.0f} {np.mean([s.spill for s in scores]):7.0f}")
    return rows


if __name__ == "__main__":  # python -m tests.media.metrics [--4k]: the table for the whole set
    import sys

    from tests.media import products

    for row in table([score(p, "--4k" in sys.argv) for p in products.photos()]):
        print(row, flush=True)
