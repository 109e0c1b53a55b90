"""Every registered provider: declared operations work, others are refused, seeds echo, sizes
hold. Remote providers run against their fakes (tests/fakes), so the contract covers every one
of them whether or not this machine has keys; local providers that need weights get tiny
randomly initialised ones in a temporary store (lama, diffusers). A provider that cannot be
made ready here fails this test: none is skipped for not being ready at import time."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retouch.api import Toolkit
from retouch.errors import UnsupportedOperation
from retouch.imageio import picture_from_array
from retouch.models.store import ModelStore
from retouch.types import (
    OPERATIONS,
    AdjustRequest,
    EditRequest,
    EraseRequest,
    InpaintRequest,
    MaskRequest,
    Operation,
    OperationSpec,
    OutpaintRequest,
    Picture,
    RemoveBackgroundRequest,
    Request,
    ResizeRequest,
    RestoreFacesRequest,
    StylizeRequest,
    UpscaleRequest,
    VariationsRequest,
)

from .fakes import live, toolkit_with

WIDTH, HEIGHT = 96, 80
"""Large enough for every service's smallest side (64 px) and pixel count (4,096)."""


def _photo() -> Picture:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, WIDTH * HEIGHT * 3).reshape(HEIGHT, WIDTH, 3)
    return picture_from_array((base * 0.7 + rng.integers(0, 70, base.shape)).astype(np.uint8))


def _mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[20:44, 28:60] = 255
    return mask


def _mask_request(seed: int | None, spec: OperationSpec) -> MaskRequest:
    """A kind the provider makes, with what that kind needs."""
    kinds = sorted(spec.choices.get("kind", {"subject"}))
    kind = "invert" if "invert" in kinds else kinds[0]
    needs: dict[str, dict[str, object]] = {
        "click": {"points": ((40, 30),)},
        "text": {"text": "a dark patch"},
    }
    return MaskRequest(image=_photo(), kind=kind, **needs.get(kind, {}))  # type: ignore[arg-type]


def _stylize_request(seed: int | None, spec: OperationSpec) -> StylizeRequest:
    if "style" in spec.honours:
        return StylizeRequest(image=_photo(), style="style-3")
    return StylizeRequest(image=_photo(), prompt="an ink drawing")


BUILDERS: dict[Operation, Callable[[int | None, OperationSpec], Request]] = {
    "erase": lambda seed, _: EraseRequest(image=_photo(), mask=_mask(), seed=seed),
    "inpaint": lambda seed, _: InpaintRequest(
        image=_photo(), mask=_mask(), prompt="a red ball", seed=seed
    ),
    "outpaint": lambda seed, _: OutpaintRequest(image=_photo(), left=8, top=4, seed=seed),
    "edit": lambda seed, _: EditRequest(image=_photo(), prompt="watercolour", seed=seed),
    "variations": lambda seed, _: VariationsRequest(image=_photo(), seed=seed),
    # A provider that honours detail upscales only with it (diffusers repaints detail).
    "upscale": lambda seed, spec: UpscaleRequest(
        image=_photo(), scale=2, detail="detail" in spec.honours, seed=seed
    ),
    "resize": lambda seed, _: ResizeRequest(image=_photo(), max_size=48),
    "remove-background": lambda seed, _: RemoveBackgroundRequest(image=_photo()),
    "restore-faces": lambda seed, _: RestoreFacesRequest(image=_photo()),
    "stylize": _stylize_request,
    "adjust": lambda seed, _: AdjustRequest(image=_photo(), white_balance="grey-world"),
    "mask": _mask_request,
}
EXPECTED_SIZE: dict[Operation, tuple[int, int]] = {
    "outpaint": (WIDTH + 8, HEIGHT + 4),
    "upscale": (WIDTH * 2, HEIGHT * 2),
    "resize": (48, 40),
}


# --- each remote provider wired to its fake ------------------------------------------------


