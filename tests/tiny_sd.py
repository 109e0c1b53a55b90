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
# Downsampling by 8 like real VAEs (four blocks), no attention in the VAE: a 1024 px image
# is a 128 px latent, so the detail upscale can run it as one tile to compare with tiles.
TINY_X8: dict[str, dict[str, Any]] = {
    "unet": {**TINY["unet"], "sample_size": 8},
    "vae": {
        "block_out_channels": [8, 8, 16, 16],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "norm_num_groups": 8,
        "sample_size": 64,
        "mid_block_add_attention": False,
    },
    "text": TINY["text"],
}
TRANSPARENT_SCALE = 20.0
"""The transparent VAE's latent scale: the noise img2img adds (and a random UNet's
prediction error) is this much smaller than the image in its latents."""


def transparent_vae() -> Any:
    """A TAESD-shaped AutoencoderTiny (downsampling by 8, no normalisation layers: fully
    convolutional) set by hand to carry the picture through: RGB into three latent channels
    by smoothed decimation, back by nearest upsampling and the same smoothing. With a random
    UNet, what comes out is the input, blurred, plus a little noise: tiled work can then be
    compared with one-tile work, which a random VAE's noise would drown."""
    import torch
    from diffusers import AutoencoderTiny
    from diffusers.models.unets.unet_2d_blocks import AutoencoderTinyBlock

    vae = AutoencoderTiny(
        encoder_block_out_channels=(4, 4, 4, 4),
        decoder_block_out_channels=(4, 4, 4, 4),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
        scaling_factor=TRANSPARENT_SCALE,
    )
    taps = torch.tensor([1.0, 2.0, 1.0])
    smooth = (taps[:, None] * taps[None, :]) / 16
    with torch.no_grad():
        block_convs = set()
        for module in vae.modules():
            if isinstance(module, AutoencoderTinyBlock):
                block_convs.update(id(m) for m in module.conv)
                last = module.conv[-1]
                last.weight.zero_()  # the residual branch adds nothing: the block passes x on
                last.bias.zero_()
        for module in vae.modules():
            if not isinstance(module, torch.nn.Conv2d) or id(module) in block_convs:
                continue
            module.weight.zero_()
            if module.bias is not None:
                module.bias.zero_()
            channels = min(module.in_channels, module.out_channels, 3)
            smoothing = module.stride[0] == 2 or module.bias is None  # decimate / after upsampling
            for c in range(channels):
                if smoothing:
                    module.weight[c, c] = smooth
                else:
                    module.weight[c, c, 1, 1] = 1.0
    return vae


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
    folder: Path,
    *,
    inpaint_unet: bool = True,
    shape: dict[str, dict[str, Any]] = TINY,
    vae: Any = None,
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
    vae = vae or AutoencoderKL(**shape["vae"], in_channels=3, out_channels=3, latent_channels=4)
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


def build_controlnet(
    base: Path, folder: Path, *, seed: int = 1, embedding: tuple[int, ...] = (8, 16)
) -> Path:
    """A tiny ControlNet made from a plain (4-channel) tiny UNet, as real ones are made from
    base SD; its conditioning embedding downsamples as the VAE does (by 2 for two channel
    counts, by 8 for four); ``seed`` gives each its own weights."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(base / "unet"))
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_channels=3, conditioning_embedding_out_channels=embedding
    )
    wake(controlnet, seed)
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


XL_TINY: dict[str, dict[str, Any]] = {
    "unet": {
        "block_out_channels": (16, 32),
        "layers_per_block": 1,
        "sample_size": 16,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (2, 4),
        "addition_time_embed_dim": 8,
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
        "max_position_embeddings": 32,
        "projection_dim": 16,
    },
    "text_2": {
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "max_position_embeddings": 32,
        "projection_dim": 16,
    },
}
# SDXL's published UNet (2.6 B parameters) and VAE; the text encoders at their widths but 2
# layers (they run once per image, not per step), so it fits a CPU's memory.
XL_SHAPED: dict[str, dict[str, Any]] = {
    "unet": {
        "block_out_channels": (320, 640, 1280),
        "layers_per_block": 2,
        "sample_size": 128,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2, 10),
        "attention_head_dim": (5, 10, 20),
        "addition_time_embed_dim": 256,
    },
    "vae": {
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "layers_per_block": 2,
        "sample_size": 1024,
        "force_upcast": True,
    },
    "text": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "num_hidden_layers": 2,
        "max_position_embeddings": 77,
        "projection_dim": 768,
    },
    "text_2": {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_attention_heads": 20,
        "num_hidden_layers": 2,
        "max_position_embeddings": 77,
        "projection_dim": 1280,
    },
}


def build_xl(
    folder: Path, *, aesthetics: bool = False, shape: dict[str, dict[str, Any]] = XL_TINY
) -> Path:
    """An SDXL inpainting pipeline with random weights (tiny unless ``shape`` says): two
    text encoders (the second with a projection), a UNet with SDXL's text-and-size
    conditioning. ``aesthetics``: the refiner-style conditioning (an aesthetic score in place
    of the target size: 5 numbers, not 6), with the UNet's projection sized to match."""
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
    text, text_2 = shape["text"], shape["text_2"]
    unet_shape = shape["unet"]
    sizes = 5 if aesthetics else 6
    unet = UNet2DConditionModel(
        **unet_shape,
        in_channels=9,
        out_channels=4,
        use_linear_projection=True,
        addition_embed_type="text_time",
        projection_class_embeddings_input_dim=text_2["projection_dim"]
        + sizes * unet_shape["addition_time_embed_dim"],
        cross_attention_dim=text["hidden_size"] + text_2["hidden_size"],  # both encoders'
    )
    vae = AutoencoderKL(**shape["vae"], latent_channels=4)
    ids = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1, "vocab_size": 64}
    write_tokenizer(folder / "_tokenizer")
    tokenizer = CLIPTokenizer(
        str(folder / "_tokenizer" / "vocab.json"),
        str(folder / "_tokenizer" / "merges.txt"),
        model_max_length=text["max_position_embeddings"],
    )
    pipe = StableDiffusionXLInpaintPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(CLIPTextConfig(**text, **ids)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text_2, **ids)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
        requires_aesthetics_score=aesthetics,
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


