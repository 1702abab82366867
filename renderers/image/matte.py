"""Subject extraction, in two scales.

The backdrop is what the image's border looks like: a smooth colour surface (Lab) fitted robustly to the border
pixels (a subject cut by the frame covers part of the border: the worst-fitting share is left out), so gradients
and light fall-off count as backdrop. At a working resolution (about WORK_SIDE pixels on the long side: a 6 px
leg of a 1024 px photo is still 3 px there) the subject is every pixel that differs from that surface by more
than the border's own noise, except:

- the backdrop's own shadows: pixels that are the backdrop darkened (the same chromaticity, less light), reached
  from the backdrop by a flood that only crosses soft steps (a shadow fades; a subject's silhouette is a step);
- enclosed regions that match the backdrop (the inside of a handle, a ring's hole, the gaps between legs) stay
  backdrop; enclosed specks that do not match it (a highlight, a shading band) are filled;
- a faint part lighter than the backdrop joins the subject by its lightness noise alone (no shadow lightens);
  a shadow held between the subject and a sharp outward step is the subject's foot; subject pixels by the shadow
  that JPEG's block chroma tinted go by their lightness.

The full-resolution work is a narrow band along that mask's edge (edges.py): a real alpha and the subject's own
colour there, so no edge pixel keeps the old backdrop's colour. Deterministic, CPU only."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from renderers.image import edges

WORK_SIDE = 512  # the long side of the working copy
BORDER = 0.04  # the border band the backdrop is fitted to, as a fraction of the short side
SHADOW_STEP = 0.06  # the largest step (in relative lightness per working pixel) a shadow's flood crosses
SHADOW_DARKEST = 0.45  # a shadow keeps at least this much of the backdrop's lightness (cube root: 9 % of its light)
SHADOW_THICK = 3.0  # working pixels from a shadow's middle to its rim, at least
SHADOW_RIM = 0.075  # a shadow's rim on the lit backdrop steps by less than this (mean 3x3 range of lightness)
GAP = 0.06  # the closing that finds soft gaps: this share of the subject's size
STEP = 0.8  # a soft gap meets the subject with 3x3 steps under this many thresholds (mean)
GROW = 2  # working pixels the accepted shadow grows into looser candidates
SHADOW_BAND = 0.25  # a shadow cut from a region that runs up into the subject: this share of its width, tall
SHADOW_FLAT = 0.35  # a shadow on the floor is flat: at most this share of the subject's height, and wider than tall
DRIP = 3.0  # a JPEG's block chroma next to the shadow: this many times the shadow's chroma tolerance
BRIGHT = 3.0  # lighter than the backdrop by this many times its lightness noise: faint subject
BRIGHT_FLOOR = 0.8  # ... and at least by this much (L): a step a sensor's noise does not make
POCKET_STEP = 0.08  # a silhouette's step, in relative lightness, from a shadow-dark foot to the lit backdrop
POCKET_FLAT = 0.3  # ... past which the backdrop rises by less than this share of the step (a shadow's end
# keeps rising)
CONTEST = 16  # working pixels along a row from the shadow where lightness alone may take a subject pixel for it
BESIDE = 0.15  # ... with at least this share of that row's window shadow
NEAR = 8  # working pixels (a JPEG block at 1024 px) around the shadow where the same holds in any direction


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


def working_factor(h: int, w: int) -> int:
    return max(1, round(max(h, w) / WORK_SIDE))


def _axes(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.arange(h, dtype=np.float32) / max(h - 1, 1) - 0.5, np.arange(w, dtype=np.float32) / max(w - 1, 1) - 0.5)


def _terms(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The surface's terms (1, x, y, x², y², xy) at the given normalised coordinates."""
    return np.stack([np.ones_like(xs), xs, ys, xs * xs, ys * ys, xs * ys], axis=-1).astype(np.float64)


def _surface(coef: np.ndarray, h: int, w: int) -> np.ndarray:
    """The fitted surface (h, w, channels), summed from per-row and per-column parts (no (h, w, 6) array)."""
    yn, xn = _axes(h, w)
    coef = coef.astype(np.float32)
    rows = coef[0] + yn[:, None] * coef[2] + (yn * yn)[:, None] * coef[4]
    cols = xn[:, None] * coef[1] + (xn * xn)[:, None] * coef[3]
    return rows[:, None, :] + cols[None, :, :] + (yn[:, None] * xn[None, :])[..., None] * coef[5]