def _openai(mp: pytest.MonkeyPatch) -> Iterator[Any]:
    from retouch.providers.openai import OpenAIProvider

    from .fakes.openai_api import KEY, FakeOpenAI

    mp.setenv("OPENAI_API_KEY", KEY)
    mp.delenv("OPENAI_BASE_URL", raising=False)
    yield OpenAIProvider(transport=FakeOpenAI().transport)


def _stability(mp: pytest.MonkeyPatch) -> Iterator[Any]:
    from retouch.providers.stability import StabilityProvider

    from .fakes.stability_api import KEY, FakeStability

    mp.setenv("STABILITY_API_KEY", KEY)
    mp.setenv("STABILITY_BASE_URL", "https://stability.fake")
    yield StabilityProvider(transport=FakeStability().transport)


def _replicate(mp: pytest.MonkeyPatch) -> Iterator[Any]:
    from retouch.providers.replicate import ReplicateProvider

    from .fakes.replicate_api import TOKEN, FakeReplicate

    mp.setenv("REPLICATE_API_TOKEN", TOKEN)
    mp.delenv("REPLICATE_BASE_URL", raising=False)
    yield ReplicateProvider(transport=FakeReplicate().transport)


def _vertex(mp: pytest.MonkeyPatch) -> Iterator[Any]:
    from retouch.providers.vertex import VertexProvider

    from .fakes.vertex_api import LOCATION, PROJECT, TOKEN, FakeVertex

    mp.setenv("VERTEX_PROJECT", PROJECT)
    mp.setenv("VERTEX_LOCATION", LOCATION)
    mp.setenv("VERTEX_ACCESS_TOKEN", TOKEN)
    mp.delenv("VERTEX_BASE_URL", raising=False)
    yield VertexProvider(transport=FakeVertex().transport)


def _automatic1111(mp: pytest.MonkeyPatch) -> Iterator[Any]:
    from retouch.providers.automatic1111 import Automatic1111Provider

    from .fakes.a1111_api import FakeA1111

    mp.setenv("A1111_BASE_URL", "http://gpu-box:7860")
    mp.delenv("A1111_AUTH", raising=False)
    yield Automatic1111Provider(transport=FakeA1111(steps=1, step_s=0.0).transport)


def _comfyui(mp: pytest.MonkeyPatch) -> Iterator[Any]:
    from retouch.providers.comfyui import ComfyUIProvider

    from .fakes.comfyui_api import FakeComfyUI

    with live(FakeComfyUI(steps=1, step_s=0.0, history_delay=0.05).app) as url:
        mp.setenv("COMFYUI_BASE_URL", url)
        yield ComfyUIProvider()


def _firefly(mp: pytest.MonkeyPatch) -> Iterator[Any]:
    from retouch.providers.firefly import FireflyProvider

    from .fakes.firefly_api import CLIENT_ID, SECRET, FakeFirefly

    mp.setenv("FIREFLY_CLIENT_ID", CLIENT_ID)
    mp.setenv("FIREFLY_CLIENT_SECRET", SECRET)
    mp.delenv("FIREFLY_BASE_URL", raising=False)
    mp.delenv("FIREFLY_IMS_URL", raising=False)
    yield FireflyProvider(transport=FakeFirefly(polls=0).transport)


FAKED: dict[str, Callable[[pytest.MonkeyPatch], Iterator[Any]]] = {
    "openai": _openai,
    "stability": _stability,
    "replicate": _replicate,
    "vertex": _vertex,
    "automatic1111": _automatic1111,
    "comfyui": _comfyui,
    "firefly": _firefly,
}
"""Every remote provider with the fake it runs against."""

# --- local providers that need weights: tiny ones in a temporary store ----------------------


def _tiny_lama(mp: pytest.MonkeyPatch, root: Path) -> Iterator[Any]:
    from .test_lama import lama_like

    ModelStore().add("lama", lama_like(root / "lama.onnx"), task="erase")
    yield None


