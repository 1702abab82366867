"""Each request contract (appliance/contracts/) gives the validator and the OpenAPI schema from one declaration:
checked both ways, per field, against the schema the document serves (openapi.COMPONENT_SCHEMAS): every value
the schema allows (each enum value, each bound, the default) validates, and a value it forbids (outside the
enum, past a bound, the wrong type, a required field left out) is refused with the declared message."""
from __future__ import annotations

from typing import Any

import pytest

from appliance.api import openapi
from appliance.contracts import kodisc, rendercad, viralsync
from appliance.contracts.base import Contract, Field, Refused

# contract, the minimal valid body it is checked against, the options its checks read
CASES: list[tuple[Contract, dict[str, Any], dict[str, Any]]] = [
    (kodisc.RENDER, {"code": "x", "className": "A"}, {"allow_http": False}),
    (rendercad.IMAGE, {}, {}),
    (rendercad.VIDEO, {}, {}),
    (viralsync.JOB, {"kind": "movie", "projectId": "p", "movie": {"scenes": [{"id": "s", "duration": 1}]}},
     {"allow_loopback": False}),
    (viralsync.RENDER_OPTIONS, {}, {}),
]
IDS = [case[0].name for case in CASES]
WRONG_TYPE = {"string": [1, ["x"]], "integer": ["x", 1.5, True], "number": ["x", True], "object": ["x", [1]]}


def schema_of(contract: Contract) -> dict[str, Any]:
    return openapi.COMPONENT_SCHEMAS[contract.name]


def prop(contract: Contract, name: str) -> dict[str, Any]:
    """A property's own schema (the non-null branch of ``T | None``)."""
    schema = schema_of(contract)["properties"][name]
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    return {**branches[0], **({"default": schema["default"]} if "default" in schema else {})}


def refused(contract: Contract, body: dict[str, Any], options: dict[str, Any]) -> str:
    with pytest.raises(Refused) as err:
        contract.validate(body, options)
    return err.value.message


def checked(field: Field) -> bool:
    """Whether the generic checks run (a field with a check and no message of its own is its check's)."""
    return field.type != "any" and not (field.check and not field.message)


@pytest.mark.parametrize("contract, good, options", CASES, ids=IDS)
def test_required_and_defaults_are_the_validators(contract, good, options):
    schema = schema_of(contract)
    assert [n for n in schema.get("required", []) if n in {f.name for f in contract.fields}] == \
        [f.name for f in contract.fields if f.required]
    values = contract.validate(good, options)
    for field in contract.fields:
        if field.required:
            body = {k: v for k, v in good.items() if k != field.name}
            assert refused(contract, body, options) == field.refusal(contract.prefix)
        elif field.nested is None:
            assert prop(contract, field.name).get("default") == values[field.name], field.name
    for rule in contract.rules:
        assert rule.schema() in schema["allOf"]


@pytest.mark.parametrize("contract, good, options", CASES, ids=IDS)
def test_what_the_schema_allows_validates_and_what_it_forbids_is_refused(contract, good, options):
    for field in contract.fields:
        if not checked(field) or field.nested is not None:
            continue
        schema, message = prop(contract, field.name), field.refusal(contract.prefix)
        allowed, forbidden = [], list(WRONG_TYPE.get(field.type, []))
        if "enum" in schema:
            allowed += schema["enum"]
            forbidden.append(9999 if field.type == "integer" else "not-one-of-them")
        for bound, step in (("minimum", -1), ("maximum", 1)):
            if bound in schema:
                allowed.append(schema[bound])
                forbidden.append(schema[bound] + step)
        if "maxLength" in schema:
            allowed.append("a" * schema["maxLength"])
            forbidden.append("a" * (schema["maxLength"] + 1))
        if schema.get("pattern") == r"\S":
            forbidden.append("  ")
        for value in allowed:
            assert contract.validate({**good, field.name: value}, options)[field.name] == value, (field.name, value)
        for value in forbidden:
            if value in field.blank:
                continue
            assert refused(contract, {**good, field.name: value}, options) == message, (field.name, value)


@pytest.mark.parametrize("contract, good, options", CASES, ids=IDS)
def test_fields_the_renderers_ignore_say_so(contract, good, options):
    for field in contract.fields:
        assert bool(prop(contract, field.name).get("x-unused")) == bool(field.unused), field.name