@dataclass
class Backdrop:
    fitted: np.ndarray  # Lab float32 (h, w, 3): the backdrop surface
    noise: float  # the border's 90th percentile distance from it (smoothed Lab)
    spread: float  # the border's mean distance from it
    chroma_noise: float  # the border's 90th percentile distance in chroma (a, b) alone
    light_noise: float = 0.0  # the border's 90th percentile distance in lightness (L) alone


def background_model(lab: np.ndarray) -> Backdrop:
    """The backdrop surface fitted to the border band: once to all of it, then again to the 60 % that fit best,
    then to the pixels within 3x the median distance (a subject cut by the frame drops out)."""
    h, w = lab.shape[:2]
    band = max(2, int(round(min(h, w) * BORDER)))
    border = np.zeros((h, w), bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    ys, xs = np.nonzero(border)
    yn, xn = _axes(h, w)
    t, y = _terms(yn[ys], xn[xs]), lab[ys, xs].astype(np.float64)
    resid = np.linalg.norm(y - np.median(y, axis=0), axis=1)  # the median colour: right while most is backdrop
    keep = resid <= np.percentile(resid, 50)
    for used in (3, 6, 6):  # a plane first (it cannot bend towards a subject in the border), then the surface
        tk = t[keep][:, :used]
        coef = np.linalg.solve(tk.T @ tk + 1e-9 * np.eye(used), tk.T @ y[keep])  # normal equations: 6 x 6
        resid = np.linalg.norm(y - t[:, :used] @ coef, axis=1)
        keep = resid <= max(3 * np.median(resid[keep]), 1.5)
    fitted = _surface(coef, h, w)
    chroma = np.linalg.norm((y - t @ coef)[keep, 1:], axis=1)
    light = np.abs((y - t @ coef)[keep, 0])
    return Backdrop(fitted, float(np.percentile(resid[keep], 90)), float(resid[keep].mean()),
                    float(np.percentile(chroma, 90)), float(np.percentile(light, 90)))


@dataclass
class Working:
    """The working-resolution result: the subject mask, the copy it was found on, its scale."""
    mask: np.ndarray  # bool (h, w)
    small: np.ndarray  # RGB uint8 (h, w, 3)
    backdrop_rgb: np.ndarray  # the fitted backdrop as RGB float32 (h, w, 3)
    factor: int
    threshold: float
    shadow: np.ndarray | None = None  # bool (h, w): the backdrop's own shadow, taken out of the mask


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2LAB)


def segment(rgb: np.ndarray) -> Working:
    """The subject mask at the working resolution (see the module's description)."""
    factor = working_factor(*rgb.shape[:2])
    small = shrink(rgb, factor)
    raw = _lab(small)
    lab = cv2.GaussianBlur(raw, (0, 0), 0.8)
    model = background_model(lab)
    resid = cv2.subtract(lab, model.fitted)
    dist = cv2.sqrt(cv2.transform(cv2.multiply(resid, resid), np.ones((1, 3), np.float32)))
    # JPEG noise and texture set the bar; a white product on a white sweep still clears 2.5 (a just visible step)
    threshold = max(2.2 * model.noise, 2.5)
    mask = dist > threshold
    shadow = np.zeros_like(mask)
    if mask.any():  # the shadow's analysis only around what stands out (its margin is all backdrop)
        x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
        h, w = mask.shape
        x0, y0, x1, y1 = max(0, x - 4), max(0, y - 4), min(w, x + bw + 4), min(h, y + bh + 4)
        box = np.s_[y0:y1, x0:x1]
        # a band shaded like the backdrop is closed in while the shadow still walls it off at the bottom
        banded = _soft_gaps(mask, dist, threshold) & ~mask
        shadow[box] = _backdrop_shadow(raw[box], lab[box], model, box, mask[box], threshold)
        mask = (mask & ~shadow) | banded
    mask |= _brighter(resid[..., 0], mask, model)
    mask = _clean(mask, dist, model, threshold)
    backdrop_rgb = cv2.cvtColor(model.fitted, cv2.COLOR_LAB2RGB) * np.float32(255)
    return Working(mask, small, backdrop_rgb, factor, threshold, shadow & ~mask)


