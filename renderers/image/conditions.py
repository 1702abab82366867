"""The 43 `condition` presets as procedural treatments of the subject (RGB float 0..1 with its alpha).

Each preset is a short list of primitive steps; every random choice comes from a generator seeded by the
preset and the image size, so the same request renders the same picture. `strength` (render_mode) scales
every effect."""
from __future__ import annotations

import cv2
import numpy as np

GEOMETRIC = {"warp", "melt"}  # steps that move pixels: a difference image cannot carry them
DETAIL_SIDE = 1280  # larger subjects (4K renders) get the preset computed this large and its effect upsampled

CATEGORIES = ["Clean", "Surface", "Damage", "Age", "Wear", "Structural", "Moisture & Temperature",
              "Extreme States", "Environmental Coverage"]

# value -> (label, category, steps); a step is (primitive name, keyword arguments).
PRESETS: dict[str, tuple[str, str, list]] = {
    "pristine": ("Pristine", "Clean", [("tone", dict(contrast=1.05, sat=1.04)), ("gloss", dict(amount=0.18))]),
    "factory-new": ("Factory New", "Clean", [("tone", dict(contrast=1.08, sat=1.08)), ("gloss", dict(amount=0.3))]),
    "polished": ("Polished", "Clean", [("gloss", dict(amount=0.5)), ("tone", dict(contrast=1.1))]),
    "showroom": ("Showroom", "Clean", [("tone", dict(contrast=1.12, sat=1.1, bright=0.02)), ("gloss", dict(amount=0.35))]),
    "dusty": ("Dusty", "Surface", [("tone", dict(sat=0.8)), ("speckle", dict(color=(0.82, 0.78, 0.7), density=0.02)),
                                   ("patches", dict(color=(0.78, 0.74, 0.66), cover=0.5, mix=0.35))]),
    "dirty": ("Dirty", "Surface", [("patches", dict(color=(0.35, 0.28, 0.2), cover=0.45, mix=0.5, multiply=True))]),
    "muddy": ("Muddy", "Surface", [("bottom", dict(color=(0.32, 0.24, 0.15), depth=0.35)),
                                   ("speckle", dict(color=(0.3, 0.22, 0.14), density=0.01, size=3))]),
    "greasy": ("Greasy", "Surface", [("patches", dict(color=(0.25, 0.22, 0.12), cover=0.35, mix=0.35, multiply=True)),
                                     ("gloss", dict(amount=0.35))]),
    "fingerprints": ("Fingerprints", "Surface", [("smudges", dict(count=14))]),
    "scratched": ("Scratched", "Damage", [("scratches", dict(count=40, color=(0.9, 0.9, 0.9)))]),
    "dented": ("Dented", "Damage", [("dents", dict(count=7))]),
    "cracked": ("Cracked", "Damage", [("cracks", dict(count=6, color=(0.08, 0.07, 0.06)))]),
    "chipped": ("Chipped", "Damage", [("speckle", dict(color=(0.75, 0.73, 0.7), density=0.004, size=5)),
                                      ("erode_edges", dict(amount=0.5))]),
    "broken": ("Broken", "Damage", [("cracks", dict(count=12, color=(0.05, 0.05, 0.05), width=2)),
                                    ("erode_edges", dict(amount=1.0))]),
    "aged": ("Aged", "Age", [("tone", dict(sat=0.75, contrast=0.92)), ("tint", dict(color=(0.7, 0.6, 0.45), mix=0.15))]),
    "vintage": ("Vintage", "Age", [("tint", dict(color=(0.85, 0.7, 0.5), mix=0.25)), ("tone", dict(contrast=0.9)),
                                   ("grain", dict(amount=0.04))]),
    "faded": ("Faded", "Age", [("tone", dict(sat=0.55, contrast=0.8, bright=0.08))]),
    "sun-bleached": ("Sun-Bleached", "Age", [("tone", dict(sat=0.45, bright=0.12)),
                                             ("tint", dict(color=(1.0, 0.97, 0.88), mix=0.2))]),
    "yellowed": ("Yellowed", "Age", [("tint", dict(color=(0.9, 0.8, 0.4), mix=0.3))]),
    "worn": ("Worn", "Wear", [("tone", dict(sat=0.85)), ("erode_edges", dict(amount=0.3)),
                              ("patches", dict(color=(0.6, 0.58, 0.55), cover=0.3, mix=0.3))]),
    "weathered": ("Weathered", "Wear", [("tone", dict(sat=0.7, contrast=0.9)),
                                        ("patches", dict(color=(0.55, 0.55, 0.52), cover=0.5, mix=0.35)),
                                        ("grain", dict(amount=0.05))]),
    "scuffed": ("Scuffed", "Wear", [("scratches", dict(count=25, color=(0.55, 0.55, 0.55), length=0.06))]),
    "rusty": ("Rusty", "Wear", [("patches", dict(color=(0.55, 0.25, 0.08), cover=0.55, mix=0.75, scale=18)),
                                ("speckle", dict(color=(0.4, 0.15, 0.05), density=0.01))]),
    "peeling-paint": ("Peeling Paint", "Wear", [("patches", dict(color=(0.85, 0.84, 0.8), cover=0.3, mix=0.9,
                                                                 scale=10, sharp=True))]),
    "bent": ("Bent", "Structural", [("warp", dict(amp=0.03, waves=0.5))]),
    "warped": ("Warped", "Structural", [("warp", dict(amp=0.02, waves=2.0))]),
    "shattered": ("Shattered", "Structural", [("cracks", dict(count=25, color=(0.95, 0.95, 0.95))),
                                             ("cracks", dict(count=10, color=(0.05, 0.05, 0.05)))]),
    "crumbling": ("Crumbling", "Structural", [("erode_edges", dict(amount=1.5)),
                                             ("speckle", dict(color=(0.5, 0.47, 0.42), density=0.02, size=3))]),
    "wet": ("Wet", "Moisture & Temperature", [("tone", dict(bright=-0.08, sat=1.15, contrast=1.1)),
                                              ("droplets", dict(count=160))]),
    "rain-soaked": ("Rain-Soaked", "Moisture & Temperature", [("tone", dict(bright=-0.12, sat=1.1)),
                                                              ("droplets", dict(count=320)), ("gloss", dict(amount=0.3))]),
    "frosted": ("Frosted", "Moisture & Temperature", [("edges", dict(color=(0.9, 0.95, 1.0), width=0.05, mix=0.7)),
                                                      ("speckle", dict(color=(0.95, 0.97, 1.0), density=0.03))]),
    "icy": ("Icy", "Moisture & Temperature", [("tint", dict(color=(0.7, 0.85, 1.0), mix=0.3)), ("gloss", dict(amount=0.45)),
                                              ("edges", dict(color=(0.85, 0.93, 1.0), width=0.03, mix=0.8))]),
    "condensation": ("Condensation", "Moisture & Temperature", [("droplets", dict(count=500, radius=0.004)),
                                                                ("tone", dict(contrast=0.92, bright=0.03))]),
    "charred": ("Charred", "Extreme States", [("tone", dict(bright=-0.35, sat=0.3)),
                                              ("patches", dict(color=(0.05, 0.04, 0.04), cover=0.6, mix=0.8))]),
    "melted": ("Melted", "Extreme States", [("melt", dict(amount=0.06))]),
    "glowing-hot": ("Glowing Hot", "Extreme States", [("tint", dict(color=(1.0, 0.35, 0.05), mix=0.45)),
                                                      ("cracks", dict(count=10, color=(1.0, 0.85, 0.3), width=2))]),
    "frozen-solid": ("Frozen Solid", "Extreme States", [("tint", dict(color=(0.75, 0.88, 1.0), mix=0.5)),
                                                        ("edges", dict(color=(0.95, 0.98, 1.0), width=0.08, mix=0.9))]),
    "snow-covered": ("Snow-Covered", "Environmental Coverage", [("top", dict(color=(0.97, 0.98, 1.0), depth=0.12))]),
    "moss-covered": ("Moss-Covered", "Environmental Coverage", [("patches", dict(color=(0.25, 0.4, 0.12), cover=0.4,
                                                                                  mix=0.85, scale=14)),
                                                                ("top", dict(color=(0.28, 0.45, 0.14), depth=0.05))]),
    "sand-covered": ("Sand-Covered", "Environmental Coverage", [("top", dict(color=(0.86, 0.76, 0.55), depth=0.1)),
                                                                ("speckle", dict(color=(0.8, 0.7, 0.5), density=0.02))]),
    "overgrown": ("Overgrown", "Environmental Coverage", [("bottom", dict(color=(0.2, 0.42, 0.12), depth=0.4)),
                                                          ("patches", dict(color=(0.18, 0.38, 0.1), cover=0.25, mix=0.8))]),
    "cobwebbed": ("Cobwebbed", "Environmental Coverage", [("scratches", dict(count=30, color=(0.92, 0.92, 0.92),
                                                                              length=0.2, alpha=0.35)),
                                                          ("tone", dict(sat=0.8, bright=-0.03))]),
}
CATALOG = [{"value": "auto", "label": "Auto (no condition)", "category": None}] + [
    {"value": value, "label": label, "category": category} for value, (label, category, _) in PRESETS.items()]
