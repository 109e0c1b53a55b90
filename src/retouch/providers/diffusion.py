"""Stable Diffusion through diffusers (extra ``retouch[diffusion]``): inpaint, img2img edit,
outpaint and variations.

Models load by model-store name (``retouch models add NAME FOLDER --task inpaint``), or from
a local diffusers folder; SD 1.5 and SDXL families, inpainting and plain checkpoints (a plain
checkpoint inpaints by masked img2img, which diffusers' inpaint pipeline does for 4-channel
UNets). The working resolution is the model's own (UNet sample size x VAE scale factor),
overridable; the Toolkit hands a crop around the mask, which is scaled to it and back.
Each image gets its own seed (returned); progress is reported once per step; a Cancelled
raised by the progress callback stops the pipeline between steps.

Loaded setups (a model with its LoRA, tiny VAE, dtype and device) are kept in a bounded
least-recently-used cache: ``RETOUCH_MAX_LOADED_PIPELINES`` of them per provider (default 1;
an SD 1.5 setup holds about 4 GB, SDXL about 7), so a new setup replaces the last one
instead of piling up beside it.
"""

from __future__ import annotations

import inspect
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch import compose
from retouch._modules import module_available
from retouch.engines import cap_threads
from retouch.engines.cache import ModelCache, capacity_from_env
from retouch.errors import (
    DependencyMissing,
    InvalidRequest,
    ModelNotAvailable,
    UnsupportedOperation,
)
from retouch.types import (
    EditRequest,
    ImageResult,
    InpaintRequest,
    OperationSpec,
    OutpaintRequest,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    ResultImage,
    StylizeRequest,
    VariationsRequest,
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
    controlnet: str | None = None
    """A ControlNet (store name or diffusers folder) to guide the result by the input's edges."""
    control: str | None = None
    """What the ControlNet sees: canny (edges, OpenCV) or depth (a depth model from the
    store); default: the catalog's kind for a store ControlNet, else canny."""
    depth_model: str | None = None
    """Depth estimator (ONNX, store name or path) for control=depth; default: the store's."""
    canny_low: int = 100
    canny_high: int = 200
    config: str | None = None
    """Single-file checkpoints only: where their configuration comes from (a diffusers folder
    or store name of the same family, or a Hugging Face repo id); default: diffusers infers
    the family from the weights and reads its cached configuration."""
    lora: str | None = None
    """A LoRA (store name or .safetensors file) fused into the UNet, e.g. an LCM-LoRA."""
    lora_scale: float = 1.0
    fast: bool = False
    """Few steps: fuse the LCM-LoRA from the store (or ``lora``), LCM scheduler, 4 steps,
    guidance 1; and decode with the tiny VAE (TAESD) when the store has one."""
    tiny_vae: str | None = None
    """A tiny VAE (AutoencoderTiny folder or store name, e.g. taesd): much faster decoding."""
    dtype: str = "auto"
    """auto (float16 on CUDA, float32 elsewhere), float32, float16 or bfloat16 (CPUs with
    bfloat16 instructions, or GPUs)."""

    def __post_init__(self) -> None:
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise ValueError(
                f"scheduler must be one of {', '.join(SCHEDULERS)}, not {self.scheduler!r}"
            )
        if self.resolution is not None and not 64 <= self.resolution <= 4096:
            raise ValueError("resolution must be 64..4096")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError("device must be auto, cpu, cuda or mps")
        if self.control not in (None, "canny", "depth"):
            raise ValueError("control must be canny or depth")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError("dtype must be auto, float32, float16 or bfloat16")
        if not 0 <= self.lora_scale <= 2:
            raise ValueError("lora_scale must be 0..2")


@dataclass
class Loaded:
    inpaint: Any
    img2img: Any
    resolution: int
    multiple: int
    lock: threading.Lock
    extra: dict[tuple[str, bool], Any] = field(default_factory=dict)
    """ControlNet pipelines built on these components, by ControlNet path and masked or not."""
    defaults: tuple[int, float] = (30, 7.5)
    """Steps and guidance when the request gives none (few-step setups need others)."""
    scheduler: str | None = None
    """The scheduler the setup needs (LCM for an LCM-LoRA), unless the request names one."""

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
        description="Stable Diffusion (SD 1.5 / SDXL) via diffusers: inpaint, img2img, outpaint, variations",
        operations={
            "inpaint": OperationSpec(
                min_side=8, honours=HONOURS | {"steps", "guidance"}, options=DiffusersOptions
            ),
            "edit": OperationSpec(min_side=8, honours=HONOURS, options=DiffusersOptions),
            "outpaint": OperationSpec(
                min_side=8, honours=frozenset({"prompt", "seed"}), options=DiffusersOptions
            ),
            "variations": OperationSpec(min_side=8, honours=HONOURS, options=DiffusersOptions),
            "stylize": OperationSpec(
                min_side=8, honours=frozenset({"style", "strength"}), options=DiffusersOptions
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
        return ProviderStatus(True, f"models: {', '.join(models)}")

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
            lcm = _store_name(
                "lora", "lcm-lora-sdv1-5", want="lcm", hint="or name a LoRA: --option lora=FILE"
            )
            lora = _resolve(str(lcm))
        tiny_vae = _resolve(options.tiny_vae) if options.tiny_vae else None
        if options.fast and tiny_vae is None:
            found = _store_name("vae", None)
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
            loaded.defaults = (int(io["steps"]), float(io.get("guidance", 7.5)))
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

        if path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
            inpaint = _single_file(path, dtype, options.config)
        elif path.is_dir() and (path / "model_index.json").is_file():
            # SD 1.x/2.x folders carry a safety checker we do not load; SDXL has none.
            extra: dict[str, Any] = (
                {}
                if "XL" in _declared_class(path / "model_index.json")
                else {"safety_checker": None, "requires_safety_checker": False}
            )
            try:
                inpaint = AutoPipelineForInpainting.from_pretrained(  # type: ignore[no-untyped-call]
                    str(path), dtype=dtype, **extra
                )
            except (OSError, ValueError) as exc:
                raise InvalidRequest(
                    f"{path} could not be loaded as a Stable Diffusion pipeline: {exc}"
                ) from exc
        else:
            raise InvalidRequest(
                f"{path} is not a diffusers folder (no model_index.json) nor a single "
                f"{'/'.join(SINGLE_FILE_SUFFIXES)} checkpoint"
            )
        if device != "cpu":  # loaded on the CPU; moving there again only logs warnings
            inpaint = inpaint.to(device)
        if dtype == torch.float32 and getattr(inpaint.vae.config, "force_upcast", False):
            # SDXL's VAE asks to be cast up to float32 around each encode: already is.
            inpaint.vae.register_to_config(force_upcast=False)
        # An inpainting UNet (9 input channels) edits whole images through its own pipeline
        # with a full mask; a plain checkpoint gets the img2img pipeline.
        img2img = (
            AutoPipelineForImage2Image.from_pipe(inpaint)
            if inpaint.unet.config.in_channels == 4
            else None
        )
        if device == "cpu":
            inpaint.unet.to(memory_format=torch.channels_last)
        for pipe in (inpaint, img2img):
            if pipe is not None:
                pipe.set_progress_bar_config(disable=True)
        scale = int(inpaint.vae_scale_factor)
        resolution = int(inpaint.unet.config.sample_size) * scale
        return Loaded(
            inpaint=inpaint,
            img2img=img2img,
            resolution=resolution,
            multiple=max(8, scale),
            lock=threading.Lock(),
        )

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        options = parse_options(DiffusersOptions, request.options, provider=NAME)
        if isinstance(request, StylizeRequest):
            request = _style_as_edit(request)
        if not isinstance(
            request, (InpaintRequest, EditRequest, OutpaintRequest, VariationsRequest)
        ):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        loaded = self.load(options)
        rgb = request.image.rgb8()
        if isinstance(request, (EditRequest, VariationsRequest)) and request.strength == 0:
            count = request.n
            return ImageResult(
                images=[ResultImage(pixels=rgb.copy(), seed=request.seed) for _ in range(count)],
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
            mask = request.mask
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
        control = None
        if options.controlnet:
            pipe, control = self._controlnet(loaded, options, mask is not None, rgb)
        with loaded.lock:
            if loaded.inpaint.device.type == "cpu":
                import torch

                torch.set_num_threads(cap_threads(options.threads))
            if options.attention_slicing:
                pipe.enable_attention_slicing()
            else:
                pipe.disable_attention_slicing()
            if options.vae_tiling:
                pipe.vae.enable_tiling()
            else:
                pipe.vae.disable_tiling()
            # Each request gets the scheduler it names (or the setup's own): a cached pipeline
            # never keeps the previous request's choice.
            pipe.scheduler = loaded.make_scheduler(options.scheduler or loaded.scheduler)
            images = self._call(
                pipe,
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
            ResultImage(pixels=compose.resize_pixels(image, (width, height)), seed=seed)
            for image, seed in zip(images, seeds, strict=True)
        ]
        return ImageResult(
            images=results,
            provider=NAME,
            model=options.model,
            usage={"work_size": list(work), "steps": steps},
        )

    def _controlnet(
        self, loaded: Loaded, options: DiffusersOptions, masked: bool, rgb: NDArray[np.uint8]
    ) -> tuple[Any, NDArray[np.uint8]]:
        """A ControlNet pipeline sharing the loaded components, and the canny edge map."""
        import cv2
        import diffusers
        from diffusers import ControlNetModel

        path = _resolve(str(options.controlnet))
        key = (str(path), masked)
        with self._lock:
            if key not in loaded.extra:
                _check_class(path, "ControlNetModel")
                try:
                    model = ControlNetModel.from_pretrained(  # type: ignore[no-untyped-call]
                        str(path), torch_dtype=loaded.inpaint.unet.dtype
                    )
                except (OSError, ValueError) as exc:
                    raise InvalidRequest(
                        f"{path} could not be loaded as a ControlNet: {exc}"
                    ) from exc
                if loaded.inpaint.device.type != "cpu":
                    model = model.to(loaded.inpaint.device)
                inpaint_unet = loaded.inpaint.unet.config.in_channels == 9
                family = "XL" if "XL" in type(loaded.inpaint).__name__ else ""
                kind = "Inpaint" if masked or inpaint_unet else "Img2Img"
                cls = getattr(diffusers, f"StableDiffusion{family}ControlNet{kind}Pipeline")
                accepted = inspect.signature(cls.__init__).parameters
                components = {
                    k: v
                    for k, v in loaded.inpaint.components.items()
                    if k in accepted and k != "image_encoder"
                }
                pipe: Any = cls(**components, controlnet=model)
                pipe.set_progress_bar_config(disable=True)
                loaded.extra[key] = pipe
            pipe = loaded.extra[key]
        control = options.control or str(
            _catalog_io(str(options.controlnet)).get("control", "canny")
        )
        if control == "depth":
            return pipe, depth_map(rgb, options.depth_model, options.threads)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        edges = cv2.Canny(grey, options.canny_low, options.canny_high)
        return pipe, np.dstack([edges] * 3)

    @staticmethod
    def _call(
        pipe: Any,
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
        control: NDArray[np.uint8] | None = None,
    ) -> list[NDArray[np.uint8]]:
        import torch
        from PIL import Image

        image = Image.fromarray(rgb).resize(work, Image.Resampling.LANCZOS)
        total = max(1, int(steps * strength))  # both pipelines run strength x steps

        def on_step(
            _pipe: Any, step: int, _timestep: Any, kwargs: dict[str, Any]
        ) -> dict[str, Any]:
            progress(Progress("diffusion", step + 1, total))  # a Cancelled here stops between steps
            return kwargs

        arguments: dict[str, Any] = {
            "prompt": [prompt] * len(seeds),
            "negative_prompt": [negative or ""] * len(seeds),
            "image": image,
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "strength": strength,
            "generator": [torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            "output_type": "np",
            "callback_on_step_end": on_step,
        }
        if control is not None:
            arguments["control_image"] = Image.fromarray(control).resize(
                work, Image.Resampling.NEAREST
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


def _declared_class(config: Path) -> str:
    import json

    try:
        return str(json.loads(config.read_text("utf-8")).get("_class_name"))
    except (OSError, ValueError, AttributeError):
        return "None"


def _check_class(path: Path, expected: str) -> None:
    """diffusers loads a folder of another model class with random weights and no error:
    read the folder's own declaration first."""
    declared = _declared_class(path / "config.json")
    if declared != expected:
        raise InvalidRequest(
            f"{path} could not be loaded as a {expected}: its config.json declares {declared!r}"
        )


SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
STYLE_STRENGTH = 0.6
"""Denoising strength of a prompt restyle at stylize strength 1: enough to repaint the
surfaces in the new style, little enough to keep the composition."""


def _style_as_edit(request: StylizeRequest) -> EditRequest:
    """Style transfer by prompt is an img2img edit with the style as the prompt."""
    from retouch.api import is_style_spec

    style = (request.style or "").strip()
    if not style or is_style_spec(style):
        raise InvalidRequest(
            f"{NAME} restyles by a prompt, e.g. --prompt 'an oil painting, thick brush strokes'; "
            f"{style!r} is a built-in style number: use --provider stylize for those"
        )
    return EditRequest(
        image=request.image,
        prompt=style,
        strength=STYLE_STRENGTH * request.strength,
        options=request.options,
    )


def _resolve(name: str) -> Path:
    """A path as given, else a model-store name."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    from retouch.models.store import ModelStore

    return ModelStore().path(name)


def _catalog_io(name: str) -> dict[str, Any]:
    if Path(name).expanduser().exists():
        return {}
    from retouch.models.store import ModelStore

    entry = ModelStore().entry_for(name)
    return dict(entry.io) if entry is not None else {}


def _store_name(
    task: str, suggested: str | None, want: str | None = None, hint: str | None = None
) -> str | None:
    """The first model of a support task (lora, vae, depth) on this machine, of the kind wanted
    (the catalog's io kind, or the name: an added "my-lcm-lora"); for the LCM-LoRA, its
    absence is an error that says how to get it."""
    from retouch.models.store import ModelStore

    store = ModelStore()
    names = store.names_for(task)
    if want is not None:

        def kind(name: str) -> object:
            entry = store.entry_for(name)
            return entry.io.get("kind") if entry is not None else None

        names = [n for n in names if want in n.lower() or kind(n) == want]
    if names:
        return names[0]
    if suggested is not None:
        raise ModelNotAvailable(
            suggested, hint or f"or add one: retouch models add NAME PATH --task {task}"
        )
    return None


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


def depth_map(
    rgb: NDArray[np.uint8], model: str | None, threads: int | None = None
) -> NDArray[np.uint8]:
    """Relative depth as a grey RGB image (near = bright, as depth ControlNets were trained
    on), from an ONNX depth model (Depth Anything / DPT / MiDaS layout: one image in, one
    depth map out), at the model's size from the catalog (default 518, a multiple of 14)."""
    from retouch.engines.descriptor import InputRange, ModelSpec, load_onnx

    model = model or _store_name(
        "depth", "depth-anything-v2-small", hint="depth ControlNets need a depth model"
    )
    path, io = _resolve(str(model)), _catalog_io(str(model))
    size = int(io.get("size", 518))
    multiple = int(io.get("multiple", 14))
    mean, std = io.get("mean", (0.485, 0.456, 0.406)), io.get("std", (0.229, 0.224, 0.225))
    convention = InputRange(
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
    )
    spec = ModelSpec(input=convention)
    estimator = load_onnx(path, name=str(model), spec=spec, threads=threads)
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    work = (_multiple(width * scale, multiple), _multiple(height * scale, multiple))
    depth = estimator.embed(compose.resize_pixels(rgb, work), threads=threads).squeeze()
    if depth.ndim != 2:
        raise InvalidRequest(f"{path}: expected one depth map out, got shape {depth.shape}")
    low, high = float(depth.min()), float(depth.max())
    span = high - low if high > low else 1.0
    grey = np.clip(np.rint((depth - low) / span * 255), 0, 255).astype(np.uint8)
    grey = compose.resize_pixels(grey, (width, height))
    return np.dstack([grey] * 3)


def _multiple(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)
