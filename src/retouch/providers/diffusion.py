"""Stable Diffusion and FLUX Fill through diffusers (extra ``retouch[diffusion]``): inpaint,
img2img edit, outpaint, variations, ControlNet guides and a detail-adding upscale.

Models load by model-store name (``retouch models add NAME FOLDER --task inpaint``), or from
a local diffusers folder or single checkpoint. Three families, told apart by the folder's
``model_index.json`` (or a checkpoint's keys): SD 1.x/2.x and SDXL (inpainting and plain
checkpoints; a plain checkpoint inpaints by masked img2img, which diffusers' inpaint pipeline
does for 4-channel UNets) and FLUX.1 Fill (``FluxFillPipeline``: inpaint and outpaint, and
whole-image edits through a full mask). Each family has its own working resolution (the
model's own, overridable), step and guidance defaults (the catalog's, else the family's) and
memory settings (bfloat16 for FLUX, float16 for SD on CUDA, CPU offload, VAE tiling). The
Toolkit hands a crop around the mask, which is scaled to the working size and back.

ControlNets (SD 1.5 and SDXL; several at once as diffusers' MultiControlNetModel) are steered
by guides made from the image (``retouch.guides``) or given by the user (``control_image``);
each guide's ControlNet comes from the store by its catalog guide and the model's family.
``upscale --detail`` enlarges with Real-ESRGAN and then repaints detail tile by tile with
the tile ControlNet at low strength, tiles blended as the ncnn upscaler blends them.

Each image gets its own seed (returned); progress is reported once per step (and per tile);
a Cancelled raised by the progress callback stops the pipeline between steps.

Loaded setups (a model with its LoRA, tiny VAE, dtype and device) are kept in a bounded
least-recently-used cache: ``RETOUCH_MAX_LOADED_PIPELINES`` of them per provider (default 1;
an SD 1.5 setup holds about 4 GB, SDXL about 7), so a new setup replaces the last one
instead of piling up beside it.
"""

from __future__ import annotations

import inspect
import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch import compose, guides, tiling
from retouch._modules import module_available
from retouch.engines import cap_threads
from retouch.engines.cache import ModelCache, capacity_from_env
from retouch.errors import (
    DependencyMissing,
    InvalidRequest,
    ModelNotAvailable,
    UnsupportedOperation,
)
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    EditRequest,
    InpaintRequest,
    OperationSpec,
    OutpaintRequest,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    StylizeRequest,
    UpscaleRequest,
    VariationsRequest,
    param,
    parse_options,
)

NAME = "diffusers"
SCHEDULERS = {
    "DDIM": "DDIMScheduler",
    "Euler": "EulerDiscreteScheduler",
    "Euler a": "EulerAncestralDiscreteScheduler",
    "DPM++ 2M": "DPMSolverMultistepScheduler",
    "LCM": "LCMScheduler",
}
TASKS = ("inpaint", "edit")
HONOURS = frozenset({"prompt", "negative_prompt", "seed", "n", "strength"})
CONTROL = frozenset({"control", "control_image", "control_scale", "control_start", "control_end"})
FAMILY_DEFAULTS = {"sd": (30, 7.5), "sdxl": (30, 7.5), "flux": (50, 30.0)}
"""Steps and guidance when neither the request nor the catalog gives them (FLUX.1 Fill
[dev]'s card: 50 steps at guidance 30)."""
CROSS_ATTENTION = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
"""A UNet's (and a ControlNet's) cross-attention width says which family it belongs to."""
FLUX_SEQUENCE = 512
DETAIL_STRENGTH = 0.35
DETAIL_STEPS = 20
OFFLOAD = ("none", "model", "sequential")
PIPELINES_ENV = "RETOUCH_MAX_LOADED_PIPELINES"
DEFAULT_MAX_PIPELINES = 1


@dataclass(frozen=True)
class DiffusersOptions:
    model: str | None = None
    """A model-store name or a diffusers folder; default: the first inpaint/edit model in the store."""
    scheduler: str | None = None
    resolution: int | None = None
    """Working resolution (long side); default: the model's own."""
    device: str = "auto"
    threads: int | None = None
    prefill: bool = True
    """Outpaint: fill the new area with PatchMatch first, so the model sees context."""
    match_colour: bool = True
    """Inpaint/outpaint: shift the fill's colours to match a ring around the mask (VAE drift)."""
    attention_slicing: bool = False
    """Compute attention in slices: slower, much less memory."""
    vae_tiling: bool = False
    """Decode the image in tiles: for large resolutions on small memory."""
    offload: str = "none"
    """GPUs with little memory: ``model`` keeps each part on the CPU until it runs (diffusers'
    model CPU offload), ``sequential`` moves layer by layer (slowest, least memory)."""
    controlnet: str | None = None
    """ControlNets (store names or diffusers folders), one per guide, comma-separated in the
    order of ``control``; default: the store's ControlNet for each guide and the model's
    family. Alone (no ``control``): each one's catalog guide, else canny."""
    canny_low: int = 100
    canny_high: int = 200
    depth_model: str | None = None
    """Depth estimator (ONNX, store name or path) for control=depth; default: the store's."""
    pose_model: str | None = None
    """Pose estimator (DWPose ONNX, store name or path) for control=openpose; default: the store's."""
    segmentation_model: str | None = None
    """ADE20K segmentation model (ONNX) for control=segmentation; default: the store's."""
    config: str | None = None
    """Single-file checkpoints only: where their configuration comes from (a diffusers folder
    or store name of the same family, or a Hugging Face repo id); default: diffusers infers
    the family from the weights and reads its cached configuration."""
    lora: str | None = None
    """A LoRA (store name or .safetensors file) fused into the UNet, e.g. an LCM-LoRA."""
    lora_scale: float = 1.0
    fast: bool = False
    """Few steps: fuse the family's LCM-LoRA from the store (or ``lora``), LCM scheduler, 4
    steps, guidance 1; and decode with the family's tiny VAE (TAESD / TAESDXL) when the
    store has one."""
    tiny_vae: str | None = None
    """A tiny VAE (AutoencoderTiny folder or store name, e.g. taesd): much faster decoding."""
    dtype: str = "auto"
    """auto (CUDA: bfloat16 for FLUX, float16 for SD; CPU: float32, bfloat16 for FLUX on CPUs
    with bfloat16 instructions), float32, float16 or bfloat16 (CPUs with bfloat16
    instructions, or GPUs)."""
    max_sequence_length: int | None = None
    """FLUX: T5 prompt tokens (default: the catalog's, else 512)."""

    def __post_init__(self) -> None:
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise ValueError(
                f"scheduler must be one of {', '.join(SCHEDULERS)}, not {self.scheduler!r}"
            )
        if self.resolution is not None and not 64 <= self.resolution <= 4096:
            raise ValueError("resolution must be 64..4096")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError("device must be auto, cpu, cuda or mps")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError("dtype must be auto, float32, float16 or bfloat16")
        if not 0 <= self.lora_scale <= 2:
            raise ValueError("lora_scale must be 0..2")
        if self.offload not in OFFLOAD:
            raise ValueError(f"offload must be one of {', '.join(OFFLOAD)}")
        if self.max_sequence_length is not None and not 1 <= self.max_sequence_length <= 512:
            raise ValueError("max_sequence_length must be 1..512")