assert len(CATALOG) == 43 and {c["category"] for c in CATALOG[1:]} == set(CATEGORIES)


def apply_u8(value: str, rgb: np.ndarray, alpha: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """The preset on uint8 RGB. Up to DETAIL_SIDE it runs at full size in float; above, on a smaller copy whose
    change (not whose pixels) is scaled up and added, so the subject keeps its own full-resolution detail while
    rust, dust or droplets cost what they cost at 1280 pixels."""
    if value not in PRESETS:
        return rgb, alpha
    h, w = alpha.shape
    if max(h, w) <= DETAIL_SIDE or any(name in GEOMETRIC for name, _ in PRESETS[value][2]):
        f, alpha = apply(value, rgb.astype(np.float32) * np.float32(1 / 255), alpha, strength)
        return (f * 255 + 0.5).astype(np.uint8), alpha
    scale = DETAIL_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # linear, not area: aliasing in the small copy cancels out of the difference that is carried back
    small, small_alpha = (cv2.resize(x, size, interpolation=cv2.INTER_LINEAR) for x in (rgb, alpha))
    f, treated_alpha = apply(value, small.astype(np.float32) * np.float32(1 / 255), small_alpha.copy(), strength)
    # the change as one 8-bit image offset by 128 (±127 is far more than any preset moves a pixel): one
    # upsampling and one saturating add (addWeighted rounds once, in float) instead of float images at 4K
    delta = np.clip(f * 255 - small + 128.5, 0, 255).astype(np.uint8)
    rgb = cv2.addWeighted(rgb, 1.0, cv2.resize(delta, (w, h), interpolation=cv2.INTER_LINEAR), 1.0, -128.0)
    if not np.array_equal(treated_alpha, small_alpha):
        change = cv2.resize(treated_alpha - small_alpha, (w, h), interpolation=cv2.INTER_LINEAR)
        alpha = np.clip(alpha + change, 0, 1)
    return rgb, alpha


def apply(value: str, rgb: np.ndarray, alpha: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """The preset's steps in order; `auto` (or an unknown value, refused earlier) leaves the subject as is."""
    from renderers.image import treatments

    if value not in PRESETS:
        return rgb, alpha
    seed = int.from_bytes(value.encode()[:8].ljust(8, b"\0"), "little") ^ (rgb.shape[0] * 7919 + rgb.shape[1])
    rng = np.random.default_rng(seed)
    for name, params in PRESETS[value][2]:
        rgb, alpha = getattr(treatments, name)(rgb, alpha, rng, strength, **params)
    return np.clip(rgb, 0, 1), np.clip(alpha, 0, 1)
