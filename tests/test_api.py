"""The Toolkit's guarantees, end to end on the astronaut photo."""

from __future__ import annotations

import numpy as np
import pytest

import retouch
from retouch import masks
from retouch.api import Toolkit
from retouch.errors import MaskError, UnsupportedOperation
from retouch.types import (
    ImageResult,
    OperationSpec,
    ProviderInfo,
    ProviderStatus,
    ResultImage,
)

from .conftest import box_mask


def test_shuttle_erased_and_nothing_else_touched(
    astronaut: np.ndarray, shuttle_mask: np.ndarray
) -> None:
    result = retouch.erase(astronaut, shuttle_mask, seed=7)
    out = result.image.pixels
    selected = shuttle_mask > 0
    assert int(np.abs(out.astype(int) - astronaut.astype(int))[~selected].max()) == 0
    # The shuttle (white/grey on a light wall) is replaced by wall: the fill's colour is the
    # wall's, measured on the ring around the mask, and the shuttle's dark details are gone.
    changed = np.abs(out.astype(int) - astronaut.astype(int))[selected].mean()
    assert changed > 20
    upper = selected.copy()
    upper[250:] = False  # above the table: wall only
    ring = (masks.grow(shuttle_mask, 20) > 0) & ~selected
    ring[250:] = False
    wall = astronaut[ring].mean(axis=0)
    # Per-pixel distance from the wall colour: the shuttle stood out by 59 levels on average.
    before = np.abs(astronaut[upper].astype(float) - wall).mean()
    after = np.abs(out[upper].astype(float) - wall).mean()
    assert before > 50 and after < before / 3, (before, after)
    assert np.abs(out[upper].mean(axis=0) - wall).max() < 15
    assert result.provider == "classic" and result.image.seed == 7


def test_work_happens_on_a_crop_and_is_stitched_back(astronaut: np.ndarray) -> None:
    seen: list[tuple[int, int]] = []

    class Recorder:
        info = ProviderInfo(
            name="recorder",
            kind="local",
            description="",
            operations={"erase": OperationSpec(size_multiple=8)},
        )

        def status(self) -> ProviderStatus:
            return ProviderStatus(ready=True)

        def run(self, request, progress):  # type: ignore[no-untyped-def]
            seen.append((request.image.width, request.image.height))
            return ImageResult(
                images=[ResultImage(pixels=np.zeros_like(request.image.pixels))],
                provider="recorder",
            )

    toolkit = Toolkit(providers={"recorder": Recorder()})
    mask = box_mask((512, 512), (200, 200, 220, 230))
    out = toolkit.erase(astronaut, mask, provider="recorder", crop_margin=30).image.pixels
    assert seen == [(80, 96)]  # 20+60 wide, 30+60 tall, padded to multiples of 8
    assert np.array_equal(out[mask == 0], astronaut[mask == 0])
    assert (out[mask > 0] == 0).all()
    toolkit.erase(astronaut, mask, provider="recorder", crop_margin=None)  # the whole image
    assert seen[-1] == (512, 512)


def test_parameters_a_provider_ignores_are_refused(astronaut: np.ndarray) -> None:
    class NoSeed:
        info = ProviderInfo(
            name="noseed", kind="local", description="", operations={"erase": OperationSpec()}
        )

        def status(self) -> ProviderStatus:
            return ProviderStatus(ready=True)

        def run(self, request, progress):  # type: ignore[no-untyped-def]
            raise AssertionError("must not run")

    toolkit = Toolkit(providers={"noseed": NoSeed()})
    mask = box_mask((512, 512), (0, 0, 10, 10))
    with pytest.raises(UnsupportedOperation, match="does not use seed"):
        toolkit.erase(astronaut, mask, provider="noseed", seed=3)


def test_not_ready_provider_raises_its_own_error(astronaut: np.ndarray) -> None:
    from retouch.errors import DependencyMissing

    class Missing:
        info = ProviderInfo(
            name="missing",
            kind="local",
            description="",
            operations={"erase": OperationSpec()},
            extra="x",
        )

        def status(self) -> ProviderStatus:
            error = DependencyMissing("something", "x")
            return ProviderStatus(ready=False, detail=str(error), error=error)

        def run(self, request, progress):  # type: ignore[no-untyped-def]
            raise AssertionError("must not run")

    toolkit = Toolkit(providers={"missing": Missing()})
    mask = box_mask((512, 512), (0, 0, 10, 10))
    with pytest.raises(DependencyMissing, match=r"retouch\[x\]"):
        toolkit.erase(astronaut, mask, provider="missing")
    # Without a name the ready classic provider is chosen instead.
    assert toolkit.erase(astronaut, mask, seed=1).provider == "classic"


def test_mask_problems_stop_before_work(astronaut: np.ndarray) -> None:
    with pytest.raises(MaskError, match="selects nothing"):
        retouch.erase(astronaut, np.zeros((512, 512), np.uint8))
    with pytest.raises(MaskError, match="whole image"):
        retouch.erase(astronaut, np.full((512, 512), 255, np.uint8))
    with pytest.raises(MaskError, match="511 x 512"):
        retouch.erase(astronaut, np.zeros((512, 511), np.uint8))


def test_grow_mask_and_progress_reports(small_photo: np.ndarray) -> None:
    reports = []
    mask = box_mask(small_photo.shape[:2], (40, 20, 50, 30))
    result = retouch.erase(small_photo, mask, grow_mask=4, seed=1, progress=reports.append)
    assert result.parameters["mask"]["selected"] > 100
    assert [(r.step, r.total) for r in reports] == [(0, 1), (1, 1)]


def test_cancel_from_progress_stops_the_work(small_photo: np.ndarray) -> None:
    from retouch.errors import Cancelled

    def cancel(_):  # type: ignore[no-untyped-def]
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        retouch.erase(
            small_photo, box_mask(small_photo.shape[:2], (40, 20, 50, 30)), progress=cancel
        )


def test_distant_marks_are_worked_on_as_separate_small_crops(astronaut: np.ndarray) -> None:
    from PIL import Image

    seen: list[tuple[int, int]] = []

    class Recorder:
        info = ProviderInfo(
            name="recorder",
            kind="local",
            description="",
            operations={"erase": OperationSpec(working_size=512)},
        )

        def status(self) -> ProviderStatus:
            return ProviderStatus(ready=True)

        def run(self, request, progress):  # type: ignore[no-untyped-def]
            seen.append((request.image.width, request.image.height))
            return ImageResult(
                images=[ResultImage(pixels=np.zeros_like(request.image.pixels))],
                provider="recorder",
            )

    big = np.asarray(Image.fromarray(astronaut).resize((2000, 2000)))
    mask = box_mask((2000, 2000), (100, 100, 140, 140))
    mask[1800:1850, 1850:1900] = 255
    result = Toolkit(providers={"recorder": Recorder()}).erase(
        big, mask, provider="recorder", crop_margin=64
    )
    assert seen == [(168, 168), (178, 178)]  # two small crops, not one 1864 px box scaled to 512
    assert result.usage["regions"] == 2 and not result.warnings
    assert result.usage["work_sizes"] == [[168, 168], [178, 178]]
    out = result.image.pixels
    assert np.array_equal(out[mask == 0], big[mask == 0]) and (out[mask > 0] == 0).all()
