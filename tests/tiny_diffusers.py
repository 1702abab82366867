"""Tiny diffusers pipelines with random weights for the img2img tests (issue #23): built from configs in the
test, with a CLIP tokenizer whose vocab.json and merges.txt the test writes; nothing is downloaded. A 32 px
model (a UNet of sample size 16 under a VAE that halves): a run takes milliseconds on one CPU thread."""
from __future__ import annotations

import json
from pathlib import Path

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,!'-"


def tokenizer(folder: Path):
    """A CLIP BPE tokenizer over single characters (no merges): every letter of a prompt is a token."""
    from transformers import CLIPTokenizer

    vocab = {c: i for i, c in enumerate(CHARS)}
    vocab.update({c + "</w>": len(CHARS) + i for i, c in enumerate(CHARS)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


def build(path: Path, kind: str = "sd", seed: int = 0) -> Path:
    """A diffusers folder saved with safetensors: kind sd (StableDiffusionImg2ImgPipeline), controlnet
    (StableDiffusionControlNetImg2ImgPipeline) or pix2pix (StableDiffusionInstructPix2PixPipeline)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionControlNetImg2ImgPipeline,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = tokenizer(path.parent / f".{path.name}-tokenizer")
    n = len(tok.get_vocab())
    blocks = {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4}
    unet = UNet2DConditionModel(**blocks, sample_size=16, in_channels=8 if kind == "pix2pix" else 4, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=[8, 16], norm_num_groups=4, in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1, hidden_size=16,
                                        intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                                        vocab_size=n, max_position_embeddings=16, projection_dim=16))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    parts = {"unet": unet, "vae": vae, "text_encoder": text, "tokenizer": tok, "scheduler": scheduler,
             "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if kind == "controlnet":
        controlnet = ControlNetModel(**blocks, in_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                     cross_attention_dim=16, attention_head_dim=2,
                                     conditioning_embedding_out_channels=(4, 8))
        pipe = StableDiffusionControlNetImg2ImgPipeline(**parts, controlnet=controlnet)
    elif kind == "pix2pix":
        pipe = StableDiffusionInstructPix2PixPipeline(**parts)
    else:
        pipe = StableDiffusionImg2ImgPipeline(**parts)
    pipe.save_pretrained(str(path), safe_serialization=True)
    return path
