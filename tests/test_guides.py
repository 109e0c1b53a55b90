"""ControlNet guides made from the image: OpenCV ones against references computed here,
model-made ones (depth, pose, segmentation) with ONNX fakes whose output is known."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from retouch import guides
from retouch.errors import ModelNotAvailable
from retouch.models.store import ModelStore

from .fake_guides import (
    DETECTOR_SIDE,
    POSE_INPUT,
    POSE_POINTS,
    SEGMENT_CLASSES,
    detector_model,
    luminance_depth_model,
    pose_model,
    segmentation_model,
)

SETTINGS = guides.GuideSettings()


@pytest.fixture
def photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[::4, ::4])  # 128 x 128


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path / "home"))
    return ModelStore()


def stroke_page() -> np.ndarray:
    """A white page with a dark 2 px vertical stroke at x = 30..31."""
    page = np.full((64, 64, 3), 240, np.uint8)
    page[:, 30:32] = 20
    return page


def grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def test_canny_is_opencv_canny_of_the_grey_image(photo: np.ndarray) -> None:
    made = guides.make("canny", photo, guides.GuideSettings(canny_low=50, canny_high=150))
    expected = cv2.Canny(grey(photo), 50, 150)
    assert made.shape == photo.shape and made.dtype == np.uint8
    assert all(np.array_equal(made[:, :, c], expected) for c in range(3))


def test_lineart_marks_dark_strokes_white_on_black(photo: np.ndarray) -> None:
    lines = guides.make("lineart", stroke_page(), SETTINGS)[:, :, 0]
    assert lines[:, 30:32].min() >= 200  # the stroke, bright
    assert lines[:, :24].max() == 0 and lines[:, 38:].max() == 0  # the page, black
    assert guides.make("lineart", np.full((32, 32, 3), 90, np.uint8), SETTINGS).max() == 0
    inverted = guides.make("lineart", 255 - stroke_page(), SETTINGS)[:, :, 0]
    assert inverted[:, 30:32].max() == 0  # a light stroke on dark is no ink line
    # The documented recipe: darker than the Gaussian-blurred neighbourhood, x4, floor 16.
    g = grey(photo).astype(np.float32)
    reference = np.clip((cv2.GaussianBlur(g, (0, 0), 2.0) - g) * 4.0, 0, 255)
    reference[reference < 16] = 0
    assert np.array_equal(guides.make("lineart", photo, SETTINGS)[:, :, 0], np.rint(reference))


def test_softedge_is_soft_and_peaks_on_edges(photo: np.ndarray) -> None:
    step = np.zeros((64, 64, 3), np.uint8)
    step[:, 32:] = 255
    soft = guides.make("softedge", step, SETTINGS)[:, :, 0]
    assert soft[:, 30:34].max() == 255 and soft[:, :24].max() == 0 and soft[:, 42:].max() == 0
    assert guides.make("softedge", np.full((16, 16, 3), 7, np.uint8), SETTINGS).max() == 0
    on_photo = guides.make("softedge", photo, SETTINGS)[:, :, 0]
    assert len(np.unique(on_photo)) > 100  # grey levels, not a binary edge map


def test_scribble_is_thick_binary_strokes_along_the_edges(photo: np.ndarray) -> None:
    strokes = guides.make("scribble", photo, SETTINGS)[:, :, 0]
    assert set(np.unique(strokes)) <= {0, 255}
    edges = cv2.Canny(cv2.GaussianBlur(grey(photo), (0, 0), 2.0), 40, 80)
    assert (strokes > 0).sum() >= 2 * (edges > 0).sum()  # thickened
    assert (strokes[edges > 0] == 255).all()  # over every edge


def test_tile_is_the_image_and_user_guides_are_scaled_to_fit(photo: np.ndarray) -> None:
    assert np.array_equal(guides.make("tile", photo, SETTINGS), photo)
    labels = np.zeros((128, 128, 3), np.uint8)
    labels[:, 64:] = (6, 230, 230)
    labels[:64, :64] = (4, 200, 3)
    fitted = guides.fit("segmentation", labels, (37, 37))
    colours = {tuple(c) for c in fitted.reshape(-1, 3)}
    assert colours == {(0, 0, 0), (6, 230, 230), (4, 200, 3)}  # codes kept: nearest neighbour
    sketch = guides.fit("scribble", labels, (37, 37))
    assert len({tuple(c) for c in sketch.reshape(-1, 3)}) > 3  # smooth scaling
    assert np.array_equal(guides.fit("canny", photo, (128, 128)), photo)


def test_depth_map_from_the_store(store: ModelStore, tmp_path: Path, photo: np.ndarray) -> None:
    with pytest.raises(ModelNotAvailable, match=r"depth-anything-v2-small.*--control-image"):
        guides.make("depth", photo, SETTINGS)
    store.add("my-depth", luminance_depth_model(tmp_path / "depth.onnx"), task="depth")
    depth = guides.make("depth", photo, SETTINGS)
    # The model's map (mean of the normalised channels) at its working size, scaled to
    # 0..255 and back to the photo's size: it follows the photo's brightness.
    assert depth.shape == photo.shape and depth.min() == 0 and depth.max() >= 250
    brightness = photo.astype(float).mean(axis=2)
    assert np.corrcoef(depth[..., 0].ravel(), brightness.ravel())[0, 1] > 0.95


def test_segmentation_map_in_ade20k_colours(
    store: ModelStore, tmp_path: Path, photo: np.ndarray
) -> None:
    from retouch.compose import resize_pixels

    with pytest.raises(ModelNotAvailable, match=r"segformer-b0-ade.*--control-image"):
        guides.make("segmentation", photo, SETTINGS)
    store.add("my-seg", segmentation_model(tmp_path / "seg.onnx"), task="segmentation")
    made = guides.make("segmentation", photo, SETTINGS)
    # By hand: normalise at 512 px, average 4 x 4 blocks, the dominant channel's class, its
    # ADE20K colour (class 2 is (6, 230, 230), 4 is (4, 200, 3), 12 is (150, 5, 61)).
    pixels = resize_pixels(photo, (512, 512)).astype(np.float32) / 255
    normal = (pixels - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
    pooled = normal.reshape(128, 4, 128, 4, 3).mean(axis=(1, 3))
    label = np.array(SEGMENT_CLASSES)[pooled.argmax(axis=2)]
    colours = {2: (6, 230, 230), 4: (4, 200, 3), 12: (150, 5, 61)}
    expected = np.array([colours[int(k)] for k in label.ravel()], np.uint8).reshape(128, 128, 3)
    assert np.array_equal(made, expected)  # 128 -> 128: the nearest-neighbour resize is exact


def pose_box(width: int, height: int) -> tuple[np.ndarray, float]:
    """Where the pose model's input lies over a whole-image box: its centre and scale (the
    box grown by 1.25 to the model's 3:4 aspect)."""
    in_h, in_w = POSE_INPUT
    box_w, box_h = width * 1.25, height * 1.25
    if box_w > box_h * in_w / in_h:
        box_h = box_w * in_h / in_w
    else:
        box_w = box_h * in_w / in_h
    return np.array([width / 2, height / 2]), in_w / box_w


