"""The GPU figures issue #11 asks for, measured on a machine with an NVIDIA GPU (BENCHMARKS.md, "GPU figures").

    python3 scripts/gpu_figures.py [--json OUT.json] [--runs 5]

Made for the lent GPU machine, which has CUDA, CuPy, OpenCV and NumPy but neither this project's venv nor
ffmpeg nor a network: it needs only those (psutil and the appliance's settings are used when they import).
Each section reports what it could not do instead of stopping:

1. capacity: ``nvidia-smi`` as the appliance reads it, then the appliance's own probe (``resources.measure``)
   when it imports — NVENC/NVDEC are probed with ffmpeg, so without ffmpeg the reason says so;
2. the RenderCAD 4096² pro render (``renderers/image/pipeline.render``, the function the sandboxed task runs,
   JPEG included) with no GPU granted (``CUDA_VISIBLE_DEVICES=""``: the OpenCV path) and with GPU 0 granted
   (the CuPy path of ``renderers/image/gpu.py``): median seconds of ``--runs`` after one warm-up each;
3. the GPU stage alone (tone, saturation, unsharp mask: ``pipeline.finish_subject``) CPU vs GPU, and how far
   the two outputs are apart (max and mean absolute difference per channel; the stated tolerance is ±1 level
   for the stage and ±2 for the whole chain).

4. the studio's models (issue #23, docs/models.md): an SD 1.5-class and an SDXL-class UNet built from their
   architecture-true configs with random weights (no download: the timing is the architecture's, the pictures
   would be noise) — UNet steps per second at 1024² in float16 with classifier-free guidance (batch 2: what one
   img2img step costs; the VAE and the text encoders, once per job, are not in it) and peak GPU memory; and a
   matte stand-in ONNX graph (convolutions of a stated GFLOP count, not U²-Net itself) at 1024² on ONNX
   Runtime's CPU provider and, where onnxruntime-gpu offers it, the CUDA provider. Without CUDA, or without
   diffusers (the lent machine may lack it), each says "unmeasured" and why, and tiny stand-ins (64² UNets of the
   same block layout) check the code path on the CPU.

``--xp numpy`` stands NumPy in for CuPy (no GPU needed): checks the script itself on a machine without one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def section(name: str, figures: dict, fn) -> None:
    try:
        figures[name] = fn()
    except Exception as exc:  # noqa: BLE001 - report it and go on with the next section
        figures[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"{name}: {json.dumps(figures[name], indent=1)}", flush=True)


def capacity() -> dict:
    found: dict = {}
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        found["nvidia_smi"] = out.stdout.strip().splitlines() or out.stderr.strip()
    else:
        found["nvidia_smi"] = "nvidia-smi not found"
    found["ffmpeg"] = shutil.which("ffmpeg") or "not found: NVENC/NVDEC cannot be probed with ffmpeg here"
    try:
        from appliance import settings
        from appliance.runtime import resources

        cap = resources.measure(settings.load(environ={}))
        found["appliance"] = [g.describe() for g in cap.gpus] or "no GPU detected"
    except Exception as exc:  # noqa: BLE001 - psutil or the settings' dependencies missing on this machine
        found["appliance"] = f"the appliance's probe did not import: {type(exc).__name__}: {exc}"
    return found


def photo(side: int) -> bytes:
    """A product shot like the tests' (a red disc with a blue cap on a graded backdrop), as a JPEG."""
    import cv2
    import numpy as np

    ys, xs = np.mgrid[0:side, 0:side]
    img = np.empty((side, side, 3), np.float32)
    img[:] = (235, 232, 226)
    img *= (1 - 0.08 * ys / side)[..., None]
    img[((xs - side / 2) / (side * 0.2)) ** 2 + ((ys - side * 0.6) / (side * 0.28)) ** 2 < 1] = (200, 30, 40)
    img[(abs(xs - side / 2) < side * 0.05) & (ys > side * 0.22) & (ys < side * 0.36)] = (30, 60, 200)
    img += np.random.default_rng(1).normal(0, 2.5, img.shape)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


class Report:
    """What renderers report (progress, log lines); kept quiet here."""

    def progress(self, fraction: float, phase: str | None = None) -> None:
        pass

    def log(self, text: str) -> None:
        pass


