"""Before/after examples of the RenderCAD image pipeline for the README: docs/images/rendercad-*.jpg.

The input is drawn here (a shaded bottle with a cap on a grey, unevenly lit table-top backdrop), so the pictures
are reproducible: the pipeline is deterministic, and this script renders each preset at 1024 and saves it
at 320 pixels.

    .venv/bin/python scripts/rendercad_examples.py
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.api.rendercad import library  # noqa: E402
from renderers.base import NullReporter  # noqa: E402
from renderers.image import instructions, pipeline  # noqa: E402

OUT = ROOT / "docs" / "images"
SIDE = 320
EXAMPLES = {  # file name -> (settings, texture library name or None)
    "classic-auto": ({"model": "classic"}, None),
    "pro-gradient": ({"model": "pro", "background_style": "gradient", "render_mode": "creative"}, None),
    "custom-colour": ({"model": "classic", "background_style": "custom:#2E5C8A"}, None),
    "rusty": ({"model": "pro", "condition": "rusty", "render_mode": "creative"}, None),
    "snow-covered": ({"model": "pro", "condition": "snow-covered", "background_style": "grey"}, None),
    "texture-oak": ({"model": "pro", "background_style": "white"}, "wood-oak"),
    "warm-vignette": ({"model": "classic", "custom_instructions": "warm, high contrast, vignette, hard shadow"},
                      None),
}


def product(w: int = 1200, h: int = 900) -> np.ndarray:
    """A green glass-like bottle (shaded cylinder, shoulder, cap) on a grey backdrop lit from the left."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (190, 188, 182)
    img *= (1.05 - 0.25 * xs / w)[..., None] * (1 - 0.1 * ys / h)[..., None]
    cx, half = w * 0.5, w * 0.11
    u = (xs - cx) / half  # -1..1 across the body
    shade = np.clip(np.cos(u * 1.3 + 0.35), 0, 1) ** 0.7  # a round body lit from the left
    body = (abs(u) < 1) & (ys > h * 0.38) & (ys < h * 0.9)
    shoulder = ((xs - cx) / half) ** 2 + ((ys - h * 0.38) / (h * 0.1)) ** 2 < 1
    neck = (abs(xs - cx) < half * 0.35) & (ys > h * 0.2) & (ys < h * 0.38)
    glass = (body | shoulder | neck)
    colour = np.array([40, 120, 70], np.float32)
    img[glass] = (colour * (0.35 + 0.9 * shade[..., None]))[glass]
    cap = (abs(xs - cx) < half * 0.42) & (ys > h * 0.13) & (ys < h * 0.21)
    img[cap] = (np.array([200, 170, 60], np.float32) * (0.5 + 0.6 * shade[..., None]))[cap]
    img[body & (abs(ys - h * 0.62) < h * 0.08)] = (236, 232, 220)  # a label
    img += np.random.default_rng(3).normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


# Products the cut-out used to fail on (issue #19), from the synthetic set with true masks: before -> after
HARD = {"mug": "mug-white-on-off-white", "ring": "blue-ring-with-hole", "stool": "stool-thin-legs"}
HARD_SETTINGS = {"model": "classic", "background_style": "custom:#1E2A38"}  # dark: a fringe would show


def save(path: Path, rgb: np.ndarray) -> None:
    small = cv2.resize(rgb, (SIDE, round(SIDE * rgb.shape[0] / rgb.shape[1])), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 82])


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    src = product()
    save(OUT / "rendercad-input.jpg", src)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cv2.imwrite(str(work / "input.png"), cv2.cvtColor(src, cv2.COLOR_RGB2BGR))
        library._generate(work / "textures", "textures")
        for name, (settings, texture) in EXAMPLES.items():
            task = {"size": 1024, "input": "input.png", "render_mode": "preserve", "background_style": "auto",
                    "condition": "auto", **settings}
            task["adjust"] = instructions.parse(settings.get("custom_instructions")).params()
            if texture:
                task["textures"] = [f"textures/{texture}.webp"]
            result = pipeline.render(task, work, NullReporter())
            rendered = cv2.cvtColor(cv2.imread(str(work / result["files"]["render"])), cv2.COLOR_BGR2RGB)
            save(OUT / f"rendercad-{name}.jpg", rendered)
            print(f"docs/images/rendercad-{name}.jpg")
        from tests.media.products import photos

        by_name = {p.name: p for p in photos(list(HARD.values()))}
        for short, name in HARD.items():
            rgb = by_name[name].rgb
            save(OUT / f"rendercad-{short}-before.jpg", rgb)
            cv2.imwrite(str(work / f"{short}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            task = {"size": 1024, "input": f"{short}.png", "render_mode": "preserve", "condition": "auto",
                    "adjust": instructions.parse(None).params(), **HARD_SETTINGS}
            result = pipeline.render(task, work, NullReporter())
            rendered = cv2.cvtColor(cv2.imread(str(work / result["files"]["render"])), cv2.COLOR_BGR2RGB)
            save(OUT / f"rendercad-{short}-after.jpg", rendered)
            print(f"docs/images/rendercad-{short}-before.jpg, -after.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
