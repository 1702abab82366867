"""RenderCAD video jobs: a still (or two) → one ``image.video`` task (renderers/image/video.py), and a finished
video → one ``image.gif`` task (renderers/image/gif.py). Also the video request vocabulary the dialect
validates against (the seed's video.php table, DECISIONS.md's presets).

With the studio's img2img model installed (issue #23), a ``creative`` video (the seed: "Extra creative
direction" in ``prompt``) first passes its first frame source through that model, ``prompt`` as its text, as an
``image.img2img`` task (pipelines/generative.py, the one image jobs use): the camera move is made over the
model's picture. ``preserve`` (the default) and a box without the model make the video from the upload itself."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from appliance.contracts import rendercad as contract
from appliance.contracts.base import Refused
from appliance.runtime.artifacts import Artifacts
from appliance.services.models import ModelRegistry
from appliance.services.pipelines import generative
from appliance.store.jobs import TaskDef

# the request vocabulary is the contract's (appliance/contracts/rendercad.py), which the OpenAPI document shows too
MODES, CAMERAS, MOTIONS, STYLES = contract.MODES, contract.CAMERAS, contract.MOTIONS, contract.STYLES
DURATIONS, RESOLUTIONS, MAX_PROMPT = contract.DURATIONS, contract.RESOLUTIONS, contract.MAX_PROMPT
FPS = 30
GIF_WIDTH, GIF_FPS = 480, 15
PIPELINE_VERSION = "2"  # part of the cache key: a change to the renderer's look bumps it
GENERATIVE_STYLES = ("creative",)  # the styles that invite change: the img2img model redraws the first frame


class VideoError(ValueError):
    """A request field the video pipeline cannot take; the message names the field and its values."""


def cost(duration: int, resolution: str) -> int:
    """Tokens: the clip's seconds, one more at 1080p (the seed: duration + (resolution === '1080p' ? 1 : 0))."""
    return duration + (1 if resolution == "1080p" else 0)


def validate(data: dict[str, Any]) -> dict[str, Any]:
    """The settings of a video job, defaults filled in, in contract.VIDEO's order and messages (the source URLs
    are the dialect's to resolve). The crossfade is checked in every mode and kept in a loop only."""
    try:
        settings = contract.VIDEO.validate(data)
    except Refused as exc:
        raise VideoError(exc.message) from None
    loop = settings["video_mode"] == "loop"
    return {"video_mode": settings["video_mode"], "camera": settings["camera"], "motion": settings["motion"],
            "style": settings["style"], "prompt": settings["prompt"] or None, "duration": settings["duration"],
            "resolution": settings["resolution"],
            "crossfade_duration": float(settings["crossfade_duration"]) if loop else None}


def _put(artifacts: Artifacts, role: str, path: str) -> tuple[str, str]:
    return f"{role}{os.path.splitext(path)[1][:8]}", artifacts.put(Path(path))


def _cache_key(prefix: str, task_input: dict[str, Any]) -> str:
    # link_inputs name the job's own tasks: a linked picture is in the key through generated_by instead
    parts = [PIPELINE_VERSION, *(f"{k}={task_input[k]}" for k in sorted(task_input)
                                 if k not in ("artifacts", "link_inputs")),
             *sorted(task_input["artifacts"].values())]
    return prefix + hashlib.sha256("\0".join(parts).encode()).hexdigest()


class VideoPipeline:
    """payload: settings (validate()), first_path, optional last_path (transition), job_id."""
    deferred = False

    def __init__(self, artifacts: Artifacts) -> None:
        self.artifacts = artifacts
        self.models = ModelRegistry.beside(artifacts)  # the studio's own depth model, when one is installed

    def plan(self, payload: dict[str, Any]) -> list[TaskDef]:
        settings = payload["settings"]
        width, height = RESOLUTIONS[settings["resolution"]]
        names, artifacts = {}, {}
        for role in ("first", "last"):
            path = payload.get(f"{role}_path")
            if path:
                names[role], artifacts[names[role]] = _put(self.artifacts, role, path)
        tasks: list[TaskDef] = []
        gen = None
        entry = generative.installed(self.models) if settings["style"] in GENERATIVE_STYLES else None
        if entry:
            gen = generative.first_task(self.models, self.artifacts, job_id=payload["job_id"], model=entry["name"],
                                        input_name=names["first"], input_digest=artifacts.pop(names["first"]),
                                        prompt=settings.get("prompt") or "", mode=settings["style"])
            tasks.append(gen.task)
            names["first"] = gen.name
        task_input = {"mode": settings["video_mode"], "camera": settings["camera"], "motion": settings["motion"],
                      "style": settings["style"], "crossfade": settings.get("crossfade_duration") or 0.0,
                      "width": width, "height": height, "fps": FPS, "frames": settings["duration"] * FPS,
                      **names, "artifacts": artifacts,
                      **({"generated_by": gen.key, "link_inputs": [gen.link]} if gen else {})}
        depth = self.models.for_task("depth", self.artifacts, "depth")  # its file's SHA-256 joins the cache key
        if depth:
            artifacts.update(depth[0])
            task_input["depth_model"] = depth[1]
        mem_mb = (1200 if height <= 720 else 1800) + (2 * depth[1]["size"] >> 20 if depth else 0)  # weights + run
        return [*tasks, TaskDef(renderer="image.video", name="video", cpu=1.0, mem_mb=mem_mb,
                                depends_on=[0] if gen else [], input=task_input,
                                cache_key=_cache_key("video-", task_input))]


class GifPipeline:
    """payload: video_path (a finished video.php output)."""
    deferred = False

    def __init__(self, artifacts: Artifacts) -> None:
        self.artifacts = artifacts

    def plan(self, payload: dict[str, Any]) -> list[TaskDef]:
        name, digest = _put(self.artifacts, "video", payload["video_path"])
        task_input = {"video": name, "width": GIF_WIDTH, "fps": GIF_FPS, "artifacts": {name: digest}}
        return [TaskDef(renderer="image.gif", name="gif", cpu=1.0, mem_mb=800, input=task_input,
                        cache_key=_cache_key("gif-", task_input))]
