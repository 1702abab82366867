"""The RenderCAD finishing filters on a GPU (CuPy), for a task the scheduler granted a GPU.

Optional: ``pip install '.[gpu]'`` installs CuPy. ``backend()`` is CuPy only when the task holds a GPU
(``CUDA_VISIBLE_DEVICES`` names one: the scheduler grants ``image.render`` a free GPU slot) AND CuPy imports and
sees a device; otherwise None, and the caller keeps its OpenCV path. Every function takes the array module
``xp`` (CuPy, or NumPy in the tests) and reproduces OpenCV's arithmetic for 8-bit images: the same
fixed-point grey, the same Gaussian kernel (``cv2.getGaussianKernel``, reflect-101 border), rounding half to
even. OpenCV's fixed-point and SIMD paths round a few intermediates differently, so results agree within 1
level per channel, on average within 0.05 (tests/unit/test_image_gpu.py checks both against the OpenCV path).
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import cv2
import numpy as np

_GREY = (4899, 9617, 1868)  # OpenCV's RGB -> grey weights, 14-bit fixed point


def backend() -> ModuleType | None:
    """CuPy when this task was granted a GPU and CuPy can use it; None means: run the CPU path."""
    if not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return None
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # noqa: BLE001 - not installed, no driver, no device: the CPU path
        return None
    return cupy


def _round_u8(xp: Any, values: Any) -> Any:
    return xp.clip(xp.rint(values), 0, 255).astype(xp.uint8)


def tone(xp: Any, rgb: Any, lut: np.ndarray, saturation: float) -> Any:
    """``cv2.LUT`` with a 1x256x3 table, then the saturation blend against the pixel's grey (addWeighted)."""
    out = xp.asarray(lut[0])[rgb, xp.arange(3)]
    if saturation == 1:
        return out
    wide = out.astype(xp.uint32)
    grey = (wide[..., 0] * _GREY[0] + wide[..., 1] * _GREY[1] + wide[..., 2] * _GREY[2] + (1 << 13)) >> 14
    mixed = out.astype(xp.float32) * xp.float32(saturation) \
        + grey[..., None].astype(xp.float32) * xp.float32(1 - saturation)
    return _round_u8(xp, mixed)


def _blur_axis(xp: Any, img: Any, kernel: np.ndarray, axis: int) -> Any:
    radius = len(kernel) // 2
    pad = [(0, 0)] * img.ndim
    pad[axis] = (radius, radius)
    padded = xp.pad(img, pad, mode="reflect")  # NumPy's "reflect" is OpenCV's BORDER_REFLECT_101
    out = xp.zeros(img.shape, xp.float32)
    length = img.shape[axis]
    for offset, weight in enumerate(kernel):
        out += xp.float32(weight) * xp.take(padded, xp.arange(offset, offset + length), axis=axis)
    return out


def gaussian(xp: Any, img: Any, sigma: float) -> Any:
    """``cv2.GaussianBlur(img, (0, 0), sigma)`` for uint8: the same kernel size and weights, separable."""
    size = int(round(sigma * 3 * 2 + 1)) | 1
    kernel = cv2.getGaussianKernel(size, sigma, cv2.CV_32F).ravel()
    return _round_u8(xp, _blur_axis(xp, _blur_axis(xp, img.astype(xp.float32), kernel, 0), kernel, 1))


def _halve(xp: Any, img: Any) -> Any:
    h, w = img.shape[0] // 2, img.shape[1] // 2
    box = img[:h * 2, :w * 2].astype(xp.uint16).reshape(h, 2, w, 2, -1).sum(axis=(1, 3))
    return ((box + 2) >> 2).astype(xp.uint8)  # INTER_AREA at exactly 1/2: the rounded 2x2 mean


def _double(xp: Any, img: Any, shape: tuple[int, int]) -> Any:
    """Bilinear resize to ``shape`` with pixel centres aligned (INTER_LINEAR), edges clamped."""
    def coords(out: int, src: int) -> tuple[Any, Any, Any]:
        pos = xp.clip((xp.arange(out, dtype=xp.float32) + 0.5) * (src / out) - 0.5, 0, src - 1)
        low = xp.floor(pos).astype(xp.int32)
        return low, xp.minimum(low + 1, src - 1), (pos - low)
    y0, y1, fy = coords(shape[0], img.shape[0])
    x0, x1, fx = coords(shape[1], img.shape[1])
    src = img.astype(xp.float32)
    top = src[y0][:, x0] * (1 - fx)[None, :, None] + src[y0][:, x1] * fx[None, :, None]
    bottom = src[y1][:, x0] * (1 - fx)[None, :, None] + src[y1][:, x1] * fx[None, :, None]
    return _round_u8(xp, top * (1 - fy)[:, None, None] + bottom * fy[:, None, None])


def sharpen(xp: Any, rgb: Any, amount: float) -> Any:
    """The pipeline's unsharp mask: sigma by image size, a wide blur taken at half size and scaled back."""
    if amount <= 0:
        return rgb
    sigma = max(0.8, rgb.shape[0] / 900)
    if sigma >= 2:
        blurred = _double(xp, gaussian(xp, _halve(xp, rgb), sigma / 2), rgb.shape[:2])
    else:
        blurred = gaussian(xp, rgb, sigma)
    return _round_u8(xp, rgb.astype(xp.float32) * xp.float32(1 + amount) - blurred.astype(xp.float32)
                     * xp.float32(amount))


def blend(xp: Any, fg: Any, bg: Any, alpha: Any) -> Any:
    """``cv2.blendLinear(fg, bg, a, 1 - a)`` for uint8 images and a float32 alpha."""
    a = alpha.astype(xp.float32)[..., None]
    b = xp.float32(1) - a
    return _round_u8(xp, (fg.astype(xp.float32) * a + bg.astype(xp.float32) * b) / (a + b + xp.float32(1e-5)))


def finish_subject(rgb: np.ndarray, lut: np.ndarray, saturation: float, amount: float) -> np.ndarray | None:
    """Tone curve, saturation and unsharp mask on the granted GPU, one upload and one download; None without
    one (the caller runs its OpenCV path)."""
    xp = backend()
    if xp is None:
        return None
    out = sharpen(xp, tone(xp, xp.asarray(rgb), lut, saturation), amount)
    return xp.asnumpy(out)