def _brighter(light: np.ndarray, mask: np.ndarray, model: Backdrop) -> np.ndarray:
    """The subject's faint parts that are lighter than the backdrop (a white vase's neck where its shading
    meets the sweep's white, a grey kettle's shoulder on a grey gradient): no shadow lightens a backdrop, so
    lightness above it by more than the border's own lightness noise (not the Lab bar, which counts chroma
    noise too) is subject where it joins what already stands out (hysteresis: a lone bright speck is noise)
    and is open to the frame."""
    faint = (light > max(BRIGHT * model.light_noise, BRIGHT_FLOOR)) & ~mask
    if not faint.any() or not mask.any():
        return faint & mask
    # only on the open backdrop's side: what the subject encloses (a gloss band's rims) is _clean's to judge
    count, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    faint &= np.isin(labels, edge[edge > 0])
    count, labels = cv2.connectedComponents((faint | mask).astype(np.uint8), connectivity=8)
    joined = np.zeros(count, bool)
    joined[np.unique(labels[mask])] = True
    joined[0] = False
    return faint & joined[labels]


def _backdrop_shadow(raw: np.ndarray, lab: np.ndarray, model: Backdrop, box: tuple, mask: np.ndarray,
                     threshold: float) -> np.ndarray:
    """Pixels of `mask` that are the backdrop in shadow: the backdrop's chromaticity with less light, reached
    from the lit backdrop by a flood that only goes down into the shadow by soft steps (a shadow is a basin
    that darkens towards its core; a subject's silhouette is a step, and its shading climbs back up).
    In Lab a colour darkened by k keeps (L + 16, a, b) proportional: k^(1/3) times the lit one."""
    fitted = model.fitted[box]
    rel = (lab[..., 0] + 16) / (fitted[..., 0] + 16)
    chroma_err = np.hypot(lab[..., 1] - rel * fitted[..., 1], lab[..., 2] - rel * fitted[..., 2])
    # the tolerance: the border's own chroma noise, and half of what a neutral subject would miss by (a shadow
    # keeps the backdrop's tint, a grey or black subject does not have it)
    tint = np.hypot(fitted[..., 1], fitted[..., 2]) * rel
    tolerance = np.clip(np.maximum(0.5 * tint, 3 * model.chroma_noise), 0.5, 2.5)
    loose = mask & (rel > SHADOW_DARKEST) & (rel < 1.0) & (chroma_err < 1.5 * tolerance)
    shade = loose & (chroma_err < tolerance)
    if not shade.any():
        return shade
    shade = cv2.morphologyEx(shade.astype(np.uint8), cv2.MORPH_OPEN, _disc(2)).astype(bool)  # no thin parts
    sharp = np.ascontiguousarray((raw[..., 0] + 16) / (fitted[..., 0] + 16), dtype=np.float32)
    lit = sharp[~mask]
    climb = float(np.clip(2.5 * np.percentile(np.abs(lit - np.median(lit)), 90), 0.015, 0.05))
    ys, xs = np.nonzero(mask)
    tall = (ys.max() - ys.min() + 1) * SHADOW_FLAT
    accepted = np.zeros_like(mask)
    step_size = cv2.dilate(sharp, np.ones((3, 3), np.uint8)) - cv2.erode(sharp, np.ones((3, 3), np.uint8))
    for step in SHADOW_STEP * np.array([1, 0.7, 0.5, 0.35, 0.25]):  # a flood that ran into the subject is
        flooded = _flood(sharp, mask, shade, step, climb) & ~accepted  # redone, finer, until it stays flat
        flat, rest = _flat_shadows(flooded, mask, step_size, tall)
        accepted |= flat
        if not rest.any():
            break
    else:  # still running up into the subject (a white vase whose shading matches its shadow's): the bottom of
        # such a region, no taller than a contact shadow is, when it is shaped and fades like one
        count, labels, stats, _ = cv2.connectedComponentsWithStats(rest.astype(np.uint8), connectivity=8)
        tops = stats[:, cv2.CC_STAT_TOP] + stats[:, cv2.CC_STAT_HEIGHT] - SHADOW_BAND * stats[:, cv2.CC_STAT_WIDTH]
        rows = np.arange(rest.shape[0])[:, None]
        accepted |= _flat_shadows(rest & (rows >= tops[labels]), mask, step_size, tall)[0]
    if accepted.any():  # the thin strip at a contact line (JPEG's colour bleed, the opening) joins its shadow
        grown = accepted.astype(np.uint8)
        for _ in range(GROW):
            grown = cv2.dilate(grown, np.ones((3, 3), np.uint8)) & loose.astype(np.uint8)
        accepted |= grown.astype(bool)
        shadowlike = (rel > SHADOW_DARKEST) & (rel < 1.0) & (chroma_err < DRIP * tolerance)
        accepted |= _contested(mask, accepted, sharp, shadowlike)
        accepted &= ~_pockets(mask, accepted, sharp)
    return accepted


