"""`appliance models add | list | remove`: the studio's own matte and depth models (ONNX) and img2img model (a
diffusers folder) (services/models.py).

``add`` needs the running server: the file is checked by loading it and running it once inside the sandbox, as
a task, and only the server keeps it. ``list`` reads the manifest of --data-dir and works with no server."""
from __future__ import annotations

import getpass
import json
import os
import time
from pathlib import Path

from appliance.cli.text import table
from appliance.errors import ApplianceError
from appliance.services import model_folders
from appliance.services.models import DEVICES, KINDS, POSTS, ModelRegistry

ENDED = ("completed", "failed", "cancelled")


def _who() -> str:
    """The person who added it: the sudoer when run through sudo, else the login running the command."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (a container)
        return f"uid {os.getuid()}"


def cmd_add(args) -> int:
    from appliance.cli import _settings
    from appliance.cli.client import AdminClient, Progress

    path = Path(args.path)
    folder = args.kind == "img2img"
    if folder and not (path / "model_index.json").is_file():
        raise ApplianceError(f"{path} is not a diffusers pipeline folder (no model_index.json in it)")
    if not folder and not path.is_file():
        raise ApplianceError(f"no such file: {path}")
    client = AdminClient(_settings(args))
    params = {"kind": args.kind, "name": args.name, "licence": args.licence, "post": args.post,
              "input_size": str(args.input_size) if args.input_size else None, "mean": args.mean, "std": args.std,
              "device": args.device, "steps": str(args.steps) if args.steps else None, "guidance": args.guidance,
              "gpu_mem_mb": str(args.gpu_memory) if args.gpu_memory else None,
              "by": _who(), "source": path.name, "user": args.user}
    query = {k: v for k, v in params.items() if v is not None}
    if folder:  # the folder's configs, tokenizer files and safetensors weights, as a tar made while it is sent
        names = model_folders.wanted(path)
        left = sorted({p.name for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")} -
                      {n.rpartition("/")[2] for n in names})
        if left:
            print(f"not sent (only {', '.join(model_folders.SUFFIXES)} files are): {', '.join(left[:8])}"
                  + (" …" if len(left) > 8 else ""))
        started = client._call("POST", "/models", params=query, content=model_folders.tar_stream(path, names))
    else:
        with open(path, "rb") as body:
            started = client._call("POST", "/models", params=query, content=body)
    check = started["check"]
    progress = Progress(f"checking {started['name']} ({started['size'] / 1e6:.1f} MB) in the sandbox")
    while True:
        job = client._call("GET", f"/jobs/{check}")
        progress.show(float(job["progress"] or 0.0), job["status"], final=job["status"] in ENDED)
        if job["status"] in ENDED:
            break
        time.sleep(0.3)
    entry = client._call("POST", f"/models/checks/{check}/install")
    if args.json:
        print(json.dumps(entry, indent=2))
        return 0
    if folder:
        where = "a GPU only" if entry["device"] == "gpu" else "a free GPU, else the CPU"
        print(f"added {entry['name']}: img2img model ({entry.get('pipeline')}), {entry['size'] / 1e6:.1f} MB, "
              f"runs at {entry['runSize'][0]} px on {where} (needs {entry.get('gpuMemoryMb')} MB of a GPU), "
              f"sha256 {entry['sha256']}; RenderCAD jobs use it with model={entry['name']}")
        return 0
    fixed = "×".join(map(str, entry["inputSize"])) if entry["inputSize"] else "free"
    print(f"added {entry['name']}: {entry['kind']} model, {entry['size'] / 1e6:.1f} MB, input size {fixed} "
          f"(runs at {'×'.join(map(str, entry['runSize']))}), sha256 {entry['sha256']}")
    return 0


def cmd_list(args) -> int:
    from appliance.cli import _print, _settings

    entries = ModelRegistry.of(_settings(args).data_dir).entries()
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    rows = [(e["name"], e["kind"], e["runtime"], "×".join(map(str, e["input_size"])) if e["input_size"] else
             "free", e.get("device", "any"), f"{e['size'] / 1e6:.1f} MB", e["sha256"][:12], e["licence"] or "-",
             f"{e['added_at']} by {e['added_by'] or '?'}") for e in entries]
    _print(table(("NAME", "KIND", "RUNTIME", "INPUT", "DEVICE", "SIZE", "SHA256", "LICENCE", "ADDED"), rows))
    return 0


def cmd_remove(args) -> int:
    from appliance.cli import _settings
    from appliance.cli.client import AdminClient

    entry = AdminClient(_settings(args))._call("DELETE", f"/models/{args.name}")
    print(f"removed {entry['name']} ({entry['kind']}); jobs planned from now on use the classical path")
    return 0


def add_commands(sub, common, server) -> None:
    m = sub.add_parser("models", help="the studio's own models: matte and depth (ONNX), img2img (diffusers)")
    m = m.add_subparsers(dest="sub", required=True)
    p = m.add_parser("add", parents=[common, server], help="check a model in the sandbox on the running server and "
                     "keep it (one of each kind)")
    p.add_argument("path", help="the model file (.onnx: 1×3×H×W float32 in, 1×1×H×W out), or for img2img a local "
                   "diffusers pipeline folder (save_pretrained, safetensors weights)")
    p.add_argument("--kind", required=True, choices=KINDS, help="matte: cuts the subject out of RenderCAD images; "
                   "depth: per-pixel parallax for image → video; img2img: a RenderCAD model of its own "
                   "(render_mode sets its strength, custom_instructions its text; video.php's prompt too, "
                   "with style=creative)")
    p.add_argument("--device", choices=DEVICES, help="gpu: its tasks need a GPU and are refused where none can be "
                   "granted (the default for img2img); any: it runs on a free GPU when one is granted, else on the "
                   "CPU (tiny and small models)")
    p.add_argument("--gpu-memory", type=int, metavar="MB", help="img2img: the GPU memory one run needs, in MB "
                   "(default: estimated from the weights and the model's size; the scheduler runs tasks on a GPU "
                   "only where this fits beside the others)")
    p.add_argument("--steps", type=int, help="img2img: denoising steps at strength 1 (default 30; a job runs "
                   "steps × strength)")
    p.add_argument("--guidance", help="img2img: classifier-free guidance scale (default 7.5)")
    p.add_argument("--name", help="its name (default: the file's name without .onnx)")
    p.add_argument("--licence", "--license", dest="licence", help="a free note: the model's licence and source")
    p.add_argument("--input-size", type=int, help="the side the picture is resized to when the model's input size "
                   "is free (default 320 for matte, 384 for depth); a fixed size is read from the model")
    p.add_argument("--mean", help="per-channel mean R,G,B of x/255 (default ImageNet's 0.485,0.456,0.406)")
    p.add_argument("--std", help="per-channel std R,G,B (default ImageNet's 0.229,0.224,0.225)")
    p.add_argument("--post", default="none", choices=POSTS, help="a matte's post-processing: none (already "
                   "0..1), sigmoid (the model gives logits), minmax (stretch to 0..1, as U²-Net's reference code)")
    p.add_argument("--user", default="admin", help="the user the check job runs as (default admin)")
    p.add_argument("--json", action="store_true", help="print the installed model as JSON")
    p.set_defaults(func=cmd_add)
    p = m.add_parser("list", parents=[common], help="the installed models (reads the data dir; no server needed)")
    p.add_argument("--json", action="store_true", help="the manifest's entries as JSON")
    p.set_defaults(func=cmd_list)
    p = m.add_parser("remove", parents=[common, server], help="remove a model on the running server")
    p.add_argument("name", help="the model's name (models list)")
    p.set_defaults(func=cmd_remove)
