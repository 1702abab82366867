"""The model registry (issue #23): the studio's own models, kept under ``<data_dir>/models/`` beside one
manifest, ``manifest.json``: an ONNX matte or depth model as ``<sha256>.onnx``, an img2img diffusers folder as
``<sha256>/`` (its SHA-256 is model_folders.folder_digest: over its files' names and digests).

Adding is two steps, both through the running server (the CLI speaks the admin API, api/admin.py): the file is
taken into the artifact store and a ``model.check`` task (renderers/image/onnx_models.py) loads it and runs it
once on a generated picture inside the sandbox; then ``install`` reads that task's report and, only when it says
ok, links the file under models/ and writes the manifest. A refused model leaves nothing under models/ (its
artifact goes with the hourly sweep, like any artifact nothing refers to).

At most one model per kind is installed: which model a job uses is then never a guess. The image pipelines
(pipelines/image.py, image_video.py) ask ``ModelRegistry.for_task`` (``folder_for_task`` for img2img) for it at
plan time; its files become the task's input artifacts, so their SHA-256 is part of the task's cache key. An
img2img model is a RenderCAD ``model`` of its own, named by its name: so its name may not be classic or pro.
The manifest is read on each plan (a stat and, when it changed, a small JSON file): `models remove` takes
effect for the next job."""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from appliance.errors import ApplianceError, NotFound
from appliance.runtime.artifacts import Artifacts, link_or_copy
from appliance.store.db import now_iso

KINDS = ("matte", "depth", "img2img")
ONNX_KINDS = ("matte", "depth")
POSTS = ("none", "sigmoid", "minmax")
DEVICES = ("gpu", "any")  # gpu: its tasks need a GPU (refused where none); any: a free GPU, else the CPU
RESERVED = ("classic", "pro")  # RenderCAD's own model ids: an img2img model is a model id beside them
RUNTIME = "onnxruntime"
FOLDER_RUNTIME = "diffusers"
CHECK_RENDERER = "model.check"
MAX_MODEL_BYTES = 4 << 30  # the largest open depth models are about 1.3 GB in float32; room for twice that
MAX_FOLDER_BYTES = 24 << 30  # an SDXL folder in float16 with a ControlNet is about 9 GB; in float32 twice that
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # what U²-Net, BiRefNet and MiDaS were trained with
# GPU memory of an img2img run (gpu_need_mb), in float16 on CUDA. Published figures, not measured on a card here
# (scripts/gpu_figures.py measures the UNet's peak on a lent GPU): SD 1.5 runs img2img at 512² in about 3.5 GB
# (2.0 GB of weights), SDXL at 1024² in about 11 GB (6.9 GB of weights). Beside the weights: the activations of one
# step with classifier-free guidance (a batch of 2) and the VAE's decode, which grow with the latent's area, and
# the CUDA context with cuBLAS/cuDNN workspaces and the caching allocator's slack. Rounded up: a need that is too
# large only makes a task wait; one too small runs two models out of memory on one card.
ACTIVATIONS_MB_AT_512 = 1024
CUDA_CONTEXT_MB = 768
MAX_GPU_MB = 1 << 20  # a --gpu-memory beyond 1 TB is a typo


class Port(TypedDict):
    name: str
    shape: list[int | None]  # None: a free axis


class ModelEntry(TypedDict):
    """One installed model, as the manifest keeps it."""
    name: str
    kind: str  # matte | depth
    runtime: str  # onnxruntime
    sha256: str
    size: int
    file: str  # under models/: <sha256>.onnx
    source: str  # the file name it was added from
    input: Port
    output: Port  # the first output: the one map read
    input_size: list[int] | None  # [H, W] when the model's input is fixed, else None
    run_size: list[int]  # [H, W] the picture is resized to
    mean: list[float]
    std: list[float]
    post: str  # none | sigmoid | minmax (a matte); a depth map is always stretched to 0..1
    licence: str
    added_at: str
    added_by: str
    check: dict[str, Any]  # what the sandboxed check measured: the map's range and mean, its run time
    device: NotRequired[str]  # gpu | any (entries written before img2img: any)
    files: NotRequired[dict[str, str]]  # img2img: the folder's {relative name: digest}
    pipeline: NotRequired[str]  # img2img: the diffusers pipeline class the check loaded
    steps: NotRequired[int]  # img2img: denoising steps at strength 1 (a job runs round(steps × strength))
    guidance: NotRequired[float]  # img2img: classifier-free guidance scale
    gpu_mem_mb: NotRequired[int]  # img2img: MB of a card one run needs (gpu_need_mb, or --gpu-memory)
    gpu_mem_from: NotRequired[str]  # "estimate" (weights + activations at its size) or "operator"


