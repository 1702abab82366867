"""The cut-out's edge at full resolution: a real alpha and the subject's own colour, in a narrow band only.

The working mask (matte.py) is right to within a working pixel. Along its edge (BAND working pixels each side)
every full-resolution pixel is explained as a mix of two local colours: the subject's (the mean of the subject's
pixels nearby, away from the edge) and the backdrop's (the mean of the backdrop's pixels nearby, which includes
its shadow at a contact line; the fitted backdrop where none are near). The alpha is the pixel's position on the
line between them (closed-form matting's colour-line model, with the two colours estimated rather than solved
for), and where the two colours are too alike to tell, the working mask's own soft edge. The subject's colour on
the edge is then solved from the alpha (I = aF + (1 - a)B), so no edge pixel keeps the old backdrop's colour.
Everything wide is done at the working resolution; the full-resolution work is per band pixel."""
from __future__ import annotations

import cv2
import numpy as np

BAND = 3  # working pixels each side of the working mask's edge
SPREAD = 2.0  # the Gaussian sigma (working pixels) of the local colour estimates
CONTRAST = 8.0  # the colour distance (luma levels, chroma weighted) at which the colour line is trusted fully
# the colour line is measured in luma and chroma, chroma counted at 0.35: a JPEG keeps chroma at half resolution
# and blurs it a few pixels across an edge (a red base bleeds into the grey shadow under it), luma stays sharp
LUMA_CHROMA = np.ascontiguousarray(np.array([[0.299, 0.587, 0.114], [-0.169, -0.331, 0.5],
                                             [0.5, -0.419, -0.081]], np.float32)
                                   * np.array([[1.0], [0.35], [0.35]], np.float32))


def _luma_chroma(rgb: np.ndarray) -> np.ndarray:
    """(n, 3) RGB differences as weighted (Y, Cb, Cr): cv2.transform (numpy's matmul of a tall (n, 3) by a 3x3
    takes a slow path)."""
    return cv2.transform(np.ascontiguousarray(rgb, dtype=np.float32)[:, None, :], LUMA_CHROMA)[:, 0, :]
REACH = 1.5  # working pixels beyond the working mask's edge where the colour line may still find subject
SNAP = 0.06  # alphas this close to 0 or 1 are 0 or 1 (noise, not coverage)


