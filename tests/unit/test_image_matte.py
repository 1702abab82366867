"""The RenderCAD cut-out held to its numbers on synthetic product photos with known truth (tests/media):
IoU of the cut-out, the old backdrop's fringe on a contrasting new one, and pixels a condition + material + tone
change outside the matte. `python -m tests.media.metrics --4k` prints the whole set; `make bench` (image) prints
it next to the figures of the matte before (tests/media/before.txt)."""
from __future__ import annotations

import numpy as np
import pytest

from renderers.image import matte
from tests.media import metrics, products

# the four failures, and the three cases that must stay fine, and the transparent PNG
HELD = [products.mug, products.stool, products.ring_photo, products.lamp, products.box_cut, products.speaker,
        products.headphones, products.kettle_png]


@pytest.mark.parametrize("make", HELD, ids=lambda g: g.__name__)
def test_cut_out_iou_fringe_and_nothing_changed_outside(make):
    photo = make()
    assert metrics.iou(photo) >= 0.95
    assert metrics.fringe(photo) <= 8.0  # levels, on black (a light old backdrop) or white (a dark one)
    outside, spill = metrics.outside(photo)
    assert outside == 0
    assert spill <= 4000  # the treated pixels beyond 2 px of the true subject: the soft edge's tail, at most


def test_nothing_changed_outside_the_matte_at_4k():
    outside, _ = metrics.outside(products.ring_photo(), 4096)
    assert outside == 0


def test_mean_iou_over_the_whole_set():
    ious = [metrics.iou(p) for p in products.photos()]
    assert np.mean(ious) >= 0.97, ious


def test_holes_are_backdrop_and_the_old_shadow_is_not_subject():
    photo = products.mug()
    alpha = matte.extract(photo.rgb)
    assert alpha[470, 760] == 0  # inside the handle
    assert alpha[690:720, 300:820][~photo.truth[690:720, 300:820]].max() < 0.5  # the contact shadow


def test_deterministic():
    photo = products.lamp()
    a, b = matte.extract_layers(photo.rgb), matte.extract_layers(photo.rgb)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
