"""Movie validation messages, normalisation defaults and scene cache keys (renderers/movie/spec.py)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from renderers.movie.spec import SpecError, scene_cache_key, scene_sources, validate_and_normalize

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def text_layer(**extra) -> dict:
    return {"id": "t", "type": "text", "text": "Hi", "position": {"x": 0, "y": 0},
            "size": {"width": 100, "height": 50}, **extra}


def movie(*layers: dict, **extra) -> dict:
    return {"scenes": [{"id": "s1", "duration": 5, "layers": list(layers)}], **extra}


def first_layer(document: dict) -> dict:
    return validate_and_normalize(document)["scenes"][0]["layers"][0]


def error_of(document) -> str:
    with pytest.raises(SpecError) as caught:
        validate_and_normalize(document)
    return str(caught.value)


@pytest.mark.parametrize("document, message", [
    ({"scenes": []}, "scenes must contain at least one scene"),
    ({}, "scenes is required"),
    ({"scenes": {}}, "scenes must be an array"),
    ({"scenes": [{"duration": 5}]}, "scenes[0].id is required"),
    ({"scenes": [{"id": "a", "duration": 5}, {"id": "a", "duration": 2}]},
     "scenes[1].id 'a' duplicates scenes[0].id"),
    ({"scenes": [{"id": "a"}]}, "scenes[0].duration is required"),
    ({"scenes": [{"id": "a", "duration": 0}]}, "scenes[0].duration must be > 0"),
    ({"scenes": [{"id": "a", "duration": "5"}]}, "scenes[0].duration must be a number"),
    ({"scenes": [{"id": "a", "duration": 5, "bgColor": "red"}]},
     "scenes[0].bgColor must be a hex colour such as #1a1a2e"),
    ({"scenes": [{"id": "a", "duration": 5, "layers": {}}]}, "scenes[0].layers must be an array"),
    (movie(width=100), "width must be between 360 and 3840"),
    (movie(width=1921), "width must be an even number"),
    (movie(height=4000), "height must be between 360 and 2160"),
    (movie(fps=0), "fps must be between 1 and 60"),
    (movie(fps=29.97), "fps must be an integer"),
    (movie(width=True), "width must be a number"),
    (movie({"id": "x", "type": "shape"}), "scenes[0].layers[0].type must be one of: video, image, audio, text"),
    (movie({"type": "text", "text": "a"}), "scenes[0].layers[0].id is required"),
    (movie(text_layer(duration=0)), "scenes[0].layers[0].duration must be > 0"),
    (movie(text_layer(duration=-1)), "scenes[0].layers[0].duration must be > 0"),
    (movie(text_layer(startTime=-1)), "scenes[0].layers[0].startTime must be >= 0"),
    (movie(text_layer(startTime=5)), "scenes[0].layers[0].startTime must be less than the scene duration (5)"),
    (movie(text_layer(), text_layer()), "scenes[0].layers[1].id 't' duplicates layers[0].id"),
    (movie(text_layer(size={"width": 0, "height": 10})), "scenes[0].layers[0].size.width must be > 0"),
    (movie(text_layer(position=[1, 2])), "scenes[0].layers[0].position must be an object"),
    (movie(text_layer(transform={"opacity": 1.5})), "scenes[0].layers[0].transform.opacity must be between 0 and 1"),
    (movie(text_layer(transform={"scale": 0})), "scenes[0].layers[0].transform.scale must be > 0"),
    (movie(text_layer(fit="stretch")), "scenes[0].layers[0].fit must be one of: contain, cover, fill"),
    (movie(text_layer(textAlign="justify")), "scenes[0].layers[0].textAlign must be one of: left, center, right"),
    (movie(text_layer(fontWeight="heavy")),
     "scenes[0].layers[0].fontWeight must be normal, bold or a number from 100 to 900"),
    (movie(text_layer(fontSize=0)), "scenes[0].layers[0].fontSize must be > 0"),
    (movie(text_layer(color="#12")), "scenes[0].layers[0].color must be a hex colour such as #1a1a2e"),
    (movie({"id": "t", "type": "text"}), "scenes[0].layers[0].text is required"),
    (movie({"id": "v", "type": "video"}), "scenes[0].layers[0].source is required"),
    (movie({"id": "v", "type": "video", "source": "a.mp4", "mute": "yes"}),
     "scenes[0].layers[0].mute must be true or false"),
    (movie({"id": "a", "type": "audio", "source": "a.mp3", "volume": -1}),
     "scenes[0].layers[0].volume must be between 0 and 10"),
    (movie({"id": "a", "type": "audio", "source": "  "}), "scenes[0].layers[0].source must not be empty"),
    (movie("not a layer"), "scenes[0].layers[0] must be an object"),
    ([], "movie must be a JSON object"),
])
def test_validation_messages_name_the_json_path(document, message):
    assert error_of(document) == message


def test_spec_error_carries_the_path():
    with pytest.raises(SpecError) as caught:
        validate_and_normalize(movie(text_layer(duration=0)))
    assert caught.value.path == "scenes[0].layers[0].duration"


def test_scene_shorter_than_a_frame_is_refused():
    assert error_of({"fps": 10, "scenes": [{"id": "a", "duration": 0.01}]}).startswith(
        "scenes[0].duration must be at least one frame")


def test_movie_and_scene_defaults():
    normalized = validate_and_normalize({"scenes": [{"id": "s", "duration": 3}]})
    assert {k: normalized[k] for k in ("id", "title", "width", "height", "fps")} == {
        "id": None, "title": "Untitled Movie", "width": 1920, "height": 1080, "fps": 30}
    assert normalized["scenes"] == [{"id": "s", "name": None, "duration": 3, "bgColor": "#000000", "layers": []}]


def test_text_layer_defaults():
    layer = first_layer(movie({"id": "t", "type": "text", "text": "x", "startTime": 1}))
    assert layer == {
        "id": "t", "type": "text", "role": None, "zIndex": 0, "startTime": 1, "duration": 4,
        "fadeIn": 0, "fadeOut": 0,
        "position": {"x": 0, "y": 0}, "size": {"width": 1920, "height": 1080},
        "transform": {"opacity": 1, "rotation": 0, "scale": 1}, "fit": "contain",
        "text": "x", "fontSize": 48, "fontWeight": "normal", "fontFamily": "DejaVu Sans", "color": "#ffffff",
        "textAlign": "left", "lineHeight": 1.2, "backgroundColor": None, "padding": 0, "textFit": "shrink",
    }


def test_media_layer_defaults_and_unknown_fields_dropped():
    scene = validate_and_normalize(movie(
        {"id": "v", "type": "video", "source": "v.mp4", "sparkle": True},
        {"id": "a", "type": "audio", "source": "a.mp3", "size": {"width": 0, "height": 0}},
    ))["scenes"][0]
    video, audio = scene["layers"]
    assert "sparkle" not in video
    assert (video["mute"], video["volume"], video["trimStart"], video["loop"], video["fit"]) == \
        (False, 1, 0, False, "contain")
    assert audio == {"id": "a", "type": "audio", "role": None, "zIndex": 0, "startTime": 0, "duration": 5,
                     "fadeIn": 0, "fadeOut": 0, "source": "a.mp3", "volume": 1, "trimStart": 0, "loop": False}


def test_background_role_covers_the_canvas_and_loops():
    layer = first_layer(movie({"id": "bg", "type": "video", "role": "background", "source": "v.mp4",
                               "position": {"x": 50, "y": 50}, "size": {"width": 10, "height": 10}},
                              width=1280, height=720))
    assert layer["position"] == {"x": 0, "y": 0}
    assert layer["size"] == {"width": 1280, "height": 720}
    assert (layer["fit"], layer["loop"]) == ("cover", True)


def test_durations_are_clamped_to_the_scene_and_fades_shrink_to_fit():
    layer = first_layer(movie(text_layer(startTime=4, duration=10, fadeIn=2, fadeOut=2)))
    assert (layer["duration"], layer["fadeIn"], layer["fadeOut"]) == (1, 0.5, 0.5)


def test_values_are_normalised():
    layer = first_layer(movie(text_layer(color="#ABC", fontWeight=600, backgroundColor="#000000FF", zIndex=2.0)))
    assert (layer["color"], layer["fontWeight"], layer["backgroundColor"], layer["zIndex"]) == \
        ("#aabbcc", "600", "#000000", 2)
    assert isinstance(layer["zIndex"], int)


def test_normalising_twice_changes_nothing():
    document = json.loads((EXAMPLES.parent / "docs" / "viralsync-full-example.json").read_text())["movie"]
    once = validate_and_normalize(document)
    assert validate_and_normalize(once) == once


@pytest.mark.parametrize("name", ["viralsync-minimal.json", "viralsync-media.json",
                                  "../docs/viralsync-full-example.json"])
def test_seed_examples_are_valid(name):
    body = json.loads((EXAMPLES / name).read_text())
    normalized = validate_and_normalize(body["movie"])
    assert normalized["scenes"][0]["layers"][0]["id"] in ("headline", "bg_video")


# --- cache keys -----------------------------------------------------------------------------------------------

def full_scene() -> dict:
    body = json.loads((EXAMPLES.parent / "docs" / "viralsync-full-example.json").read_text())
    return validate_and_normalize(body["movie"])["scenes"][0]


def digests(scene: dict, changed: str | None = None) -> dict[str, str]:
    return {source: ("f" if source == changed else "0") * 64 for source in scene_sources(scene)}


def test_scene_sources_lists_each_source_once_in_order():
    scene = full_scene()
    assert scene_sources(scene) == ["https://cdn.example.com/footage/city.mp4",
                                    "https://cdn.example.com/audio/upbeat.mp3",
                                    "https://cdn.example.com/brand/logo-white.png"]


def test_cache_key_is_stable_for_the_same_scene():
    scene = full_scene()
    assert scene_cache_key(scene, 1920, 1080, 30, digests(scene)) == \
        scene_cache_key(copy.deepcopy(scene), 1920, 1080, 30, dict(reversed(digests(scene).items())))
    assert len(scene_cache_key(scene, 1920, 1080, 30, digests(scene))) == 64


def test_cache_key_changes_with_a_layer_the_canvas_or_a_source_byte():
    scene = full_scene()
    key = scene_cache_key(scene, 1920, 1080, 30, digests(scene))
    changed = copy.deepcopy(scene)
    changed["layers"][3]["text"] = "Summer Sale — Up to 60% Off"
    assert scene_cache_key(changed, 1920, 1080, 30, digests(scene)) != key
    assert scene_cache_key(scene, 1280, 720, 30, digests(scene)) != key
    assert scene_cache_key(scene, 1920, 1080, 25, digests(scene)) != key
    logo = "https://cdn.example.com/brand/logo-white.png"
    assert scene_cache_key(scene, 1920, 1080, 30, digests(scene, changed=logo)) != key


def test_cache_key_ignores_spelling_differences_that_normalise_away():
    first = validate_and_normalize(movie(text_layer(color="#FFF", duration=5.0)))["scenes"][0]
    second = validate_and_normalize(movie(text_layer(color="#ffffff")))["scenes"][0]
    assert scene_cache_key(first, 1920, 1080, 30, {}) == scene_cache_key(second, 1920, 1080, 30, {})


def test_cache_key_needs_every_source_digest():
    scene = full_scene()
    with pytest.raises(ValueError, match="no digest for source"):
        scene_cache_key(scene, 1920, 1080, 30, {})