@dataclass(frozen=True)
class DetailOptions(DiffusersOptions):
    """``upscale --detail``: Real-ESRGAN, then a tiled img2img pass with the tile ControlNet."""

    detail_strength: float = param(
        DETAIL_STRENGTH,
        low=0.0,
        low_open=True,
        high=1.0,
        help="how much the detail pass may repaint each tile (default 0.35)",
    )
    upscaler: str = param(
        "animevideov3",
        metavar="NAME",
        help="the Real-ESRGAN model that enlarges first (default animevideov3; x4plus: "
        "photos, slower)",
    )
    detail_tile: int | None = param(
        None,
        low=64,
        high=4096,
        metavar="PX",
        help="detail tile side in output pixels (default: the model's working size)",
    )
    detail_overlap: int | None = None
    """Pixels neighbouring tiles share and blend over (default: an eighth of the tile)."""
    detail_steps: int = DETAIL_STEPS
    """Steps of the full schedule; the pass runs ``detail_strength`` of them."""
    detail_prompt: str = ""
    """What the detail should look like; empty: the tile ControlNet alone (no guidance cost)."""
    tile: int | None = None
    """Real-ESRGAN's own tile side (input pixels), as ``realesrgan``'s option."""
    max_memory: int | None = None
    """Real-ESRGAN's memory budget in bytes, as ``realesrgan``'s option."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.detail_overlap is not None and self.detail_overlap < 0:
            raise ValueError("detail_overlap must be 0 or more pixels")
        if not 1 <= self.detail_steps <= 150:
            raise ValueError("detail_steps must be 1..150")


@dataclass
class Loaded:
    inpaint: Any
    img2img: Any
    resolution: int
    multiple: int
    lock: threading.Lock
    family: str = "sd"
    """sd (1.x/2.x), sdxl or flux."""
    extra: dict[tuple[object, ...], Any] = field(default_factory=dict)
    """ControlNet pipelines built on these components (by ControlNet paths and masked or
    not) and the ControlNet models themselves (by path)."""
    defaults: tuple[int, float] = (30, 7.5)
    """Steps and guidance when the request gives none (few-step setups need others)."""
    scheduler: str | None = None
    """The scheduler the setup needs (LCM for an LCM-LoRA), unless the request names one."""
    sequence: int = FLUX_SEQUENCE
    """FLUX: T5 prompt tokens."""
    offload: str = "none"
    """The CPU offload now installed on the pipelines' parts."""

    def __post_init__(self) -> None:
        self.base_scheduler = self.inpaint.scheduler

    def make_scheduler(self, name: str | None) -> Any:
        if name is None:
            return self.base_scheduler
        import diffusers

        cls = getattr(diffusers, SCHEDULERS[name])
        return cls.from_config(self.base_scheduler.config)


