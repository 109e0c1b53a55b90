"""A tiny, randomly initialised Stable Diffusion pipeline saved as a diffusers folder, so the
diffusers provider is tested through the same loading code users use, with no download.
(The shapes follow diffusers' own dummy components for its SD pipeline tests.)"""

from __future__ import annotations

import json
from pathlib import Path


def write_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer over a small vocabulary: every letter, with and without </w>."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = (
        ["<|startoftext|>", "<|endoftext|>", "!"] + list(letters) + [c + "</w>" for c in letters]
    )
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def build(folder: Path, *, inpaint_unet: bool = True) -> Path:
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        in_channels=9 if inpaint_unet else 4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[16, 32],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=16,
            intermediate_size=24,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=64,
            max_position_embeddings=32,
        )
    )
    write_tokenizer(folder / "_tokenizer")
    tokenizer = CLIPTokenizer(
        str(folder / "_tokenizer" / "vocab.json"),
        str(folder / "_tokenizer" / "merges.txt"),
        model_max_length=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    pipe = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder))
    return folder


def build_controlnet(base: Path, folder: Path) -> Path:
    """A tiny ControlNet made from a plain (4-channel) tiny UNet, as real ones are made from
    base SD; its conditioning embedding downsamples by 2, like the tiny VAE."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(base / "unet"))
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_channels=3, conditioning_embedding_out_channels=(8, 16)
    )
    # A new ControlNet's "zero convolutions" start at zero (no effect until trained): give
    # them random weights, as every other part of these tiny models has.
    generator = torch.Generator().manual_seed(1)
    zero_convs = [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]
    with torch.no_grad():
        for layer in zero_convs:
            for parameter in layer.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    controlnet.save_pretrained(str(folder))
    return folder
