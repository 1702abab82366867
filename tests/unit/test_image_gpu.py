"""The GPU variants of the RenderCAD filters (renderers/image/gpu.py), run here with NumPy as the array module
(CuPy's API), against the OpenCV path they replace; and the fallback when there is no GPU or no CuPy."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from renderers.image import gpu, instructions, pipeline


def _photo(size: int) -> np.ndarray:
    """A gradient with texture and a hard edge: the content unsharp masks and blends care about."""
    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([200 * xs + 30, 180 * ys + 40, 120 * (1 - xs) + 60], axis=-1)
    base[size // 3: 2 * size // 3, size // 4: size // 2] = (240, 20, 35)
    return np.clip(base + rng.normal(0, 9, base.shape), 0, 255).astype(np.uint8)


def _agree(ours: np.ndarray, theirs: np.ndarray) -> None:
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert diff.max() <= 1 and diff.mean() <= 0.05, (diff.max(), diff.mean())


def test_tone_is_the_lut_and_saturation_of_the_cpu_path():
    rgb = _photo(256)
    lut = pipeline.tone_lut(0.8, instructions.Adjust(temperature=1, contrast=1))
    assert np.array_equal(gpu.tone(np, rgb, lut, 1.0), cv2.LUT(rgb, lut))  # the curve alone: exact
    grey = cv2.cvtColor(cv2.cvtColor(cv2.LUT(rgb, lut), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    _agree(gpu.tone(np, rgb, lut, 1.3), cv2.addWeighted(cv2.LUT(rgb, lut), 1.3, grey, -0.3, 0))


@pytest.mark.parametrize("size", [512, 1800])  # sigma < 2: blur at full size; sigma >= 2: at half size
def test_unsharp_mask_matches_the_cpu_path(size):
    rgb = _photo(size)
    _agree(gpu.sharpen(np, rgb, 0.44), pipeline.sharpen(rgb, 0.44))


def test_blend_matches_blend_linear():
    fg, bg = _photo(128), _photo(128)[::-1].copy()
    alpha = np.clip(np.linspace(-0.2, 1.2, 128 * 128, dtype=np.float32).reshape(128, 128), 0, 1)
    _agree(gpu.blend(np, fg, bg, alpha), cv2.blendLinear(fg, bg, alpha, 1 - alpha))


def test_without_a_granted_gpu_or_cupy_the_cpu_path_runs(monkeypatch):
    lut = pipeline.tone_lut(0.55, instructions.Adjust())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu.backend() is None and gpu.finish_subject(_photo(64), lut, 1.0, 0.3) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # granted, but CuPy is not installed here
    try:
        import cupy  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        assert gpu.backend() is None and gpu.finish_subject(_photo(64), lut, 1.0, 0.3) is None


def test_the_pipeline_hands_its_subject_to_the_gpu_path_when_one_is_granted(monkeypatch):
    """pipeline.finish_subject with a GPU backend (NumPy standing in for CuPy) gives the CPU path's picture."""
    rgb, alpha = _photo(600), np.full((600, 600), 255, np.uint8)
    settings, adjust = {"model": "classic", "condition": "auto"}, instructions.Adjust(temperature=1, sharpen=1)
    cpu_rgb, _ = pipeline.finish_subject(rgb, alpha, settings, 0.8, adjust)
    calls = []
    monkeypatch.setattr(np, "asnumpy", np.asarray, raising=False)  # CuPy's download; NumPy has none
    monkeypatch.setattr(gpu, "backend", lambda: calls.append(1) or np)
    gpu_rgb, _ = pipeline.finish_subject(rgb, alpha, settings, 0.8, adjust)
    diff = np.abs(gpu_rgb.astype(np.int16) - cpu_rgb.astype(np.int16))
    assert calls and diff.max() <= 2 and diff.mean() <= 0.1, (diff.max(), diff.mean())
