"""Every registered provider: declared operations work, others are refused, seeds echo, sizes
hold. Remote providers run against their fakes (tests/fakes), so the contract covers every one
of them whether or not this machine has keys; local providers run when they are ready."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from retouch.api import Toolkit
from retouch.errors import UnsupportedOperation
from retouch.imageio import picture_from_array
from retouch.types import (
    OPERATIONS,
    EditRequest,
    EraseRequest,
    InpaintRequest,
    MaskRequest,
    Operation,
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


BUILDERS: dict[Operation, Callable[[int | None], Request]] = {
    "erase": lambda seed: EraseRequest(image=_photo(), mask=_mask(), seed=seed),
    "inpaint": lambda seed: InpaintRequest(
        image=_photo(), mask=_mask(), prompt="a red ball", seed=seed
    ),
    "outpaint": lambda seed: OutpaintRequest(image=_photo(), left=8, top=4, seed=seed),
    "edit": lambda seed: EditRequest(image=_photo(), prompt="watercolour", seed=seed),
    "variations": lambda seed: VariationsRequest(image=_photo(), seed=seed),
    "upscale": lambda seed: UpscaleRequest(image=_photo(), scale=2),
    "resize": lambda seed: ResizeRequest(image=_photo(), max_size=48),
    "remove-background": lambda seed: RemoveBackgroundRequest(image=_photo()),
    "restore-faces": lambda seed: RestoreFacesRequest(image=_photo()),
    "stylize": lambda seed: StylizeRequest(image=_photo(), style="style-3"),
    "mask": lambda seed: MaskRequest(image=_photo(), kind="subject"),
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

DEFAULT = Toolkit()
NAMES = DEFAULT.registry.names()


def test_every_operation_has_a_builder() -> None:
    assert set(BUILDERS) == set(OPERATIONS)


def test_every_remote_provider_has_a_fake() -> None:
    remote = {n for n in NAMES if DEFAULT.registry.get(n).info.kind == "remote"}
    assert remote == set(FAKED)


@pytest.fixture
def toolkit_for(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Toolkit]]:
    with contextlib.ExitStack() as stack:

        def make(name: str) -> Toolkit:
            if name in FAKED:
                monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.001")
                provider = stack.enter_context(contextlib.contextmanager(FAKED[name])(monkeypatch))
                return toolkit_with(**{name: provider})
            status = DEFAULT.registry.get(name).status()
            if not status.ready:
                pytest.skip(f"{name} is not ready here: {status.detail}")
            return DEFAULT

        yield make


@pytest.mark.parametrize("name", NAMES)
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
        result = toolkit.run(BUILDERS[operation](seed), provider=name)
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
                request = dataclasses.replace(BUILDERS[operation](None), width=120)
                sized = toolkit.run(request, provider=name)
                assert (sized.image.width, sized.image.height) == (120, 100), (name, operation)
                assert sized.usage["output_size"]["by"] in ("service", "resize")
