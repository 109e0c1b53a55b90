"""Stable Diffusion through diffusers (extra ``retouch[diffusion]``): inpaint, img2img edit,
outpaint and variations.

Models load by model-store name (``retouch models add NAME FOLDER --task inpaint``), or from
a local diffusers folder; SD 1.5 and SDXL families, inpainting and plain checkpoints (a plain
checkpoint inpaints by masked img2img, which diffusers' inpaint pipeline does for 4-channel
UNets). The working resolution is the model's own (UNet sample size x VAE scale factor),
overridable; the Toolkit hands a crop around the mask, which is scaled to it and back.
Each image gets its own seed (returned); progress is reported once per step; a Cancelled
raised by the progress callback stops the pipeline between steps.
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
from retouch.engines import default_threads
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
    canny_low: int = 100
    canny_high: int = 200

    def __post_init__(self) -> None:
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise ValueError(
                f"scheduler must be one of {', '.join(SCHEDULERS)}, not {self.scheduler!r}"
            )
        if self.resolution is not None and not 64 <= self.resolution <= 4096:
            raise ValueError("resolution must be 64..4096")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError("device must be auto, cpu, cuda or mps")


@dataclass
class Loaded:
    inpaint: Any
    img2img: Any
    resolution: int
    multiple: int
    lock: threading.Lock
    extra: dict[tuple[str, bool], Any] = field(default_factory=dict)
    """ControlNet pipelines built on these components, by ControlNet path and masked or not."""


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
        },
        extra="diffusion",
        priority=30,
    )

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], Loaded] = {}
        self._lock = threading.Lock()

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
        path = Path(name)
        if not path.exists():
            from retouch.models.store import ModelStore

            path = ModelStore().path(name)
        device = _device(options.device)
        key = (str(path), device)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._load(path, device, options)
            return self._cache[key]

    def _load(self, path: Path, device: str, options: DiffusersOptions) -> Loaded:
        import torch
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

        if not path.is_dir() or not (path / "model_index.json").is_file():
            raise InvalidRequest(
                f"{path} is not a diffusers folder (no model_index.json); single .safetensors files are not supported yet"
            )
        torch.set_num_threads(options.threads or default_threads())
        dtype = torch.float16 if device == "cuda" else torch.float32
        try:
            inpaint = AutoPipelineForInpainting.from_pretrained(  # type: ignore[no-untyped-call]
                str(path), dtype=dtype, safety_checker=None, requires_safety_checker=False
            )
        except (OSError, ValueError) as exc:
            raise InvalidRequest(
                f"{path} could not be loaded as a Stable Diffusion pipeline: {exc}"
            ) from exc
        inpaint = inpaint.to(device)
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
        steps = getattr(request, "steps", None) or 30
        guidance = getattr(request, "guidance", None) or 7.5
        prompt = getattr(request, "prompt", None) or ""
        if mask is None and loaded.img2img is None:
            mask = np.full(rgb.shape[:2], 255, np.uint8)
        pipe = loaded.inpaint if mask is not None else loaded.img2img
        control = None
        if options.controlnet:
            pipe, control = self._controlnet(loaded, options, mask is not None, rgb)
        with loaded.lock:
            if options.attention_slicing:
                pipe.enable_attention_slicing()
            else:
                pipe.disable_attention_slicing()
            if options.vae_tiling:
                pipe.vae.enable_tiling()
            else:
                pipe.vae.disable_tiling()
            if options.scheduler:
                import diffusers

                pipe.scheduler = getattr(diffusers, SCHEDULERS[options.scheduler]).from_config(
                    pipe.scheduler.config
                )
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
        from diffusers import (
            ControlNetModel,
            StableDiffusionControlNetImg2ImgPipeline,
            StableDiffusionControlNetInpaintPipeline,
        )

        path = Path(str(options.controlnet))
        if not path.exists():
            from retouch.models.store import ModelStore

            path = ModelStore().path(str(options.controlnet))
        key = (str(path), masked)
        with self._lock:
            if key not in loaded.extra:
                _check_class(path, "ControlNetModel")
                try:
                    model = ControlNetModel.from_pretrained(str(path))  # type: ignore[no-untyped-call]
                except (OSError, ValueError) as exc:
                    raise InvalidRequest(
                        f"{path} could not be loaded as a ControlNet: {exc}"
                    ) from exc
                model = model.to(device=loaded.inpaint.device, dtype=loaded.inpaint.unet.dtype)
                components = {
                    k: v for k, v in loaded.inpaint.components.items() if k != "image_encoder"
                }
                inpaint_unet = loaded.inpaint.unet.config.in_channels == 9
                cls = (
                    StableDiffusionControlNetInpaintPipeline
                    if masked or inpaint_unet
                    else StableDiffusionControlNetImg2ImgPipeline
                )
                pipe: Any = cls(**components, controlnet=model)
                pipe.set_progress_bar_config(disable=True)
                loaded.extra[key] = pipe
            pipe = loaded.extra[key]
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


def _check_class(path: Path, expected: str) -> None:
    """diffusers loads a folder of another model class with random weights and no error:
    read the folder's own declaration first."""
    import json

    config = path / "config.json"
    try:
        declared = json.loads(config.read_text("utf-8")).get("_class_name")
    except (OSError, ValueError):
        declared = None
    if declared != expected:
        raise InvalidRequest(
            f"{path} could not be loaded as a {expected}: its config.json declares {declared!r}"
        )


def _multiple(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)
