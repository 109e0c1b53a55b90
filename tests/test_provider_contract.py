"""Every registered provider: declared operations work, others are refused, seeds echo, sizes hold.

Providers that need weights get tiny randomly initialised ones in a temporary model store
(lama, diffusers); remote providers get their fakes. A provider that cannot be made ready
here fails this test: none is skipped because it happened not to be ready at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
import pytest

from retouch.api import Toolkit
from retouch.errors import UnsupportedOperation
from retouch.imageio import picture_from_array
from retouch.models.store import ModelStore
from retouch.types import (
    OPERATIONS,
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


def _photo() -> Picture:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 48 * 40 * 3).reshape(40, 48, 3)
    return picture_from_array((base * 0.7 + rng.integers(0, 70, base.shape)).astype(np.uint8))


def _mask() -> np.ndarray:
    mask = np.zeros((40, 48), np.uint8)
    mask[10:22, 14:30] = 255
    return mask


def _mask_request(seed: int | None, spec: OperationSpec) -> MaskRequest:
    """A kind the provider makes, with what that kind needs."""
    kinds = sorted(spec.choices.get("kind", {"subject"}))
    kind = "invert" if "invert" in kinds else kinds[0]
    return MaskRequest(image=_photo(), kind=kind)


BUILDERS: dict[Operation, Callable[[int | None, OperationSpec], Request]] = {
    "erase": lambda seed, _: EraseRequest(image=_photo(), mask=_mask(), seed=seed),
    "inpaint": lambda seed, _: InpaintRequest(
        image=_photo(), mask=_mask(), prompt="a red ball", seed=seed
    ),
    "outpaint": lambda seed, _: OutpaintRequest(image=_photo(), left=8, top=4, seed=seed),
    "edit": lambda seed, _: EditRequest(image=_photo(), prompt="watercolour", seed=seed),
    "variations": lambda seed, _: VariationsRequest(image=_photo(), seed=seed),
    "upscale": lambda seed, _: UpscaleRequest(image=_photo(), scale=2),
    "resize": lambda seed, _: ResizeRequest(image=_photo(), max_size=24),
    "remove-background": lambda seed, _: RemoveBackgroundRequest(image=_photo()),
    "restore-faces": lambda seed, _: RestoreFacesRequest(image=_photo()),
    "stylize": lambda seed, spec: (
        StylizeRequest(image=_photo(), style="style-3")
        if "style" in spec.honours
        else StylizeRequest(image=_photo(), prompt="an ink drawing")
    ),
    "mask": _mask_request,
}
EXPECTED_SIZE: dict[Operation, tuple[int, int]] = {
    "outpaint": (56, 44),
    "upscale": (96, 80),
    "resize": (24, 20),
}


@contextmanager
def _nothing(_: Path) -> Iterator[None]:
    yield


@contextmanager
def _tiny_lama(root: Path) -> Iterator[None]:
    from .test_lama import lama_like

    ModelStore().add("lama", lama_like(root / "lama.onnx"), task="erase")
    yield


@contextmanager
def _tiny_diffusers(root: Path) -> Iterator[None]:
    from .tiny_sd import build

    ModelStore().add("tiny-sd", build(root / "sd"), task="inpaint")
    yield


SETUPS: dict[str, Callable[[Path], AbstractContextManager[None]]] = {
    "lama": _tiny_lama,
    "diffusers": _tiny_diffusers,
}
"""How each provider that needs something is made ready here (weights, a fake service)."""
SLOW = {"diffusers"}

TOOLKIT = Toolkit()
NAMES = TOOLKIT.registry.names()


def test_every_operation_has_a_builder() -> None:
    assert set(BUILDERS) == set(OPERATIONS)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES]
)
def test_declared_operations_work_and_others_are_refused(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path / "home"))
    with SETUPS.get(name, _nothing)(tmp_path):
        toolkit = Toolkit()
        provider = toolkit.registry.get(name)
        status = provider.status()
        if provider.info.kind == "remote" and not status.ready:
            pytest.skip(f"{name}: runs against its fake in tests/test_{name}_provider.py")
        assert status.ready, f"{name} could not be made ready here: {status.detail}"
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
            assert (image.width, image.height) == EXPECTED_SIZE.get(operation, (48, 40)), operation
            if seed is not None:
                assert all(i.seed == seed for i in result.images), operation
            assert result.parameters["operation"] == operation
            assert "total" in result.timings
