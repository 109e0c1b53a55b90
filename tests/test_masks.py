"""One convention in, every conversion explicit, every operation measured."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retouch import masks
from retouch.errors import MaskError

from .conftest import box_mask

SIZE = (64, 48)  # width, height


def test_luminance_mask_white_is_edit() -> None:
    grey = box_mask((48, 64), (10, 10, 20, 20))
    assert np.array_equal(masks.load_mask(grey, size=SIZE), grey)
    rgb = np.dstack([grey] * 3)
    assert np.array_equal(masks.load_mask(rgb, size=SIZE), grey)


def test_transparent_mask_read_as_alpha_with_a_warning() -> None:
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[:, :, 3] = 255
    rgba[5:15, 30:40, 3] = 0  # OpenAI style: the hole is transparent
    warnings: list[str] = []
    mask = masks.load_mask(rgba, size=SIZE, warnings=warnings)
    assert mask[5:15, 30:40].min() == 255 and mask.sum() == 100 * 255
    assert len(warnings) == 1 and "transparent = edit" in warnings[0]
    # Asked for explicitly: no warning; luminance ignores alpha.
    warnings.clear()
    assert np.array_equal(
        masks.load_mask(rgba, size=SIZE, mask_from="alpha", warnings=warnings), mask
    )
    assert not warnings
    assert masks.load_mask(rgba, size=SIZE, mask_from="luminance").max() == 0


def test_alpha_conversion_needs_alpha() -> None:
    with pytest.raises(MaskError, match="no alpha channel"):
        masks.load_mask(np.zeros((48, 64, 3), np.uint8), size=SIZE, mask_from="alpha")


def test_invert_and_partial_grey_kept() -> None:
    grey = np.full((48, 64), 100, np.uint8)
    assert masks.load_mask(grey, size=SIZE, invert=True).max() == 155


def test_size_mismatch_names_both_sizes_and_the_option() -> None:
    wrong = np.zeros((30, 40), np.uint8)
    with pytest.raises(MaskError) as info:
        masks.load_mask(wrong, size=SIZE)
    assert (
        "40 x 30" in str(info.value)
        and "64 x 48" in str(info.value)
        and "resize" in str(info.value)
    )
    resized = masks.load_mask(box_mask((30, 40), (0, 0, 20, 30)), size=SIZE, resize=True)
    assert resized.shape == (48, 64)
    assert abs(int((resized > 127).sum()) - 32 * 48) < 48 * 2


def test_check_selects_refuses_empty_and_full() -> None:
    with pytest.raises(MaskError, match="selects nothing"):
        masks.check_selects(np.zeros((4, 4), np.uint8))
    with pytest.raises(MaskError, match="whole image"):
        masks.check_selects(np.full((4, 4), 255, np.uint8))
    masks.check_selects(np.full((4, 4), 255, np.uint8), allow_full=True)


def test_grow_and_shrink_change_the_area_as_a_disc_would() -> None:
    square = box_mask((100, 100), (40, 40, 60, 60))
    grown = masks.grow(square, 5)
    # Minkowski sum of a 20x20 square and a disc of radius 5: 400 + 4*20*5 + pi*25
    assert abs(int((grown > 0).sum()) - (400 + 400 + np.pi * 25)) < 30
    shrunk = masks.shrink(square, 5)
    assert int((shrunk > 0).sum()) == 10 * 10
    assert np.array_equal(masks.grow(square, 0), square)
    with pytest.raises(MaskError):
        masks.grow(square, -1)


def test_feather_softens_the_edge_and_keeps_the_centre() -> None:
    square = box_mask((100, 100), (30, 30, 70, 70))
    soft = masks.feather(square, 8)
    assert soft[50, 50] == 255 and soft[0, 0] == 0
    assert 100 < soft[50, 30] < 160  # the edge is half way
    assert len(np.unique(soft)) > 20


def test_boolean_operations_and_threshold() -> None:
    a = box_mask((10, 10), (0, 0, 6, 10))
    b = box_mask((10, 10), (4, 0, 10, 10))
    assert int((masks.union(a, b) > 0).sum()) == 100
    assert int((masks.intersection(a, b) > 0).sum()) == 20
    assert np.array_equal(masks.invert(masks.invert(a)), a)
    with pytest.raises(MaskError, match="same size"):
        masks.union(a, np.zeros((5, 5), np.uint8))
    grey = np.array([[0, 100, 128, 255]], np.uint8)
    assert masks.threshold(grey).tolist() == [[0, 0, 255, 255]]


def test_shapes_and_boxes() -> None:
    rect = masks.rectangle(SIZE, (10, 5, 30, 25))
    assert int((rect > 0).sum()) == 400
    assert masks.bounding_box(rect) == (10, 5, 30, 25)
    ell = masks.ellipse(SIZE, (0, 0, 40, 40))
    assert abs(int((ell > 0).sum()) - np.pi * 400) < 60
    tri = masks.polygon(SIZE, [(0, 0), (40, 0), (0, 40)])
    assert int((tri > 0).sum()) == 41 * 42 // 2  # vertices are inside, as in PIL
    assert masks.bounding_box(np.zeros((4, 4), np.uint8)) is None
    assert masks.crop_to_mask(rect, margin=8) == (2, 0, 38, 33)
    with pytest.raises(MaskError, match="at least 3 points"):
        masks.polygon(SIZE, [(0, 0), (1, 1)])
    with pytest.raises(MaskError, match="empty"):
        masks.rectangle(SIZE, (10, 10, 5, 20))


def test_mask_file_with_alpha_from_disk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[:, :, 3] = 255
    rgba[0:10, 0:10, 3] = 0
    path = tmp_path / "openai-mask.png"
    Image.fromarray(rgba, "RGBA").save(path)
    mask = masks.load_mask(path, size=SIZE, mask_from="alpha")
    assert int((mask > 0).sum()) == 100


def test_largest_object_and_fill_holes() -> None:
    mask = np.zeros((60, 60), np.uint8)
    mask[5:45, 5:45] = 255
    mask[15:25, 15:25] = 0  # a hole
    mask[50:55, 50:55] = 255  # a speck
    biggest = masks.largest_object(mask)
    assert biggest[50:55, 50:55].max() == 0 and biggest[5:45, 5:15].min() == 255
    filled = masks.fill_holes(mask)
    assert filled[15:25, 15:25].min() == 255 and filled[0, 0] == 0


def test_regions_are_separate_unless_their_context_overlaps() -> None:
    mask = np.zeros((1000, 1000), np.uint8)
    mask[10:30, 10:30] = 255
    mask[900:950, 900:950] = 255
    assert masks.regions(mask, 20) == [(0, 0, 50, 50), (880, 880, 970, 970)]
    mask[60:70, 60:70] = 255  # within 2 x 20 px of the first: one region with it
    assert masks.regions(mask, 20) == [(0, 0, 90, 90), (880, 880, 970, 970)]
    assert masks.regions(np.zeros((5, 5), np.uint8), 3) == []


def test_large_radii_cost_what_small_ones_do_and_stay_close_to_exact() -> None:
    """grow/shrink past 16 px use a distance transform and feather past sigma 8 a shrunken
    copy (a feather as wide as the image once took minutes): measured against the exact
    operations at a size where those still run."""
    import cv2

    square = np.zeros((512, 512), np.uint8)
    square[100:400, 150:350] = 255
    exact_grow = cv2.dilate(square, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (61, 61)))
    assert abs(int((masks.grow(square, 30) > 0).sum()) - int((exact_grow > 0).sum())) < 200
    exact_shrink = cv2.erode(square, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (41, 41)))
    assert abs(int((masks.shrink(square, 20) > 0).sum()) - int((exact_shrink > 0).sum())) < 200
    exact_feather = cv2.GaussianBlur(square, (0, 0), 20, 20, borderType=cv2.BORDER_REPLICATE)
    assert np.abs(masks.feather(square, 40).astype(int) - exact_feather.astype(int)).max() <= 4
    assert (masks.grow(square, 5000) == 255).all()  # huge radii finish (and mean it)
    assert not masks.shrink(square, 5000).any()


def test_shape_masks_off_the_picture_and_impossible_sizes_are_refused(
    tmp_path,  # type: ignore[no-untyped-def]
    capsys,
) -> None:
    """A shape wholly outside the picture selects nothing: refused (not an all-black mask);
    --size 0x0 and a size far over the pixel limit exit 2 at once, with no file written."""
    from retouch.api import Toolkit
    from retouch.cli import main
    from retouch.types import MaskRequest

    toolkit = Toolkit()
    photo = toolkit.load(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(MaskError, match="outside the 64 x 48 image") as info:
        toolkit.run(MaskRequest(image=photo, kind="rect", box=(100, 100, 120, 120)))
    assert info.value.param == "box"
    triangle = [(70.0, 0.0), (90.0, 0.0), (80.0, 20.0)]
    with pytest.raises(MaskError, match="outside"):
        toolkit.run(MaskRequest(image=photo, kind="polygon", points=triangle))
    edge = toolkit.run(MaskRequest(image=photo, kind="rect", box=(60, 40, 120, 120)))
    assert int((edge.image.pixels[:, :, 0] > 0).sum()) == 4 * 8  # clipped, kept
    out = tmp_path / "m.png"
    for size, said in (("0x0", "at least 1 px"), ("100000x100000", "over the limit")):
        try:
            code = main(["mask", "ellipse", "--size", size, "--box", "1,1,2,2", "-o", str(out)])
        except SystemExit as exited:  # argparse's own refusal
            code = int(exited.code or 0)
        assert code == 2
        assert said in capsys.readouterr().err
        assert not out.exists()
