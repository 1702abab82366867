#!/usr/bin/env python3
"""Write the small media files the examples use into examples/media/ (about 300 KB in all; committed, so this only
needs to run again to change them). Nothing is downloaded: ffmpeg's test sources and Pillow drawings.

    .venv/bin/python scripts/make-example-media.py [--out examples/media]

- clip.mp4   640x360, 30 fps, 3 s of ffmpeg's testsrc2 (H.264): a ViralSync video layer
- music.m4a  5 s of two soft tones (AAC, stereo): a ViralSync audio layer
- logo.png   a 240x80 badge with a transparent background: a ViralSync image layer
- photo.jpg  a product shot (a red disc with a blue cap on a light, graded backdrop): the RenderCAD input

The Movie documents name them by bare path (`"source": "clip.mp4"`): the appliance reads such sources only from its
`assets_dir`, so serve them with APPLIANCE_ASSETS_DIR pointing at examples/media (see examples/README.md).
"""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
BITEXACT = ["-fflags", "+bitexact", "-map_metadata", "-1", "-threads", "1"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def clip(path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=3", *BITEXACT, "-c:v", "libx264",
           "-preset", "veryslow", "-crf", "30", "-pix_fmt", "yuv420p", "-flags:v", "+bitexact",
           "-movflags", "+faststart", str(path))


def music(path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=5:sample_rate=48000",
           "-f", "lavfi", "-i", "sine=frequency=660:duration=5:sample_rate=48000",
           "-filter_complex", "[0][1]amerge=inputs=2,volume=0.3[a]", "-map", "[a]", *BITEXACT,
           "-c:a", "aac", "-b:a", "64k", "-flags:a", "+bitexact", str(path))


def logo(path: Path) -> None:
    img = Image.new("RGBA", (240, 80), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((2, 2, 237, 77), radius=18, fill=(255, 255, 255, 235), outline=(0, 212, 255, 255),
                           width=4)
    draw.ellipse((16, 16, 64, 64), fill=(233, 69, 96, 255))
    draw.text((80, 22), "STUDIO", fill=(26, 26, 46, 255), font_size=30)
    img.save(path, optimize=True)


def photo(path: Path, size: tuple[int, int] = (800, 600)) -> None:
    w, h = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    for y in range(h):  # a light backdrop, a little darker towards the bottom
        shade = int(236 - 18 * y / h)
        draw.line((0, y, w, y), fill=(shade, shade, shade - 4))
    cx, cy, r = w // 2, h // 2 + 20, min(w, h) // 4
    draw.ellipse((cx - r + 12, cy + r - 16, cx + r + 12, cy + r + 8), fill=(200, 200, 196))  # its shadow
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(200, 40, 40))
    draw.rectangle((cx - r // 3, cy - r - r // 2, cx + r // 3, cy - r + 10), fill=(40, 80, 190))
    img.save(path, "JPEG", quality=88)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "examples" / "media", help="where to write them")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    for name, make in (("clip.mp4", clip), ("music.m4a", music), ("logo.png", logo), ("photo.jpg", photo)):
        make(out / name)
        print(f"{out / name}  {(out / name).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
