"""The Toolkit: resolve a provider -> check the request -> run -> compose -> ImageResult.

Every front end (library helpers, CLI, HTTP) goes through here, so the guarantees hold for
every provider: inputs checked before work, pixels outside the mask unchanged, alpha and bit
depth restored, metadata carried to the result, parameters recorded for replay.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from retouch import compose, imageio
from retouch import masks as mask_ops
from retouch.errors import ConfigurationError, InvalidRequest, UnsupportedOperation
from retouch.registry import ProviderSource, Registry
from retouch.types import (
    EditRequest,
    EraseRequest,
    ImageResult,
    InpaintRequest,
    Mask,
    MaskRequest,
    OperationSpec,
    OutpaintRequest,
    Picture,
    Pixels,
    ProgressCallback,
    Provider,
    ProviderStatus,
    RemoveBackgroundRequest,
    Request,
    ResizeRequest,
    RestoreFacesRequest,
    ResultImage,
    StylizeRequest,
    UpscaleRequest,
    VariationsRequest,
    no_progress,
    request_parameters,
    to_uint8,
)

if TYPE_CHECKING:
    from retouch.imageio import ImageSource
    from retouch.masks import MaskFrom
    from retouch.types import Operation, Options

SUBJECT_MASKS = ("subject", "background")
DEFAULT_CROP_MARGIN = 128
"""Context around the mask's box for masked work (IOPaint's crop margin)."""


@dataclasses.dataclass(frozen=True)
class ProviderReport:
    """A line of ``retouch providers``."""

    name: str
    kind: str
    operations: list[str]
    ready: bool
    detail: str
    extra: str | None
    description: str


class Toolkit:
    """One entry point over every provider.

    ``Toolkit()`` uses the built-in and installed providers; pass ``providers`` to add or
    inject instances (``{"mine": MyProvider()}``) or ``registry`` to take full control.
    """

    def __init__(
        self,
        *,
        providers: Mapping[str, ProviderSource] | None = None,
        registry: Registry | None = None,
        max_pixels: int | None = imageio.DEFAULT_MAX_PIXELS,
    ) -> None:
        if registry is not None and providers:
            raise ConfigurationError("pass either registry or providers, not both")
        self.registry = registry if registry is not None else Registry(providers)
        self.max_pixels = max_pixels

    # --- providers ------------------------------------------------------------------------

    def provider_for(
        self, operation: Operation, name: str | None = None, *, names_model: bool = False
    ) -> Provider:
        """The named provider (checked to do ``operation`` and be ready), else the best ready one.

        ``names_model``: the request names its own model, so a provider that lacks only a
        default model may run it."""
        if name is not None:
            provider = self.registry.get(name)
            if operation not in provider.info.operations:
                able = [p.info.name for p in self.registry.supporting(operation)]
                hint = f"; providers that do: {', '.join(able)}" if able else ""
                raise UnsupportedOperation(f"provider {name!r} does not do {operation}{hint}")
            status = provider.status()
            if not (names_model and status.needs_model):
                _raise_unless_ready(status, name)
            return provider
        candidates = self.registry.supporting(operation)
        for provider in candidates:
            if provider.status().ready:
                return provider
        if not candidates:
            raise UnsupportedOperation(
                f"no installed provider does {operation}; see `retouch providers` for what is installed"
            )
        reasons = "; ".join(f"{p.info.name}: {p.status().detail}" for p in candidates)
        raise UnsupportedOperation(f"no provider is ready for {operation} ({reasons})")

    def providers(self) -> list[ProviderReport]:
        reports = []
        for name in self.registry.names():
            try:
                provider = self.registry.get(name)
            except ConfigurationError as exc:
                reports.append(ProviderReport(name, "?", [], False, str(exc), None, ""))
                continue
            status = provider.status()
            info = provider.info
            reports.append(
                ProviderReport(
                    name=name,
                    kind=info.kind,
                    operations=list(info.operations),
                    ready=status.ready,
                    detail=status.detail,
                    extra=info.extra,
                    description=info.description,
                )
            )
        return reports

    # --- loading --------------------------------------------------------------------------

    def load(self, image: ImageSource, *, name: str | None = None) -> Picture:
        return imageio.load_image(image, name=name, max_pixels=self.max_pixels)

    def load_mask(
        self,
        mask: ImageSource,
        picture: Picture,
        *,
        mask_from: MaskFrom = "auto",
        invert: bool = False,
        resize: bool = False,
        warnings: list[str] | None = None,
    ) -> Mask:
        """A mask file/array in retouch's convention, or "subject" / "background" made
        from ``picture`` by the best mask provider (a file of that name wins)."""
        if isinstance(mask, str) and mask in SUBJECT_MASKS and not os.path.exists(mask):
            made = self.subject_mask(picture, mask)
            return mask_ops.invert(made) if invert else made
        return mask_ops.load_mask(
            mask,
            size=picture.size,
            mask_from=mask_from,
            invert=invert,
            resize=resize,
            warnings=warnings,
        )

    def subject_mask(
        self,
        image: ImageSource,
        kind: str = "subject",
        *,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> Mask:
        """255 on the main subject ("subject") or everything else ("background")."""
        if kind not in SUBJECT_MASKS:
            raise InvalidRequest(
                f"mask kind must be one of {', '.join(SUBJECT_MASKS)}, not {kind!r}"
            )
        picture = self.load(image)
        chosen = self.provider_for("mask", provider)
        spec = chosen.info.operations["mask"]
        request = MaskRequest(image=_for_provider(picture, spec), kind=kind, options=options)
        check_request(request, spec, chosen.info.name)
        result = chosen.run(request, progress)
        mask: Mask = np.ascontiguousarray(result.image.pixels[:, :, 0], dtype=np.uint8)
        _check_size(result.image.pixels, picture.width, picture.height, chosen.info.name)
        return mask

    def remove_background(
        self,
        image: ImageSource,
        *,
        only_mask: bool = False,
        bg_color: str | None = None,
        bg_image: ImageSource | None = None,
        bg_blur: float | None = None,
        model: str | None = None,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Cut out the subject (RGBA), or return its mask, or put it on a new background:
        a colour, an image (scaled to cover), or the photo itself blurred by ``bg_blur``."""
        started = time.perf_counter()
        picture = self.load(image)
        chosen_backgrounds = [b is not None for b in (bg_color, bg_image, bg_blur)]
        if sum(chosen_backgrounds) > 1:
            raise InvalidRequest("choose one of bg_color, bg_image and bg_blur")
        if only_mask and any(chosen_backgrounds):
            raise InvalidRequest(
                "only_mask returns the mask; it cannot also replace the background"
            )
        colour = compose.parse_colour(bg_color) if bg_color is not None else None
        backdrop = self.load(bg_image, name=None).rgb8() if bg_image is not None else None
        if bg_blur is not None and not 0 < bg_blur <= 500:
            raise InvalidRequest(
                f"bg_blur must be a radius above 0 and at most 500 px, got {bg_blur}"
            )
        chosen = self.provider_for("remove-background", provider)
        spec = chosen.info.operations["remove-background"]
        request = RemoveBackgroundRequest(
            image=picture, only_mask=only_mask, model=model, options=options
        )
        check_request(request, spec, chosen.info.name)
        result = chosen.run(
            dataclasses.replace(request, image=_for_provider(picture, spec)), progress
        )
        outputs: list[Pixels] = []
        for out in result.images:
            _check_size(out.pixels, picture.width, picture.height, chosen.info.name)
            pixels = to_uint8(out.pixels)
            if only_mask:
                outputs.append(pixels)
                continue
            if pixels.shape[2] == 3:  # a provider that returned colours only: opaque
                pixels = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
            if picture.alpha is not None:  # already transparent stays transparent
                pixels[:, :, 3] = np.minimum(
                    pixels[:, :, 3], to_uint8(picture.alpha[:, :, None])[:, :, 0]
                )
            if colour is not None:
                plate = np.empty(
                    (picture.height, picture.width, 4 if colour[3] < 255 else 3), np.uint8
                )
                plate[:] = colour[: plate.shape[2]]
                pixels = compose.composite_over(pixels, plate)
            elif backdrop is not None:
                pixels = compose.composite_over(pixels, compose.cover(backdrop, picture.size))
            elif bg_blur is not None:
                pixels = compose.composite_over(pixels, compose.blurred(picture.rgb8(), bg_blur))
            outputs.append(compose.match_depth(pixels, picture.pixels))
        return self._finish(
            result, picture, outputs, request, [], started, source_mode="L" if only_mask else None
        )

    def _load_masked(
        self,
        image: ImageSource,
        mask: ImageSource,
        mask_from: MaskFrom,
        invert: bool,
        resize: bool,
        grow: int,
        warnings: list[str],
        *,
        allow_full: bool,
    ) -> tuple[Picture, Mask]:
        """Image and mask in retouch's convention, the mask checked to select something."""
        picture = self.load(image)
        mask_array = self.load_mask(
            mask, picture, mask_from=mask_from, invert=invert, resize=resize, warnings=warnings
        )
        if grow:
            mask_array = mask_ops.grow(mask_array, grow)
        mask_ops.check_selects(mask_array, name=_mask_name(mask), allow_full=allow_full)
        return picture, mask_array

    # --- operations -----------------------------------------------------------------------

    def erase(
        self,
        image: ImageSource,
        mask: ImageSource,
        *,
        provider: str | None = None,
        seed: int | None = None,
        options: Options = None,
        mask_from: MaskFrom = "auto",
        invert_mask: bool = False,
        resize_mask: bool = False,
        grow_mask: int = 0,
        feather: int = 0,
        crop_margin: int | None = DEFAULT_CROP_MARGIN,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Remove what ``mask`` covers (255 = remove) and fill it from the surroundings.

        Pixels where the mask is 0 are returned unchanged. ``crop_margin`` pixels of context
        around the mask are given to the provider (None: the whole image).
        """
        started = time.perf_counter()
        warnings: list[str] = []
        picture, mask_array = self._load_masked(
            image, mask, mask_from, invert_mask, resize_mask, grow_mask, warnings, allow_full=False
        )
        request = EraseRequest(image=picture, mask=mask_array, seed=seed, options=options)
        return self._run_masked(
            request,
            provider,
            feather=feather,
            crop_margin=crop_margin,
            progress=progress,
            warnings=warnings,
            started=started,
        )

    def inpaint(
        self,
        image: ImageSource,
        mask: ImageSource,
        prompt: str,
        *,
        provider: str | None = None,
        negative_prompt: str | None = None,
        seed: int | None = None,
        n: int = 1,
        strength: float = 1.0,
        steps: int | None = None,
        guidance: float | None = None,
        options: Options = None,
        mask_from: MaskFrom = "auto",
        invert_mask: bool = False,
        resize_mask: bool = False,
        grow_mask: int = 0,
        feather: int = 8,
        crop_margin: int | None = DEFAULT_CROP_MARGIN,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Repaint what ``mask`` covers following ``prompt``; pixels outside stay unchanged."""
        started = time.perf_counter()
        warnings: list[str] = []
        picture, mask_array = self._load_masked(
            image, mask, mask_from, invert_mask, resize_mask, grow_mask, warnings, allow_full=True
        )
        request = InpaintRequest(
            image=picture,
            mask=mask_array,
            prompt=prompt,
            negative_prompt=negative_prompt,
            seed=seed,
            n=n,
            strength=strength,
            steps=steps,
            guidance=guidance,
            options=options,
        )
        return self._run_masked(
            request,
            provider,
            feather=feather,
            crop_margin=crop_margin,
            progress=progress,
            warnings=warnings,
            started=started,
        )

    def outpaint(
        self,
        image: ImageSource,
        *,
        left: int = 0,
        right: int = 0,
        top: int = 0,
        bottom: int = 0,
        width: int | None = None,
        height: int | None = None,
        aspect: float | None = None,
        prompt: str | None = None,
        provider: str | None = None,
        seed: int | None = None,
        feather: int = 16,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Extend the canvas and fill the new area.

        Give pixels per side, or a target ``width``/``height`` or ``aspect`` (width / height),
        which grows the canvas evenly on both sides. The original's pixels stay unchanged
        except a band of ``feather`` pixels at the extended edges, blended into the fill.
        """
        started = time.perf_counter()
        picture = self.load(image)
        sides = outpaint_sides(
            picture.size,
            left=left,
            right=right,
            top=top,
            bottom=bottom,
            width=width,
            height=height,
            aspect=aspect,
        )
        chosen = self.provider_for("outpaint", provider, names_model=_names_model(options))
        spec = chosen.info.operations["outpaint"]
        if spec.options is not None and "feather" in {
            f.name for f in dataclasses.fields(spec.options)
        }:
            options = _with_default(options, "feather", feather)
        request = OutpaintRequest(image=picture, **sides, prompt=prompt, seed=seed, options=options)
        check_request(request, spec, chosen.info.name)
        work = _for_provider(picture, spec)
        result = chosen.run(dataclasses.replace(request, image=work), progress)
        canvas, _, blend = compose.outpaint_canvas(picture.pixels, **sides, feather=feather)
        outputs = []
        for out in result.images:
            _check_size(out.pixels, canvas.shape[1], canvas.shape[0], chosen.info.name)
            outputs.append(compose.paste_back(canvas, out.pixels, blend))
        return self._finish(result, picture, outputs, request, [], started)

    def upscale(
        self,
        image: ImageSource,
        *,
        scale: float = 4.0,
        width: int | None = None,
        height: int | None = None,
        model: str | None = None,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Enlarge by ``scale`` or to ``width``/``height``; alpha and 16 bit are kept."""
        started = time.perf_counter()
        picture = self.load(image)
        compose.scaled_size(picture.size, scale=scale, width=width, height=height)
        request = UpscaleRequest(
            image=picture, scale=scale, width=width, height=height, model=model, options=options
        )
        return self._run_whole(request, provider, progress=progress, started=started)

    def resize(
        self,
        image: ImageSource,
        *,
        max_size: int | None = None,
        width: int | None = None,
        height: int | None = None,
        provider: str | None = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Lanczos resize so the long side is at most ``max_size`` (or to width/height)."""
        started = time.perf_counter()
        picture = self.load(image)
        compose.fitted_size(picture.size, max_size=max_size, width=width, height=height)
        request = ResizeRequest(image=picture, max_size=max_size, width=width, height=height)
        return self._run_whole(request, provider, progress=progress, started=started)

    def stylize(
        self,
        image: ImageSource,
        *,
        style: str | int | None = None,
        style_image: ImageSource | None = None,
        strength: float = 1.0,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Restyle with a built-in style (``7``, ``"style-7"``, ``"3:0.5,12:0.5"``) or any
        picture as ``style_image``; ``strength`` 0 returns the input. Alpha is kept."""
        started = time.perf_counter()
        picture = self.load(image)
        painting = self.load(style_image) if style_image is not None else None
        request = StylizeRequest(
            image=picture,
            style=str(style) if style is not None else None,
            style_image=painting,
            strength=strength,
            options=options,
        )
        if provider is None and (style_image is not None or is_style_spec(request.style)):
            provider = "stylize"  # built-in styles and style pictures: the style networks
        return self._run_whole(request, provider, progress=progress, started=started)

    def edit(
        self,
        image: ImageSource,
        prompt: str,
        *,
        strength: float = 0.6,
        negative_prompt: str | None = None,
        seed: int | None = None,
        n: int = 1,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Image-to-image edit by prompt (providers that declare ``edit``)."""
        started = time.perf_counter()
        request = EditRequest(
            image=self.load(image),
            prompt=prompt,
            strength=strength,
            negative_prompt=negative_prompt,
            seed=seed,
            n=n,
            options=options,
        )
        return self._run_whole(request, provider, progress=progress, started=started)

    def variations(
        self,
        image: ImageSource,
        *,
        n: int = 1,
        strength: float = 0.6,
        prompt: str | None = None,
        seed: int | None = None,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """``n`` variations of an image (providers that declare ``variations``)."""
        started = time.perf_counter()
        request = VariationsRequest(
            image=self.load(image),
            n=n,
            strength=strength,
            prompt=prompt,
            seed=seed,
            options=options,
        )
        return self._run_whole(request, provider, progress=progress, started=started)

    def restore_faces(
        self,
        image: ImageSource,
        *,
        fidelity: float = 0.5,
        model: str | None = None,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Restore faces (providers that declare ``restore-faces``)."""
        started = time.perf_counter()
        request = RestoreFacesRequest(
            image=self.load(image), fidelity=fidelity, model=model, options=options
        )
        return self._run_whole(request, provider, progress=progress, started=started)

    def run(
        self,
        request: Request,
        *,
        provider: str | None = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Run a request built by hand (its pictures already loaded)."""
        if isinstance(request, (EraseRequest, InpaintRequest)):
            return self._run_masked(
                request,
                provider,
                feather=0,
                crop_margin=DEFAULT_CROP_MARGIN,
                progress=progress,
                warnings=[],
                started=time.perf_counter(),
            )
        return self._run_whole(request, provider, progress=progress, started=time.perf_counter())

    # --- the shared pipeline --------------------------------------------------------------

    def _run_masked(
        self,
        request: EraseRequest | InpaintRequest,
        provider_name: str | None,
        *,
        feather: int,
        crop_margin: int | None,
        progress: ProgressCallback,
        warnings: list[str],
        started: float,
    ) -> ImageResult:
        picture, mask = request.image, request.mask
        provider = self.provider_for(
            request.operation, provider_name, names_model=_names_model(request.options)
        )
        spec = provider.info.operations[request.operation]
        check_request(request, spec, provider.info.name)
        if crop_margin is not None and crop_margin < 0:
            raise InvalidRequest(f"crop_margin must be >= 0 pixels, got {crop_margin}")
        if crop_margin is None:
            plans = [compose.whole_image(picture.size)]
        else:  # one crop per separate region: two small marks far apart stay two small crops
            plans = [
                compose.plan_box(box, working_size=spec.working_size)
                for box in mask_ops.regions(mask, crop_margin)
            ]
        outputs: list[Pixels] = []
        results: list[ImageResult] = []
        for plan in plans:
            # Boxes never overlap and hold only their own region (regions() merges any that
            # would), so the mask itself serves every plan; each output is copied once.
            work_pixels = _provider_pixels(plan.crop(picture.pixels), spec)  # crop, then convert
            work_pixels, (work_h, work_w) = compose.pad_to_multiple(work_pixels, spec.size_multiple)
            work_mask, _ = compose.pad_to_multiple(plan.crop_mask(mask), spec.size_multiple)
            _check_sides(work_pixels.shape[1], work_pixels.shape[0], spec, provider.info.name)
            work_request = dataclasses.replace(
                request, image=picture.with_pixels(work_pixels), mask=work_mask
            )
            result = provider.run(work_request, progress)
            results.append(result)
            if not outputs:
                outputs = [picture.pixels.copy() for _ in result.images]
            for index, out in enumerate(result.images):
                _check_size(
                    out.pixels, work_pixels.shape[1], work_pixels.shape[0], provider.info.name
                )
                plan.stitch_into(
                    outputs[index], out.pixels[:work_h, :work_w], mask, feather=feather
                )
            if plan.scaled:
                warnings.append(
                    f"worked on a {plan.work_size[0]} x {plan.work_size[1]} crop around a masked region "
                    f"(the provider's working size) and stitched it back at full resolution"
                )
        result = results[0]
        if len(results) > 1:
            result.usage = {
                **result.usage,
                "regions": len(results),
                "work_sizes": [list(plan.work_size) for plan in plans],
            }
            result.warnings = [w for r in results for w in r.warnings]
        return self._finish(result, picture, outputs, request, warnings, started)

    def _run_whole(
        self,
        request: Request,
        provider_name: str | None,
        *,
        progress: ProgressCallback,
        started: float,
    ) -> ImageResult:
        picture = request.image
        provider = self.provider_for(
            request.operation, provider_name, names_model=_names_model(request.options)
        )
        spec = provider.info.operations[request.operation]
        check_request(request, spec, provider.info.name)
        work = _for_provider(picture, spec)
        _check_sides(work.width, work.height, spec, provider.info.name)
        result = provider.run(dataclasses.replace(request, image=work), progress)
        outputs = [_restore_format(picture, out.pixels) for out in result.images]
        return self._finish(result, picture, outputs, request, [], started)

    def _finish(
        self,
        result: ImageResult,
        picture: Picture,
        outputs: list[Pixels],
        request: Request,
        warnings: list[str],
        started: float,
        *,
        source_mode: str | None = None,
    ) -> ImageResult:
        images = [
            ResultImage(
                pixels=pixels,
                seed=raw.seed,
                icc_profile=picture.icc_profile if source_mode is None else None,
                exif=picture.exif,
                source_mode=source_mode or picture.source_mode,
            )
            for raw, pixels in zip(result.images, outputs, strict=True)
        ]
        parameters = request_parameters(request)
        parameters["provider"] = result.provider
        timings = dict(result.timings)
        timings["total"] = round(time.perf_counter() - started, 4)
        return ImageResult(
            images=images,
            provider=result.provider,
            model=result.model,
            timings=timings,
            usage=result.usage,
            warnings=[*warnings, *result.warnings],
            parameters=parameters,
        )


# --- checks, in one place -----------------------------------------------------------------

_HONOURABLE = ("seed", "negative_prompt", "prompt", "n", "strength")


def check_request(request: Request, spec: OperationSpec, provider: str) -> None:
    """Refuse parameters the provider would ignore, and impossible values, before any work."""
    defaults = {f.name: f.default for f in dataclasses.fields(request)}
    for field in _HONOURABLE:
        if field not in defaults or field in spec.honours or defaults[field] is dataclasses.MISSING:
            continue
        value = getattr(request, field)
        if value != defaults[field] and value != "":
            raise UnsupportedOperation(
                f"{provider} does not use {field} for {request.operation}; leave it out or pick a "
                f"provider that does (`retouch providers`)"
            )
    n = getattr(request, "n", 1)
    if not 1 <= n <= 10:
        raise InvalidRequest(f"n must be 1..10, got {n}")
    strength = getattr(request, "strength", 1.0)
    if not 0.0 <= strength <= 1.0:
        raise InvalidRequest(f"strength must be between 0 and 1, got {strength}")
    seed = getattr(request, "seed", None)
    if seed is not None and not 0 <= seed < 2**32:
        raise InvalidRequest(f"seed must be 0..4294967295, got {seed}")
    if spec.options is not None and request.options is not None:
        from retouch.types import parse_options

        parse_options(spec.options, request.options, provider=provider)


def _check_sides(width: int, height: int, spec: OperationSpec, provider: str) -> None:
    if min(width, height) < spec.min_side:
        raise InvalidRequest(
            f"{provider} needs images at least {spec.min_side} px on each side; got {width} x {height}"
        )
    if spec.max_side is not None and max(width, height) > spec.max_side:
        raise InvalidRequest(
            f"{provider} takes at most {spec.max_side} px per side; got {width} x {height}; resize first"
        )
    if spec.max_pixels is not None and width * height > spec.max_pixels:
        raise InvalidRequest(
            f"{provider} takes at most {spec.max_pixels} pixels; got {width} x {height}; resize first"
        )


def _check_size(pixels: Pixels, width: int, height: int, provider: str) -> None:
    if pixels.shape[1] != width or pixels.shape[0] != height:
        raise ConfigurationError(
            f"provider {provider} returned {pixels.shape[1]} x {pixels.shape[0]} for a "
            f"{width} x {height} input; this is a bug in the provider"
        )


def _raise_unless_ready(status: ProviderStatus, name: str) -> None:
    if status.ready:
        return
    if status.error is not None:
        raise status.error
    raise UnsupportedOperation(f"provider {name!r} is not ready: {status.detail}")


def _provider_pixels(pixels: Pixels, spec: OperationSpec) -> Pixels:
    """What the provider may see: RGB if it cannot take alpha, 8-bit if it cannot take 16."""
    if not spec.accepts_alpha:
        pixels = pixels[:, :, :3]
    if not spec.accepts_16bit:
        pixels = to_uint8(pixels)
    return np.ascontiguousarray(pixels)


def _for_provider(picture: Picture, spec: OperationSpec) -> Picture:
    return picture.with_pixels(_provider_pixels(picture.pixels, spec))


def _restore_format(picture: Picture, out: Pixels) -> Pixels:
    """Give a whole-image result the input's bit depth and alpha (resized to fit)."""
    out = compose.match_depth(out, picture.pixels)
    alpha = picture.alpha
    if alpha is not None and out.shape[2] == 3:
        if alpha.shape != out.shape[:2]:
            alpha = compose.resize_pixels(alpha[:, :, None], (out.shape[1], out.shape[0]))[:, :, 0]
        out = np.dstack([out, alpha])
    return out


def _names_model(options: Options) -> bool:
    """Whether provider options name a model (``{"model": ...}`` or an options object's field)."""
    if isinstance(options, Mapping):
        return options.get("model") is not None
    return getattr(options, "model", None) is not None


def _mask_name(mask: object) -> str:
    return str(mask) if isinstance(mask, str) and len(mask) < 260 else "mask"


def _with_default(options: Options, key: str, value: object) -> Options:
    if options is None:
        return {key: value}
    if isinstance(options, Mapping):
        return options if key in options else {**options, key: value}
    return options


def outpaint_sides(
    size: tuple[int, int],
    *,
    left: int = 0,
    right: int = 0,
    top: int = 0,
    bottom: int = 0,
    width: int | None = None,
    height: int | None = None,
    aspect: float | None = None,
) -> dict[str, int]:
    """Pixels to add per side, from explicit sides or a target size / aspect ratio."""
    w, h = size
    targeted = width is not None or height is not None or aspect is not None
    if targeted and (left or right or top or bottom):
        raise InvalidRequest(
            "give either pixels per side or a target width/height/aspect, not both"
        )
    if aspect is not None:
        if width is not None or height is not None:
            raise InvalidRequest("give either aspect or width/height, not both")
        if not 0.05 <= aspect <= 20:
            raise InvalidRequest(f"aspect (width / height) must be 0.05..20, got {aspect}")
        if w / h < aspect:
            width, height = round(h * aspect), h
        else:
            width, height = w, round(w / aspect)
    if width is not None or height is not None:
        width = w if width is None else width
        height = h if height is None else height
        if width < w or height < h:
            raise InvalidRequest(
                f"outpaint target {width} x {height} is smaller than the image ({w} x {h}); "
                "to make it smaller, use resize"
            )
        left, top = (width - w) // 2, (height - h) // 2
        right, bottom = width - w - left, height - h - top
    sides = {"left": left, "right": right, "top": top, "bottom": bottom}
    for side, value in sides.items():
        if value < 0:
            raise InvalidRequest(f"outpaint {side} must be >= 0 pixels, got {value}")
    if not any(sides.values()):
        raise InvalidRequest(
            "outpaint needs at least one of --left/--right/--top/--bottom > 0, or a larger target"
        )
    return sides


def is_style_spec(style: str | None) -> bool:
    """A built-in style reference (``7``, ``style-7``, ``3:0.5,12:0.5``) rather than a prompt."""
    import re

    return style is not None and re.fullmatch(r"\s*((style-)?\d+|[\d:.,\s]+)\s*", style) is not None