def _device(choice: str) -> str:
    import torch

    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class DiffusersProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="Stable Diffusion (SD 1.5 / SDXL) and FLUX.1 Fill via diffusers: inpaint, "
        "img2img, outpaint, variations, ControlNet guides, detail upscale",
        operations={
            "inpaint": OperationSpec(
                min_side=8,
                honours=HONOURS | CONTROL | {"steps", "guidance"},
                options=DiffusersOptions,
            ),
            "edit": OperationSpec(min_side=8, honours=HONOURS | CONTROL, options=DiffusersOptions),
            "outpaint": OperationSpec(
                min_side=8, honours=frozenset({"prompt", "seed"}), options=DiffusersOptions
            ),
            "variations": OperationSpec(min_side=8, honours=HONOURS, options=DiffusersOptions),
            "stylize": OperationSpec(
                min_side=8, honours=frozenset({"prompt", "strength"}), options=DiffusersOptions
            ),
            # Below realesrgan and classic: a plain `retouch upscale` never lands here; only
            # --detail (which they cannot honour) or --provider diffusers does.
            "upscale": OperationSpec(
                min_side=8,
                honours=frozenset({"detail", "seed"}),
                options=DetailOptions,
                priority=-5,
            ),
        },
        extra="diffusion",
        priority=30,
    )

    def __init__(self) -> None:
        self.pipelines: ModelCache[Loaded] = ModelCache(
            capacity_from_env(PIPELINES_ENV, DEFAULT_MAX_PIPELINES)
        )
        self._lock = threading.Lock()  # guards each setup's ControlNet pipelines
        self._upscaler: Any = None

    def _models(self) -> list[str]:
        from retouch.models.store import ModelStore

        store = ModelStore()
        return [name for task in TASKS for name in store.names_for(task)]

    def status(self) -> ProviderStatus:
        for module, package in (
            ("torch", "torch"),
            ("diffusers", "diffusers"),
            ("transformers", "transformers"),
        ):
            if not module_available(module):
                missing = DependencyMissing(package, "diffusion", "Stable Diffusion")
                return ProviderStatus(False, str(missing), missing)
        models = self._models()
        if not models:
            error = ModelNotAvailable(
                "sd15-inpainting",
                "or register a diffusers folder: retouch models add NAME FOLDER --task inpaint",
            )
            return ProviderStatus(False, str(error), error, needs_model=True)
        return ProviderStatus(True, f"models: {', '.join(models)}", model=models[0])

    def load(self, options: DiffusersOptions) -> Loaded:
        name = options.model
        if name is None:
            models = self._models()
            if not models:
                raise ModelNotAvailable("sd15-inpainting")
            name = models[0]
        path = _resolve(name)
        device = _device(options.device)
        dtype = _dtype(options.dtype, device)  # checked on every request, not only on loading
        lora = _resolve(options.lora) if options.lora else None
        if options.fast and lora is None:
            lora = _resolve(str(_fast_model("lora", path)))
        tiny_vae = _resolve(options.tiny_vae) if options.tiny_vae else None
        if options.fast and tiny_vae is None:
            found = _fast_model("vae", path)
            tiny_vae = _resolve(found) if found else None
        key = (
            str(path),
            device,
            options.dtype,
            str(lora),
            options.lora_scale,
            str(tiny_vae),
            options.fast,
            options.config,
        )

        def load() -> Loaded:
            with _library_bars_off():  # our progress callback reports; no second bar
                loaded = self._load(path, device, dtype, options)
            self._setup(loaded, options, lora, tiny_vae, _catalog_io(str(name)))
            return loaded

        return self.pipelines.get(key, load)

    @staticmethod
    def _setup(
        loaded: Loaded,
        options: DiffusersOptions,
        lora: Path | None,
        tiny_vae: Path | None,
        io: dict[str, Any],
    ) -> None:
        """Fuse a LoRA and swap in a tiny VAE; few-step defaults for an LCM setup, or the
        catalog's own for a model that needs them (SD-Turbo: 2 steps, no guidance)."""
        if "steps" in io:
            loaded.defaults = (int(io["steps"]), float(io.get("guidance", loaded.defaults[1])))
        if "max_sequence_length" in io:
            loaded.sequence = int(io["max_sequence_length"])
        if options.max_sequence_length is not None:
            loaded.sequence = options.max_sequence_length
        pipes = [p for p in (loaded.inpaint, loaded.img2img) if p is not None]
        if lora is not None:
            if not module_available("peft"):
                raise DependencyMissing("peft", "diffusion", "LoRA weights")
            try:
                loaded.inpaint.load_lora_weights(str(lora), adapter_name="retouch")
            except (OSError, ValueError, KeyError) as exc:
                raise InvalidRequest(f"{lora} could not be loaded as a LoRA: {exc}") from exc
            loaded.inpaint.fuse_lora(lora_scale=options.lora_scale)
            loaded.inpaint.unload_lora_weights()  # the fused weights stay; the adapter goes
        if tiny_vae is not None:
            from diffusers import AutoencoderTiny

            _check_class(tiny_vae, "AutoencoderTiny")
            base = loaded.inpaint.vae
            vae = AutoencoderTiny.from_pretrained(str(tiny_vae), torch_dtype=base.dtype)  # type: ignore[no-untyped-call]
            if vae.config.latent_channels != base.config.latent_channels:
                raise InvalidRequest(
                    f"{tiny_vae} decodes {vae.config.latent_channels}-channel latents; this "
                    f"model's have {base.config.latent_channels} (a tiny VAE of another family)"
                )
            if base.device.type != "cpu":
                vae = vae.to(base.device)
            for pipe in pipes:
                pipe.vae = vae  # the components are shared, so every pipeline decodes with it
        if options.fast:
            loaded.defaults = (4, 1.0)
            loaded.scheduler = "LCM"

    def _load(self, path: Path, device: str, dtype: Any, options: DiffusersOptions) -> Loaded:
        import torch
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

        family = _family(path)
        if family == "flux" and options.dtype == "auto":
            dtype = (
                torch.bfloat16
                if device == "cuda" or (device == "cpu" and cpu_has_bf16())
                else dtype
            )
        if path.is_file():
            inpaint = _single_file(path, dtype, options.config)
        elif family == "flux":
            from diffusers import FluxFillPipeline

            try:
                inpaint = FluxFillPipeline.from_pretrained(str(path), dtype=dtype)  # type: ignore[no-untyped-call]
            except (OSError, ValueError) as exc:
                raise InvalidRequest(
                    f"{path} could not be loaded as a FLUX.1 Fill pipeline: {exc}"
                ) from exc
        else:
            # SD 1.x/2.x folders carry a safety checker we do not load; SDXL has none.
            extra: dict[str, Any] = (
                {}
                if family == "sdxl"
                else {"safety_checker": None, "requires_safety_checker": False}
            )
            variant = _variant(path)
            if variant is not None:
                extra["variant"] = variant
            try:
                inpaint = AutoPipelineForInpainting.from_pretrained(  # type: ignore[no-untyped-call]
                    str(path), dtype=dtype, **extra
                )
            except (OSError, ValueError) as exc:
                raise InvalidRequest(
                    f"{path} could not be loaded as a Stable Diffusion pipeline: {exc}"
                ) from exc
        if device != "cpu" and options.offload == "none":
            inpaint = inpaint.to(device)  # loaded on the CPU; moving there again only logs warnings
        if dtype == torch.float32 and getattr(inpaint.vae.config, "force_upcast", False):
            # SDXL's VAE asks to be cast up to float32 around each encode: already is.
            inpaint.vae.register_to_config(force_upcast=False)
        denoiser = inpaint.transformer if family == "flux" else inpaint.unet
        # An inpainting UNet (9 input channels) and FLUX Fill edit whole images through their
        # own pipeline with a full mask; a plain checkpoint gets the img2img pipeline.
        img2img = (
            AutoPipelineForImage2Image.from_pipe(inpaint)
            if family != "flux" and denoiser.config.in_channels == 4
            else None
        )
        if device == "cpu" and family != "flux":
            denoiser.to(memory_format=torch.channels_last)
        for pipe in (inpaint, img2img):
            if pipe is not None:
                pipe.set_progress_bar_config(disable=True)
        scale = int(inpaint.vae_scale_factor)
        if family == "flux":  # latents are packed in 2 x 2 patches
            resolution, multiple = int(inpaint.default_sample_size) * scale, scale * 2
        else:
            resolution, multiple = int(denoiser.config.sample_size) * scale, max(8, scale)
        return Loaded(
            inpaint=inpaint,
            img2img=img2img,
            resolution=resolution,
            multiple=multiple,
            lock=threading.Lock(),
            family=family,
            defaults=FAMILY_DEFAULTS[family],
        )

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if isinstance(request, UpscaleRequest):
            return self._detail(
                request, parse_options(DetailOptions, request.options, provider=NAME), progress
            )
        options = parse_options(DiffusersOptions, request.options, provider=NAME)
        if isinstance(request, StylizeRequest):
            request = _style_as_edit(request)
        if not isinstance(
            request, (InpaintRequest, EditRequest, OutpaintRequest, VariationsRequest)
        ):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        chosen, nets = _guides(request, options)
        loaded = self.load(options)
        _check_family(loaded, request, options, chosen)
        rgb = request.image.rgb8()
        if isinstance(request, (EditRequest, VariationsRequest)) and request.strength == 0:
            count = request.n
            return ImageResult(
                images=[OutputImage(pixels=rgb.copy(), seed=request.seed) for _ in range(count)],
                provider=NAME,
            )
        mask: NDArray[np.uint8] | None = None
        if isinstance(request, OutpaintRequest):
            canvas, fill_mask, _ = compose.outpaint_canvas(
                rgb,
                left=request.left,
                right=request.right,
                top=request.top,
                bottom=request.bottom,
                feather=16,
            )
            if options.prefill:
                from retouch.providers.classic import draw_seed, patchmatch_fill

                canvas = patchmatch_fill(
                    canvas, fill_mask, patch_size=5, seed=draw_seed(request.seed)
                )
            rgb, mask = canvas, fill_mask
        elif isinstance(request, InpaintRequest):
            mask = request.mask.array
        height, width = rgb.shape[:2]
        res = options.resolution or loaded.resolution
        scale = res / max(width, height)
        work = (
            _multiple(width * scale, loaded.multiple),
            _multiple(height * scale, loaded.multiple),
        )
        n = getattr(request, "n", 1)
        first = (
            request.seed if request.seed is not None else random.SystemRandom().randrange(2**32 - n)
        )
        seeds = [first + i for i in range(n)]
        steps = getattr(request, "steps", None) or loaded.defaults[0]
        guidance = getattr(request, "guidance", None) or loaded.defaults[1]
        prompt = getattr(request, "prompt", None) or ""
        if mask is None and loaded.img2img is None:
            mask = np.full(rgb.shape[:2], 255, np.uint8)
        pipe = loaded.inpaint if mask is not None else loaded.img2img
        control: Control | None = None
        if chosen:
            pipe = self._controlnet(loaded, options, chosen, nets, masked=mask is not None)
            control = Control(
                images=self._guide_images(request, options, chosen, _work_image(rgb, work)),
                scale=float(getattr(request, "control_scale", 1.0)),
                start=float(getattr(request, "control_start", 0.0)),
                end=float(getattr(request, "control_end", 1.0)),
            )
        with loaded.lock:
            self._prepare(loaded, pipe, options)
            images = self._call(
                pipe,
                loaded,
                prompt,
                getattr(request, "negative_prompt", None),
                rgb,
                mask,
                work,
                seeds,
                steps,
                guidance,
                getattr(request, "strength", 1.0),
                progress,
                control,
            )
        if mask is not None and options.match_colour and not (mask > 0).all():
            images = [
                compose.match_colour(compose.resize_pixels(image, (width, height)), rgb, mask)
                for image in images
            ]
        results = [
            OutputImage(pixels=compose.resize_pixels(image, (width, height)), seed=seed)
            for image, seed in zip(images, seeds, strict=True)
        ]
        usage: dict[str, Any] = {"work_size": list(work), "steps": steps, "family": loaded.family}
        if chosen:
            usage["control"] = chosen
        return ImageResult(images=results, provider=NAME, model=options.model, usage=usage)

    def _prepare(self, loaded: Loaded, pipe: Any, options: DiffusersOptions) -> None:
        """Per-request settings on a cached pipeline (under its lock): threads, attention
        slicing, VAE tiling, CPU offload and the scheduler the request names (or the setup's
        own), so a cached pipeline never keeps the previous request's choice."""
        import torch

        device = _device(options.device)
        if device == "cpu":
            torch.set_num_threads(cap_threads(options.threads))
        if options.attention_slicing and loaded.family == "flux":
            raise InvalidRequest(
                "attention_slicing is for SD UNets; for FLUX on little memory use "
                "offload=model (GPU) or vae_tiling"
            )
        if options.attention_slicing:
            pipe.enable_attention_slicing()
        elif loaded.family != "flux":
            pipe.disable_attention_slicing()
        if options.vae_tiling:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        _offload(loaded, pipe, options.offload, device)
        if loaded.family == "flux" and options.scheduler is not None:
            raise InvalidRequest(
                "FLUX Fill samples with its own flow-matching scheduler; leave scheduler out"
            )
        pipe.scheduler = loaded.make_scheduler(options.scheduler or loaded.scheduler)

    # --- ControlNets ------------------------------------------------------------------------------

    def _controlnet(
        self,
        loaded: Loaded,
        options: DiffusersOptions,
        chosen: list[str],
        nets: list[str],
        *,
        masked: bool,
    ) -> Any:
        """A ControlNet pipeline for ``chosen`` guides sharing the loaded components: one
        ControlNet, or several as a MultiControlNetModel."""
        import diffusers

        width = int(loaded.inpaint.unet.config.cross_attention_dim)
        paths = (
            [_resolve(net) for net in nets]
            if nets
            else [_controlnet_for(guide, width) for guide in chosen]
        )
        key = (tuple(str(p) for p in paths), masked)
        with self._lock:
            if key not in loaded.extra:
                models = [self._controlnet_model(loaded, path, width) for path in paths]
                inpaint_unet = loaded.inpaint.unet.config.in_channels == 9
                family = "XL" if loaded.family == "sdxl" else ""
                kind = "Inpaint" if masked or inpaint_unet else "Img2Img"
                cls = getattr(diffusers, f"StableDiffusion{family}ControlNet{kind}Pipeline")
                accepted = inspect.signature(cls.__init__).parameters
                components = {
                    k: v
                    for k, v in loaded.inpaint.components.items()
                    if k in accepted and k != "image_encoder"
                }
                settings = {  # SDXL: the UNet's size conditioning must be built the same way
                    k: v
                    for k, v in loaded.inpaint.config.items()
                    if k in accepted
                    and k in ("requires_aesthetics_score", "force_zeros_for_empty_prompt")
                }
                pipe: Any = cls(
                    **components, **settings, controlnet=models if len(models) > 1 else models[0]
                )
                pipe.set_progress_bar_config(disable=True)
                loaded.extra[key] = pipe
            return loaded.extra[key]

    @staticmethod
    def _controlnet_model(loaded: Loaded, path: Path, width: int) -> Any:
        """One ControlNet, loaded once per model setup and shared by its pipelines."""
        from diffusers import ControlNetModel

        key = ("controlnet", str(path))
        if key not in loaded.extra:
            _check_class(path, "ControlNetModel")
            config = _config(path / "config.json")
            declared = config.get("cross_attention_dim")
            if declared != width:
                raise InvalidRequest(
                    f"{path} is a ControlNet for {CROSS_ATTENTION.get(int(declared or 0), declared)} "
                    f"models; this model is {CROSS_ATTENTION.get(width, width)}: pull the "
                    f"ControlNet of its family (retouch models list --task controlnet)"
                )
            unet = loaded.inpaint.unet.config
            sizes = config.get("projection_class_embeddings_input_dim")
            if sizes != unet.get("projection_class_embeddings_input_dim"):
                raise InvalidRequest(
                    f"{path} reads SDXL's size conditioning as {sizes} numbers, this model as "
                    f"{unet.get('projection_class_embeddings_input_dim')} (a refiner-style "
                    "model with an aesthetic score takes ControlNets trained for it)"
                )
            extra: dict[str, Any] = {}
            variant = _variant(path)
            if variant is not None:
                extra["variant"] = variant
            try:
                model = ControlNetModel.from_pretrained(  # type: ignore[no-untyped-call]
                    str(path), torch_dtype=loaded.inpaint.unet.dtype, **extra
                )
            except (OSError, ValueError) as exc:
                raise InvalidRequest(f"{path} could not be loaded as a ControlNet: {exc}") from exc
            if loaded.inpaint.unet.device.type != "cpu":
                model = model.to(loaded.inpaint.unet.device)
            loaded.extra[key] = model
        return loaded.extra[key]

    @staticmethod
    def _guide_images(
        request: Request,
        options: DiffusersOptions,
        chosen: list[str],
        work_rgb: NDArray[np.uint8],
    ) -> list[NDArray[np.uint8]]:
        """Each guide at the working size: the user's ``control_image`` for the first, the
        others made from the image as the pipeline sees it."""
        given = getattr(request, "control_image", None)
        settings = guides.GuideSettings(
            canny_low=options.canny_low,
            canny_high=options.canny_high,
            depth_model=options.depth_model,
            pose_model=options.pose_model,
            segmentation_model=options.segmentation_model,
            threads=options.threads,
        )
        size = (work_rgb.shape[1], work_rgb.shape[0])
        images = []
        for index, guide in enumerate(chosen):
            if index == 0 and given is not None:
                images.append(guides.fit(guide, given.rgb8(), size))
            else:
                images.append(guides.make(guide, work_rgb, settings))
        return images

    # --- detail upscale ------------------------------------------------------------------------

    def _detail(
        self, request: UpscaleRequest, options: DetailOptions, progress: ProgressCallback
    ) -> ImageResult:
        """Real-ESRGAN to the asked size, then an img2img pass over overlapping tiles with
        the tile ControlNet (the tile is its own guide) at low strength, blended with the
        ncnn upscaler's smooth windows: A1111's "Ultimate SD upscale"."""
        if not request.detail:
            raise InvalidRequest(
                f"{NAME} enlarges by adding detail: pass --detail (plain enlarging is "
                "realesrgan's or classic's)",
                param="detail",
            )
        loaded = self.load(options)
        if loaded.family == "flux":
            raise InvalidRequest(
                "the detail pass needs an SD 1.5 or SDXL model with a tile ControlNet; "
                "FLUX Fill has none here: --model NAME of an SD model"
            )
        steps = options.detail_steps if not options.fast else loaded.defaults[0]
        if _steps_run(loaded.family, steps, options.detail_strength) < 1:
            raise InvalidRequest(
                f"{steps} steps at detail_strength {options.detail_strength:g} leave no step "
                "to run; raise detail_steps or detail_strength",
                param="detail_strength",
            )
        pipe = self._controlnet(loaded, options, ["tile"], [], masked=False)
        big = self._enlarge(request, options, progress)
        tile = options.detail_tile or loaded.resolution
        overlap = options.detail_overlap if options.detail_overlap is not None else tile // 8
        if overlap * 2 >= tile:
            raise InvalidRequest(
                f"detail_overlap ({overlap} px) must be under half the tile ({tile} px)",
                param="detail_overlap",
            )
        seed = request.seed if request.seed is not None else random.SystemRandom().randrange(2**32)
        prompt = options.detail_prompt
        # An empty prompt steers nothing: guidance 1 turns classifier-free guidance off and
        # halves the work; a prompt gets the model's guidance.
        guidance = loaded.defaults[1] if prompt.strip() else 1.0

        def run_tile(pixels: NDArray[Any]) -> NDArray[np.float32]:
            height, width = pixels.shape[:2]
            work = (_multiple(width, loaded.multiple), _multiple(height, loaded.multiple))
            rgb = np.ascontiguousarray(pixels[:, :, :3])
            control = Control(images=[_work_image(rgb, work)], scale=1.0, start=0.0, end=1.0)
            (out,) = self._call(
                pipe,
                loaded,
                prompt,
                None,
                rgb,
                None,
                work,
                [seed],
                steps,
                guidance,
                options.detail_strength,
                progress,
                control,
            )
            out = compose.resize_pixels(out, (width, height))
            return np.asarray(out, np.float32) / np.float32(255)

        with loaded.lock:
            self._prepare(loaded, pipe, options)
            out = tiling.run_tiled(
                big,
                run_tile,
                scale=1,
                tile=tile,
                overlap=overlap,
                progress=progress,
                stage="detail",
            )
        return ImageResult(
            images=[OutputImage(pixels=out, seed=seed)],
            provider=NAME,
            model=options.model,
            usage={
                "tile": tile,
                "overlap": overlap,
                "tiles": tiling.count_tiles(out.shape[0], out.shape[1], tile, overlap),
                "upscaler": options.upscaler,
                "family": loaded.family,
            },
        )

    def _enlarge(
        self, request: UpscaleRequest, options: DetailOptions, progress: ProgressCallback
    ) -> NDArray[np.uint8]:
        """Real-ESRGAN (the realesrgan provider's code) to the asked size."""
        from retouch.providers.realesrgan import RealESRGANProvider, UpscaleOptions

        if self._upscaler is None:
            self._upscaler = RealESRGANProvider()
        status = self._upscaler.status()
        if not status.ready:
            raise status.error or DependencyMissing("ncnn", purpose="Real-ESRGAN")
        settings: dict[str, Any] = {"threads": options.threads}
        if options.tile is not None:
            settings["tile"] = options.tile
        if options.max_memory is not None:
            settings["max_memory"] = options.max_memory
        first = UpscaleRequest(
            image=request.image,
            scale=request.scale,
            width=request.width,
            height=request.height,
            model=options.upscaler,
            options=UpscaleOptions(**settings),
        )
        result = self._upscaler.run(first, progress)
        return np.ascontiguousarray(result.images[0].pixels[:, :, :3], np.uint8)

    # --- the pipeline call --------------------------------------------------------------------

    @staticmethod
    def _call(
        pipe: Any,
        loaded: Loaded,
        prompt: str,
        negative: str | None,
        rgb: NDArray[np.uint8],
        mask: NDArray[np.uint8] | None,
        work: tuple[int, int],
        seeds: list[int],
        steps: int,
        guidance: float,
        strength: float,
        progress: ProgressCallback,
        control: Control | None = None,
    ) -> list[NDArray[np.uint8]]:
        import torch
        from PIL import Image

        image = Image.fromarray(_work_image(rgb, work))
        total = _steps_run(loaded.family, steps, strength)
        if total < 1:
            raise InvalidRequest(
                f"{steps} steps at strength {strength:g} leave no step to run; raise steps or strength"
            )

        def on_step(
            _pipe: Any, step: int, _timestep: Any, kwargs: dict[str, Any]
        ) -> dict[str, Any]:
            progress(Progress("diffusion", step + 1, total))  # a Cancelled here stops between steps
            return kwargs

        arguments: dict[str, Any] = {
            "prompt": [prompt] * len(seeds),
            "image": image,
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "strength": strength,
            "generator": [torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            "output_type": "np",
            "callback_on_step_end": on_step,
        }
        if loaded.family == "flux":
            arguments["max_sequence_length"] = loaded.sequence
        elif negative:  # none given: the pipeline's own empty negative (SDXL: zeros)
            arguments["negative_prompt"] = [negative] * len(seeds)
        if control is not None:
            pictures = [Image.fromarray(picture) for picture in control.images]
            several = len(pictures) > 1
            arguments.update(
                control_image=pictures if several else pictures[0],
                controlnet_conditioning_scale=[control.scale] * len(pictures)
                if several
                else control.scale,
                control_guidance_start=[control.start] * len(pictures)
                if several
                else control.start,
                control_guidance_end=[control.end] * len(pictures) if several else control.end,
            )
            if mask is None and "mask_image" in inspect.signature(pipe.__call__).parameters:
                mask = np.full(
                    rgb.shape[:2], 255, np.uint8
                )  # an inpainting UNet edits with a full mask
        if mask is not None:
            arguments.update(
                mask_image=Image.fromarray(mask, "L").resize(work, Image.Resampling.BILINEAR),
                width=work[0],
                height=work[1],
            )
        progress(Progress("diffusion", 0, total))
        with torch.inference_mode():
            output = pipe(**arguments)
        return [
            np.clip(np.rint(np.asarray(frame) * 255), 0, 255).astype(np.uint8)
            for frame in output.images
        ]


@dataclass(frozen=True)
class Control:
    """What the ControlNets get: a guide image per ControlNet (at the working size) and how
    strongly and when they steer."""

    images: list[NDArray[np.uint8]]
    scale: float
    start: float
    end: float


def _guides(request: Request, options: DiffusersOptions) -> tuple[list[str], list[str]]:
    """The guides asked for (``control``) and the ControlNets named for them (the
    ``controlnet`` option), checked against each other before anything loads."""
    asked = getattr(request, "control", None)
    named = [g.strip() for g in asked.split(",")] if asked else []
    nets = [n.strip() for n in options.controlnet.split(",")] if options.controlnet else []
    if "none" in named:
        if len(named) > 1:
            raise InvalidRequest(
                "control none means no guide; it cannot go with others", param="control"
            )
        named, nets = [], []
    elif not named and nets:  # the older spelling: a ControlNet alone, its catalog guide
        named = [_catalog_guide(net) for net in nets]
    if nets and len(nets) != len(named):
        raise InvalidRequest(
            f"{len(nets)} ControlNet(s) for {len(named)} guide(s) ({', '.join(named)}): give one "
            "per guide, in the same order",
            param="controlnet",
        )
    if getattr(request, "control_image", None) is not None and not named:
        raise InvalidRequest(
            "control_image needs --control naming what it is, e.g. --control openpose",
            param="control_image",
        )
    start, end = getattr(request, "control_start", 0.0), getattr(request, "control_end", 1.0)
    if named and start >= end:
        raise InvalidRequest(
            f"control_start ({start:g}) must be before control_end ({end:g})", param="control_start"
        )
    return named, nets


def _catalog_guide(net: str) -> str:
    guide = _catalog_io(net).get("control", "canny")
    return str(guide[0] if isinstance(guide, list) else guide)


def _check_family(
    loaded: Loaded, request: Request, options: DiffusersOptions, chosen: list[str]
) -> None:
    """What a model family cannot do is refused before any work."""
    if loaded.family != "flux":
        return
    if chosen:
        raise InvalidRequest(
            "ControlNet guides are for SD 1.5 and SDXL models; FLUX Fill takes none",
            param="control",
        )
    if getattr(request, "negative_prompt", None):
        raise InvalidRequest(
            "FLUX Fill takes no negative prompt (it is guidance-distilled)",
            param="negative_prompt",
        )
    if options.fast:
        raise InvalidRequest("fast (LCM-LoRA) is for SD 1.5 and SDXL models", param="fast")


def _controlnet_for(guide: str, width: int) -> Path:
    """The store's ControlNet for ``guide`` and the model's family (its cross-attention
    ``width``): a catalog entry whose guides include it, or an added one named for it."""
    from retouch.models.catalog import CatalogEntry
    from retouch.models.store import ModelStore, support_model

    store = ModelStore()

    def serves(name: str, entry: CatalogEntry | None) -> bool:
        listed = entry.io.get("control") if entry is not None else None
        kinds = listed if isinstance(listed, list) else [listed] if listed else []
        if not (guide in kinds or (entry is None and guide in name.lower())):
            return False
        found = store.find(name)
        return (
            found is not None and _config(found / "config.json").get("cross_attention_dim") == width
        )

    family = "sdxl" if width == 2048 else "sd15"
    suggested = next(
        (
            e.name
            for e in store.catalog.values()
            if e.task == "controlnet"
            and e.io.get("family") == family
            and guide
            in (e.io["control"] if isinstance(e.io.get("control"), list) else [e.io.get("control")])
        ),
        None,
    )
    what = CROSS_ATTENTION.get(width, f"cross-attention {width}")
    name = support_model(
        "controlnet",
        suggested or f"controlnet-{family}-{guide}",
        want=serves,
        hint=f"the {guide} ControlNet for {what} models; or name one: --option controlnet=NAME|FOLDER"
        + ("" if suggested else f" (the catalog has none for {what})"),
    )
    return _resolve(str(name))


def _work_image(rgb: NDArray[np.uint8], work: tuple[int, int]) -> NDArray[np.uint8]:
    """The image as the pipeline sees it: Lanczos to the working size (guides are made from
    this very picture, so they line up with it)."""
    from PIL import Image

    if (rgb.shape[1], rgb.shape[0]) == work:
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb).resize(work, Image.Resampling.LANCZOS))