def _contested(mask: np.ndarray, accepted: np.ndarray, light: np.ndarray, shadowlike: np.ndarray) -> np.ndarray:
    """The subject's pixels beside its accepted shadow that are shadow by their lightness: a JPEG codes chroma
    per 16-pixel block, and in a dark shadow under a dark subject whole blocks carry the subject's tint (the
    chroma test fails them: spikes of "subject" hanging into the shadow, as wide as a few blocks). A pixel of
    about the shadow's tint with accepted shadow beside it in its own row (a spike's neighbours), or within a
    block of it, goes to whichever its lightness is nearer: the shadow's beside it in that row (else around
    it), or the rest of the subject's nearby (the contested pixels count for neither, so a wide spike does not
    vouch for itself). Only what joins the shadow is taken."""
    acc = accepted.astype(np.float32)
    row = (2 * CONTEST + 1, 1)
    beside = cv2.blur(acc, row)
    h_row = cv2.blur(light * acc, row) / np.maximum(beside, 1e-6)
    near = cv2.dilate(accepted.astype(np.uint8), _disc(NEAR)).astype(bool)
    contested = mask & ~accepted & ((beside > BESIDE) | near) & shadowlike
    if not contested.any():
        return contested
    subject = (mask & ~accepted & ~contested).astype(np.float32)
    s_mean = _mean(light, subject, NEAR)
    shade = np.where(beside > BESIDE, h_row, _mean(light, acc, NEAR))  # in its row, else all around
    flip = (contested & (np.abs(light - shade) < np.abs(light - s_mean))).astype(np.uint8)
    count, labels = cv2.connectedComponents(flip, connectivity=8)
    touching = np.zeros(count, bool)
    touching[np.unique(labels[cv2.dilate(accepted.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0])] = True
    touching[0] = False
    return touching[labels]


def _mean(img: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """The weighted local mean (normalised convolution)."""
    return cv2.GaussianBlur(img * weight, (0, 0), sigma) / np.maximum(cv2.GaussianBlur(weight, (0, 0), sigma), 1e-6)


def _pockets(mask: np.ndarray, accepted: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Accepted shadow, along a row, inward of a sharp step up to the backdrop on its outer side (away from the
    subject's middle): the subject's own silhouette closes it (a grey vase's foot, as dark as its contact
    shadow, its side's edge running down into the shadow's top). A shadow's flood never crosses such a step
    (SHADOW_STEP), so it reached the foot from inside, under the subject. A shadow brightens outward gradually;
    a silhouette is a step with the backdrop flat past it (the lightness rises by POCKET_STEP in one pixel and
    by less than POCKET_FLAT of that in the next two). Only the outer side's step: a white subject standing in
    its shadow is a step up too, on the inner side."""
    out = np.zeros_like(accepted)
    middle = float(np.nonzero(mask)[1].mean())
    pad = np.pad(light, ((0, 0), (3, 3)), mode="edge")
    backdrop = np.pad(~mask | accepted, ((0, 0), (1, 1)))
    rise_r, on_r = pad[:, 4:-2] - pad[:, 3:-3], pad[:, 6:] - pad[:, 4:-2]  # to the right of x
    rise_l, on_l = pad[:, 2:-4] - pad[:, 3:-3], pad[:, :-6] - pad[:, 2:-4]  # to the left of x
    step_r = (rise_r > POCKET_STEP) & (on_r < POCKET_FLAT * rise_r) & backdrop[:, 2:]
    step_l = (rise_l > POCKET_STEP) & (on_l < POCKET_FLAT * rise_l) & backdrop[:, :-2]
    for y in np.flatnonzero(accepted.any(axis=1)):
        run = np.diff(np.concatenate([[0], accepted[y].astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(run == 1), np.flatnonzero(run == -1) - 1, strict=True):
            if b < middle:  # left of the middle: a step up to the left, reclaimed rightwards
                steps = np.flatnonzero(step_l[y, a:b + 1])
                if len(steps):
                    out[y, a + steps[0]:b + 1] = True
            elif a > middle:
                steps = np.flatnonzero(step_r[y, a:b + 1])
                if len(steps):
                    out[y, a:a + steps[-1] + 1] = True
    return out


def _flat_shadows(region: np.ndarray, mask: np.ndarray, step_size: np.ndarray,
                  tall: float) -> tuple[np.ndarray, np.ndarray]:
    """The parts of `region` shaped like a shadow on the floor (flat, with an inside, fading at its rim), and
    the rest."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    depth = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
    thick = np.zeros(count)
    np.maximum.at(thick, labels.ravel().astype(np.intp), depth.ravel())  # a wire or a rim has no inside
    hard = _rim_steps(labels, count, step_size, ~mask)
    height, width = stats[:, cv2.CC_STAT_HEIGHT], stats[:, cv2.CC_STAT_WIDTH]
    ok = (height <= np.minimum(tall, width)) & (thick >= SHADOW_THICK) & (hard < SHADOW_RIM)
    ok[0] = False
    flat = ok[labels]
    return flat, region & ~flat


def _rim_steps(labels: np.ndarray, count: int, step_size: np.ndarray, lit: np.ndarray) -> np.ndarray:
    """Per component, the mean step (3x3 range of lightness) where it meets the lit backdrop: a shadow fades
    out, a subject that only looks like one (a grey blade on a grey sweep) ends in a step."""
    grown = cv2.dilate(labels.astype(np.float32), np.ones((3, 3), np.uint8))
    near_lit = cv2.dilate(lit.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    rim = (lit & (grown > 0)) | (near_lit & (labels > 0))  # both sides of where it meets the lit backdrop
    owner = np.where(labels > 0, labels, grown.astype(labels.dtype))[rim].astype(np.int64)
    total = np.bincount(owner, weights=step_size[rim], minlength=count)
    return total / np.maximum(np.bincount(owner, minlength=count), 1)


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _flood(image: np.ndarray, mask: np.ndarray, shade: np.ndarray, step: float, climb: float) -> np.ndarray:
    """The shadow pixels a flood from the backdrop reaches going down by at most `step` and up by at most
    `climb` per pixel. The flood's mask is 1 where it may not go (subject that is not shadow-like); it writes 2
    where it went. Seeds: backdrop pixels next to shadow, in every backdrop region (a hole's shadow too)."""
    barrier = np.pad((mask & ~shade).astype(np.uint8), 1, constant_values=1)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | (2 << 8)
    near = cv2.dilate(shade.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~mask
    where = np.flatnonzero(near)
    regions, first = np.unique(labels.ravel()[where], return_index=True)
    for region, index in zip(regions, where[first], strict=True):
        if stats[region, cv2.CC_STAT_AREA] >= 4:
            y, x = divmod(int(index), mask.shape[1])
            cv2.floodFill(image, barrier, (x, y), 0, step, climb, flags)
    return (barrier[1:-1, 1:-1] == 2) & shade


def _clean(mask: np.ndarray, dist: np.ndarray, model: Backdrop, threshold: float) -> np.ndarray:
    """Specks out; enclosed regions that do not look like the backdrop (a shading band, a highlight) filled,
    enclosed regions that do (a hole, the inside of a handle, a gap between legs) kept as backdrop."""
    h, w = mask.shape
    m = mask.astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if count <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= max(areas.max() * 0.015, 0.0003 * h * w, 6)) + 1
    mask = np.isin(labels, keep)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    limit = max(2.0 * model.spread + 0.5, 0.45 * threshold)
    sums = np.bincount(labels.ravel(), weights=dist.ravel(), minlength=count)
    x, y, bw, bh, area = (stats[:, i] for i in range(5))
    enclosed = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)  # open to the frame: backdrop
    fill = enclosed & ((area < 4) | (sums / np.maximum(area, 1) > limit))
    fill[0] = False
    return _soft_gaps(mask | fill[labels], dist, threshold)


def _soft_gaps(mask: np.ndarray, dist: np.ndarray, threshold: float) -> np.ndarray:
    """A band of the subject shaded just like the backdrop (a white vase's lit side on a white sweep) reads as
    backdrop pixel by pixel, and cuts the subject in two. What a closing of the mask adds is such a band when it
    meets the subject without a step (a shading ramp); a real gap or hole meets it at the subject's silhouette,
    a step (the 3x3 range of the distance from the backdrop, at least STEP x the threshold)."""
    if not mask.any():
        return mask
    x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
    radius = max(4, int(GAP * max(bw, bh)))
    # all of it inside the subject's box and a margin of backdrop (what touches the margin is open backdrop)
    h, w = mask.shape
    pad = radius + 3
    box = np.s_[max(0, y - pad):min(h, y + bh + pad), max(0, x - pad):min(w, x + bw + pad)]
    out, crop, dist = mask.copy(), mask[box], dist[box]
    one = np.ones((3, 3), np.uint8)
    steps = cv2.dilate(dist, one) - cv2.erode(dist, one)
    m8 = crop.astype(np.uint8)
    added = (_close(m8, radius) > m8).astype(np.uint8)
    crop = crop | _soft(cv2.connectedComponents(added, connectivity=4)[1], crop, steps, threshold)
    # what is left enclosed (the band's middle, wider than the closing) by the same test
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~crop).astype(np.uint8), connectivity=4)
    ch, cw = crop.shape
    left, top, right, bottom = stats[:, 0], stats[:, 1], stats[:, 0] + stats[:, 2], stats[:, 1] + stats[:, 3]
    open_to_frame = (left == 0) | (top == 0) | (right == cw) | (bottom == ch)
    out[box] = crop | (_soft(labels, crop, steps, threshold) & ~open_to_frame[labels])
    return out


def _close(m8: np.ndarray, radius: int) -> np.ndarray:
    """A morphological closing by a disc, from two distance transforms (linear in the pixels, where OpenCV's
    closing with a large elliptic kernel costs the kernel's area per pixel). Padded, so the frame is open."""
    pad = radius + 2
    padded = cv2.copyMakeBorder(m8, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    grown = (cv2.distanceTransform(1 - padded, cv2.DIST_L2, 5) <= radius).astype(np.uint8)
    closed = (cv2.distanceTransform(grown, cv2.DIST_L2, 5) > radius).astype(np.uint8)
    return closed[pad:-pad, pad:-pad] | m8


def _soft(labels: np.ndarray, mask: np.ndarray, steps: np.ndarray, threshold: float) -> np.ndarray:
    """The labelled regions (label > 0) whose rim on the subject has a mean 3x3 step under STEP x threshold."""
    count = int(labels.max()) + 1
    if count <= 1:
        return np.zeros_like(mask)
    rim = (labels > 0) & cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    owner = labels[rim]
    total = np.bincount(owner, weights=steps[rim], minlength=count)
    soft = total / np.maximum(np.bincount(owner, minlength=count), 1) < STEP * threshold
    soft[0] = False
    return soft[labels]


def extract_box(rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Alpha (float32 0..1) of the subject of an RGB uint8 image, inside the box around it: (alpha of the box,
    (x0, y0) of the box). Outside the box the alpha is 0."""
    alpha, _, origin = extract_layers(rgb)
    return alpha, origin


def extract_layers(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(alpha float32, the subject's own colour uint8 RGB, (x0, y0)) of the box around the subject: the
    working-resolution mask refined along its edge at full resolution (edges.py)."""
    return edges.refine(rgb, segment(rgb))


def extract_with_shadow(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, shadow) float32 0..1, same size as rgb: the subject, and how much of the light the backdrop's own
    shadow takes away (1 - its lightness over the lit backdrop's) where it was found. image→video moves the
    shadow with the subject instead of leaving it behind on the backdrop."""
    work = segment(rgb)
    box, _, (x0, y0) = edges.refine(rgb, work)
    alpha = np.zeros(rgb.shape[:2], np.float32)
    alpha[y0:y0 + box.shape[0], x0:x0 + box.shape[1]] = box
    grey = cv2.cvtColor(work.small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lit = cv2.cvtColor(np.clip(work.backdrop_rgb, 0, 255).astype(np.float32), cv2.COLOR_RGB2GRAY)
    density = np.clip(1 - grey / np.maximum(lit, 1), 0, 1) * (work.shadow if work.shadow is not None else 0)
    density = cv2.GaussianBlur(density.astype(np.float32), (0, 0), 1.0)
    h, w = rgb.shape[:2]
    f = work.factor
    full = cv2.resize(density, (density.shape[1] * f, density.shape[0] * f), interpolation=cv2.INTER_LINEAR)
    full = cv2.copyMakeBorder(full, 0, h - full.shape[0], 0, w - full.shape[1], cv2.BORDER_REPLICATE)
    return alpha, np.minimum(full, 1 - alpha)


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
