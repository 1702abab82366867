"""The studio's own image-to-image model (issue #23, kind ``img2img``): a local diffusers folder on PyTorch,
inside the task's sandbox, never reaching a hub.

Three families are taken (``model_index.json``'s ``_class_name``): a Stable Diffusion-class pipeline (SD 1.x, 2.x,
SDXL; a text-to-image folder is run as its image-to-image counterpart), the same with a ControlNet (its
condition is the input's Canny edges: the geometry stays where it was), and an InstructPix2Pix-style
instruction-editing pipeline. Weights must be safetensors: the registry never takes a pickle
(appliance/services/model_folders.py), and loading says ``use_safetensors=True`` as well.

What a job asks of it: the picture, a text (RenderCAD's ``custom_instructions`` or video.php's ``prompt``), a
denoising strength (``render_mode``: STRENGTH), a seed fixed by the job's content (the same request gives the
same picture; a retry too) and the model's steps and guidance. The picture is generated at the model's own
size (its UNet's sample size × the VAE's scale: 512 for SD 1.5, 768 for SD 2.1, 1024 for SDXL) with the input's
aspect, then brought back to the input's size; the finishing pipeline (matte, background, condition) runs on
it as on an upload. The report records the prompt and how many of its tokens the model's tokenizer kept.

Device: the task learns it from its grant (CUDA_VISIBLE_DEVICES names the one GPU the scheduler granted it, or
is empty): granted and torch sees CUDA, it runs on CUDA in float16; a GPU-only model (``device: gpu``) refuses
to run anywhere else (never a long CPU run by surprise); a CPU-allowed model (``device: any``) is granted a GPU
when one is free and holds its memory, and otherwise, or where torch cannot use the one granted (a CPU build),
runs on the CPU in float32 with the task's one thread. The report says which device ran and why. torch and
diffusers are imported here, lazily: a task without a model pays nothing for them."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from renderers.base import RenderError, Reporter
from renderers.image.onnx_models import ModelError, _short, test_picture

# render_mode -> denoising strength: how much of the picture the model may redraw (0: none, 1: all of it)
STRENGTH = {"preserve": 0.3, "creative": 0.55, "freeform": 0.8}
INSTRUCT = ("StableDiffusionInstructPix2PixPipeline",)
CONTROLNET = ("StableDiffusionControlNetPipeline", "StableDiffusionControlNetImg2ImgPipeline",
              "StableDiffusionXLControlNetPipeline", "StableDiffusionXLControlNetImg2ImgPipeline")
PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionXLPipeline",
             "StableDiffusionXLImg2ImgPipeline", *CONTROLNET, *INSTRUCT)
CHECK_SIDE = 128  # the check's run: small, whatever the model's own size (it proves loading and shapes, not looks)
CHECK_STEPS = 2
OUTPUT = "generated.png"


def _offline(workdir: Path) -> None:
    """Before diffusers or transformers is imported: no hub, no telemetry, and every cache inside the workdir."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
                "DISABLE_TELEMETRY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ[key] = "1"
    os.environ["HF_HOME"] = str(workdir / ".hf")  # the sandbox's HOME is not the task's to write


