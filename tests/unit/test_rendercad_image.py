"""The image renderer directly: every condition preset renders, sizes, validation, determinism."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from appliance.services.pipelines import image
from renderers.base import NullReporter, RenderError
from renderers.image import conditions, pipeline
from tests.integration.test_rendercad_render import photo


def run(tmp_path, data: bytes, **settings) -> np.ndarray:
    (tmp_path / "input.jpg").write_bytes(data)
    task = {"size": 256, "input": "input.jpg", "model": "classic", "render_mode": "preserve",
            "background_style": "auto", "condition": "auto", **settings}
    result = pipeline.render(task, tmp_path, NullReporter())
    return np.asarray(Image.open(tmp_path / result["files"]["render"]))


@pytest.mark.parametrize("condition", list(conditions.PRESETS))
def test_every_condition_renders_and_changes_only_the_subject(tmp_path, condition):
    plain = run(tmp_path, photo(size=(320, 240)), background_style="white")
    treated = run(tmp_path, photo(size=(320, 240)), background_style="white", condition=condition, model="pro")
    assert treated.shape == (256, 256, 3)
    assert treated[:20, :20].min() > 235  # the white backdrop stays white
    assert np.abs(treated.astype(int) - plain.astype(int)).mean() > 0.5  # the preset did something


def test_deterministic_and_sized(tmp_path):
    a = run(tmp_path, photo(), condition="scratched", size=512)
    b = run(tmp_path, photo(), condition="scratched", size=512)
    assert a.shape == (512, 512, 3) and np.array_equal(a, b)


def test_unreadable_input_is_a_display_safe_error(tmp_path):
    with pytest.raises(RenderError, match="could not be read"):
        run(tmp_path, b"GIF89a not really")


def test_gif_and_webp_inputs(tmp_path):
    for fmt in ("GIF", "WEBP"):
        buffer = io.BytesIO()
        Image.open(io.BytesIO(photo(size=(300, 200)))).save(buffer, fmt)
        assert run(tmp_path, buffer.getvalue()).shape == (256, 256, 3)


def test_validation_and_costs():
    assert image.validate({}) == {"model": "classic", "quality": "standard", "render_mode": "preserve",
                                  "background_style": "auto", "condition": "auto", "custom_instructions": None}
    assert image.validate({"background_style": "custom:#a0B1c2"})["background_style"] == "custom:#a0B1c2"
    for bad in ({"model": "x"}, {"quality": "8k"}, {"render_mode": 3}, {"background_style": "custom:red"},
                {"condition": "haunted"}, {"custom_instructions": "x" * 1501}):
        with pytest.raises(image.ImageError):
            image.validate(bad)
    assert (image.cost("classic", "standard"), image.cost("pro", "standard"), image.cost("pro", "4k")) == (1, 2, 4)
    assert len(image.CATALOG) == 43


def test_instruction_vocabulary():
    from renderers.image import instructions

    got = instructions.parse("Warmer please, HIGH CONTRAST, no vignette, soft shadows and a bit darker. Modern!")
    assert got.applied == ["soft shadow", "no vignette", "high contrast", "warm", "dark"]
    assert got.params() == {"temperature": 1, "exposure": -1, "contrast": 1, "vignette": False, "shadow": "soft"}
    assert instructions.parse("black and white, vivid").saturation == -3  # black and white stays so
    assert instructions.parse("make it pop").params() == {} and instructions.parse(None).applied == []
    assert instructions.Adjust.from_params({"fit": 1, "bogus": 3}).fit == 1


def test_warm_cool_and_texture_change_the_subject_only(tmp_path):
    from renderers.image import instructions

    def subject_rb(**settings) -> tuple[float, np.ndarray]:
        img = run(tmp_path, photo(size=(320, 240)), background_style="white", **settings).astype(int)
        centre = img[140:160, 118:138].reshape(-1, 3).mean(axis=0)
        return centre[0] - centre[2], img

    plain, plain_img = subject_rb()
    warm, _ = subject_rb(adjust=instructions.parse("warm").params())
    cool, _ = subject_rb(adjust=instructions.parse("cool").params())
    assert warm > plain + 8 and cool < plain - 8
    Image.new("RGB", (40, 40), (30, 60, 200)).save(tmp_path / "tex.png")
    blue, img = subject_rb(textures=["tex.png"], model="classic")
    assert blue < plain - 60  # the red subject in a blue material
    assert np.abs(img[:20, :20] - plain_img[:20, :20]).max() <= 1  # the backdrop is untouched
