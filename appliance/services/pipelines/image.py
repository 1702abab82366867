"""RenderCAD image job -> one ``image.render`` task (renderers/image): the upload, taken into the artifact store,
finished into a square product shot. Also the request vocabulary the dialect validates against."""
from __future__ import annotations

import hashlib
import os
from typing import Any

from appliance.contracts import rendercad as contract
from appliance.contracts.base import Refused
from appliance.runtime.artifacts import Artifacts
from appliance.services.models import ModelRegistry
from appliance.services.pipelines import generative
from appliance.store.jobs import TaskDef
from renderers.image.conditions import CATALOG, CATEGORIES
from renderers.image.instructions import parse as parse_instructions

# the request vocabulary is the contract's (appliance/contracts/rendercad.py), which the OpenAPI document shows too
MODELS, QUALITIES, RENDER_MODES, CONDITIONS = contract.MODELS, contract.QUALITIES, contract.RENDER_MODES, \
    contract.CONDITIONS
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


def validate(data: dict[str, Any], studio: str | None = None) -> dict[str, Any]:
    """The settings of an image job, defaults filled in; ImageError on the first bad field (contract.IMAGE's
    order and messages; its cross-field rules, 4K-needs-pro, are the dialect's to enforce). ``studio``: the
    installed img2img model's name, a model id too."""
    try:
        return contract.IMAGE.validate(data, extra_choices={"model": (studio,)} if studio else None)
    except Refused as exc:
        raise ImageError(exc.message) from None


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
