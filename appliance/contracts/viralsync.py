"""ViralSync's POST /v1/render/jobs body (seed viralsync-render-api.txt; api-research.md §2; DECISIONS.md
"ViralSync"): the top level and renderOptions, in the order the appliance checks them; every message is a 400
INVALID_MOVIE_JSON.

The Movie document itself is one field here: its deep structure (scenes, layers, per-type defaults, paths in the
messages such as ``movie.scenes[1].layers[0].duration must be > 0``) is validated and normalised by
renderers/movie/spec.py, which the renderers run again on their input. Generating it from declarations like these
would mean re-expressing its clamping and normalisation (fades shrunk to fit, a background layer's box, colours
folded to #rrggbb) for little gain; the OpenAPI Movie schema (api/schemas.py) is written by hand and reads its
limits and vocabularies from the constants re-exported below, so the numbers cannot drift."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appliance.contracts.base import Contract, Field, Refused
from appliance.delivery import netpolicy
from renderers.movie import spec

BODY_MESSAGE = "Request body must be a JSON object"
PRESETS = {"stable": 2, "balanced": 3, "fast": 4, "turbo": 6}  # qualityPreset -> scene tasks at once
MAX_CONCURRENCY = 32
# the Movie document's limits and vocabularies, for its schema (api/schemas.py)
LAYER_TYPES, TEXT_ALIGNS, FONT_WEIGHT_WORDS, MAX_VOLUME = (spec.LAYER_TYPES, spec.TEXT_ALIGNS,
                                                           spec.FONT_WEIGHT_WORDS, spec.MAX_VOLUME)
WIDTHS, HEIGHTS, FPS_RANGE = spec.WIDTHS, spec.HEIGHTS, spec.FPS_RANGE  # (least, most, default)


def _movie(value: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The normalised movie (spec.py's rules; a path in each message)."""
    try:
        return spec.validate_and_normalize(value)
    except spec.SpecError as exc:
        raise Refused(f"movie.{exc}") from None


def _callback(value: Any, options: Mapping[str, Any]) -> Any:
    """The one URL policy of outgoing requests (delivery/netpolicy): its reason is the message."""
    try:
        netpolicy.parse(value, allow_loopback=bool(options.get("allow_loopback")))
    except netpolicy.RefusedURL as exc:
        raise Refused(f"callbackUrl: {exc}") from None
    return value


RENDER_OPTIONS = Contract("RenderOptions", "How the movie's scenes are spread over the appliance's cores.", (
    Field("qualityPreset", "string", choices=tuple(PRESETS), default="balanced",
          description="Scene tasks at once: stable 2, balanced 3, fast 4, turbo 6 (at most the scenes and the "
                      "cores); the pictures are the same"),
    Field("requestedConcurrency", "integer", f"renderOptions.requestedConcurrency must be an integer "
          f"1-{MAX_CONCURRENCY}", nullable=True, minimum=1, maximum=MAX_CONCURRENCY,
          description="Scene tasks at once, instead of the preset's"),
), prefix="renderOptions.")

JOB = Contract("ViralSyncRenderRequest", "POST /v1/render/jobs.", (
    Field("kind", "string", 'kind must be "movie"', required=True, choices=("movie",)),
    Field("projectId", "string", "projectId is required", required=True, min_length=1,
          unused="a label, kept with the job: its payload shows it, and the dashboard when the movie has no title"),
    Field("movie", "object", "movie is required", required=True, check=_movie),
    Field("renderOptions", "object", lenient=True, nested=RENDER_OPTIONS),  # not an object: the defaults
    Field("callbackUrl", "string", nullable=True, check=_callback, doc={"pattern": r"^https?://[^/?#]"},
          description="URL for progress/done/failed/cancelled events; loopback and link-local hosts are refused"),
))
