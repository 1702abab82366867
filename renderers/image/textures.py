"""Material overlays: library textures (or uploaded material references) laid over the subject.

The texture is tiled at a scale tied to the subject (about two repeats across its longest side, so a wood grain
or a weave reads as a material, not as noise or as one stretched picture) and overlay-blended with the
subject's own shading: the subject keeps its light and form and takes the texture's colour and pattern, inside
its matte only. All in 8-bit."""
from __future__ import annotations

import cv2
import numpy as np

REPEATS = 2.0  # tiles across the subject's longest side
MIX = {0.55: 0.7, 0.8: 0.8, 1.0: 0.9}  # render_mode strength -> how far the subject moves to the material


def load(path: str, max_side: int = 1024) -> np.ndarray:
    """A texture as RGB uint8, no larger than it can be shown."""
    from PIL import Image

    with Image.open(path) as opened:
        opened.draft("RGB", (max_side, max_side))
        img = opened.convert("RGB")
        if max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        return np.asarray(img)


def tiled(texture: np.ndarray, width: int, height: int) -> np.ndarray:
    """The texture scaled so REPEATS tiles span the longer side, repeated to cover width x height."""
    tile = max(16, round(max(width, height) / REPEATS))
    th, tw = texture.shape[:2]
    scale = tile / max(th, tw)
    size = (max(1, round(tw * scale)), max(1, round(th * scale)))
    small = cv2.resize(texture, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    reps_y, reps_x = -(-height // small.shape[0]), -(-width // small.shape[1])
    return np.ascontiguousarray(cv2.repeat(small, reps_y, reps_x)[:height, :width])


def _overlay(shading: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """The overlay blend mode in uint8: dark shading multiplies the layer, light shading screens it."""
    low = cv2.multiply(shading, layer, scale=2 / 255)
    high = cv2.subtract(np.full_like(layer, 255), cv2.multiply(cv2.bitwise_not(shading), cv2.bitwise_not(layer),
                                                                 scale=2 / 255))
    return np.where(shading < 128, low, high)


def overlay(rgb: np.ndarray, alpha: np.ndarray, textures: list[np.ndarray], strength: float) -> np.ndarray:
    """The subject (uint8 RGB, alpha float 0..1 of the same size) in the given materials; several are mixed in
    equal parts."""
    if not textures:
        return rgb
    h, w = alpha.shape
    layers = [tiled(t, w, h) for t in textures]
    layer = layers[0] if len(layers) == 1 else np.mean(layers, axis=0).astype(np.uint8)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # centre the subject's shading on mid-grey so a light or dark product takes the texture's own colour
    shift = 128 - cv2.mean(grey, mask=(alpha > 0.5).astype(np.uint8))[0]
    shading = cv2.cvtColor(cv2.addWeighted(grey, 1.0, grey, 0.0, shift), cv2.COLOR_GRAY2RGB)
    material = _overlay(shading, layer)
    weight = np.ascontiguousarray(alpha * np.float32(MIX.get(strength, 0.75)))
    return cv2.blendLinear(material, rgb, weight, 1 - weight)