def _steps_run(family: str, steps: int, strength: float) -> int:
    """How many steps the pipeline runs of ``steps`` at ``strength`` (diffusers rounds down
    for SD; FLUX keeps the fraction's ceiling)."""
    if family == "flux":
        return steps - int(max(steps - steps * strength, 0))
    return min(int(steps * strength), steps)


def _offload(loaded: Loaded, pipe: Any, mode: str, device: str) -> None:
    """Install (or take off) diffusers' CPU offload on the pipeline about to run. Its hooks
    sit on the shared parts, so they are installed for each pipeline as it runs."""
    if mode != "none" and device == "cpu":
        raise InvalidRequest(
            "offload moves a model's parts between the CPU and a GPU; on the CPU there is "
            "nothing to offload (use dtype=bfloat16 or vae_tiling to save memory)",
            param="offload",
        )
    if mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif loaded.offload != "none":
        pipe.remove_all_hooks()
        pipe.to(device)
    loaded.offload = mode


def _family(path: Path) -> str:
    """sd, sdxl or flux, from a folder's model_index.json or a checkpoint's keys."""
    if path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        keys = _checkpoint_keys(path)
        if any(
            k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.")) for k in keys
        ):
            raise InvalidRequest(
                f"{path} is a FLUX transformer alone; FLUX runs from its diffusers folder "
                "(text encoders and VAE too): retouch models add flux-fill-dev FOLDER --task inpaint"
            )
        return "sdxl" if any(k.startswith("conditioner.embedders.1.") for k in keys) else "sd"
    if path.is_dir() and (path / "model_index.json").is_file():
        declared = _declared_class(path / "model_index.json")
        if declared == "FluxFillPipeline":
            return "flux"
        if declared.startswith("Flux"):
            raise InvalidRequest(
                f"{path} is a {declared}; of the FLUX models, FLUX.1 Fill inpaints here "
                "(retouch models list: flux-fill-dev)"
            )
        return "sdxl" if "XL" in declared else "sd"
    raise InvalidRequest(
        f"{path} is not a diffusers folder (no model_index.json) nor a single "
        f"{'/'.join(SINGLE_FILE_SUFFIXES)} checkpoint"
    )


