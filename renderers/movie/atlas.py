"""Sprite atlases: every text/image sprite of a layered scene in a few PNG pages, one ffmpeg input per page.

Each sprite used to be an ffmpeg input of its own, and ffmpeg gives every input its own demuxer thread and
decoder thread pool: a scene with a hundred titles and logos ran hundreds of threads, past the sandbox's process
limit. Now identical sprites (a logo placed many times) are stored once, sprites are shelf-packed into pages of
at most ``PAGE_HEIGHT`` rows, each page is decoded once (one thread) and ``split`` to its sprites, each cut out by
``crop``. The pixels are the same: pages are RGBA PNGs written without loss.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

PAGE_HEIGHT = 4096
PAGE_MIN_WIDTH = 2048


@dataclass(frozen=True)
class Slot:
    page: int
    x: int
    y: int
    width: int
    height: int


def _digest(image: Image.Image) -> bytes:
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).digest()


def pack(images: list[Image.Image]) -> tuple[list[Image.Image], list[Slot]]:
    """Pages (RGBA) and each image's slot in them, in the order given; identical images share one slot."""
    unique: dict[bytes, int] = {}
    firsts: list[Image.Image] = []
    which = []
    for image in images:
        which.append(unique.setdefault(_digest(image), len(firsts)))
        if which[-1] == len(firsts):
            firsts.append(image)
    width = max([PAGE_MIN_WIDTH, *(image.width for image in firsts)])
    places: dict[int, Slot] = {}
    sizes: list[list[int]] = []  # per page: [used height]
    page, x, y, shelf = -1, 0, 0, 0
    for index in sorted(range(len(firsts)), key=lambda i: -firsts[i].height):
        image = firsts[index]
        if page < 0 or x + image.width > width:  # next shelf
            x, y, shelf = 0, y + shelf, image.height
            if page < 0 or (y + image.height > PAGE_HEIGHT and y > 0):  # next page
                page, y = page + 1, 0
                sizes.append([0])
        places[index] = Slot(page, x, y, image.width, image.height)
        sizes[page][0] = max(sizes[page][0], y + image.height)
        x += image.width
    pages = [Image.new("RGBA", (width, used), (0, 0, 0, 0)) for (used,) in sizes]
    for index, slot in places.items():
        pages[slot.page].paste(firsts[index].convert("RGBA"), (slot.x, slot.y))  # no mask: alpha copied as is
    return pages, [places[index] for index in which]


def save_pages(pages: list[Image.Image], folder: Path) -> list[Path]:
    paths = []
    for number, page in enumerate(pages):
        path = folder / f"atlas_{number:02d}.png"
        page.save(path, compress_level=1)
        paths.append(path)
    return paths