def wake(controlnet: Any, seed: int = 1) -> None:
    """A new ControlNet's "zero convolutions" start at zero (no effect until trained): give
    them random weights, as every other part of these tiny models has."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    zero_convs = [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]
    with torch.no_grad():
        for layer in zero_convs:
            for parameter in layer.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def write_t5_tokenizer(folder: Path, words: int = 64) -> Any:
    """A word-level T5-style tokenizer (pad 0, end 1, unknown 2, one id per word, ``</s>``
    after each text) from a generated vocabulary, as ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({f"w{i}": 3 + i for i in range(words)})
    for word in ("a", "red", "hat", "sky", "x", "the", "painting"):
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )
    fast.save_pretrained(str(folder))
    return fast


FLUX_TINY: dict[str, Any] = {
    "transformer": {
        "patch_size": 1,
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "axes_dims_rope": (4, 4, 8),
        "guidance_embeds": True,
    },
    "clip": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
    },
    "t5": {"d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 4},
    "vae": {"block_out_channels": (16, 32), "norm_num_groups": 8, "latent_channels": 4},
}
# FLUX.1's published widths (the transformer's 19 + 38 blocks and T5-XXL's 24 layers cut to
# the few given here, so it fits in a CPU's memory; per-block cost is the real one).
FLUX_SHAPED: dict[str, Any] = {
    "transformer": {
        "patch_size": 1,
        "num_layers": 1,
        "num_single_layers": 2,
        "attention_head_dim": 128,
        "num_attention_heads": 24,
        "axes_dims_rope": (16, 56, 56),
        "guidance_embeds": True,
    },
    "clip": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
    },
    "t5": {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 1, "num_heads": 64},
    "vae": {
        "block_out_channels": (128, 256, 512, 512),
        "norm_num_groups": 32,
        "latent_channels": 16,
    },
}


def build_flux_fill(folder: Path, shape: dict[str, Any] = FLUX_TINY) -> Path:
    """A FLUX.1 Fill pipeline with random weights: CLIP (a BPE tokenizer from a small
    vocabulary, 77 tokens as FLUX reads them) and T5 text encoders (word-level tokenizer), a
    VAE with FLUX's shift and scale, and a transformer whose input is the packed latents, the
    masked image's latents and the mask (its in-channels follow from the VAE)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxFillPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    torch.manual_seed(0)
    vae_shape = shape["vae"]
    blocks = len(vae_shape["block_out_channels"])
    vae = AutoencoderKL(
        block_out_channels=vae_shape["block_out_channels"],
        down_block_types=["DownEncoderBlock2D"] * blocks,
        up_block_types=["UpDecoderBlock2D"] * blocks,
        latent_channels=vae_shape["latent_channels"],
        norm_num_groups=vae_shape["norm_num_groups"],
        layers_per_block=1 if blocks < 4 else 2,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1159,
        scaling_factor=0.3611,
        sample_size=1024,
    )
    packed = vae_shape["latent_channels"] * 4  # 2 x 2 patches
    mask_channels = (2 ** (blocks - 1)) ** 2 * 4
    clip = shape["clip"]
    text = CLIPTextModel(
        CLIPTextConfig(
            **clip,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            vocab_size=64,
            max_position_embeddings=77,
            projection_dim=clip["hidden_size"],
        )
    )
    write_tokenizer(folder / "_tokenizer")
    tokenizer = CLIPTokenizer(
        str(folder / "_tokenizer" / "vocab.json"),
        str(folder / "_tokenizer" / "merges.txt"),
        model_max_length=77,
    )
    t5_tokenizer = write_t5_tokenizer(folder / "_t5_tokenizer")
    t5 = T5EncoderModel(
        T5Config(
            **shape["t5"],
            vocab_size=len(t5_tokenizer),
            relative_attention_num_buckets=8,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    transformer = FluxTransformer2DModel(
        **shape["transformer"],
        in_channels=packed * 2 + mask_channels,
        out_channels=packed,
        joint_attention_dim=shape["t5"]["d_model"],
        pooled_projection_dim=clip["hidden_size"],
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxFillPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(str(folder))
    return folder