def _variant(folder: Path) -> str | None:
    """ "fp16" for a folder that holds only fp16 weight files (``*.fp16.safetensors``, as
    pulled to halve the download), so diffusers reads them."""
    if not folder.is_dir():
        return None
    weights = [p.name for p in folder.rglob("*.safetensors")]
    if weights and all(".fp16." in name for name in weights):
        return "fp16"
    return None


def _config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _declared_class(config: Path) -> str:
    return str(_config(config).get("_class_name"))


def _check_class(path: Path, expected: str) -> None:
    """diffusers loads a folder of another model class with random weights and no error:
    read the folder's own declaration first."""
    declared = _declared_class(path / "config.json")
    if declared != expected:
        raise InvalidRequest(
            f"{path} could not be loaded as a {expected}: its config.json declares {declared!r}"
        )


@contextmanager
def _library_bars_off() -> Iterator[None]:
    """diffusers' own "Loading pipeline components" bars stay off while we load."""
    from diffusers.utils import logging as diffusers_logging

    was_on = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            diffusers_logging.enable_progress_bar()


SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
STYLE_STRENGTH = 0.6
"""Denoising strength of a prompt restyle at stylize strength 1: enough to repaint the
surfaces in the new style, little enough to keep the composition."""


def _style_as_edit(request: StylizeRequest) -> EditRequest:
    """Style transfer by prompt is an img2img edit with the style as the prompt."""
    prompt = (request.prompt or "").strip()
    if not prompt:
        raise InvalidRequest(
            f"{NAME} restyles by a prompt, e.g. --prompt 'an oil painting, thick brush strokes'; "
            "built-in styles and style pictures are the stylize provider's (--provider stylize)",
            param="prompt",
        )
    return EditRequest(
        image=request.image,
        prompt=prompt,
        strength=STYLE_STRENGTH * request.strength,
        options=request.options,
    )


