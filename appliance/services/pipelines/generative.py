"""The studio's img2img model as the first task of a RenderCAD job (issue #23): an ``image.img2img`` task
(renderers/image/img2img.py) turns the picture into the model's, and the job's own task (image.render's
finishing, image.video's camera moves) reads that picture, linked, instead of the upload.

The img2img task: a GPU task when the model is GPU-only (the scheduler grants one, or fails the job at admission
with its reason where none can be granted), a CPU task otherwise; its memory is the model's weights over a base
(float32 on the CPU doubles a float16 file; on a GPU the weights pass through RAM once while they load); its seed
comes from the picture, the text, the strength and the model, so the same request and a retry give the same
picture; its cache key holds all of these and the model's SHA-256. Its GPU memory need (the manifest's
``gpu_mem_mb``: weights and activations at the model's size, or the operator's figure) rides in its input: the
scheduler grants a GPU only where that fits beside the other grants. A CPU-allowed (``any``) model's task takes
a free GPU that fits and otherwise runs on the CPU, never waiting for one."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from appliance.errors import ApplianceError
from appliance.runtime import admission
from appliance.runtime.artifacts import Artifacts
from appliance.runtime.resources import Capacity
from appliance.services.models import ModelRegistry
from appliance.store import ids
from appliance.store.jobs import TaskDef
from appliance.store.rows import Link
from renderers.image.img2img import OUTPUT, STRENGTH, seed_of

VERSION = "1"  # part of the cache key: a change to how the model is run bumps it
# torch, diffusers and one run's activations beside the weights. "any" (the CPU, float32: twice a float16 file):
# an SD 1.5-class pipeline (a 1961 MB folder) peaked at 5506 MB loading and running at 512² (the float16 and
# float32 copies meet while it loads; scripts/model_ram_figures.py), above the 5458 MB that 1536 gave: 2048 now
BASE_MB = {"gpu": 2048, "any": 2048}


@dataclass(frozen=True)
class Generated:
    """The img2img task to put first, and what the next task takes from it."""
    task: TaskDef
    link: Link  # a link_inputs entry: the generated picture, under ``name`` in the next task's workdir
    name: str
    key: str  # the img2img task's cache key: the next task's key includes it


def installed(registry: ModelRegistry) -> dict[str, Any] | None:
    """The installed img2img model's manifest entry (what a RenderCAD ``model`` id is checked against)."""
    entry = registry.get("img2img")
    return dict(entry) if entry else None


def gpu_refusal(entry: dict[str, Any] | None, capacity: Capacity, instead: str) -> str | None:
    """Why a job that would run the model ``entry`` cannot run on this box, told at create_job rather than
    after the upload (the scheduler's admission refuses the task the same way): a GPU-only model where no GPU
    compute slot can be granted, or whose GPU memory need fits no GPU here. None: it can run (a CPU-allowed
    model always can). ``instead`` names what the client may ask for instead."""
    if not entry or entry.get("device") != "gpu":
        return None
    name = entry["name"]
    cards = [g.memory_mb for g in capacity.gpus if g.compute_slots > 0]
    if not cards:
        return f"The model {name} needs a GPU and this appliance has none to grant: {instead}"
    need = int(entry.get("gpu_mem_mb") or 0)
    if need > max(cards):
        return (f"The model {name} needs a GPU with {need} MB of memory and the largest GPU of this appliance "
                f"has {max(cards)} MB: {instead}")
    return None


def first_task(registry: ModelRegistry, artifacts: Artifacts, *, job_id: str, model: str, input_name: str,
               input_digest: str, prompt: str, mode: str) -> Generated:
    """The img2img task for a job that asked for ``model``; ApplianceError (422) when that model is no longer
    installed (removed between create_job and finalize)."""
    got = registry.folder_for_task(artifacts)
    if got is None or got[1]["name"] != model:
        raise ApplianceError(f"the model {model!r} is no longer installed on this appliance", status=422,
                             code="INVALID")
    files, spec = got
    strength = STRENGTH[mode]
    seed = seed_of(input_digest, prompt, str(strength), spec["sha256"])
    task_input = {"input": input_name, "model": spec, "prompt": prompt, "strength": strength, "seed": seed,
                  "artifacts": {input_name: input_digest, **files}}
    key = "img2img-" + hashlib.sha256("\0".join(
        [VERSION, spec["sha256"], input_digest, prompt, str(strength), str(seed), str(spec["steps"]),
         str(spec["guidance"])]).encode()).hexdigest()
    device = spec["device"]
    weights_mb = spec["size"] >> 20
    mem_mb = BASE_MB[device] + (weights_mb if device == "gpu" else 2 * weights_mb)
    # the card's memory it holds while it runs (admission fits it beside other grants); a CPU-allowed model uses a
    # GPU that is free and fits, never waiting for one (the task learns from its grant where it runs)
    task_input[admission.GPU_MEM_KEY] = int(spec["gpu_mem_mb"])
    if device == "any":
        task_input[admission.GPU_OPTIONAL_KEY] = True
    task = TaskDef(renderer="image.img2img", name="img2img", cpu=1.0, mem_mb=mem_mb, gpu=int(device == "gpu"),
                   input=task_input, cache_key=key)
    name = f"generated{OUTPUT[OUTPUT.rfind('.'):]}"
    return Generated(task=task, link={"task": ids.task_id(job_id, 0), "file": "image", "as": name}, name=name,
                     key=key)