def test_pose_skeleton_drawn_in_openpose_colours(
    store: ModelStore, tmp_path: Path, photo: np.ndarray
) -> None:
    with pytest.raises(ModelNotAvailable, match=r"dwpose.*--control-image"):
        guides.make("openpose", photo, SETTINGS)
    store.add("my-pose", pose_model(tmp_path / "pose.onnx"), task="pose")
    skeleton = guides.make("openpose", photo, SETTINGS)
    centre, scale = pose_box(128, 128)
    in_h, in_w = POSE_INPUT
    image_points = (POSE_POINTS - (in_w / 2, in_h / 2)) / scale + centre
    # OpenPose's joint colours: nose red, neck orange, right shoulder (COCO 6) (255, 170, 0),
    # left wrist (COCO 9, OpenPose's 7) (0, 255, 85), right ankle (COCO 16, OpenPose's 10)
    # (0, 170, 255).
    joints = ((0, (255, 0, 0)), (6, (255, 170, 0)), (9, (0, 255, 85)), (16, (0, 170, 255)))
    for coco, colour in joints:
        x, y = image_points[coco].astype(int)
        assert tuple(skeleton[y, x]) == colour, coco
    neck = ((image_points[5] + image_points[6]) / 2).astype(int)
    assert tuple(skeleton[neck[1], neck[0]]) == (255, 85, 0)
    drawn = skeleton.max(axis=2) > 0
    assert 0.02 < drawn.mean() < 0.3  # a figure, not a filled image
    top = image_points[:, 1].min() - 6
    right = image_points[:, 0].max() + 6
    assert not drawn[: int(top)].any() and not drawn[:, int(right) :].any()
    # Keypoints the model is unsure of (score under 0.3) are left out, with their limbs.
    store.add("unsure-pose", pose_model(tmp_path / "p2.onnx", hidden=(9, 10)), task="pose")
    partial = guides.make("openpose", photo, guides.GuideSettings(pose_model="unsure-pose"))
    for coco in (9, 10):
        x, y = image_points[coco].astype(int)
        assert partial[y, x].max() == 0


def test_people_found_by_the_detector_get_their_own_box(tmp_path: Path, photo: np.ndarray) -> None:
    """YOLOX outputs decoded on its grid: the skeleton lands inside the detected box."""
    pose = pose_model(tmp_path / "pose.onnx")
    detector = detector_model(tmp_path / "yolox_l.onnx", cell=(2, 3), box=(16, 24))
    session = guides._session(detector, 1)
    boxes = guides.detect_people(photo, session)
    ratio = DETECTOR_SIDE / 128
    centre = ((2 + 0.5) * 8 / ratio, (3 + 0.5) * 8 / ratio)
    assert len(boxes) == 1
    x0, y0, x1, y1 = boxes[0]
    assert np.allclose([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], [*centre, 32, 48])
    points, scores = guides.estimate_pose(photo, boxes[0], guides._session(pose, 1))
    assert (scores > 0.5).all()
    assert (points[:, 0] > x0 - 8).all() and (points[:, 0] < x1 + 8).all()
    assert (points[:, 1] > y0 - 8).all() and (points[:, 1] < y1 + 8).all()


@pytest.mark.parametrize(
    "guide",
    ["canny", "lineart", "softedge", "scribble", "tile", "depth", "openpose", "segmentation"],
)
def test_every_guide_matches_its_reference(
    guide: str, store: ModelStore, tmp_path: Path, photo: np.ndarray
) -> None:
    from .fake_guides import reference, register_guide_models

    register_guide_models(store, tmp_path)
    assert np.array_equal(guides.make(guide, photo, SETTINGS), reference(guide, photo))