def _resolve(name: str) -> Path:
    """A path as given, else a model-store name."""
    from retouch.models.store import resolve

    return resolve(name)


def _catalog_io(name: str) -> dict[str, Any]:
    from retouch.models.store import catalog_io

    return catalog_io(name)


FAST_MODELS = {
    ("lora", "sd"): "lcm-lora-sdv1-5",
    ("lora", "sdxl"): "lcm-lora-sdxl",
}


def _fast_model(task: str, model: Path) -> str | None:
    """The fast path's LCM-LoRA (``task`` lora: required) or tiny VAE (vae: optional) for
    the model's family: by the catalog's io (kind, family), or an added one's name ("lcm",
    "xl")."""
    from retouch.models.catalog import CatalogEntry
    from retouch.models.store import support_model

    family = _family(model)
    if family == "flux":
        raise InvalidRequest("fast (LCM-LoRA) is for SD 1.5 and SDXL models", param="fast")

    def fits(name: str, entry: CatalogEntry | None) -> bool:
        io = entry.io if entry is not None else {}
        if task == "lora" and not ("lcm" in name.lower() or io.get("kind") == "lcm"):
            return False
        declared = io.get("family")
        if declared is None:
            return ("xl" in name.lower()) == (family == "sdxl")
        return bool(declared == ("sdxl" if family == "sdxl" else "sd15"))

    return support_model(
        task,
        FAST_MODELS.get((task, family)),
        want=fits,
        hint="or name a LoRA: --option lora=FILE",
    )


