"""A tiny, randomly initialised Stable Diffusion pipeline saved as a diffusers folder, so the
diffusers provider is tested through the same loading code users use, with no download.
(The shapes follow diffusers' own dummy components for its SD pipeline tests.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer over a small vocabulary: every letter, with and without </w>."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = (
        ["<|startoftext|>", "<|endoftext|>", "!"] + list(letters) + [c + "</w>" for c in letters]
    )
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")


TINY: dict[str, dict[str, Any]] = {
    "unet": {
        "block_out_channels": (16, 32),
        "layers_per_block": 1,
        "sample_size": 16,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": 16,
        "attention_head_dim": 4,
        "norm_num_groups": 8,
    },
    "vae": {
        "block_out_channels": [16, 32],
        "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2,
        "norm_num_groups": 8,
        "sample_size": 32,
    },
    "text": {
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "vocab_size": 64,
        "max_position_embeddings": 32,
    },
}
# SD 1.5's published architecture: with random weights it costs what real ones cost.
SD15: dict[str, dict[str, Any]] = {
    "unet": {
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "sample_size": 64,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    },
    "vae": {
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "layers_per_block": 2,
        "sample_size": 512,
    },
    "text": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "max_position_embeddings": 77,
        "vocab_size": 49408,
        "hidden_act": "quick_gelu",
    },
}


def build(
    folder: Path, *, inpaint_unet: bool = True, shape: dict[str, dict[str, Any]] = TINY
) -> Path:
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
        **shape["unet"], in_channels=9 if inpaint_unet else 4, out_channels=4
    )
    vae = AutoencoderKL(**shape["vae"], in_channels=3, out_channels=3, latent_channels=4)
    text = CLIPTextModel(
        CLIPTextConfig(**shape["text"], bos_token_id=0, eos_token_id=1, pad_token_id=1)
    )
    write_tokenizer(folder / "_tokenizer")
    tokenizer = CLIPTokenizer(
        str(folder / "_tokenizer" / "vocab.json"),
        str(folder / "_tokenizer" / "merges.txt"),
        model_max_length=shape["text"]["max_position_embeddings"],
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
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(base / "unet"))
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_channels=3, conditioning_embedding_out_channels=(8, 16)
    )
    wake(controlnet)
    controlnet.save_pretrained(str(folder))
    return folder


RESNET_TO_LDM = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
VAE_ATTENTION_TO_LDM = (
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
)


def _rename(rest: str, pairs: tuple[tuple[str, str], ...]) -> str:
    head, _, tail = rest.rpartition(".")  # tail is weight / bias
    for new, old in pairs:
        if head == new:
            return f"{old}.{tail}"
    return rest


def unet_to_ldm(state: dict[str, object], layers_per_block: int) -> dict[str, object]:
    """Diffusers UNet keys -> the original (CompVis / A1111) layout, written from the layout
    itself; the test proves it by loading the result back through diffusers."""
    per = layers_per_block + 1
    top = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    up_attention = {
        key.split(".")[1] for key in state if key.startswith("up_blocks.") and ".attentions." in key
    }
    out: dict[str, object] = {}
    for key, value in state.items():
        part = key.split(".")
        head, tail = ".".join(part[:-1]), part[-1]
        if head in top:
            ldm = f"{top[head]}.{tail}"
        elif part[0] == "down_blocks":
            block = int(part[1])
            if part[2] == "resnets":
                index = 1 + block * per + int(part[3])
                ldm = f"input_blocks.{index}.0." + _rename(".".join(part[4:]), RESNET_TO_LDM)
            elif part[2] == "attentions":
                index = 1 + block * per + int(part[3])
                ldm = f"input_blocks.{index}.1." + ".".join(part[4:])
            else:  # downsamplers.0.conv
                ldm = f"input_blocks.{1 + block * per + layers_per_block}.0.op.{tail}"
        elif part[0] == "mid_block":
            if part[1] == "resnets":
                ldm = f"middle_block.{2 * int(part[2])}." + _rename(
                    ".".join(part[3:]), RESNET_TO_LDM
                )
            else:
                ldm = "middle_block.1." + ".".join(part[3:])
        elif part[0] == "up_blocks":
            block = int(part[1])
            if part[2] == "resnets":
                index = block * per + int(part[3])
                ldm = f"output_blocks.{index}.0." + _rename(".".join(part[4:]), RESNET_TO_LDM)
            elif part[2] == "attentions":
                index = block * per + int(part[3])
                ldm = f"output_blocks.{index}.1." + ".".join(part[4:])
            else:  # upsamplers.0.conv: after the attention when the block has one
                slot = 2 if part[1] in up_attention else 1
                ldm = f"output_blocks.{block * per + layers_per_block}.{slot}.conv.{tail}"
        else:
            raise KeyError(key)
        out["model.diffusion_model." + ldm] = value
    return out


def vae_to_ldm(state: dict[str, object], blocks: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in state.items():
        part = key.split(".")
        tail = part[-1]
        if part[1] == "down_blocks":  # encoder
            if part[3] == "resnets":
                rest = ".".join(part[5:]).replace("conv_shortcut", "nin_shortcut")
                ldm = f"encoder.down.{part[2]}.block.{part[4]}.{rest}"
            else:
                ldm = f"encoder.down.{part[2]}.downsample.conv.{tail}"
        elif part[1] == "up_blocks":  # decoder, numbered the other way round
            block = blocks - 1 - int(part[2])
            if part[3] == "resnets":
                rest = ".".join(part[5:]).replace("conv_shortcut", "nin_shortcut")
                ldm = f"decoder.up.{block}.block.{part[4]}.{rest}"
            else:
                ldm = f"decoder.up.{block}.upsample.conv.{tail}"
        elif part[1] == "mid_block":
            if part[2] == "resnets":
                ldm = f"{part[0]}.mid.block_{int(part[3]) + 1}." + ".".join(part[4:])
            else:
                ldm = f"{part[0]}.mid.attn_1." + _rename(".".join(part[4:]), VAE_ATTENTION_TO_LDM)
                value = (
                    value[:, :, None, None] if ldm.endswith("weight") and value.ndim == 2 else value
                )  # type: ignore[attr-defined]
        elif part[1] == "conv_norm_out":
            ldm = f"{part[0]}.norm_out.{tail}"
        else:
            ldm = key
        out["first_stage_model." + ldm] = value
    return out


def single_file(folder: Path, path: Path) -> Path:
    """The pipeline in ``folder`` as one original-layout checkpoint (.safetensors or .ckpt),
    as A1111/Civitai files are."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"))
    vae = AutoencoderKL.from_pretrained(str(folder / "vae"))
    text = CLIPTextModel.from_pretrained(str(folder / "text_encoder"))
    state: dict[str, object] = {}
    state.update(unet_to_ldm(dict(unet.state_dict()), unet.config.layers_per_block))
    state.update(vae_to_ldm(dict(vae.state_dict()), len(vae.config.down_block_types)))
    # Original checkpoints name the text model's weights text_model.*; transformers 5 drops
    # that prefix from its own state dict.
    state.update(
        {
            "cond_stage_model.transformer."
            + ("" if k.startswith("text_model.") else "text_model.")
            + k: v
            for k, v in text.state_dict().items()
        }
    )
    tensors = {k: v.contiguous() for k, v in state.items()}  # type: ignore[attr-defined]
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save({"state_dict": tensors}, str(path))
    return path