class Manifest(TypedDict):
    version: int
    models: list[ModelEntry]


@dataclass(frozen=True)
class AddRequest:
    """`appliance models add`'s options, validated before any byte is taken in."""
    kind: str
    name: str
    source: str
    licence: str = ""
    added_by: str = ""
    input_size: int | None = None
    mean: tuple[float, ...] = tuple(IMAGENET[0])
    std: tuple[float, ...] = tuple(IMAGENET[1])
    post: str = "none"
    device: str = "any"
    steps: int = 30
    guidance: float = 7.5
    gpu_mem_mb: int | None = None  # the operator's figure; None: estimated from the checked model

    @classmethod
    def from_params(cls, params: dict[str, str]) -> AddRequest:
        kind = params.get("kind", "")
        if kind not in KINDS:
            raise ApplianceError(f"kind must be one of: {', '.join(KINDS)}")
        source = os.path.basename(params.get("source") or "model.onnx")[:200]
        name = params.get("name") or re.sub(r"[^A-Za-z0-9_.-]", "-", os.path.splitext(source)[0])[:64] or kind
        if not NAME.match(name):
            raise ApplianceError("name must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter "
                                 "or digit")
        if name.lower() in RESERVED:
            raise ApplianceError(f"name may not be {name!r}: classic and pro are RenderCAD's own models")
        device = params.get("device") or ("gpu" if kind == "img2img" else "any")
        if device not in DEVICES:
            raise ApplianceError(f"device must be one of: {', '.join(DEVICES)}")
        steps, guidance = params.get("steps") or "30", params.get("guidance") or "7.5"
        if not steps.isdigit() or not 1 <= int(steps) <= 150:
            raise ApplianceError("steps must be a whole number from 1 to 150")
        try:
            scale = float(guidance)
        except ValueError:
            scale = -1.0
        if not 0 <= scale <= 30:
            raise ApplianceError("guidance must be a number from 0 to 30")
        gpu_mem = params.get("gpu_mem_mb") or None
        if gpu_mem is not None and (not gpu_mem.isdigit() or not 1 <= int(gpu_mem) <= MAX_GPU_MB):
            raise ApplianceError(f"gpu-memory must be a whole number of MB from 1 to {MAX_GPU_MB}")
        post = params.get("post") or "none"
        if post not in POSTS:
            raise ApplianceError(f"post must be one of: {', '.join(POSTS)}")
        size = params.get("input_size") or None
        if size is not None and (not size.isdigit() or not 8 <= int(size) <= 2048):
            raise ApplianceError("input-size must be a whole number from 8 to 2048")
        mean, std = _triple(params.get("mean"), "mean", IMAGENET[0]), _triple(params.get("std"), "std", IMAGENET[1])
        if any(s <= 0 for s in std):
            raise ApplianceError("std must be three numbers above 0")
        return cls(kind=kind, name=name, source=source, licence=(params.get("licence") or "")[:500],
                   added_by=(params.get("by") or "")[:100], input_size=int(size) if size else None,
                   mean=mean, std=std, post=post, device=device, steps=int(steps), guidance=scale,
                   gpu_mem_mb=int(gpu_mem) if gpu_mem else None)

    def check_input(self, digest: str) -> dict[str, Any]:
        """The model.check task's input: the model as its one input artifact, and this request (read back by
        ``install``)."""
        return {"model": "model.onnx", "kind": self.kind, "mean": list(self.mean), "std": list(self.std),
                "post": self.post, "input_size": self.input_size, "run_size": self.input_size,
                "request": {"name": self.name, "source": self.source, "licence": self.licence,
                            "added_by": self.added_by}, "artifacts": {"model.onnx": digest}}

    def folder_check_input(self, files: dict[str, str]) -> dict[str, Any]:
        """The img2img check's input: the folder's files as artifacts under flat names (the sandbox's workdir is
        flat; the renderer rebuilds the folder from ``files``), and this request."""
        staged = {rel: f"img2img.{i}{os.path.splitext(rel)[1]}" for i, rel in enumerate(sorted(files))}
        return {"kind": self.kind, "files": staged, "device": self.device, "steps": self.steps,
                "guidance": self.guidance,
                # the operator's figure: the check's own GPU grant asks for it too (an estimate needs the check)
                **({"gpu_mem_mb": self.gpu_mem_mb} if self.gpu_mem_mb else {}),
                "request": {"name": self.name, "source": self.source, "licence": self.licence,
                            "added_by": self.added_by},
                "artifacts": {staged[rel]: files[rel] for rel in staged}}


