"""Subject extraction: the background is what the image's border looks like (a smooth colour surface fitted to
the border pixels, so gradients and light fall-off count as background), the subject is what differs from it.
A rough mask from that difference seeds OpenCV's GrabCut on a small copy; a guided filter then makes the
matte follow the full-resolution edges. Everything here works at reduced size where the eye cannot tell."""
from __future__ import annotations

import cv2
import numpy as np

SEED_SIDE = 128  # GrabCut's size: its cost grows with pixels, the matte's detail comes from the guided filter
BORDER = 0.04


def _surface_terms(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs, ys = xs / max(w - 1, 1) - 0.5, ys / max(h - 1, 1) - 0.5
    return np.stack([np.ones_like(xs), xs, ys, xs * xs, ys * ys, xs * ys], axis=-1)


def background_model(lab: np.ndarray) -> tuple[np.ndarray, float]:
    """The fitted background (Lab, same size) and how much the border deviates from it (its noise)."""
    h, w = lab.shape[:2]
    band = max(2, int(round(min(h, w) * BORDER)))
    border = np.zeros((h, w), bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    terms = _surface_terms(h, w)
    coef, *_ = np.linalg.lstsq(terms[border], lab[border], rcond=None)
    fitted = terms @ coef
    resid = np.linalg.norm(lab[border] - fitted[border], axis=1)
    return fitted.astype(np.float32), float(np.percentile(resid, 90))


def _largest_parts(mask: np.ndarray) -> np.ndarray:
    """Keep the components that matter (a product may be in pieces), drop specks; fill holes."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= max(areas.max() * 0.08, 4)) + 1
    out = np.isin(labels, keep).astype(np.uint8)
    flood = out.copy()
    cv2.floodFill(flood, np.zeros((out.shape[0] + 2, out.shape[1] + 2), np.uint8), (0, 0), 1)
    if not out[0, 0]:  # enclosed holes (inside a ring-shaped subject) become subject
        out |= (flood == 0).astype(np.uint8)
    return out.astype(bool)


def rough_mask(rgb_small: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(rgb_small, cv2.COLOR_RGB2LAB).astype(np.float32)
    fitted, noise = background_model(lab)
    dist = np.linalg.norm(lab - fitted, axis=2)
    scaled = np.clip(dist * (255.0 / max(dist.max(), 1e-3)), 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = max(otsu * max(dist.max(), 1e-3) / 255.0, noise * 1.5, 6.0)
    mask = cv2.morphologyEx((dist > threshold).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return _largest_parts(mask)


def grabcut(rgb_small: np.ndarray, rough: np.ndarray) -> np.ndarray:
    """Refine the rough mask; where GrabCut cannot (flat mask, degenerate model) the rough mask stands."""
    if rough.sum() < 16 or rough.mean() > 0.97:
        return rough
    gc = np.where(rough, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    sure = cv2.erode(rough.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    gc[sure] = cv2.GC_FGD
    far = cv2.dilate(rough.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    gc[far] = cv2.GC_BGD
    cv2.setRNGSeed(0)  # GrabCut's k-means starts from OpenCV's global RNG: seeded, the same input cuts the same
    try:
        cv2.grabCut(rgb_small, gc, None, np.zeros((1, 65)), np.zeros((1, 65)), 2,  # type: ignore[call-overload]
                    cv2.GC_INIT_WITH_MASK)  # rect=None is how OpenCV's docs start from a mask
    except cv2.error:
        return rough
    refined = _largest_parts((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD))
    return refined if refined.sum() >= rough.sum() * 0.3 else rough


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, step: int = 4) -> np.ndarray:
    """He et al.'s fast guided filter (grey guide): the linear coefficients are fitted on a 1/step copy, where
    they are smooth anyway, and applied to the full-resolution guide, so the matte takes the guide's edges."""
    h, w = guide.shape
    small = (max(1, w // step), max(1, h // step))
    g, p = (cv2.resize(x, small, interpolation=cv2.INTER_AREA) for x in (guide, src))
    ksize = (2 * max(1, radius // step) + 1,) * 2
    def mean(x: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.boxFilter(x, -1, ksize))

    mg, mp = mean(g), mean(p)
    a = (mean(g * p) - mg * mp) / (mean(g * g) - mg * mg + eps)
    b = mp - a * mg
    a, b = (cv2.resize(mean(x), (w, h), interpolation=cv2.INTER_LINEAR) for x in (a, b))
    return a * guide + b


def extract(rgb: np.ndarray) -> np.ndarray:
    """Alpha (float32 0..1, same size as rgb) of the subject of an RGB uint8 image."""
    h, w = rgb.shape[:2]
    scale = SEED_SIDE / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    mask = grabcut(small, rough_mask(small)).astype(np.float32)
    alpha = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / 255)
    radius = max(4, round(max(h, w) / SEED_SIDE * 2))
    return np.clip(guided_filter(grey, alpha, radius, 1e-3), 0.0, 1.0)


def from_alpha_channel(alpha: np.ndarray) -> np.ndarray | None:
    """An upload that already carries transparency is its own matte."""
    if alpha.min() > 250:
        return None
    return alpha.astype(np.float32) / 255.0