def config_only(folder: Path, out: Path) -> Path:
    """A copy of the folder without any weights: configuration, tokenizer and scheduler."""
    import shutil

    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return out


def build_lora(base: Path, path: Path) -> Path:
    """A rank-4 LoRA on the tiny UNet's attention, random (not zero) on both factors so it
    changes the output; saved the way diffusers saves LoRAs (LCM-LoRA files load the same)."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(2)
    unet = UNet2DConditionModel.from_pretrained(str(base / "unet"))
    unet.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,
        )
    )
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(
        str(path.parent), unet_lora_layers=state, weight_name=path.name
    )
    return path


def build_tiny_vae(folder: Path) -> Path:
    """A TAESD-shaped AutoencoderTiny that downsamples by 2, like the tiny VAE."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(3)
    AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    ).save_pretrained(str(folder))
    return folder


def build_xl(folder: Path) -> Path:
    """A tiny SDXL inpainting pipeline: two text encoders (the second with a projection),
    a UNet with SDXL's text-and-size conditioning."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=16 + 6 * 8,
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[16, 32],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )
    config = {
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "vocab_size": 64,
        "max_position_embeddings": 32,
        "projection_dim": 16,
    }
    write_tokenizer(folder / "_tokenizer")
    tokenizer = CLIPTokenizer(
        str(folder / "_tokenizer" / "vocab.json"),
        str(folder / "_tokenizer" / "merges.txt"),
        model_max_length=32,
    )
    pipe = StableDiffusionXLInpaintPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(CLIPTextConfig(**config)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**config)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
        requires_aesthetics_score=False,
    )
    pipe.save_pretrained(str(folder))
    return folder


def build_xl_controlnet(base: Path, folder: Path) -> Path:
    """A tiny SDXL ControlNet (4-channel latents in, as real ones take)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    config = dict(UNet2DConditionModel.load_config(str(base / "unet")))
    unet = UNet2DConditionModel.from_config({**config, "in_channels": 4})
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_channels=3, conditioning_embedding_out_channels=(8, 16)
    )
    wake(controlnet)
    controlnet.save_pretrained(str(folder))
    return folder


def wake(controlnet: Any) -> None:
    """A new ControlNet's "zero convolutions" start at zero (no effect until trained): give
    them random weights, as every other part of these tiny models has."""
    import torch

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