def assemble(workdir: Path, files: dict[str, str]) -> Path:
    """The folder as diffusers wants it, rebuilt in the workdir from the flat staged files (symlinks)."""
    folder = workdir / "img2img_model"
    for rel, staged in files.items():
        target = folder / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ModelError(f"bad file name in the model: {rel!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(workdir / staged)
    return folder


def device_for(rule: str) -> str:
    """cuda when a GPU was granted and torch sees it; cpu when the model may run there; ModelError when the
    model is GPU-only and no usable GPU is here (the scheduler grants one: a CPU build of torch cannot use it)."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if rule == "gpu":
        granted = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        raise ModelError("this model is GPU-only and no GPU is usable here (" + (
            f"CUDA_VISIBLE_DEVICES={granted} was granted, but this torch build sees no CUDA device"
            if granted else "no GPU was granted") + ")")
    return "cpu"


def granted_gpu() -> str:
    """The GPU the scheduler granted this task ("" when none): what CUDA_VISIBLE_DEVICES names."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def device_note(device: str) -> str:
    """Why the run is on ``device``, for the task's report."""
    granted = granted_gpu()
    if device == "cuda":
        return f"GPU {granted} granted"
    if granted:
        return f"GPU {granted} granted, but this torch build sees no CUDA device: ran on the CPU"
    return "no GPU granted (none free, or none with the memory the model needs): ran on the CPU"


def parameters(pipe) -> int:
    """The pipeline's parameters over all its torch modules (UNet, VAE, text encoders, ControlNet): the
    registry's GPU memory estimate counts 2 bytes each (float16)."""
    import torch

    return sum(p.numel() for part in pipe.components.values() if isinstance(part, torch.nn.Module)
               for p in part.parameters())


def load(folder: Path, device: str):
    """The pipeline, from the folder only: (pipeline, its class name). ModelError naming what is wrong."""
    index_path = folder / "model_index.json"
    try:
        cls_name = json.loads(index_path.read_text()).get("_class_name")
    except (OSError, ValueError) as exc:
        raise ModelError(f"model_index.json does not read: {_short(exc)}") from None
    if cls_name not in PIPELINES:
        raise ModelError(f"pipeline {cls_name!r} is not one the appliance runs; one of: {', '.join(PIPELINES)}")
    import torch
    from diffusers import AutoPipelineForImage2Image, StableDiffusionInstructPix2PixPipeline
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    dtype = torch.float16 if device == "cuda" else torch.float32
    options: dict[str, Any] = {"local_files_only": True, "use_safetensors": True, "dtype": dtype}
    try:
        if cls_name in INSTRUCT:
            pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(folder), **options)
        else:
            pipe = AutoPipelineForImage2Image.from_pretrained(str(folder), **options)
        if getattr(pipe, "safety_checker", None) is None and hasattr(pipe, "register_to_config"):
            pipe.register_to_config(requires_safety_checker=False)
        pipe = pipe.to(device)
    except Exception as exc:  # noqa: BLE001 - diffusers raises many kinds for a folder that does not load
        raise ModelError(f"the folder does not load as a diffusers {cls_name}: "
                         f"{_short(exc).replace(str(folder), 'the folder')}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe, cls_name


def offline_imports() -> None:
    """Before a process imports the stack for tasks to fork from (the warm model parent): the environment
    ``_offline`` gives a task, as the task sees its workdir in the sandbox (/task), since huggingface_hub and
    transformers read it when imported; and no progress bars (tqdm's monitor would be a thread)."""
    _offline(Path("/task"))
    os.environ["TQDM_DISABLE"] = "1"


def preload() -> None:
    """Import what a load needs (torch, the pipeline classes, the CLIP text models), as a warm parent that model
    tasks fork from would (docs/models.md, "A warm model worker"): a task forked after this pays no import. Its
    thread count stays 1 (forking stays safe) only with the thread caps every task has (childenv.py) and
    without onnxruntime, which diffusers imports when it can and which starts a thread of its own."""
    import diffusers
    import torch
    import transformers

    torch.set_num_threads(1)
    for name in PIPELINES:
        getattr(diffusers, name)
    for name in ("AutoPipelineForImage2Image", "AutoencoderKL", "UNet2DConditionModel", "ControlNetModel"):
        getattr(diffusers, name)
    for name in ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer"):
        getattr(transformers, name)


# A pipeline kept loaded on the CPU by the loaded model parent (appliance/runtime/executors/model_pipeline.py),
# by the model's SHA-256: a task forked from it finds its model here and skips the load. Only ever set there.
_KEPT: dict[str, tuple[Any, str]] = {}


def keep(sha256: str, pipe: Any, cls_name: str) -> None:
    """Keep this CPU pipeline for the tasks forked after this (one model at a time)."""
    _KEPT.clear()
    _KEPT[sha256] = (pipe, cls_name)


def native_side(pipe) -> int:
    """The side the model was trained at: its UNet's sample size × the VAE's scale factor."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def multiple(pipe) -> int:
    """Sides must be multiples of this: the VAE's scale × the UNet's downsampling."""
    return int(pipe.vae_scale_factor) * 2 ** (len(pipe.unet.config.block_out_channels) - 1)


def seed_of(*parts: str) -> int:
    """A job's seed from what it asks (picture, text, strength, model): a retry gives the same picture."""
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:4], "big") & 0x7FFFFFFF


