"""RenderCAD image job -> one ``image.render`` task (renderers/image): the upload, taken into the artifact store,
finished into a square product shot. Also the request vocabulary the dialect validates against."""
from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from appliance.runtime.artifacts import Artifacts
from appliance.services.models import ModelRegistry
from appliance.services.pipelines import generative
from appliance.store.jobs import TaskDef
from renderers.image.conditions import CATALOG, CATEGORIES
from renderers.image.instructions import parse as parse_instructions

MODELS = ("classic", "pro")
QUALITIES = {"standard": 1024, "4k": 4096}
RENDER_MODES = ("preserve", "creative", "freeform")
BACKGROUNDS = ("auto", "white", "grey", "black", "gradient")
CUSTOM_BACKGROUND = re.compile(r"^custom:#[0-9A-Fa-f]{6}$")
CONDITIONS = tuple(str(c["value"]) for c in CATALOG)  # every value is a name (only categories may be None)
PIPELINE_VERSION = "3"  # part of the cache key: a change to the renderer's look bumps it

__all__ = ["CATALOG", "CATEGORIES", "ImageError", "ImagePipeline", "cost", "parse_instructions", "validate"]


class ImageError(ValueError):
    """A request field the image pipeline cannot take; the message names the field and its values."""


def cost(model: str, quality: str) -> int:
    """Tokens: classic 1, pro 2, pro 4k 4 (the seed's table). The studio's img2img model is a generative render
    at HD, which the table prices as pro: 2 (it offers no 4K: the 4K tier requires pro)."""
    return (1 if model == "classic" else 2) + (2 if quality == "4k" else 0)


def studio_model(registry: ModelRegistry) -> str | None:
    """The installed img2img model's name: a RenderCAD model id beside classic and pro (None: none installed)."""
    entry = generative.installed(registry)
    return entry["name"] if entry else None


def _choice(data: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = data.get(name)
    if value is None or value == "":
        return default
    if value not in allowed:
        raise ImageError(f"{name} must be one of: {', '.join(allowed)}")
    return value


def validate(data: dict[str, Any], studio: str | None = None) -> dict[str, Any]:
    """The settings of an image job, defaults filled in; ImageError on the first bad field. ``studio``: the
    installed img2img model's name, a model id too."""
    model = _choice(data, "model", (*MODELS, *([studio] if studio else [])), "classic")
    quality = _choice(data, "quality", tuple(QUALITIES), "standard")
    render_mode = _choice(data, "render_mode", RENDER_MODES, "preserve")
    background = data.get("background_style") or "auto"
    if not isinstance(background, str) or not (background in BACKGROUNDS or CUSTOM_BACKGROUND.match(background)):
        raise ImageError("background_style must be one of: auto, white, grey, black, gradient, custom:#RRGGBB")
    condition = _choice(data, "condition", CONDITIONS, "auto")
    instructions = data.get("custom_instructions")
    if instructions is not None and (not isinstance(instructions, str) or len(instructions) > 1500):
        raise ImageError("custom_instructions must be a string of at most 1500 characters")
    return {"model": model, "quality": quality, "render_mode": render_mode, "background_style": background,
            "condition": condition, "custom_instructions": instructions}


class ImagePipeline:
    deferred = False

    def __init__(self, artifacts: Artifacts) -> None:
        self.artifacts = artifacts
        self.models = ModelRegistry.beside(artifacts)  # the studio's own matte model, when one is installed

    def plan(self, payload: dict[str, Any]) -> list[TaskDef]:
        """payload: settings (validate()), input_path, optional background_path (a library image or a reference)
        and texture_paths (material references)."""
        settings = payload["settings"]
        size = QUALITIES[settings["quality"]]
        names, artifacts = {}, {}
        for role, path in (("input", payload["input_path"]), ("background", payload.get("background_path"))):
            if path:
                names[role] = f"{role}{os.path.splitext(path)[1][:8]}"
                artifacts[names[role]] = self.artifacts.put(path)
        textures = []
        for i, path in enumerate(payload.get("texture_paths") or []):
            textures.append(f"texture{i}{os.path.splitext(path)[1][:8]}")
            artifacts[textures[-1]] = self.artifacts.put(path)
        studio = settings["model"] not in MODELS  # the studio's img2img model: its words are its prompt
        adjust = {} if studio else parse_instructions(settings.get("custom_instructions")).params()
        tasks: list[TaskDef] = []
        if studio:
            gen = generative.first_task(self.models, self.artifacts, job_id=payload["job_id"],
                                        model=settings["model"], input_name=names["input"],
                                        input_digest=artifacts.pop(names["input"]),
                                        prompt=settings.get("custom_instructions") or "",
                                        mode=settings["render_mode"])
            tasks.append(gen.task)
            names["input"] = gen.name
        matte = self.models.for_task("matte", self.artifacts, "matte")  # its file's SHA-256 joins the cache key
        if matte:
            artifacts.update(matte[0])
        task_input = {**{k: settings[k] for k in ("model", "render_mode", "background_style", "condition")},
                      **({"model": "classic", "generated_by": gen.key, "link_inputs": [gen.link]} if studio else {}),
                      "size": size, **names, "artifacts": artifacts, **({"textures": textures} if textures else {}),
                      **({"adjust": adjust} if adjust else {}), **({"matte_model": matte[1]} if matte else {})}
        mem_mb = (700 if size <= 1024 else 3000) + (2 * matte[1]["size"] >> 20 if matte else 0)  # weights + run
        return [*tasks, TaskDef(renderer="image.render", name="render", cpu=1.0, mem_mb=mem_mb,
                                depends_on=[0] if studio else [], input=task_input, cache_key=cache_key(task_input))]


def cache_key(task_input: dict[str, Any]) -> str:
    # link_inputs name the job's own tasks: the linked picture is in the key through generated_by instead
    parts = [PIPELINE_VERSION, *(f"{k}={task_input[k]}" for k in sorted(task_input)
                                 if k not in ("artifacts", "link_inputs")),
             *sorted(task_input["artifacts"].values())]
    return "image-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()
