"""Text that fits: fontSize is the largest size, shrunk until the text fits its box whole (hosted editors never
cut a glyph); ``textFit: "none"`` keeps the wrap-and-clip of before."""
import json
from pathlib import Path

import numpy as np

from renderers.movie.layers import render_text
from renderers.movie.spec import validate_and_normalize

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "viralsync-full-example.json"


def _headline(fit: str | None = None) -> dict:
    movie = json.loads(EXAMPLE.read_text())["movie"]
    layer = next(layer for layer in movie["scenes"][0]["layers"] if layer["id"] == "title")
    if fit:
        layer["textFit"] = fit
    return next(layer for layer in validate_and_normalize(movie)["scenes"][0]["layers"] if layer["id"] == "title")


def _ink_rows(layer: dict) -> np.ndarray:
    alpha = np.asarray(render_text(layer, layer["size"]["width"], layer["size"]["height"]))[..., 3]
    return np.flatnonzero(alpha.max(axis=1) > 0)


def test_the_seed_headline_is_shrunk_to_fit_its_box_whole():
    layer = _headline()
    assert layer["textFit"] == "shrink"
    rows = _ink_rows(layer)
    height = layer["size"]["height"]
    assert rows.size and rows.min() > 0 and rows.max() < height - 1  # nothing touches the edges: nothing is cut
    columns = np.flatnonzero(np.asarray(render_text(layer, layer["size"]["width"], height))[..., 3].max(axis=0))
    assert columns.min() > 0 and columns.max() < layer["size"]["width"] - 1


def test_text_fit_none_keeps_the_old_clip():
    rows = _ink_rows(_headline("none"))
    assert rows.max() == _headline("none")["size"]["height"] - 1  # the second line runs into the bottom edge


def test_text_that_already_fits_keeps_its_size():
    layer = {**_headline(), "text": "Sale", "fontSize": 48}
    shrunk = {**layer, "textFit": "none"}
    assert np.array_equal(np.asarray(render_text(layer, 1520, 200)), np.asarray(render_text(shrunk, 1520, 200)))
