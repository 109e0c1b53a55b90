"""The stability provider against a fake that enforces Stability's v2beta contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retouch.api import Toolkit
from retouch.errors import ContentPolicy, InvalidRequest, UnsupportedOperation

from .conftest import box_mask
from .fakes import live
from .fakes.stability_api import CYAN, KEY, FakeStability


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStability]:
    service = FakeStability()
    with live(service.app) as url:
        monkeypatch.setenv("STABILITY_BASE_URL", url)
        monkeypatch.setenv("STABILITY_API_KEY", KEY)
        monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.01")
        yield service


def test_inpaint_and_erase_resized_back_with_the_seed(
    fake: FakeStability, small_photo: np.ndarray
) -> None:
    mask = box_mask(small_photo.shape[:2], (30, 20, 60, 45))
    toolkit = Toolkit()
    result = toolkit.inpaint(
        small_photo,
        mask,
        "a teapot",
        negative_prompt="blur",
        seed=7,
        provider="stability",
        options={"grow_mask": 5, "style_preset": "photographic"},
        feather=0,
    )
    out = result.image.pixels
    assert out.shape == small_photo.shape and result.image.seed == 7
    assert np.array_equal(out[mask == 0], small_photo[mask == 0])
    assert np.abs(out[mask > 0].astype(int) - np.array(CYAN)).mean() < 40
    path, fields = fake.calls[-1]
    assert (
        path.endswith("/edit/inpaint")
        and fields["negative_prompt"] == "blur"
        and fields["grow_mask"] == "5"
    )
    erased = toolkit.erase(small_photo, mask, provider="stability", seed=3)
    assert erased.image.seed == 3 and np.array_equal(
        erased.image.pixels[mask == 0], small_photo[mask == 0]
    )
    with pytest.raises(InvalidRequest, match=r"grow_mask must be 0\.\.20"):
        toolkit.erase(small_photo, mask, provider="stability", options={"grow_mask": 50})


def test_outpaint_search_and_remove_background(
    fake: FakeStability, small_photo: np.ndarray
) -> None:
    toolkit = Toolkit()
    wide = toolkit.outpaint(
        small_photo, left=20, right=20, provider="stability", prompt="more room", feather=0
    )
    assert wide.image.pixels.shape == (64, 136, 3)
    assert np.array_equal(wide.image.pixels[:, 20:116], small_photo)
    replaced = toolkit.edit(
        small_photo,
        "a dog",
        provider="stability",
        options={"mode": "search-and-replace", "search_prompt": "cat"},
    )
    assert np.array_equal(replaced.image.pixels, 255 - small_photo)
    with pytest.raises(InvalidRequest, match="search_prompt"):
        toolkit.edit(
            small_photo, "a dog", provider="stability", options={"mode": "search-and-replace"}
        )
    with pytest.raises(UnsupportedOperation, match="mode=search-and-replace"):
        toolkit.edit(small_photo, "a dog", provider="stability")
    cut = toolkit.remove_background(small_photo, provider="stability")
    assert cut.image.pixels.shape == (64, 96, 4) and cut.image.pixels[0, 0, 3] == 0


def test_upscales_fast_conservative_and_polled_creative(
    fake: FakeStability, small_photo: np.ndarray
) -> None:
    toolkit = Toolkit()
    fast = toolkit.upscale(small_photo, scale=4, provider="stability")
    assert fast.image.pixels.shape == (256, 384, 3)
    conservative = toolkit.upscale(
        small_photo,
        scale=2,
        provider="stability",
        options={"mode": "conservative", "prompt": "a cat"},
    )
    assert conservative.image.pixels.shape == (
        128,
        192,
        3,
    )  # 4x from the service, resized to the asked 2x
    reports = []
    creative = toolkit.upscale(
        small_photo,
        scale=4,
        provider="stability",
        options={"mode": "creative", "poll_interval": 0.05},
        progress=reports.append,
    )
    assert creative.image.pixels.shape == (256, 384, 3) and creative.image.seed == 99
    assert fake.jobs["job0"][0] == 2 and len(reports) >= 3  # two 202 answers, then the image


def test_moderation_and_limits(fake: FakeStability, small_photo: np.ndarray) -> None:
    mask = box_mask(small_photo.shape[:2], (30, 20, 60, 45))
    fake.script = [(403, {}, {"id": "x", "name": "content_moderation", "errors": ["flagged"]})]
    with pytest.raises(ContentPolicy, match="refused the content"):
        Toolkit().inpaint(small_photo, mask, "x", provider="stability")
    tall = np.zeros((300, 100, 3), np.uint8)
    with pytest.raises(InvalidRequest, match=r"1:2\.5"):
        Toolkit().edit(
            tall,
            "x",
            provider="stability",
            options={"mode": "search-and-recolor", "select_prompt": "y"},
        )
    with pytest.raises(InvalidRequest, match="seed must be"):
        Toolkit().inpaint(small_photo, mask, "x", provider="stability", seed=4_294_967_295)


def test_cli_inpaint_against_the_fake(
    fake: FakeStability, tmp_path: Path, astronaut_file: Path
) -> None:
    from retouch.cli import main

    mask_path = tmp_path / "m.png"
    Image.fromarray(box_mask((512, 512), (380, 20, 460, 200))).save(mask_path)
    out = tmp_path / "out.png"
    assert (
        main(
            [
                "inpaint",
                str(astronaut_file),
                "--mask",
                str(mask_path),
                "--prompt",
                "a moon",
                "--provider",
                "stability",
                "--option",
                "style_preset=cinematic",
                "-o",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    hole = np.asarray(Image.open(mask_path)) > 0
    assert np.array_equal(
        np.asarray(Image.open(out))[~hole], np.asarray(Image.open(astronaut_file))[~hole]
    )