def prompt_tokens(pipe, prompt: str) -> int:
    """How many tokens of the prompt the model's (first) tokenizer reads, start and end marks excluded."""
    tok = pipe.tokenizer
    ids = tok(prompt, truncation=True, max_length=tok.model_max_length)["input_ids"]
    return max(0, len(ids) - 2)


def generate(pipe, cls_name: str, rgb: np.ndarray, prompt: str, strength: float, steps: int, guidance: float,
             seed: int, side: int, since: float | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The model's picture for an RGB uint8 one: generated at ``side`` on its longer edge (a multiple of what
    the model needs), returned at the input's size. ModelError when it fails or gives NaN. ``since``: a
    perf_counter() reading (the task's start) that ``first_step_s`` is counted from (default: this call)."""
    import torch

    h, w = rgb.shape[:2]
    m = multiple(pipe)
    scale = side / max(h, w)
    gw, gh = max(m, round(w * scale / m) * m), max(m, round(h * scale / m) * m)
    small = cv2.resize(rgb, (gw, gh), interpolation=cv2.INTER_AREA if gw < w else cv2.INTER_CUBIC)
    device = pipe.device.type
    generator = torch.Generator(device="cpu").manual_seed(seed)  # the CPU's generator: the same noise on any card
    args: dict[str, Any] = {"prompt": prompt, "image": Image.fromarray(small), "num_inference_steps": steps,
                            "guidance_scale": guidance, "generator": generator, "output_type": "np"}
    if cls_name in INSTRUCT:  # an instruction model has no strength: how closely it keeps the picture instead
        args["image_guidance_scale"] = 1.0 + 2.0 * (1.0 - strength)
    else:
        args["strength"] = strength
    if cls_name in CONTROLNET:  # the input's edges hold the geometry
        edges = cv2.Canny(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), 100, 200)
        args["control_image"] = Image.fromarray(np.repeat(edges[..., None], 3, axis=2))
    first_step: list[float] = []

    def on_step(_pipe: Any, _index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if not first_step:  # the end of the first denoising step: what a warm worker would bring forward
            first_step.append(time.perf_counter())
        return tensors

    args["callback_on_step_end"] = on_step
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            out = np.asarray(pipe(**args).images[0], dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - any failure of the run is the model's
        raise ModelError(f"the model fails to run on a {gw}×{gh} picture: {_short(exc)}") from None
    if out.shape != (gh, gw, 3):
        raise ModelError(f"the model gave a {'×'.join(map(str, out.shape))} picture for a {gh}×{gw}×3 input")
    if not np.isfinite(out).all():
        raise ModelError(f"the model's picture holds {int((~np.isfinite(out)).sum())} NaN or infinite values")
    picture = (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
    run_s = time.perf_counter() - started
    back = cv2.resize(picture, (w, h), interpolation=cv2.INTER_CUBIC if w > gw else cv2.INTER_AREA)
    meta = {"prompt": prompt, "prompt_tokens": prompt_tokens(pipe, prompt), "seed": seed, "strength": strength,
            "steps": steps, "steps_run": _steps_run(cls_name, steps, strength), "guidance": guidance,
            "size": [gw, gh], "device": device, "run_s": round(run_s, 3),
            "first_step_s": round(first_step[0] - (started if since is None else since), 3) if first_step else None,
            "output_range": [round(float(out.min()), 4), round(float(out.max()), 4)]}
    return back, meta


def _steps_run(cls_name: str, steps: int, strength: float) -> int:
    """The UNet steps a run takes: an img2img pipeline skips the first (1 − strength) of the schedule."""
    return steps if cls_name in INSTRUCT else max(1, min(steps, int(steps * strength)))


def _threads() -> None:
    import torch

    torch.set_num_threads(1)  # the task's CPU share (cpu=1.0); the sandbox's nproc limit stays meaningful


def check(task_input: dict, workdir: Path, report: Reporter) -> dict:
    """``model.check`` for an img2img folder: load it, run one small inference on a generated picture with a
    test prompt, check the picture. Never raises for a bad model: the report says what is wrong."""
    started = time.perf_counter()
    workdir = Path(workdir)
    meta: dict[str, Any] = {"ok": False}
    try:
        _offline(workdir)
        report.progress(0.1, "loading")
        folder = assemble(workdir, dict(task_input["files"]))
        _threads()
        device = device_for(str(task_input.get("device", "gpu")))
        pipe, cls_name = load(folder, device)
        report.progress(0.5, "running")
        _, run = generate(pipe, cls_name, test_picture(), "a product photo, studio light", 0.5, CHECK_STEPS,
                          float(task_input.get("guidance", 7.5)), 0, CHECK_SIDE)
        meta = {"ok": True, "pipeline": type(pipe).__name__, "native": native_side(pipe),
                "controlnet": cls_name in CONTROLNET, "instruct": cls_name in INSTRUCT,
                "output_shape": [run["size"][1], run["size"][0], 3], "params": parameters(pipe),
                **{k: run[k] for k in ("output_range", "run_s", "device", "prompt", "prompt_tokens")}}
    except ModelError as exc:
        meta = {"ok": False, "error": str(exc)}
    except (KeyError, TypeError, ValueError) as exc:
        meta = {"ok": False, "error": f"bad check request: {_short(exc)}"}
    meta["check_s"] = round(time.perf_counter() - started, 3)
    report.log(f"model.check img2img: {'ok' if meta['ok'] else meta['error']} in {meta['check_s']} s")
    report.progress(1.0, "done")
    return {"files": {}, "meta": meta}


def render(task_input: dict, workdir: Path, report: Reporter) -> dict:
    """The ``image.img2img`` renderer: the input picture through the studio's model into ``generated.png``
    (its role ``image``), at the input's size; the report records the prompt the model read, the seed, the
    strength and the steps. A model that fails fails the task (RenderError with the reason)."""
    task_start = time.perf_counter()  # the renderer's start: the startup figures are counted from here
    workdir = Path(workdir)
    spec = task_input["model"]
    _offline(workdir)
    with Image.open(workdir / task_input["input"]) as img:
        rgb = np.asarray(img.convert("RGB"))
    report.progress(0.05, "loading model")
    try:
        folder = assemble(workdir, dict(spec["files"]))
        _threads()
        preloaded = "diffusers" in sys.modules  # forked from the warm model parent (its imports done)
        import diffusers  # noqa: F401 - timed here: the import a warm worker would pay once (docs/models.md)

        imported = time.perf_counter()
        device = device_for(str(spec.get("device", "gpu")))
        kept = _KEPT.get(str(spec.get("sha256"))) if device == "cpu" else None
        pipe, cls_name = kept or load(folder, device)
        loaded = time.perf_counter()
        report.progress(0.3, "generating")
        side = int(task_input.get("side") or native_side(pipe))
        out, meta = generate(pipe, cls_name, rgb, str(task_input.get("prompt") or ""),
                             float(task_input["strength"]), int(spec["steps"]), float(spec["guidance"]),
                             int(task_input["seed"]), side, since=task_start)
    except ModelError as exc:
        raise RenderError(f"img2img model {spec.get('name')!r}: {exc}") from None
    meta["startup"] = {"import_s": round(imported - task_start, 3), "load_s": round(loaded - imported, 3),
                       "preloaded": preloaded, "kept": kept is not None}  # kept: forked with its pipeline loaded
    Image.fromarray(out).save(workdir / OUTPUT, compress_level=1)
    report.log(f"img2img {spec.get('name')!r} on {meta['device']} ({device_note(device)}): prompt {meta['prompt']!r} "
               f"({meta['prompt_tokens']} tokens), strength {meta['strength']}, {meta['steps_run']} steps, "
               f"seed {meta['seed']}, {meta['size'][0]}×{meta['size'][1]} in {meta['run_s']} s")
    report.progress(1.0, "done")
    return {"files": {"image": OUTPUT}, "meta": {"model": spec.get("name"), "sha256": spec.get("sha256"), **meta,
                                                 "gpu": granted_gpu() or None, "device_note": device_note(device)}}


__all__ = ["STRENGTH", "check", "generate", "load", "render", "seed_of"]