def timed(fn, runs: int) -> tuple[float, object]:
    result = fn()  # warm-up: CUDA context, kernels compiled, OpenCV tables
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def granted(gpu: str):
    """The task's environment as the sandbox sets it: the granted GPU's index, or empty for none."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"


def render_4k(runs: int) -> dict:
    import cv2

    from renderers.image import pipeline

    work = Path(tempfile.mkdtemp(prefix="gpu-figures-"))
    (work / "input.jpg").write_bytes(photo(3000))
    task = {"model": "pro", "render_mode": "auto", "background_style": "studio_white", "condition": "auto",
            "size": 4096, "input": "input.jpg"}
    out: dict = {"cv2_threads": cv2.getNumThreads(), "cpu_count": os.cpu_count()}
    images = {}
    for label, gpu in (("cpu", ""), ("gpu", "0")):
        granted(gpu)
        seconds, _ = timed(lambda: pipeline.render(task, work, Report()), runs)
        out[f"{label}_s"] = round(seconds, 3)
        images[label] = cv2.imread(str(work / pipeline.OUTPUT))
    out["speedup"] = round(out["cpu_s"] / out["gpu_s"], 2)
    out.update(_difference(images["cpu"], images["gpu"], "jpeg_"))
    shutil.rmtree(work, ignore_errors=True)
    return out


def stage(runs: int) -> dict:
    """pipeline.finish_subject alone: the part that runs on CuPy."""
    import cv2
    import numpy as np

    from renderers.image import instructions, pipeline

    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(photo(4096), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    settings = {"model": "pro", "condition": "auto"}
    adjust = instructions.Adjust()
    out: dict = {}
    results = {}
    for label, gpu in (("cpu", ""), ("gpu", "0")):
        granted(gpu)
        seconds, result = timed(lambda: pipeline.finish_subject(rgb, alpha, settings, 1.0, adjust), runs)
        out[f"{label}_s"] = round(seconds, 4)
        results[label] = result[0] if isinstance(result, tuple) else result
    out["speedup"] = round(out["cpu_s"] / out["gpu_s"], 2)
    out.update(_difference(results["cpu"], results["gpu"], ""))
    return out


def _difference(a, b, prefix: str) -> dict:
    import numpy as np

    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {f"{prefix}max_abs_diff": int(diff.max()), f"{prefix}mean_abs_diff": round(float(diff.mean()), 4)}


# ---- 4. the studio's models -------------------------------------------------------------------------------------
UNETS = {  # diffusers' UNet2DConditionModel configs of the released models (their unet/config.json)
    "sd15": {"sample_size": 64, "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2,
             "cross_attention_dim": 768, "attention_head_dim": 8,
             "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
             "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3},
    "sdxl": {"sample_size": 128, "block_out_channels": (320, 640, 1280), "layers_per_block": 2,
             "cross_attention_dim": 2048, "attention_head_dim": (5, 10, 20), "transformer_layers_per_block": (1, 2, 10),
             "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
             "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
             "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
             "projection_class_embeddings_input_dim": 2816},
}
TEXT_TOKENS = 77


def _tiny(config: dict) -> dict:
    """The same block layout with 1/40 of the channels and one layer: the code path, on a CPU, in seconds."""
    small = {**config, "block_out_channels": tuple(c // 40 for c in config["block_out_channels"]),
             "layers_per_block": 1, "cross_attention_dim": 32, "norm_num_groups": 8, "attention_head_dim": 2}
    small.pop("transformer_layers_per_block", None)
    if "projection_class_embeddings_input_dim" in config:
        small.update(addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8)
    return small


def unet_steps(name: str, runs: int, side: int = 1024) -> dict:
    """UNet steps per second (batch 2) and peak GPU memory at side², float16; the tiny stand-in without CUDA."""
    try:
        import torch
        from diffusers import UNet2DConditionModel
    except ImportError as exc:
        return {"unmeasured": f"{exc.name or exc} is not installed (pip install '.[models]')"}
    cuda = torch.cuda.is_available()
    config = UNETS[name] if cuda else _tiny(UNETS[name])
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    side = side if cuda else 64
    with torch.device(device):
        unet = UNet2DConditionModel(**config).to(dtype).eval()
    params = sum(p.numel() for p in unet.parameters())
    latent = torch.randn(2, 4, side // 8, side // 8, device=device, dtype=dtype)
    text = torch.randn(2, TEXT_TOKENS, config["cross_attention_dim"], device=device, dtype=dtype)
    extra = {}
    if "addition_embed_type" in config:
        pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(2, pooled, device=device, dtype=dtype),
                                       "time_ids": torch.tensor([[side, side, 0, 0, side, side]] * 2, device=device,
                                                                dtype=dtype)}}
    t = torch.tensor([500, 500], device=device)

    def step():
        with torch.inference_mode():
            unet(latent, t, encoder_hidden_states=text, **extra)
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds, _ = timed(step, runs)
    out = {"params_m": round(params / 1e6, 1), "side": side, "batch": 2, "dtype": str(dtype).split(".")[-1]}
    if cuda:
        out.update(steps_per_s=round(1 / seconds, 3), step_s=round(seconds, 4),
                   peak_gpu_mb=round(torch.cuda.max_memory_allocated() / 2 ** 20),
                   device=torch.cuda.get_device_name(0))
    else:
        out.update(unmeasured="no GPU: a tiny stand-in of the same block layout ran on the CPU",
                   stand_in_step_s=round(seconds, 4))
    return out


def matte_graph(path: Path, side: int) -> float:
    """A matte-shaped ONNX graph: a stride-2 stem, six 3×3 convolutions of 32 channels at half size, a 1×1 head,
    2× resize, sigmoid. Random weights; returns its GFLOPs (multiply-adds × 2) at side²."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "image"
    layers = [("stem", 3, 32, 3, 2)] + [(f"c{i}", 32, 32, 3, 1) for i in range(6)] + [("head", 32, 1, 1, 1)]
    flops, hw = 0.0, (side // 2) ** 2
    for name, cin, cout, k, stride in layers:
        inits.append(numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * 0.1).astype(np.float32),
                                             f"{name}.w"))
        nodes.append(helper.make_node("Conv", [prev, f"{name}.w"], [f"{name}.c"], pads=[k // 2] * 4,
                                      strides=[stride] * 2))
        nodes.append(helper.make_node("Relu", [f"{name}.c"], [f"{name}.r"]) if name != "head" else
                     helper.make_node("Identity", [f"{name}.c"], [f"{name}.r"]))
        prev, flops = f"{name}.r", flops + 2 * hw * cin * cout * k * k
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
    nodes += [helper.make_node("Resize", [prev, "", "scales"], ["up"], mode="linear"),
              helper.make_node("Sigmoid", ["up"], ["mask"])]
    graph = helper.make_graph(nodes, "matte-stand-in", [helper.make_tensor_value_info(
        "image", TensorProto.FLOAT, [1, 3, side, side])], [helper.make_tensor_value_info(
            "mask", TensorProto.FLOAT, [1, 1, side, side])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return flops / 1e9


def onnx_matte(runs: int, side: int = 1024) -> dict:
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as exc:
        return {"unmeasured": f"{exc.name} is not installed"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "matte.onnx"
        try:
            gflops = matte_graph(path, side)
        except ImportError:
            return {"unmeasured": "onnx is not installed: the stand-in graph cannot be built"}
        x = np.random.default_rng(1).random((1, 3, side, side), dtype=np.float32)
        out: dict = {"graph": "matte stand-in (not U²-Net)", "side": side, "gflops": round(gflops, 2),
                     "providers": ort.get_available_providers()}
        for label, provider in (("cpu", "CPUExecutionProvider"), ("cuda", "CUDAExecutionProvider")):
            if provider not in ort.get_available_providers():
                out[f"{label}_s"] = "unmeasured: no GPU provider (onnxruntime-gpu and a GPU are needed)"
                continue
            sess = ort.InferenceSession(str(path), providers=[provider])
            seconds, _ = timed(lambda s=sess: s.run(["mask"], {"image": x}), runs)
            out[f"{label}_s"] = round(seconds, 4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--xp", choices=("cupy", "numpy"), default="cupy",
                        help="numpy: stand NumPy in for CuPy, to check this script without a GPU")
    args = parser.parse_args()
    if args.xp == "numpy":
        import numpy

        from renderers.image import gpu

        numpy.asnumpy = numpy.asarray  # CuPy's download; NumPy has none
        gpu.backend = lambda: numpy if os.environ.get("CUDA_VISIBLE_DEVICES") else None
    figures: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": sys.version.split()[0],
                     "xp": args.xp}
    try:
        import cupy

        figures["cupy"] = f"{cupy.__version__}, {cupy.cuda.runtime.getDeviceCount()} device(s)"
    except Exception as exc:  # noqa: BLE001
        figures["cupy"] = f"not usable: {type(exc).__name__}: {exc}"
    print(f"cupy: {figures['cupy']}", flush=True)
    section("capacity", figures, capacity)
    section("render_4096_pro", figures, lambda: render_4k(args.runs))
    section("gpu_stage_4096", figures, lambda: stage(args.runs))
    section("unet_sd15_1024_fp16", figures, lambda: unet_steps("sd15", args.runs))
    section("unet_sdxl_1024_fp16", figures, lambda: unet_steps("sdxl", args.runs))
    section("onnx_matte_1024", figures, lambda: onnx_matte(args.runs))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