def _local_mean(img: np.ndarray, weight: np.ndarray, sigma: float = SPREAD) -> tuple[np.ndarray, np.ndarray]:
    """The weighted local mean of img (normalised convolution) and the local weight."""
    w = weight.astype(np.float32)
    num = cv2.GaussianBlur(img * w[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(w, (0, 0), sigma)
    return num / np.maximum(den, 1e-6)[..., None], den


def _sample(img: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Bilinear samples (n, channels) of img at working coordinates, clamped to the image: cv2.remap on maps
    folded into rows (remap's sizes are ints; a row of half a million pixels is not what it is made for)."""
    n = len(yy)
    cols = 1024
    rows = -(-n // cols)
    mx, my = (np.resize(v.astype(np.float32), rows * cols).reshape(rows, cols) for v in (xx, yy))
    out = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * cols, -1)[:n]


def _band_pixels(band: np.ndarray, factor: int, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The full-resolution pixels (Y, X) of the working band's pixels, inside box (X0, Y0, X1, Y1)."""
    wy, wx = np.nonzero(band)
    offsets = np.arange(factor, dtype=np.int32)
    shape = (len(wy), factor, factor)
    ys = np.broadcast_to(wy.astype(np.int32)[:, None, None] * factor + offsets[None, :, None], shape).ravel()
    xs = np.broadcast_to(wx.astype(np.int32)[:, None, None] * factor + offsets[None, None, :], shape).ravel()
    X0, Y0, X1, Y1 = box
    inside = (ys >= Y0) & (ys < Y1) & (xs >= X0) & (xs < X1)
    return ys[inside], xs[inside]


def refine(rgb: np.ndarray, work) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(alpha float32, subject colour uint8, (x0, y0)) of the box around the working mask, at full resolution.
    The box's alpha is kept in 8 bits until the end (a 4K box is 8 million pixels: uint8 blurs and thresholds
    cost a quarter of float ones), and band pixels are read and written by flat index."""
    H, W = rgb.shape[:2]
    mask, f = work.mask, work.factor
    if not mask.any():
        return np.zeros((H, W), np.float32), rgb, (0, 0)
    h, w = mask.shape
    x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
    pad = BAND + 2
    x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
    X0, Y0 = x0 * f, y0 * f
    X1, Y1 = (W if x1 == w else x1 * f), (H if y1 == h else y1 * f)
    m8 = mask.astype(np.uint8)
    alpha = cv2.resize(m8[y0:y1, x0:x1] * np.uint8(255), ((x1 - x0) * f, (y1 - y0) * f),
                       interpolation=cv2.INTER_NEAREST)
    alpha = cv2.copyMakeBorder(alpha, 0, (Y1 - Y0) - alpha.shape[0], 0, (X1 - X0) - alpha.shape[1],
                               cv2.BORDER_REPLICATE)
    fg = rgb[Y0:Y1, X0:X1].copy()

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * BAND + 1, 2 * BAND + 1))
    band = (cv2.dilate(m8, kernel) > cv2.erode(m8, kernel))
    ys, xs = _band_pixels(band, f, (X0, Y0, X1, Y1))
    if len(ys):
        # the local colours on the working crop (its margin covers the Gaussians' reach), sampled per band pixel
        margin = BAND + int(3 * SPREAD) + 2
        cx0, cy0, cx1, cy1 = max(0, x - margin), max(0, y - margin), min(w, x + bw + margin), min(h, y + bh + margin)
        crop_m = m8[cy0:cy1, cx0:cx1]
        small = work.small[cy0:cy1, cx0:cx1].astype(np.float32)
        one = np.ones((3, 3), np.uint8)
        f_in, d_in = _local_mean(small, cv2.erode(crop_m, one))
        f_all, _ = _local_mean(small, crop_m)
        subject = np.where((d_in > 0.02)[..., None], f_in, f_all)  # a part too thin to erode keeps its mean
        b_out, d_out = _local_mean(small, 1 - cv2.dilate(crop_m, one))
        backdrop = np.where((d_out > 0.02)[..., None], b_out, work.backdrop_rgb[cy0:cy1, cx0:cx1])
        soft = crop_m.astype(np.float32)  # sampled bilinearly: a one-working-pixel ramp at the edge
        yy, xx = (ys + 0.5) / f - 0.5 - cy0, (xs + 0.5) / f - 0.5 - cx0
        # remap is exact for up to 4 channels (more take a coarser fixed-point path)
        got = _sample(np.ascontiguousarray(np.dstack([subject, soft])), yy, xx)
        F, prior = got[:, :3], got[:, 3]
        # how far inside the working edge (working pixels, negative outside): the colour line may widen the
        # subject by REACH beyond it, no further (a shadow darker than the backdrop nearby is no subject)
        depth = cv2.distanceTransform(crop_m, cv2.DIST_L2, 3) - cv2.distanceTransform(1 - crop_m, cv2.DIST_L2, 3)
        got = _sample(np.ascontiguousarray(np.dstack([backdrop, depth])), yy, xx)
        B, reach = got[:, :3], np.clip(got[:, 3] + REACH, 0, 1)
        flat = (ys - Y0).astype(np.int64) * (X1 - X0) + (xs - X0)
        pixels = fg.reshape(-1, 3)
        seen = pixels[flat].astype(np.float32)
        e, d = _luma_chroma(F - B), _luma_chroma(seen - B)
        ee = np.einsum("ij,ij->i", e, e)
        a = np.clip(np.einsum("ij,ij->i", d, e) / (ee + 1e-3), 0, 1)
        trust = np.clip(np.sqrt(ee) * np.float32(1 / CONTRAST), 0, 1)
        alpha.reshape(-1)[flat] = (trust * a + (1 - trust) * prior) * reach * 255 + 0.5
        alpha = cv2.blur(alpha, (3, 3))  # the colour line's per-pixel noise, down by 3
        snap = int(SNAP * 255)
        alpha = cv2.threshold(alpha, snap, 0, cv2.THRESH_TOZERO)[1]
        alpha = cv2.max(alpha, cv2.threshold(alpha, 255 - snap, 255, cv2.THRESH_BINARY)[1])
        alpha = _sharpen(alpha, f)
        a = alpha.reshape(-1)[flat][:, None].astype(np.float32) * np.float32(1 / 255)
        solved = (seen - (1 - a) * B) / np.maximum(a, 0.05)
        weight = np.clip((a - 0.4) * 2, 0, 1)
        pixels[flat] = np.clip(F + (solved - F) * weight + 0.5, 0, 255).astype(np.uint8)
    return alpha.astype(np.float32) * np.float32(1 / 255), fg, (X0, Y0)


def _sharpen(alpha: np.ndarray, factor: int) -> np.ndarray:
    """A photo's silhouette is sharp at the scale of its pixels (antialiasing and a JPEG's blur: a pixel or two),
    so alpha is partial only next to its half-coverage contour: farther out it is 0, farther in 1. What the colour
    line leaves beyond that is a backdrop ramp it mistook for a mix (a shadow that darkens towards a dark subject:
    a dark tail on any new backdrop). The reach grows with the photo's size (a 4K photo's optics blur more
    pixels)."""
    half = cv2.threshold(alpha, 127, 255, cv2.THRESH_BINARY)[1]
    radius = max(1, factor // 4)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    alpha = cv2.min(alpha, cv2.dilate(half, kernel))
    return cv2.max(alpha, cv2.erode(half, kernel))


def decontaminate(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The subject's own colour where an upload's own alpha is partial: its clear or half-clear pixels hold
    whatever the exporter left there (black, white, the old backdrop); they take the colour of the nearby opaque
    subject instead, blended back to their own as they become opaque. Local means at a working resolution; the
    full-resolution work only in the working blocks where the alpha is partial."""
    from renderers.image.matte import shrink, working_factor

    H, W = alpha.shape
    f = working_factor(H, W)
    small_alpha = shrink(alpha, f)
    partial = (small_alpha > 0) & (small_alpha < 1)  # (the few rows shrink drops at the far edges keep theirs)
    grown = cv2.dilate(partial.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ys, xs = _band_pixels(grown, f, (0, 0, W, H))
    a = alpha[ys, xs]
    keep = (a > 0) & (a < 0.97)
    if not keep.any():
        return rgb
    ys, xs, a = ys[keep], xs[keep], a[keep][:, None]
    small = shrink(rgb, f).astype(np.float32)
    solid = (small_alpha >= 0.97).astype(np.float32)
    near, weight = _local_mean(small, solid, 3.0)
    wide, _ = _local_mean(small, solid, 12.0)
    colour = np.where((weight > 0.01)[..., None], near, wide)
    F = _sample(np.ascontiguousarray(colour), (ys + 0.5) / f - 0.5, (xs + 0.5) / f - 0.5)
    weight_own = np.clip((a - 0.6) / 0.37, 0, 1)
    out = rgb.copy()
    out[ys, xs] = np.clip(F + (rgb[ys, xs] - F) * weight_own + 0.5, 0, 255).astype(np.uint8)
    return out
