"""The RAM an SD 1.5-class img2img model needs on the CPU (issue #23, ``--device any``): checks the `mem_mb`
the planner gives its task (pipelines/generative.py: BASE_MB["any"] + twice the weights' file size).

An SD 1.5-architecture pipeline with random weights (the released UNet, VAE and CLIP ViT-L/14 text encoder
configs: 1.07 billion parameters; nothing downloaded; the tests' character tokenizer) is saved in float16 with
safetensors, as docs/models.md tells a studio to, then a fresh process loads it the renderer's way
(renderers/image/img2img.py: float32 on the CPU, one thread) and runs one creative job at 512² (30 steps at
strength 0.55 would be 16 UNet steps; ``--steps`` sets how many the measure runs). Reports the folder's size,
the planned mem_mb and the child's peak RSS after the load and after the run.

    .venv/bin/python scripts/model_ram_figures.py [--steps 2] [--side 512]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from appliance.services.pipelines.generative import BASE_MB  # noqa: E402

CAPS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4, "sample_size": 512,
       "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}
TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
        "max_position_embeddings": 77, "projection_dim": 768, "hidden_act": "quick_gelu"}


def build(folder: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from scripts.gpu_figures import UNETS
    from tests.tiny_diffusers import tokenizer

    torch.manual_seed(0)
    tok = tokenizer(folder.parent / "tokenizer-src")
    n = len(tok.get_vocab())
    unet = UNet2DConditionModel(**UNETS["sd15"])
    vae = AutoencoderKL(**VAE)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=n, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1,
                                        **TEXT))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionImg2ImgPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=scheduler,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(str(folder), safe_serialization=True)


def measure(folder: Path, steps: int, side: int) -> dict:
    """In this (fresh) process: load as the renderer does and run one job; peak RSS after each."""
    from renderers.image import img2img
    from renderers.image.onnx_models import test_picture

    started = time.perf_counter()
    img2img.preload()
    pipe, cls_name = img2img.load(folder, "cpu")
    loaded = time.perf_counter()
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # strength 1 runs every step: ``steps`` UNet steps at batch 2 (classifier-free guidance)
    _, meta = img2img.generate(pipe, cls_name, test_picture(side), "a product photo", 1.0, steps, 7.5, 0, side)
    return {"load_s": round(loaded - started, 1), "run_s": meta["run_s"], "unet_steps": steps,
            "peak_rss_after_load_mb": round(load_peak), "peak_rss_mb": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "params": img2img.parameters(pipe)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child), args.steps, args.side)))
        return
    env = {**os.environ, **CAPS, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="ram-figures-") as tmp:
        folder = Path(tmp) / "sd15-random"
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from scripts.model_ram_figures "
                        f"import build; build(Path({str(folder)!r}))"], cwd=ROOT, env=env, check=True)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        out = subprocess.run([sys.executable, __file__, "--child", str(folder), "--steps", str(args.steps),
                              "--side", str(args.side)], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    planned = BASE_MB["any"] + 2 * (size >> 20)  # the img2img task's mem_mb for a CPU-allowed model
    print(json.dumps({"folder_mb": size >> 20, "planned_mem_mb": planned, **got, "side": args.side}, indent=2))


if __name__ == "__main__":
    main()