def _dtype(choice: str, device: str) -> Any:
    import torch

    if choice == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    if choice == "bfloat16" and device == "cpu" and not cpu_has_bf16():
        raise InvalidRequest(
            "dtype=bfloat16 on this CPU would be emulated (no AVX512-BF16/AMX): slower, not "
            "faster; use float32"
        )
    if choice == "float16" and device == "cpu":
        raise InvalidRequest("dtype=float16 is for GPUs; on a CPU use float32 (or bfloat16)")
    return getattr(torch, choice)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def _single_file(path: Path, dtype: Any, config: str | None) -> Any:
    """An original-layout (A1111 / Civitai) checkpoint: SD 1.x/2.x or SDXL by its keys; the
    configuration from ``config`` or, by default, the one diffusers infers for the family."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

    from retouch.models.store import offline_by_env

    keys = _checkpoint_keys(path)
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise InvalidRequest(
            f"{path} holds no Stable Diffusion UNet (no model.diffusion_model.* weights); is it a LoRA, a VAE or a diffusers part?"
        )
    xl = any(k.startswith("conditioner.embedders.1.") for k in keys)
    cls = StableDiffusionXLInpaintPipeline if xl else StableDiffusionInpaintPipeline
    where: str | None = None
    if config is None and offline_by_env():
        raise InvalidRequest(
            f"{path} is a single-file checkpoint: it holds weights only, and offline mode "
            "(RETOUCH_OFFLINE=1) cannot fetch its configuration; pass --option config=FOLDER "
            "(a diffusers folder of the same family, e.g. sd15-inpainting)"
        )
    if config is not None:
        found = Path(config).expanduser()
        where = str(found if found.exists() else _config_from_store(config))
    try:
        return cls.from_single_file(
            str(path),
            config=where,
            torch_dtype=dtype,
            local_files_only=offline_by_env(),
            safety_checker=None,
            requires_safety_checker=False,
        )
    except Exception as exc:  # diffusers, huggingface_hub and httpx raise many kinds here
        raise InvalidRequest(
            f"{path} could not be loaded as a {'SDXL' if xl else 'Stable Diffusion'} checkpoint: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}. "
            "A single file holds weights only; its configuration comes from --option config=FOLDER "
            "(a diffusers folder of the same family, e.g. a pulled sd15-inpainting) or from "
            "diffusers' Hugging Face cache (needs network once)"
        ) from exc


def _config_from_store(name: str) -> str:
    """A store name, else a Hugging Face repo id passed on to diffusers."""
    from retouch.models.store import ModelStore

    found = ModelStore().find(name)
    return str(found) if found is not None else name


def _checkpoint_keys(path: Path) -> list[str]:
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as handle:
                return list(handle.keys())
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise InvalidRequest(f"{path} is not a readable .safetensors file: {exc}") from exc
    import torch

    try:
        data = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors
        raise InvalidRequest(f"{path} is not a readable .ckpt checkpoint: {exc}") from exc
    while isinstance(data, dict) and "state_dict" in data:
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise InvalidRequest(f"{path} holds no state dict")
    return [str(k) for k in data]


def _multiple(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)