def test_kodisc_documented_messages_come_from_the_contract():
    assert kodisc.MESSAGES == ("JSON body required", "code is required",
                               "className must be a valid Python identifier",
                               "quality must be one of: low, medium, high, twok, fourk",
                               "aspectRatio must be one of: 16:9, 9:16", "fps must be a positive integer",
                               "webhookUrl must be an https:// URL")
    assert refused(kodisc.RENDER, {"code": "x", "className": "Hello\n"}, {}) == \
        "className must be a valid Python identifier"  # a JSON Schema $ is the very end of the string
    with pytest.raises(Refused) as err:
        kodisc.RENDER.validate({"code": "x", "className": "A", "fps": 121}, {})
    assert (err.value.message, err.value.hint) == ("fps must be a positive integer", "fps must be at most 120")
    for hook, allow_http, ok in (("https://h/x", False, True), ("http://h/x", False, False),
                                 ("http://h/x", True, True), ("ftp://h", True, False)):
        body = {"code": "x", "className": "A", "webhookUrl": hook}
        if ok:
            assert kodisc.RENDER.validate(body, {"allow_http": allow_http})["webhookUrl"] == hook
        else:
            assert refused(kodisc.RENDER, body, {"allow_http": allow_http}) == "webhookUrl must be an https:// URL"


def test_rendercad_rules_and_choices_beyond_the_enum():
    assert rendercad.IMAGE.validate({"quality": "4k", "model": "pro"})["quality"] == "4k"
    with pytest.raises(Refused) as err:
        rendercad.IMAGE.enforce(rendercad.IMAGE.validate({"quality": "4k"}))
    assert (err.value.status, err.value.message) == (422, "4K quality requires the pro model")
    # the installed studio model is a model id too, and the message lists it
    assert rendercad.IMAGE.validate({"model": "sd"}, extra_choices={"model": ("sd",)})["model"] == "sd"
    with pytest.raises(Refused) as err:
        rendercad.IMAGE.validate({"model": "x"}, extra_choices={"model": ("sd",)})
    assert err.value.message == "model must be one of: classic, pro, sd"
    assert rendercad.IMAGE.validate({"background_style": "custom:#a0B1c2"})["background_style"] == "custom:#a0B1c2"
    assert rendercad.IMAGE.validate({"background_style": 0})["background_style"] == "auto"  # `or "auto"`, as ever
    # style: the values a client of the image API would send are refused first, with their own message
    assert refused(rendercad.VIDEO, {"style": "exact", "prompt": 5}, {}) == \
        "style exact and enhance are not supported for video: use preserve or creative"
    assert rendercad.VIDEO.validate({"duration": " 6 "})["duration"] == 6
    assert refused(rendercad.VIDEO, {"crossfade_duration": float("nan")}, {}) == \
        "crossfade_duration must be a number from 0.0 to 2.0"


def test_viralsync_nested_options_deep_movie_and_the_movie_schemas_constants():
    good = CASES[-2][1]
    assert viralsync.JOB.validate({**good, "renderOptions": "fast"})["renderOptions"] == \
        {"qualityPreset": "balanced", "requestedConcurrency": None}  # not an object: the defaults, as ever
    assert refused(viralsync.JOB, {**good, "renderOptions": {"qualityPreset": "x"}}, {}) == \
        "renderOptions.qualityPreset must be one of: stable, balanced, fast, turbo"
    assert refused(viralsync.JOB, {**good, "movie": {"scenes": []}}, {}) == \
        "movie.scenes must contain at least one scene"
    assert refused(viralsync.JOB, {**good, "callbackUrl": 5}, {}) == "callbackUrl: URL must be a non-empty string"
    assert refused(viralsync.JOB, {**good, "callbackUrl": "http://127.0.0.1/x"}, {}).startswith("callbackUrl: ")
    # the Movie schema is written by hand; its limits and vocabularies are spec.py's
    movie = openapi.COMPONENT_SCHEMAS["Movie"]["properties"]
    assert (movie["width"]["minimum"], movie["width"]["maximum"], movie["width"]["default"]) == viralsync.WIDTHS
    assert (movie["height"]["minimum"], movie["height"]["maximum"], movie["height"]["default"]) == viralsync.HEIGHTS
    assert (movie["fps"]["minimum"], movie["fps"]["maximum"], movie["fps"]["default"]) == viralsync.FPS_RANGE
    layers = openapi.COMPONENT_SCHEMAS["Scene"]["properties"]["layers"]["items"]
    assert set(layers["discriminator"]["mapping"]) == set(viralsync.LAYER_TYPES)
    text = openapi.COMPONENT_SCHEMAS["TextLayer"]["properties"]["textAlign"]["anyOf"][0]
    assert text["enum"] == list(viralsync.TEXT_ALIGNS)
