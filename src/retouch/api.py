"""The Toolkit: check the request -> pick a provider -> crop -> run -> stitch -> ImageResult.

``Toolkit.run(request)`` is the one code path: the named helpers (``erase``, ``inpaint``...)
only build requests, and every front end (CLI, HTTP, recipes) builds requests from the
declaration in ``retouch.types`` and runs them here. So the guarantees hold for every
provider: fields checked against their declaration before any provider is looked up,
parameters a provider cannot honour refused, pixels outside the mask unchanged, alpha and
bit depth restored, metadata carried to the result, parameters recorded for replay.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from retouch import compose, imageio
from retouch import masks as mask_ops
from retouch.declaration import (
    FieldSpec,
    build_request,
    check_option_values,
    check_support,
    check_values,
    honours,
    option_fields,
    request_fields,
    request_parameters,
    takes,
    unsupported_fields,
)
from retouch.errors import (
    ConfigurationError,
    ImageTooLarge,
    InvalidRequest,
    ProviderUnavailable,
    UnsupportedOperation,
)
from retouch.registry import ProviderSource, Registry, priority
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    DEFAULT_CROP_MARGIN,
    MASK_WORDS,
    REQUEST_TYPES,
    AdjustRequest,
    EditRequest,
    EraseRequest,
    InpaintRequest,
    Mask,
    MaskInput,
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
    StylizeRequest,
    UpscaleRequest,
    VariationsRequest,
    no_progress,
    parse_options,
    to_uint8,
)

if TYPE_CHECKING:
    from retouch.imageio import ImageSource
    from retouch.masks import MaskFrom
    from retouch.types import Operation, Options

SUBJECT_MASKS = MASK_WORDS


MaskedRequest = EraseRequest | InpaintRequest | EditRequest


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
        operations: Mapping[Operation, type[Any]] | None = None,
        model_paths: Sequence[str | os.PathLike[str]] | None = None,
        max_memory: int | None = None,
    ) -> None:
        if registry is not None and providers:
            raise ConfigurationError("pass either registry or providers, not both")
        self.registry = registry if registry is not None else Registry(providers)
        self.max_pixels = max_pixels
        self.operations: Mapping[Operation, type[Any]] = operations or REQUEST_TYPES
        """Each operation's request class (the declaration the front ends are built from)."""
        self.model_paths = (
            None if model_paths is None else tuple(os.path.realpath(p) for p in model_paths)
        )
        """None: models may be named by any file path (the library, the CLI). A tuple: only
        names from the store, or paths inside these folders (the HTTP service)."""
        self.max_memory = max_memory
        """Bytes one request may need by its estimate, checked before any work."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its settings (a worker process builds the same toolkit)."""
        return (
            _toolkit,
            (self.registry, self.max_pixels, dict(self.operations), self.model_paths),
        )

    # --- providers ------------------------------------------------------------------------

    def provider_for(
        self,
        operation: Operation,
        name: str | None = None,
        *,
        names_model: bool = False,
        request: Request | None = None,
    ) -> Provider:
        """The named provider (checked to do ``operation`` and be ready), else the best ready
        one: the first by priority that can honour every field ``request`` sets.

        ``names_model``: the request names its own model, so a provider that lacks only a
        default model may run it."""
        if request is not None:
            names_model = names_model or _names_model(request)
        if name is not None:
            provider = self.registry.get(name)
            if operation not in provider.info.operations:
                able = [p.info.name for p in self.registry.supporting(operation)]
                hint = f"; providers that do: {', '.join(able)}" if able else ""
                raise UnsupportedOperation(f"provider {name!r} does not do {operation}{hint}")
            if request is not None:  # what it cannot honour is said first: no key fixes that
                spec = provider.info.operations[operation]
                self.check_request(_with_model_option(request, spec), spec, name)
            status = provider.status()
            if not (names_model and status.needs_model):
                _raise_unless_ready(status, name)
            return provider
        candidates = self.registry.supporting(operation)
        ready = [p for p in candidates if p.status().ready]
        for provider in ready:
            if request is None or not unsupported_fields(
                request, provider.info.operations[operation]
            ):
                return provider
        kind = getattr(request, "kind", None)
        for provider in candidates:  # a kind only a provider that is not ready makes: its error
            makes = provider.info.operations[operation].choices.get("kind", frozenset())
            if ready and kind in makes and provider not in ready:
                status = provider.status()
                if not (names_model and status.needs_model):
                    _raise_unless_ready(status, provider.info.name)
                return provider
        if ready:
            return ready[0]  # it cannot honour everything asked: check_request says what
        if not candidates:
            raise UnsupportedOperation(
                f"no installed provider does {operation}; see `retouch providers` for what is installed"
            )
        reasons = "; ".join(_named(p.info.name, p.status().detail) for p in candidates)
        raise ProviderUnavailable(f"no provider is ready for {operation} ({reasons})")

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

    def loaded_providers(self) -> list[Provider]:
        """Every registered provider that loads (a broken plugin is left out)."""
        found = []
        for name in self.registry.names():
            try:
                found.append(self.registry.get(name))
            except ConfigurationError:
                continue
        return found

    def option_fields(self, operation: Operation, kind: str | None = None) -> list[FieldSpec]:
        """Provider options offered as flat fields of ``operation`` (``--matting``...); with
        ``kind``, only those of the providers that make that kind."""
        providers = [
            p
            for p in self.loaded_providers()
            if operation in p.info.operations
            and (kind is None or kind in p.info.operations[operation].choices.get("kind", {kind}))
        ]
        return option_fields(operation, providers)

    def check_request(self, request: Request, spec: OperationSpec, provider: str) -> None:
        """Refuse fields the provider cannot honour and bad options, before any work."""

        def able(field: str) -> list[str]:
            return [
                p.info.name
                for p in self.registry.supporting(request.operation)
                if takes(p.info.operations[request.operation], request, field)
            ]

        check_support(request, spec, provider, able)
        if spec.options is not None and request.options is not None:
            if isinstance(request.options, Mapping):
                image = request.image
                check_option_values(
                    option_fields(request.operation, [self.registry.get(provider)]),
                    request.options,
                    diagonal=math.hypot(image.width, image.height),
                )
            parse_options(spec.options, request.options, provider=provider)

    def describe_operations(self) -> list[dict[str, Any]]:
        """Each operation with its fields (type, range, default, help), the provider options
        offered with it, and the providers that can run it now: what ``GET /v1/operations``
        answers and the studio page and recipes are built from."""
        loaded = self.loaded_providers()
        statuses = {p.info.name: p.status() for p in loaded}
        described = []
        for operation, cls in self.operations.items():
            providers = []
            able = [p for p in loaded if operation in p.info.operations]
            for provider in sorted(able, key=lambda p: (-priority(p, operation), p.info.name)):
                spec = provider.info.operations[operation]
                status = statuses[provider.info.name]
                options = option_fields(operation, [provider])
                providers.append(
                    {
                        "name": provider.info.name,
                        "kind": provider.info.kind,
                        "ready": status.ready,
                        "detail": status.detail,
                        "honours": sorted(honours(spec)),
                        "choices": {k: sorted(v) for k, v in spec.choices.items()},
                        "options": [s.name for s in options],
                    }
                )
            described.append(
                {
                    "name": operation,
                    "summary": cls.summary,
                    "fields": [s.describe() for s in request_fields(cls)],
                    "provider_options": [s.describe() for s in option_fields(operation, loaded)],
                    "providers": providers,
                    "ready": [p["name"] for p in providers if p["ready"]],
                }
            )
        return described

    # --- building requests ------------------------------------------------------------------

    def build(self, operation: Operation, values: Mapping[str, Any]) -> Request:
        """A request from flat values as the CLI, HTTP and recipes name them (text is parsed
        by each field's kind; images are loaded; mask fields make a ``MaskInput``)."""
        cls = self.operations.get(operation)
        if cls is None:
            raise InvalidRequest(
                f"unknown operation {operation!r}; operations: {', '.join(self.operations)}",
                param="operation",
            )
        request: Request = build_request(
            cls,
            values,
            load_image=lambda source, field: self.load(
                source, name=field if isinstance(source, (bytes, bytearray)) else None
            ),
            options=self.option_fields(operation),
        )
        return request

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
        """A mask file/array in retouch's convention, or one made from ``picture`` by the
        best mask provider: "subject", "background", "faces", "click:X,Y;..." or
        "text:PHRASE" (a file of that name wins)."""
        exists = isinstance(mask, str) and os.path.exists(mask)
        word = None if exists else mask_ops.parse_mask_word(mask)
        if word is not None:
            kind, fields = word
            result = self.run(MaskRequest(image=picture, kind=kind, **dict(fields)))  # type: ignore[arg-type]
            made = np.ascontiguousarray(result.image.pixels[:, :, 0], dtype=np.uint8)
            return mask_ops.invert(made) if invert else made
        return mask_ops.load_mask(
            mask,
            name="mask" if isinstance(mask, (bytes, bytearray, memoryview)) else None,
            size=picture.size,
            mask_from=mask_from,
            invert=invert,
            resize=resize,
            warnings=warnings,
        )

    def resolve_mask(self, picture: Picture, mask: MaskInput, warnings: list[str]) -> Mask:
        """The mask of a ``MaskInput`` in retouch's convention, grown as asked."""
        array = self.load_mask(
            mask.source,
            picture,
            mask_from=mask.mask_from,
            invert=mask.invert,
            resize=mask.resize,
            warnings=warnings,
        )
        return mask_ops.grow(array, mask.grow) if mask.grow else array

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
        picture = self.load(image)
        result = self.run(
            MaskRequest(image=picture, kind=kind, provider=provider, options=options),
            progress=progress,
        )
        return np.ascontiguousarray(result.image.pixels[:, :, 0], dtype=np.uint8)

    # --- operations: each builds its request and runs it ----------------------------------------

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
        request = EraseRequest(
            image=self.load(image),
            mask=_mask_input(mask, mask_from, invert_mask, resize_mask, grow_mask, crop_margin),
            feather=feather,
            seed=seed,
            provider=provider,
            options=options,
        )
        return self.run(request, progress=progress)

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
        model: str | None = None,
        options: Options = None,
        mask_from: MaskFrom = "auto",
        invert_mask: bool = False,
        resize_mask: bool = False,
        grow_mask: int = 0,
        feather: int = 8,
        crop_margin: int | None = DEFAULT_CROP_MARGIN,
        control: str | None = None,
        control_image: ImageSource | None = None,
        control_scale: float = 1.0,
        control_start: float = 0.0,
        control_end: float = 1.0,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Repaint what ``mask`` covers following ``prompt``; pixels outside stay unchanged.

        ``control`` guides the result with ControlNets (``"canny"``, ``"openpose,depth"``...),
        the first from ``control_image`` when given (a sketch, a pose, a segmentation map)."""
        request = InpaintRequest(
            image=self.load(image),
            mask=_mask_input(mask, mask_from, invert_mask, resize_mask, grow_mask, crop_margin),
            prompt=prompt,
            negative_prompt=negative_prompt,
            seed=seed,
            n=n,
            strength=strength,
            steps=steps,
            guidance=guidance,
            feather=feather,
            control=control,
            control_image=self.load(control_image) if control_image is not None else None,
            control_scale=control_scale,
            control_start=control_start,
            control_end=control_end,
            model=model,
            provider=provider,
            options=options,
        )
        return self.run(request, progress=progress)

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
        model: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Extend the canvas and fill the new area.

        Give pixels per side, or a target ``width``/``height`` or ``aspect`` (width / height),
        which grows the canvas evenly on both sides. The original's pixels stay unchanged
        except a band of ``feather`` pixels at the extended edges, blended into the fill.
        """
        request = OutpaintRequest(
            image=self.load(image),
            left=left,
            right=right,
            top=top,
            bottom=bottom,
            width=width,
            height=height,
            aspect=aspect,
            prompt=prompt,
            seed=seed,
            feather=feather,
            model=model,
            provider=provider,
            options=options,
        )
        return self.run(request, progress=progress)

    def upscale(
        self,
        image: ImageSource,
        *,
        scale: float = 4.0,
        width: int | None = None,
        height: int | None = None,
        face_enhance: bool = False,
        detail: bool = False,
        seed: int | None = None,
        model: str | None = None,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Enlarge by ``scale`` or to ``width``/``height``; alpha and 16 bit are kept.
        ``face_enhance``: then restore the faces in the result. ``detail``: then repaint detail
        tile by tile (a diffusion provider, e.g. diffusers)."""
        request = UpscaleRequest(
            image=self.load(image),
            scale=scale,
            width=width,
            height=height,
            face_enhance=face_enhance,
            detail=detail,
            seed=seed,
            model=model,
            provider=provider,
            options=options,
        )
        return self.run(request, progress=progress)

    def resize(
        self,
        image: ImageSource,
        *,
        max_size: int | None = None,
        width: int | None = None,
        height: int | None = None,
        max_width: int | None = None,
        max_height: int | None = None,
        provider: str | None = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Lanczos resize: shrink-only bounds (``max_size`` for the long side, ``max_width``,
        ``max_height``), or an exact ``width``/``height``."""
        request = ResizeRequest(
            image=self.load(image),
            max_size=max_size,
            width=width,
            height=height,
            max_width=max_width,
            max_height=max_height,
            provider=provider,
        )
        return self.run(request, progress=progress)

    def adjust(
        self,
        image: ImageSource,
        *,
        white_balance: str = "none",
        auto_levels: bool = False,
        auto_contrast: bool = False,
        clip: float = 0.5,
        match_image: ImageSource | None = None,
        brightness: float = 0.0,
        contrast: float = 1.0,
        saturation: float = 1.0,
        gamma: float = 1.0,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Colour and tone, in this order: ``white_balance`` (``grey-world``,
        ``white-patch``), ``auto_levels`` (per channel) or ``auto_contrast`` (all channels
        together), the colours of ``match_image``, then ``brightness``, ``contrast``,
        ``saturation`` and ``gamma``. Alpha and 16 bit are kept."""
        request = AdjustRequest(
            image=self.load(image),
            white_balance=white_balance,
            auto_levels=auto_levels,
            auto_contrast=auto_contrast,
            clip=clip,
            match_image=self.load(match_image) if match_image is not None else None,
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
            gamma=gamma,
            provider=provider,
            options=options,
        )
        return self.run(request, progress=progress)

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
        request = RemoveBackgroundRequest(
            image=self.load(image),
            only_mask=only_mask,
            bg_color=bg_color,
            bg_image=self.load(bg_image) if bg_image is not None else None,
            bg_blur=bg_blur,
            model=model,
            provider=provider,
            options=options,
        )
        return self.run(request, progress=progress)

    def stylize(
        self,
        image: ImageSource,
        *,
        style: str | int | None = None,
        style_image: ImageSource | None = None,
        prompt: str | None = None,
        strength: float = 1.0,
        model: str | None = None,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Restyle with a built-in style (``7``, ``"style-7"``, ``"3:0.5,12:0.5"``), any
        picture as ``style_image``, or a ``prompt`` (a diffusion provider); ``strength`` 0
        returns the input. Alpha is kept."""
        request = StylizeRequest(
            image=self.load(image),
            style=str(style) if style is not None else None,
            style_image=self.load(style_image) if style_image is not None else None,
            prompt=prompt,
            strength=strength,
            model=model,
            provider=provider,
            options=options,
        )
        return self.run(request, progress=progress)

    def edit(
        self,
        image: ImageSource,
        prompt: str,
        *,
        strength: float = 0.6,
        negative_prompt: str | None = None,
        seed: int | None = None,
        n: int = 1,
        mask: ImageSource | None = None,
        width: int | None = None,
        height: int | None = None,
        control: str | None = None,
        control_image: ImageSource | None = None,
        control_scale: float = 1.0,
        control_start: float = 0.0,
        control_end: float = 1.0,
        model: str | None = None,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Image-to-image edit by prompt (providers that declare ``edit``); with ``mask``,
        only the masked area changes. ``width``/``height``: the result's size (default: the
        input's); ``control`` guides it as for ``inpaint``."""
        request = EditRequest(
            image=self.load(image),
            prompt=prompt,
            mask=MaskInput(source=mask) if mask is not None else None,
            strength=strength,
            negative_prompt=negative_prompt,
            seed=seed,
            n=n,
            width=width,
            height=height,
            control=control,
            control_image=self.load(control_image) if control_image is not None else None,
            control_scale=control_scale,
            control_start=control_start,
            control_end=control_end,
            model=model,
            provider=provider,
            options=options,
        )
        return self.run(request, progress=progress)

    def variations(
        self,
        image: ImageSource,
        *,
        n: int = 1,
        strength: float = 0.6,
        prompt: str | None = None,
        seed: int | None = None,
        width: int | None = None,
        height: int | None = None,
        model: str | None = None,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """``n`` variations of an image (providers that declare ``variations``);
        ``width``/``height``: their size (default: the input's)."""
        request = VariationsRequest(
            image=self.load(image),
            n=n,
            strength=strength,
            prompt=prompt,
            seed=seed,
            width=width,
            height=height,
            model=model,
            provider=provider,
            options=options,
        )
        return self.run(request, progress=progress)

    def restore_faces(
        self,
        image: ImageSource,
        *,
        fidelity: float = 0.5,
        upscale: float = 1.0,
        model: str | None = None,
        provider: str | None = None,
        options: Options = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Find the faces and restore them; pixels outside the faces are returned unchanged.
        ``fidelity``: CodeFormer's w; ``upscale``: enlarge the picture first."""
        request = RestoreFacesRequest(
            image=self.load(image),
            fidelity=fidelity,
            upscale=upscale,
            model=model,
            provider=provider,
            options=options,
        )
        return self.run(request, progress=progress)

    # --- the one code path ------------------------------------------------------------------

    def run(
        self,
        request: Request,
        *,
        provider: str | None = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """Run any request: fields checked against the declaration, a provider chosen (the
        named one, else the best ready one that honours the request), the work done on a
        crop around the mask for masked operations, the result composited and described."""
        started = time.perf_counter()
        if provider is not None:
            request = dataclasses.replace(request, provider=provider)
        check_values(request)
        _check_aligned(request)
        if (isinstance(request, UpscaleRequest) and request.face_enhance) or (
            isinstance(request, RestoreFacesRequest) and request.upscale != 1
        ):
            return self._upscale_and_restore_faces(request, progress, started)
        warnings: list[str] = []
        mask: Mask | None = None
        if (
            isinstance(request, (EraseRequest, InpaintRequest, EditRequest))
            and request.mask is not None
            and not self._phrase_for_provider(request)
        ):
            if isinstance(request, EditRequest) and (request.width or request.height):
                raise InvalidRequest(
                    "with a mask the result keeps the image's size; leave out width/height "
                    "(or resize afterwards)",
                    param="width" if request.width else "height",
                )
            try:
                mask = self.resolve_mask(request.image, request.mask, warnings)
                mask_ops.check_selects(
                    mask,
                    name=_mask_name(request.mask.source),
                    allow_full=not isinstance(request, EraseRequest),
                )
            except InvalidRequest as exc:
                exc.param = exc.param or "mask"
                raise
        if isinstance(request, OutpaintRequest):
            sides = outpaint_sides(
                request.image.size,
                left=request.left,
                right=request.right,
                top=request.top,
                bottom=request.bottom,
                width=request.width,
                height=request.height,
                aspect=request.aspect,
            )
            request = dataclasses.replace(
                request,
                left=sides["left"],
                right=sides["right"],
                top=sides["top"],
                bottom=sides["bottom"],
                width=None,
                height=None,
                aspect=None,
            )
        self._check_output_size(request)
        chosen = self.provider_for(request.operation, request.provider, request=request)
        spec = chosen.info.operations[request.operation]
        request = _with_model_option(request, spec)
        self._check_model_paths(request, chosen)
        self.check_request(request, spec, chosen.info.name)
        if mask is not None and isinstance(request, (EraseRequest, InpaintRequest, EditRequest)):
            return self._run_masked(request, mask, chosen, spec, progress, warnings, started)
        if isinstance(request, OutpaintRequest):
            return self._run_outpaint(request, chosen, spec, progress, started)
        if isinstance(request, RemoveBackgroundRequest):
            return self._run_remove_background(request, chosen, spec, progress, started)
        return self._run_whole(request, chosen, spec, progress, started)

    def _phrase_for_provider(self, request: MaskedRequest) -> bool:
        """A ``text:PHRASE`` mask goes to a provider that finds the area itself (it lists
        ``mask_phrase`` in ``honours``: Stability's search-and-replace/recolor) instead of
        being made here."""
        if request.mask is None or not isinstance(request.mask.source, str):
            return False
        if not request.mask.source.startswith("text:") or os.path.exists(request.mask.source):
            return False
        chosen = self.provider_for(request.operation, request.provider, request=request)
        return "mask_phrase" in chosen.info.operations[request.operation].honours

    def _upscale_and_restore_faces(
        self,
        request: UpscaleRequest | RestoreFacesRequest,
        progress: ProgressCallback,
        started: float,
    ) -> ImageResult:
        """``upscale --face-enhance`` and ``restore-faces --upscale N``: the upscale (its
        provider chosen as for any upscale), then restore-faces on its result, each through
        ``run``: faces are found and restored at the new size, on any upscaler's output."""
        if isinstance(request, UpscaleRequest):
            enlarge = dataclasses.replace(request, face_enhance=False)
            restore = RestoreFacesRequest(image=request.image)
        else:
            enlarge = UpscaleRequest(image=request.image, scale=request.upscale)
            restore = dataclasses.replace(request, upscale=1.0)
        self._check_output_size(enlarge)
        # both providers are checked before the (slow) upscale runs
        self.provider_for("upscale", enlarge.provider, request=enlarge)
        self.provider_for("restore-faces", restore.provider, request=restore)
        enlarged = self.run(enlarge, progress=progress)
        picture = request.image.with_pixels(enlarged.image.pixels)
        restored = self.run(dataclasses.replace(restore, image=picture), progress=progress)
        parameters = request_parameters(request)
        parameters["provider"] = f"{enlarged.provider}+{restored.provider}"
        return ImageResult(
            images=restored.images,
            provider=parameters["provider"],
            model=f"{enlarged.model}+{restored.model}",
            timings={
                "upscale": enlarged.timings.get("total", 0.0),
                "restore-faces": restored.timings.get("total", 0.0),
                "total": round(time.perf_counter() - started, 4),
            },
            usage={"upscale": enlarged.usage, "restore-faces": restored.usage},
            warnings=[*enlarged.warnings, *restored.warnings],
            parameters=parameters,
        )

    def _check_model_paths(self, request: Request, provider: Provider) -> None:
        """Where files may not be named (a server), a model or option that is a path must be
        inside an allowed folder. The answer is the same whether or not the file exists."""
        if self.model_paths is None:
            return
        local = provider.info.kind == "local"
        named: list[tuple[str, object]] = []
        if local:  # a remote provider's model is the service's name for it ("owner/name")
            named.append(("model", getattr(request, "model", None)))
        if isinstance(request.options, Mapping):
            named.extend((str(k), v) for k, v in request.options.items())
        for field, value in named:
            if not isinstance(value, str) or not _looks_like_path(value, slashes=local):
                continue
            real = os.path.realpath(os.path.expanduser(value))
            if not any(real == root or real.startswith(root + os.sep) for root in self.model_paths):
                raise InvalidRequest(
                    f"{field}: files cannot be named here; name a model from the store "
                    "(`retouch models list`), or ask the operator to allow a folder "
                    "(RETOUCH_MODEL_PATHS)",
                    param=field,
                )

    def _check_output_size(self, request: Request) -> None:
        """The output's pixels and the request's memory, known before any work, against
        the limits."""
        size = compose.result_size(request)
        if self.max_pixels is not None and size[0] * size[1] > self.max_pixels:
            raise ImageTooLarge(
                f"the {request.operation} result would be {size[0]} x {size[1]} "
                f"({size[0] * size[1] / 1e6:.1f} MP), over the limit of "
                f"{self.max_pixels / 1e6:.1f} MP; ask for a smaller result"
            )
        if self.max_memory is not None:
            need = estimate_memory(request.image.size, size, n=getattr(request, "n", 1))
            if need > self.max_memory:
                raise ImageTooLarge(
                    f"this {request.operation} would need about {need / 2**30:.1f} GB "
                    f"(input {request.image.width} x {request.image.height}, result "
                    f"{size[0]} x {size[1]}), over this server's {self.max_memory / 2**30:.1f} GB "
                    "per request; send a smaller image or ask for a smaller result"
                )

    def _run_masked(
        self,
        request: MaskedRequest,
        mask: Mask,
        provider: Provider,
        spec: OperationSpec,
        progress: ProgressCallback,
        warnings: list[str],
        started: float,
    ) -> ImageResult:
        picture = request.image
        crop_margin = request.mask.crop_margin if request.mask is not None else None
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
                request,
                image=picture.with_pixels(work_pixels),
                mask=MaskInput.of(work_mask),
            )
            crops: dict[str, Any] = _aligned_crops(request, plan.box, picture.size)
            work_request = dataclasses.replace(work_request, **crops)
            result = provider.run(work_request, progress)
            results.append(result)
            if not outputs:
                outputs = [picture.pixels.copy() for _ in result.images]
            for index, out in enumerate(result.images):
                _check_size(
                    out.pixels, work_pixels.shape[1], work_pixels.shape[0], provider.info.name
                )
                plan.stitch_into(
                    outputs[index], out.pixels[:work_h, :work_w], mask, feather=request.feather
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
        if request.mask is not None:  # the parameters describe the mask that was used
            request = dataclasses.replace(
                request, mask=dataclasses.replace(request.mask, source=mask)
            )
        return self._finish(result, picture, outputs, request, warnings, started)

    def _run_outpaint(
        self,
        request: OutpaintRequest,
        provider: Provider,
        spec: OperationSpec,
        progress: ProgressCallback,
        started: float,
    ) -> ImageResult:
        picture = request.image
        sides = {
            "left": request.left,
            "right": request.right,
            "top": request.top,
            "bottom": request.bottom,
        }
        work = dataclasses.replace(request, image=_for_provider(picture, spec))
        result = provider.run(work, progress)
        canvas, _, blend = compose.outpaint_canvas(picture.pixels, **sides, feather=request.feather)
        outputs = []
        for out in result.images:
            _check_size(out.pixels, canvas.shape[1], canvas.shape[0], provider.info.name)
            outputs.append(compose.paste_back(canvas, out.pixels, blend))
        return self._finish(result, picture, outputs, request, [], started)

    def _run_remove_background(
        self,
        request: RemoveBackgroundRequest,
        provider: Provider,
        spec: OperationSpec,
        progress: ProgressCallback,
        started: float,
    ) -> ImageResult:
        picture = request.image
        backgrounds = [b is not None for b in (request.bg_color, request.bg_image, request.bg_blur)]
        if sum(backgrounds) > 1:
            raise InvalidRequest("choose one of bg_color, bg_image and bg_blur")
        if request.only_mask and any(backgrounds):
            raise InvalidRequest(
                "only_mask returns the mask; it cannot also replace the background",
                param="only_mask",
            )
        colour = compose.parse_colour(request.bg_color) if request.bg_color is not None else None
        backdrop = request.bg_image.rgb8() if request.bg_image is not None else None
        work = dataclasses.replace(
            request, image=_for_provider(picture, spec), bg_color=None, bg_image=None, bg_blur=None
        )
        result = provider.run(work, progress)
        outputs: list[Pixels] = []
        for out in result.images:
            _check_size(out.pixels, picture.width, picture.height, provider.info.name)
            pixels = to_uint8(out.pixels)
            if request.only_mask:
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
            elif request.bg_blur is not None:
                pixels = compose.composite_over(
                    pixels, compose.blurred(picture.rgb8(), request.bg_blur)
                )
            outputs.append(compose.match_depth(pixels, picture.pixels))
        return self._finish(
            result,
            picture,
            outputs,
            request,
            [],
            started,
            source_mode="L" if request.only_mask else None,
        )

    def _run_whole(
        self,
        request: Request,
        provider: Provider,
        spec: OperationSpec,
        progress: ProgressCallback,
        started: float,
    ) -> ImageResult:
        picture = request.image
        work = _for_provider(picture, spec)
        _check_sides(work.width, work.height, spec, provider.info.name)
        result = provider.run(dataclasses.replace(request, image=work), progress)
        if isinstance(request, MaskRequest):
            for out in result.images:
                _check_size(out.pixels, picture.width, picture.height, provider.info.name)
            outputs = [out.pixels for out in result.images]
            mask = outputs[0][:, :, 0]
            box = mask_ops.bounding_box(mask)
            result.usage = {
                **result.usage,
                "selected": int((mask > 0).sum()),
                "box": list(box) if box else None,
            }
            return self._finish(result, picture, outputs, request, [], started, source_mode="L")
        outputs = [out.pixels for out in result.images]
        if isinstance(request, (EditRequest, VariationsRequest)):
            # The requested size: made by the provider when it could, else resized here.
            target = compose.output_size(request)
            if any((o.shape[1], o.shape[0]) != target for o in outputs):
                service = [int(outputs[0].shape[1]), int(outputs[0].shape[0])]
                outputs = [compose.resize_pixels(o, target) for o in outputs]
                result.usage = {
                    **result.usage,
                    "output_size": {
                        "width": target[0],
                        "height": target[1],
                        "by": "resize",
                        "service_size": service,
                    },
                }
        outputs = [_restore_format(picture, pixels) for pixels in outputs]
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
            OutputImage(
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


# --- helpers ------------------------------------------------------------------------------


def _toolkit(
    registry: Registry,
    max_pixels: int | None,
    operations: Mapping[Operation, type[Any]],
    model_paths: tuple[str, ...] | None,
) -> Toolkit:
    return Toolkit(
        registry=registry, max_pixels=max_pixels, operations=operations, model_paths=model_paths
    )


def _mask_input(
    source: ImageSource,
    mask_from: MaskFrom,
    invert: bool,
    resize: bool,
    grow: int,
    crop_margin: int | None,
) -> MaskInput:
    return MaskInput(
        source=source,
        mask_from=mask_from,
        invert=invert,
        resize=resize,
        grow=grow,
        crop_margin=crop_margin,
    )


WORKING_BYTES_PER_PIXEL = 64
"""What a pixel costs while retouch works on it: RGBA float32 working copies (16 bytes
each), the 8/16-bit input and output, masks and blend weights: about four copies."""


def estimate_memory(input_size: tuple[int, int], output_size: tuple[int, int], *, n: int) -> int:
    """Bytes a request needs by its sizes alone, before any provider's own (model) needs."""
    pixels = input_size[0] * input_size[1] + n * output_size[0] * output_size[1]
    return pixels * WORKING_BYTES_PER_PIXEL


def _aligned_fields(request: Request) -> list[tuple[str, Picture]]:
    """The request's images laid over its main image (``param(aligned=True)``), when given."""
    found = []
    for spec in request_fields(type(request)):
        if spec.kind == "image" and spec.param.aligned and len(spec.path) == 1:
            value = getattr(request, spec.path[0])
            if isinstance(value, Picture):
                found.append((spec.path[0], value))
    return found


def _check_aligned(request: Request) -> None:
    """An image laid over the main one must have its aspect ratio (any size: it is scaled)."""
    image = request.image
    for name, picture in _aligned_fields(request):
        height = picture.height * image.width / picture.width
        if abs(height - image.height) > max(1.0, 0.01 * image.height):
            raise InvalidRequest(
                f"{name} is {picture.width} x {picture.height} but the image is {image.width} x "
                f"{image.height}: a guide is laid over the image, so it needs the image's aspect "
                "ratio (any size)",
                param=name,
            )


def _aligned_crops(
    request: Request, box: tuple[int, int, int, int], size: tuple[int, int]
) -> dict[str, Picture]:
    """The same area of each aligned image as ``box`` is of the main image (of ``size``),
    in the aligned image's own pixels: the provider scales it to its working size."""
    crops = {}
    for name, picture in _aligned_fields(request):
        sx, sy = picture.width / size[0], picture.height / size[1]
        left = min(round(box[0] * sx), picture.width - 1)
        top = min(round(box[1] * sy), picture.height - 1)
        right = max(left + 1, min(round(box[2] * sx), picture.width))
        bottom = max(top + 1, min(round(box[3] * sy), picture.height))
        crops[name] = picture.with_pixels(
            np.ascontiguousarray(picture.pixels[top:bottom, left:right])
        )
    return crops


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


def _named(name: str, detail: str) -> str:
    """``name: detail``, once (many details already start with their provider's name)."""
    return detail if detail.startswith(f"{name}:") else f"{name}: {detail}"


def _raise_unless_ready(status: ProviderStatus, name: str) -> None:
    if status.ready:
        return
    if status.error is not None:
        raise status.error
    raise ProviderUnavailable(f"provider {name!r} is not ready: {status.detail}")


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


def _names_model(request: Request) -> bool:
    """Whether the request names its model (the field, or options ``model``)."""
    if getattr(request, "model", None) is not None:
        return True
    options = request.options
    if isinstance(options, Mapping):
        return options.get("model") is not None
    return getattr(options, "model", None) is not None


def _with_model_option(request: Request, spec: OperationSpec) -> Request:
    """Providers whose options carry the model get the request's ``model`` there too."""
    model = getattr(request, "model", None)
    if model is None or spec.options is None:
        return request
    if "model" not in {f.name for f in dataclasses.fields(spec.options)}:
        return request
    options = request.options
    if options is None or isinstance(options, Mapping):
        given = (options or {}).get("model")
        if given is not None and given != model:
            raise InvalidRequest(
                f"model {model!r} and options model {given!r} disagree; give one", param="model"
            )
        return dataclasses.replace(request, options={**(options or {}), "model": model})
    return request


MODEL_FILE_SUFFIXES = (
    ".onnx",
    ".param",
    ".bin",
    ".safetensors",
    ".ckpt",
    ".pt",
    ".pth",
    ".json",
    ".yaml",
    ".yml",
)


def _looks_like_path(value: str, *, slashes: bool = True) -> bool:
    """A file path rather than a model name: local names have no separators and no file
    suffix (``slashes=False``: remote ids like ``owner/name`` are names)."""
    return (
        value.startswith(("/", "~", "."))
        or "\\" in value
        or (slashes and os.sep in value)
        or value.lower().endswith(MODEL_FILE_SUFFIXES)
    )


def _mask_name(mask: object) -> str:
    return str(mask) if isinstance(mask, str) and len(mask) < 260 else "mask"


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
            raise InvalidRequest("give either aspect or width/height, not both", param="aspect")
        if not 0.05 <= aspect <= 20:
            raise InvalidRequest(
                f"aspect (width / height) must be 0.05..20, got {aspect}", param="aspect"
            )
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
            raise InvalidRequest(f"outpaint {side} must be >= 0 pixels, got {value}", param=side)
    if not any(sides.values()):
        raise InvalidRequest(
            "outpaint needs at least one of --left/--right/--top/--bottom > 0, or a larger target"
        )
    return sides
