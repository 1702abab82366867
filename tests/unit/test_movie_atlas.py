"""Sprite atlas packing (renderers/movie/atlas.py): identical sprites share a slot, pages stay under their height,
and every sprite's pixels come back exactly from its slot."""
from __future__ import annotations

from PIL import Image

from renderers.movie.atlas import PAGE_HEIGHT, pack


def _sprite(width: int, height: int, shade: int) -> Image.Image:
    image = Image.new("RGBA", (width, height), (shade, 255 - shade, 7, 128))
    image.putpixel((0, 0), (1, 2, 3, 0))  # a fully transparent pixel keeps its colour too
    return image


def test_identical_sprites_share_one_slot_and_pixels_round_trip():
    sprites = [_sprite(40 + i % 7, 20 + i % 7 * 3, i % 7) for i in range(100)]
    pages, slots = pack(sprites)
    assert len({(s.page, s.x, s.y) for s in slots}) == 7  # 100 placements, 7 distinct pictures
    for sprite, slot in zip(sprites, slots, strict=True):
        cut = pages[slot.page].crop((slot.x, slot.y, slot.x + slot.width, slot.y + slot.height))
        assert cut.tobytes() == sprite.tobytes()


def test_pages_split_at_their_height_and_slots_do_not_overlap():
    sprites = [_sprite(1500, 1000, i) for i in range(10)]  # one a shelf: 4 shelves fit a 4096-row page
    pages, slots = pack(sprites)
    assert len(pages) == 3 and all(page.height <= PAGE_HEIGHT for page in pages)
    boxes = {(s.page, s.x, s.y, s.x + s.width, s.y + s.height) for s in slots}
    for a in boxes:
        for b in boxes - {a}:
            assert a[0] != b[0] or a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]
    giant = _sprite(5000, 5000, 1)  # larger than a page: a page of its own
    pages, slots = pack([giant, _sprite(10, 10, 2)])
    assert pages[slots[0].page].size == (5000, 5000) and slots[1].page != slots[0].page