def _tiny_diffusers(mp: pytest.MonkeyPatch, root: Path) -> Iterator[Any]:
    from .tiny_sd import build, build_controlnet

    store = ModelStore()
    store.add("tiny-sd", build(root / "sd"), task="inpaint")
    plain = build(root / "plain", inpaint_unet=False)  # ControlNets are made from plain UNets
    store.add("tiny-tile", build_controlnet(plain, root / "tile"), task="controlnet")  # --detail
    yield None


def _tiny_restorer(mp: pytest.MonkeyPatch, root: Path) -> Iterator[Any]:
    from .tiny_faces import restorer_like

    ModelStore().add("gfpgan-1.4", restorer_like(root / "gfpgan.onnx"), task="restore-faces")
    yield None


def _tiny_clipseg(mp: pytest.MonkeyPatch, root: Path) -> Iterator[Any]:
    from .test_clipseg import tiny_clipseg

    ModelStore().add("clipseg", tiny_clipseg(root / "clipseg"), task="mask")
    yield None


WEIGHTED: dict[str, Callable[[pytest.MonkeyPatch, Path], Iterator[Any]]] = {
    "lama": _tiny_lama,
    "diffusers": _tiny_diffusers,
    "faces": _tiny_restorer,
    "clipseg": _tiny_clipseg,
}
SLOW = {"diffusers", "clipseg"}

DEFAULT = Toolkit()
NAMES = DEFAULT.registry.names()


def test_every_operation_has_a_builder() -> None:
    assert set(BUILDERS) == set(OPERATIONS)


def test_every_remote_provider_has_a_fake() -> None:
    remote = {n for n in NAMES if DEFAULT.registry.get(n).info.kind == "remote"}
    assert remote == set(FAKED)


@pytest.fixture
def toolkit_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[[str], Toolkit]]:
    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path / "home"))
    with contextlib.ExitStack() as stack:

        def make(name: str) -> Toolkit:
            if name in FAKED:
                monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.001")
                provider = stack.enter_context(contextlib.contextmanager(FAKED[name])(monkeypatch))
                return toolkit_with(**{name: provider})
            if name in WEIGHTED:
                setup = contextlib.contextmanager(WEIGHTED[name])
                stack.enter_context(setup(monkeypatch, tmp_path))
            toolkit = Toolkit()
            status = toolkit.registry.get(name).status()
            assert status.ready, f"{name} could not be made ready here: {status.detail}"
            return toolkit

        yield make


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES]
)
def test_declared_operations_work_and_others_are_refused(
    name: str, toolkit_for: Callable[[str], Toolkit]
) -> None:
    toolkit = toolkit_for(name)
    provider = toolkit.registry.get(name)
    for operation in OPERATIONS:
        if operation not in provider.info.operations:
            with pytest.raises(UnsupportedOperation):
                toolkit.provider_for(operation, name)
            continue
        spec = provider.info.operations[operation]
        seed = 1234 if "seed" in spec.honours else None
        result = toolkit.run(BUILDERS[operation](seed, spec), provider=name)
        assert result.provider == name
        assert result.images, operation
        image = result.image
        assert (image.width, image.height) == EXPECTED_SIZE.get(operation, (WIDTH, HEIGHT)), (
            name,
            operation,
        )
        if seed is not None:
            assert all(i.seed == seed for i in result.images), (name, operation)
        assert result.parameters["operation"] == operation
        assert "total" in result.timings
    if provider.info.kind == "remote":
        # Sizes asked of edit and variations hold too: made by the service, else resized.
        for operation in ("edit", "variations"):
            if operation in provider.info.operations:
                spec = provider.info.operations[operation]
                request = dataclasses.replace(BUILDERS[operation](None, spec), width=120)
                sized = toolkit.run(request, provider=name)
                assert (sized.image.width, sized.image.height) == (120, 100), (name, operation)
                assert sized.usage["output_size"]["by"] in ("service", "resize")