def gpu_need_mb(weights_bytes: int, side: int) -> int:
    """MB of a card one img2img run needs in float16: the weights, one step's activations and the VAE's decode
    at ``side``² (they grow with the area), and the CUDA context (see ACTIVATIONS_MB_AT_512)."""
    activations = ACTIVATIONS_MB_AT_512 * max(side, 64) ** 2 / 512 ** 2
    return -(-weights_bytes // (1 << 20)) + int(activations + 0.999) + CUDA_CONTEXT_MB


def entry_gpu_mb(entry: ModelEntry) -> int:
    """The entry's GPU need (entries written before the field: estimated from its files' size, as stored)."""
    if entry.get("gpu_mem_mb"):
        return int(entry["gpu_mem_mb"])
    return gpu_need_mb(entry["size"], entry["run_size"][0] or 512)


def _triple(text: str | None, field: str, default: list[float]) -> tuple[float, ...]:
    if not text:
        return tuple(default)
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(abs(v) < 1e6 for v in values):
        raise ApplianceError(f"{field} must be three numbers, R,G,B (e.g. {','.join(map(str, default))})")
    return values


class ModelRegistry:
    _lock = threading.Lock()  # one writer at a time within the server (install and remove)

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cached: tuple[tuple[int, int], list[ModelEntry]] | None = None

    @classmethod
    def of(cls, data_dir: Path) -> ModelRegistry:
        return cls(data_dir / "models")

    @classmethod
    def beside(cls, artifacts: Artifacts) -> ModelRegistry:
        """The registry of the data dir that holds this artifact store (``<data_dir>/artifacts``): what a
        pipeline, which is given the store and not the settings, reads."""
        return cls.of(artifacts.root.parent)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def entries(self) -> list[ModelEntry]:
        try:
            st = self.manifest_path.stat()
        except FileNotFoundError:
            return []
        stamp = (st.st_mtime_ns, st.st_size)
        if self._cached is None or self._cached[0] != stamp:
            doc = json.loads(self.manifest_path.read_text())
            self._cached = (stamp, list(doc.get("models", [])))
        return list(self._cached[1])

    def get(self, kind: str) -> ModelEntry | None:
        return next((e for e in self.entries() if e["kind"] == kind), None)

    def file(self, entry: ModelEntry) -> Path:
        return self.root / entry["file"]

    def for_task(self, kind: str, artifacts: Artifacts, role: str) -> tuple[dict[str, str], dict[str, Any]] | None:
        """The installed model of ``kind`` for a task: ({role.onnx: digest}, what the renderer needs to feed and
        read it), or None when there is none. The file goes into the artifact store (a hard link)."""
        entry = self.get(kind)
        if entry is None or kind not in ONNX_KINDS:
            return None
        name = f"{role}.onnx"
        digest = artifacts.put(self.file(entry))
        if digest != entry["sha256"]:  # someone changed the file under models/: a job must not use it silently
            raise ApplianceError(f"the installed {kind} model {entry['name']!r} does not match its manifest "
                                 "(SHA-256 differs): remove it and add it again", status=503, code="UNAVAILABLE")
        spec = {"name": entry["name"], "kind": kind, "mean": entry["mean"], "std": entry["std"],
                "post": entry["post"], "run_size": entry["run_size"][0], "size": entry["size"]}
        return {name: digest}, {"file": name, **spec}

    def folder_for_task(self, artifacts: Artifacts) -> tuple[dict[str, str], dict[str, Any]] | None:
        """The installed img2img model for a task: ({staged name: digest}, its spec: name, sha256, files {relative
        name: staged name}, device, steps, guidance, size), or None when there is none."""
        from appliance.services.model_folders import folder_digest

        entry = self.get("img2img")
        if entry is None:
            return None
        digests = {rel: artifacts.put(self.root / entry["file"] / rel) for rel in entry.get("files", {})}
        if folder_digest(digests) != entry["sha256"]:
            raise ApplianceError(f"the installed img2img model {entry['name']!r} does not match its manifest "
                                 "(SHA-256 differs): remove it and add it again", status=503, code="UNAVAILABLE")
        staged = {rel: f"img2img.{i}{os.path.splitext(rel)[1]}" for i, rel in enumerate(sorted(digests))}
        spec = {"name": entry["name"], "sha256": entry["sha256"], "files": staged, "size": entry["size"],
                "device": entry.get("device", "gpu"), "steps": entry.get("steps", 30),
                "guidance": entry.get("guidance", 7.5), "pipeline": entry.get("pipeline", ""),
                "gpu_mem_mb": entry_gpu_mb(entry)}
        return {staged[rel]: digests[rel] for rel in staged}, spec

    def ensure_free(self, name: str, kind: str) -> None:
        for entry in self.entries():
            if entry["name"] == name:
                raise ApplianceError(f"a model named {name!r} is installed already: pick another --name or "
                                     f"`appliance models remove {name}` first", status=409, code="CONFLICT")
            if entry["kind"] == kind:
                raise ApplianceError(f"a {kind} model ({entry['name']}) is installed already; one of each kind is "
                                     f"used: `appliance models remove {entry['name']}` first", status=409,
                                     code="CONFLICT")

    def install(self, check_input: dict[str, Any], report: dict[str, Any] | None, artifacts: Artifacts) -> ModelEntry:
        """Keep the checked model: its file linked as models/<sha256>.onnx and its entry in the manifest.
        ApplianceError (422) with the check's own words when the check refused it."""
        if not report or not report.get("ok"):
            reason = (report or {}).get("error") or "the check gave no report"
            raise ApplianceError(f"model refused: {reason}", status=422, code="REFUSED")
        if check_input["kind"] == "img2img":
            return self._install_folder(check_input, report, artifacts)
        digest = check_input["artifacts"]["model.onnx"]
        request = check_input["request"]
        source = artifacts.path(digest)
        if not source.is_file():
            raise ApplianceError("the checked model's file is gone (swept); add it again", status=410, code="GONE")
        sig = report["signature"]
        entry: ModelEntry = {
            "name": request["name"], "kind": check_input["kind"], "runtime": RUNTIME, "sha256": digest,
            "size": source.stat().st_size, "file": f"{digest}.onnx", "source": request["source"],
            "input": _port(sig["input"]), "output": _port(sig["output"]),
            "input_size": _pair(report.get("input_size")), "run_size": _pair(report["run_size"]) or [0, 0],
            "mean": [float(v) for v in check_input["mean"]], "std": [float(v) for v in check_input["std"]],
            "post": check_input["post"], "licence": request["licence"], "added_at": now_iso(),
            "added_by": request["added_by"],
            "check": {k: report[k] for k in ("map_range", "map_mean", "run_s") if k in report},
            "device": check_input.get("device", "any")}
        with self._lock:
            self.ensure_free(entry["name"], entry["kind"])
            self.root.mkdir(parents=True, exist_ok=True)
            target = self.root / entry["file"]
            if not target.exists():
                staging = self.root / f".{uuid.uuid4().hex}.part"
                link_or_copy(source, staging)
                os.replace(staging, target)
            self._write([*self.entries(), entry])
        return entry

    def _install_folder(self, check_input: dict[str, Any], report: dict[str, Any],
                        artifacts: Artifacts) -> ModelEntry:
        """An img2img folder the check accepted: its files linked as models/<sha256>/<relative name>."""
        from appliance.services.model_folders import folder_digest

        request = check_input["request"]
        files = {rel: check_input["artifacts"][staged] for rel, staged in check_input["files"].items()}
        sources = {rel: artifacts.path(d) for rel, d in files.items()}
        if not all(p.is_file() for p in sources.values()):
            raise ApplianceError("the checked model's files are gone (swept); add it again", status=410, code="GONE")
        digest = folder_digest(files)
        entry: ModelEntry = {
            "name": request["name"], "kind": "img2img", "runtime": FOLDER_RUNTIME, "sha256": digest,
            "size": sum(p.stat().st_size for p in sources.values()), "file": digest, "source": request["source"],
            "input": {"name": "image", "shape": [1, 3, None, None]},
            "output": {"name": "image", "shape": [1, 3, None, None]},
            "input_size": None, "run_size": [int(report["native"]), int(report["native"])],
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "post": "none", "licence": request["licence"],
            "added_at": now_iso(), "added_by": request["added_by"],
            "check": {k: report[k] for k in ("output_shape", "output_range", "run_s", "device", "prompt",
                                              "prompt_tokens", "controlnet", "instruct", "params") if k in report},
            "device": check_input["device"], "files": files, "pipeline": str(report["pipeline"]),
            "steps": int(check_input["steps"]), "guidance": float(check_input["guidance"])}
        # float16 weights: 2 bytes a parameter as the check counted them (files in float32 are halved on a GPU)
        weights = 2 * int(report["params"]) if report.get("params") else entry["size"]
        entry["gpu_mem_mb"] = int(check_input.get("gpu_mem_mb") or gpu_need_mb(weights, entry["run_size"][0]))
        entry["gpu_mem_from"] = "operator" if check_input.get("gpu_mem_mb") else "estimate"
        with self._lock:
            self.ensure_free(entry["name"], "img2img")
            target = self.root / digest
            if not target.is_dir():
                staging = self.root / f".{uuid.uuid4().hex}.part"
                for rel, source in sources.items():
                    (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                    link_or_copy(source, staging / rel)
                os.replace(staging, target)
            self._write([*self.entries(), entry])
        return entry

    def remove(self, name: str) -> ModelEntry:
        """Take a model out of the manifest and delete its file. Jobs already planned keep theirs: their task
        holds the file as an artifact of its own."""
        with self._lock:
            entries = self.entries()
            entry = next((e for e in entries if e["name"] == name), None)
            if entry is None:
                raise NotFound(f"no model named {name!r} (appliance models list shows the installed ones)")
            kept = [e for e in entries if e["name"] != name]
            self._write(kept)
            if not any(e["file"] == entry["file"] for e in kept):
                path = self.root / entry["file"]
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        return entry

    def _write(self, entries: list[ModelEntry]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        doc: Manifest = {"version": 1, "models": entries}
        staging = self.root / f".manifest.{uuid.uuid4().hex}"
        staging.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(staging, self.manifest_path)  # readers see the old manifest or the new one, never half


def _port(port: dict[str, Any]) -> Port:
    return {"name": str(port["name"]), "shape": [d if isinstance(d, int) else None for d in port["shape"]]}


def _pair(value: Any) -> list[int] | None:
    if not value:
        return None
    h, w = (int(v) for v in value)
    return [h, w]


def public(entry: ModelEntry) -> dict[str, Any]:
    """What /healthz, the admin API and RenderCAD's discovery show of a model: no paths."""
    return {"name": entry["name"], "kind": entry["kind"], "runtime": entry["runtime"], "sha256": entry["sha256"],
            "size": entry["size"], "inputSize": entry["input_size"], "runSize": entry["run_size"],
            "licence": entry["licence"], "addedAt": entry["added_at"], "addedBy": entry["added_by"],
            "device": entry.get("device", "any"), **({"pipeline": entry["pipeline"]} if "pipeline" in entry else {}),
            **({"gpuMemoryMb": entry_gpu_mb(entry)} if entry["kind"] == "img2img" else {})}
