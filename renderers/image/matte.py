"""Subject extraction: the background is what the image's border looks like (a smooth colour surface fitted to
the border pixels, so gradients and light fall-off count as background), the subject is what differs from it.
A rough mask from that difference seeds OpenCV's GrabCut on a small copy; a guided filter then makes the
matte follow the full-resolution edges. Everything here works at reduced size where the eye cannot tell."""
from __future__ import annotations

import cv2
import numpy as np

SEED_SIDE = 128  # GrabCut's size: its cost grows with pixels, the matte's detail comes from the guided filter
BORDER = 0.04


def shrink(img: np.ndarray, factor: int) -> np.ndarray:
    """Box-average by a whole factor. OpenCV's INTER_AREA has a fast path only for exact whole ratios, so the
    few edge pixels that do not fill a box are dropped (5x faster than a fractional area resize at 4K)."""
    if factor <= 1:
        return img
    h, w = img.shape[:2]
    nh, nw = max(1, h // factor), max(1, w // factor)
    return cv2.resize(img[:nh * factor, :nw * factor], (nw, nh), interpolation=cv2.INTER_AREA)


def downscale(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """img scaled down to size (w, h): the whole-factor part by box averaging (shrink), the remaining factor
    (under 2) bilinearly, which at that ratio looks the same as an area resize and costs a seventh of it."""
    h, w = img.shape[:2]
    factor = int(min(w / size[0], h / size[1]))
    return cv2.resize(shrink(img, factor), size, interpolation=cv2.INTER_LINEAR)


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
    g, p = shrink(guide, step), shrink(src, step)
    ksize = (2 * max(1, radius // step) + 1,) * 2
    def mean(x: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.boxFilter(x, -1, ksize))

    mg, mp = mean(g), mean(p)
    a = (mean(g * p) - mg * mp) / (mean(g * g) - mg * mg + eps)
    b = mp - a * mg
    a, b = (cv2.resize(mean(x), (w, h), interpolation=cv2.INTER_LINEAR) for x in (a, b))
    return a * guide + b


def extract_box(rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Alpha (float32 0..1) of the subject of an RGB uint8 image, computed only inside the box around the rough
    mask (plus a margin): (alpha of the box, (x0, y0) of the box). Outside it the alpha is 0. The guided filter
    is the costly full-resolution step, so a small product in a large photo costs little."""
    h, w = rgb.shape[:2]
    scale = SEED_SIDE / max(h, w)
    coarse = shrink(rgb, max(1, int(1 / scale) // 2))  # most of the way with the fast whole-factor path
    small = cv2.resize(coarse, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    mask = grabcut(small, rough_mask(small))
    sh, sw = mask.shape
    x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8)) if mask.any() else (0, 0, sw, sh)
    pad = 3  # small pixels: covers the guided filter's reach and the upsampling's blur
    x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(sw, x + bw + pad), min(sh, y + bh + pad)
    fx, fy = w / sw, h / sh
    X0, Y0, X1, Y1 = int(x0 * fx), int(y0 * fy), min(w, int(np.ceil(x1 * fx))), min(h, int(np.ceil(y1 * fy)))
    alpha = _upsample_box(mask.astype(np.float32), (x0, y0, x1, y1), (X1 - X0, Y1 - Y0))
    guide = _contrast_guide(rgb[Y0:Y1, X0:X1], small, (x0, y0, x1, y1))
    radius = max(4, round(max(h, w) / SEED_SIDE * 2))
    out = np.clip(guided_filter(guide, np.ascontiguousarray(alpha), radius, 1e-3), 0.0, 1.0)
    return out, (X0, Y0)


def _contrast_guide(crop: np.ndarray, small: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The guided filter's guide: how far each pixel is from the fitted background colour (the largest of the
    three channel differences, 0..1), not plain grey, so a subject of the backdrop's brightness but another
    colour (a yellow cap on grey) still gets a crisp edge."""
    fitted, _ = background_model(small.astype(np.float32))
    backdrop = _upsample_box(np.clip(fitted, 0, 255).astype(np.uint8), box, (crop.shape[1], crop.shape[0]))
    diff = cv2.absdiff(crop, backdrop)
    channels = cv2.split(diff)
    return cv2.max(cv2.max(channels[0], channels[1]), channels[2]).astype(np.float32) * np.float32(1 / 255)


def _upsample_box(mask: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The small mask's box scaled to `size` (w, h) without making the whole full-size mask first."""
    x0, y0, x1, y1 = box
    return cv2.resize(np.ascontiguousarray(mask[y0:y1, x0:x1]), size, interpolation=cv2.INTER_LINEAR)


def extract(rgb: np.ndarray) -> np.ndarray:
    """Alpha (float32 0..1, same size as rgb) of the subject of an RGB uint8 image."""
    box, (x0, y0) = extract_box(rgb)
    alpha = np.zeros(rgb.shape[:2], np.float32)
    alpha[y0:y0 + box.shape[0], x0:x0 + box.shape[1]] = box
    return alpha


def from_alpha_channel(alpha: np.ndarray) -> np.ndarray | None:
    """An upload that already carries transparency is its own matte."""
    if alpha.min() > 250:
        return None
    return alpha.astype(np.float32) / 255.0
