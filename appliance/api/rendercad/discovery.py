"""/backend/api_discovery.php: models, conditions, backgrounds, textures, video_options (read-only scope)."""
from __future__ import annotations

import asyncio

from litestar import Request, Response, get

from appliance.api.common import json_response
from appliance.api.rendercad import library
from appliance.api.rendercad.common import Action, Ctx, ok
from appliance.delivery.httpfiles import serve_file
from appliance.services import models as studio_models
from appliance.services.jobs import JobService
from appliance.services.pipelines import generative, image
from renderers.image.img2img import STRENGTH

MODELS = [
    {"id": "classic", "name": "Fast", "description": "Quick renders with good quality", "cost_credits": 1,
     "supports_4k": False, "supports_references": False, "max_references": 0},
    {"id": "pro", "name": "Realistic", "description": "High-quality photorealistic renders", "cost_credits": 2,
     "supports_4k": True, "supports_references": True, "max_references": 6},
]
QUALITY_TIERS = [
    {"id": "standard", "name": "HD", "resolution": "1024x1024", "additional_cost": 0},
    {"id": "4k", "name": "4K", "resolution": "4096x4096", "additional_cost": 2, "requires_model": "pro"},
]
RENDER_MODES = [{"id": "preserve", "name": "Exact Mode"}, {"id": "creative", "name": "Enhance Mode"},
                {"id": "freeform", "name": "Freeform Mode"}]


def _options(values: list[str], labels: dict | None = None) -> list[dict]:
    return [{"value": v, "label": (labels or {}).get(v) or v.replace("-", " ").title()} for v in values]


VIDEO_OPTIONS = {
    "defaults": {"video_mode": "single", "style": "preserve", "camera": "auto", "motion": "auto", "duration": 8,
                 "resolution": "720p"},
    "video_modes": _options(["single", "transition", "loop"]),
    "styles": _options(["preserve", "creative"]),
    "camera_presets": _options(["auto", "orbit", "zoom-in", "zoom-out", "pan-left", "pan-right", "dolly"]),
    "motion_presets": _options(["auto", "hero-spin", "float", "none"]),
    "durations": [{"value": d, "label": f"{d} seconds"} for d in (4, 6, 8)],
    "resolutions": _options(["720p", "1080p"], {"720p": "720p", "1080p": "1080p"}),
}


async def models(ctx: Ctx) -> Response:
    # the studio's own models (`appliance models add`), which every render of the matching kind uses: an extra
    # key, which RenderCAD clients that do not know it skip
    registry = studio_models.ModelRegistry.of(ctx.service.settings.data_dir)
    studio = [{k: m[k] for k in ("name", "kind", "runtime", "licence")} for m in registry.entries()]
    img2img = generative.installed(registry)  # a model id of its own: render.php takes model=<its name>
    extra = [studio_model(img2img)] if img2img else []
    return ok({"models": [*MODELS, *extra], "quality_tiers": QUALITY_TIERS, "render_modes": RENDER_MODES,
               "studio_models": studio})


def studio_model(entry: dict) -> dict:
    """The studio's img2img model as a RenderCAD model: priced as pro at HD (image.cost), no 4K, no references."""
    strengths = ", ".join(f"{mode} {value}" for mode, value in STRENGTH.items())
    where = "a GPU" if entry.get("device") == "gpu" else "the CPU"
    return {"id": entry["name"], "name": entry["name"],
            "description": f"This studio's own image-to-image model ({entry.get('pipeline') or 'diffusers'}) on "
                           f"{where}: custom_instructions is its prompt; render_mode sets how much it redraws "
                           f"(denoising strength {strengths})",
            "cost_credits": image.cost(entry["name"], "standard"), "supports_4k": False,
            "supports_references": False, "max_references": 0}


async def conditions(ctx: Ctx) -> Response:
    return ok({"conditions": image.CATALOG, "total_count": len(image.CATALOG), "categories": image.CATEGORIES})


def _assets(kind: str):
    async def handler(ctx: Ctx) -> Response:
        found = await asyncio.to_thread(library.listing, ctx.service.settings, kind)
        items = [{"id": a["id"], "name": a["name"], "category": a["category"],
                  "thumb_url": f"{ctx.base}/backend/assets/{kind}/thumbs/{a['id']}.webp"} for a in found]
        return ok({kind: items, "total_count": len(items)})
    return handler


async def video_options(ctx: Ctx) -> Response:
    return ok({"video_options": VIDEO_OPTIONS})


@get("/assets/{kind:str}/thumbs/{name:str}", include_in_schema=False)
async def thumb(request: Request, service: JobService, kind: str, name: str) -> Response:
    """Thumbnails are public, like the hosted CDN's."""
    path = None
    if kind in library.KINDS and name.endswith(".webp"):
        path = await asyncio.to_thread(library.thumbnail, service.settings, kind, name[:-5])
    if path is None:
        return json_response({"error": "Not found"}, 404)
    return serve_file(request, path)


ACTIONS = {
    "models": Action("GET", "read-only", models),
    "conditions": Action("GET", "read-only", conditions),
    "backgrounds": Action("GET", "read-only", _assets("backgrounds")),
    "textures": Action("GET", "read-only", _assets("textures")),
    "video_options": Action("GET", "read-only", video_options),
}
