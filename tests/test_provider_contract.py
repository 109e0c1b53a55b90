"""Every registered provider: declared operations work, others are refused, seeds echo, sizes hold."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from retouch.api import Toolkit
from retouch.errors import UnsupportedOperation
from retouch.imageio import picture_from_array
from retouch.types import (
    OPERATIONS,
    AdjustRequest,
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

TOOLKIT = Toolkit()
READY = [p.name for p in TOOLKIT.providers() if p.ready]


def _photo() -> Picture:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 48 * 40 * 3).reshape(40, 48, 3)
    return picture_from_array((base * 0.7 + rng.integers(0, 70, base.shape)).astype(np.uint8))


def _mask() -> np.ndarray:
    mask = np.zeros((40, 48), np.uint8)
    mask[10:22, 14:30] = 255
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
    "resize": lambda seed: ResizeRequest(image=_photo(), max_size=24),
    "remove-background": lambda seed: RemoveBackgroundRequest(image=_photo()),
    "restore-faces": lambda seed: RestoreFacesRequest(image=_photo()),
    "stylize": lambda seed: StylizeRequest(image=_photo(), style="style-3"),
    "adjust": lambda seed: AdjustRequest(image=_photo(), white_balance="grey-world"),
    "mask": lambda seed: MaskRequest(image=_photo(), kind="subject"),
}
EXPECTED_SIZE: dict[Operation, tuple[int, int]] = {
    "outpaint": (56, 44),
    "upscale": (96, 80),
    "resize": (24, 20),
}


def test_every_operation_has_a_builder() -> None:
    assert set(BUILDERS) == set(OPERATIONS)


@pytest.mark.parametrize("name", READY)
def test_declared_operations_work_and_others_are_refused(name: str) -> None:
    provider = TOOLKIT.registry.get(name)
    for operation in OPERATIONS:
        if operation not in provider.info.operations:
            with pytest.raises(UnsupportedOperation):
                TOOLKIT.provider_for(operation, name)
            continue
        spec = provider.info.operations[operation]
        seed = 1234 if "seed" in spec.honours else None
        result = TOOLKIT.run(BUILDERS[operation](seed), provider=name)
        assert result.provider == name
        assert result.images, operation
        image = result.image
        assert (image.width, image.height) == EXPECTED_SIZE.get(operation, (48, 40)), operation
        if seed is not None:
            assert all(i.seed == seed for i in result.images), operation
        assert result.parameters["operation"] == operation
        assert "total" in result.timings
