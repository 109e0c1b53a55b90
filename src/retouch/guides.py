"""ControlNet guides: the picture a ControlNet is steered by, made from the image.

Every guide is an RGB uint8 image of the size of the picture it is made from, in the
convention its ControlNets were trained on (ControlNet 1.1): lines and edges white on black,
depth near = bright, poses as OpenPose skeletons, segmentation in ADE20K's colours.

=============  ===========================================================================
canny          OpenCV Canny edges (thresholds from the options)
lineart        dark strokes against a blurred copy of the image (difference of Gaussians)
softedge       Sobel gradient magnitude of a smoothed image, normalised: soft, HED-like
scribble       edges of a smoothed image, thickened into strokes
tile           the image itself, at the working size (the model adds the detail back)
depth          an ONNX depth model from the store (Depth Anything / DPT / MiDaS layout)
openpose       DWPose from the store: YOLOX people boxes, RTMPose keypoints, drawn as
               OpenPose body skeletons
segmentation   an ONNX semantic segmentation model (SegFormer ADE20K layout), coloured
=============  ===========================================================================

The first five need no weights. A guide whose model is missing is a ModelNotAvailable that
names the pull command and the other way: your own guide image (``control_image``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch import compose
from retouch.engines import cap_threads
from retouch.errors import InvalidRequest

MADE_WITHOUT_WEIGHTS = ("canny", "lineart", "softedge", "scribble", "tile")
MADE_BY_MODELS = {"depth": "depth", "openpose": "pose", "segmentation": "segmentation"}
"""Guides made by a model, and the store task of that model."""
SUGGESTED = {
    "depth": "depth-anything-v2-small",
    "openpose": "dwpose",
    "segmentation": "segformer-b0-ade",
}
KEEP_COLOURS = ("segmentation",)
"""Guides whose colours are codes: scaled without blending (nearest neighbour)."""

LINE_SIGMA = 2.0
LINE_GAIN = 4.0
LINE_FLOOR = 16.0
"""lineart: how far a pixel must be darker than its blurred neighbourhood to be a line."""
SOFT_SIGMA = 1.5
SCRIBBLE_SIGMA = 2.0


@dataclass(frozen=True)
class GuideSettings:
    """The knobs of the preprocessors (the diffusers provider's options carry them)."""

    canny_low: int = 100
    canny_high: int = 200
    depth_model: str | None = None
    pose_model: str | None = None
    segmentation_model: str | None = None
    threads: int | None = None


def make(guide: str, rgb: NDArray[np.uint8], settings: GuideSettings) -> NDArray[np.uint8]:
    """The ``guide`` of ``rgb`` (HxWx3 uint8), the same size."""
    makers: dict[str, Callable[[], NDArray[np.uint8]]] = {
        "canny": lambda: canny(rgb, settings.canny_low, settings.canny_high),
        "lineart": lambda: lineart(rgb),
        "softedge": lambda: softedge(rgb),
        "scribble": lambda: scribble(rgb),
        "tile": lambda: np.ascontiguousarray(rgb[:, :, :3]).copy(),
        "depth": lambda: depth_map(rgb, settings.depth_model, settings.threads),
        "openpose": lambda: pose_map(rgb, settings.pose_model, settings.threads),
        "segmentation": lambda: segmentation_map(
            rgb, settings.segmentation_model, settings.threads
        ),
    }
    if guide not in makers:
        raise InvalidRequest(f"no such guide {guide!r}; guides: {', '.join(makers)}")
    return makers[guide]()


def fit(guide: str, picture: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    """A guide image (the user's, any size) scaled to ``size`` (width, height): colour-coded
    guides without blending, the others smoothly."""
    import cv2

    rgb = np.ascontiguousarray(picture[:, :, :3])
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    if guide in KEEP_COLOURS:
        return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST), np.uint8)
    return np.asarray(compose.resize_pixels(rgb, size), np.uint8)


def _grey(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    import cv2

    return np.asarray(
        cv2.cvtColor(np.ascontiguousarray(rgb[:, :, :3]), cv2.COLOR_RGB2GRAY), np.uint8
    )


def _rgb(grey: NDArray[Any]) -> NDArray[np.uint8]:
    return np.ascontiguousarray(np.dstack([grey.astype(np.uint8)] * 3))


def canny(rgb: NDArray[np.uint8], low: int = 100, high: int = 200) -> NDArray[np.uint8]:
    import cv2

    return _rgb(cv2.Canny(_grey(rgb), low, high))


def lineart(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Ink-like lines: where a pixel is darker than its Gaussian-blurred neighbourhood, by
    ``LINE_GAIN`` x the difference; flat areas (below ``LINE_FLOOR``) stay black."""
    import cv2

    grey = _grey(rgb).astype(np.float32)
    blurred = cv2.GaussianBlur(grey, (0, 0), LINE_SIGMA)
    lines = np.clip((blurred - grey) * LINE_GAIN, 0, 255)
    lines[lines < LINE_FLOOR] = 0
    return _rgb(np.rint(lines))


def softedge(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Soft edges: the gradient magnitude of a smoothed image, its 99th percentile = white."""
    import cv2

    grey = cv2.GaussianBlur(_grey(rgb).astype(np.float32), (0, 0), SOFT_SIGMA)
    magnitude = np.hypot(
        cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    )
    top = float(np.percentile(magnitude, 99))
    if top <= 0:
        return _rgb(np.zeros(grey.shape, np.uint8))
    return _rgb(np.rint(np.clip(magnitude / top, 0, 1) * 255))


def scribble(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Rough strokes: Canny edges of a smoothed image, thickened to about 1/128 of the short
    side (4 px at 512), as hand scribbles are."""
    import cv2

    smooth = cv2.GaussianBlur(_grey(rgb), (0, 0), SCRIBBLE_SIGMA)
    edges = cv2.Canny(smooth, 40, 80)
    width = max(3, round(min(edges.shape) / 128)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    return _rgb(cv2.dilate(edges, kernel))


# --- guides made by models ------------------------------------------------------------------


def _session(path: Path, threads: int | None) -> Any:
    """The ONNX session for ``path``, kept in the process's bounded model cache (shared with
    the other ONNX/ncnn models, ``RETOUCH_MAX_LOADED_MODELS``); ``threads`` sizes its pool
    when this call is the one that loads it (capped at the machine's cores)."""
    from retouch.engines.cache import shared_models
    from retouch.engines.descriptor import file_key
    from retouch.engines.onnx_session import OnnxEngine

    def load() -> OnnxEngine:
        return OnnxEngine(path, threads=cap_threads(threads))

    engine = shared_models().get(("guide", *file_key(path)), load)
    assert isinstance(engine, OnnxEngine)
    return engine.session


def _model(guide: str, model: str | None) -> tuple[Path, dict[str, Any]]:
    """The model that makes ``guide``: the one named, else the store's first for its task."""
    from retouch.models.store import catalog_io, resolve, support_model

    task = MADE_BY_MODELS[guide]
    name = model or support_model(
        task,
        SUGGESTED[guide],
        hint=f"{guide} guides need a {task} model; or give your own {guide} map: "
        "--control-image FILE",
    )
    return resolve(str(name)), catalog_io(str(name))


def _normalised(
    rgb: NDArray[np.uint8], size: tuple[int, int], io: dict[str, Any]
) -> NDArray[np.float32]:
    mean = np.asarray(io.get("mean", (0.485, 0.456, 0.406)), np.float32)
    std = np.asarray(io.get("std", (0.229, 0.224, 0.225)), np.float32)
    pixels = compose.resize_pixels(rgb[:, :, :3], size).astype(np.float32) / 255
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1)[None])


def depth_map(
    rgb: NDArray[np.uint8], model: str | None, threads: int | None = None
) -> NDArray[np.uint8]:
    """Relative depth as a grey RGB image (near = bright, as depth ControlNets were trained
    on), from an ONNX depth model (Depth Anything / DPT / MiDaS layout: one image in, one
    depth map out), at the model's size from the catalog (default 518, a multiple of 14)."""
    path, io = _model("depth", model)
    size = int(io.get("size", 518))
    multiple = int(io.get("multiple", 14))
    session = _session(path, threads)
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    work = (_multiple(width * scale, multiple), _multiple(height * scale, multiple))
    name = session.get_inputs()[0].name
    depth = np.asarray(session.run(None, {name: _normalised(rgb, work, io)})[0], np.float32)
    depth = depth.squeeze()
    if depth.ndim != 2:
        raise InvalidRequest(f"{path}: expected one depth map out, got shape {depth.shape}")
    low, high = float(depth.min()), float(depth.max())
    span = high - low if high > low else 1.0
    grey = np.clip(np.rint((depth - low) / span * 255), 0, 255).astype(np.uint8)
    return _rgb(compose.resize_pixels(grey, (width, height)))


def _multiple(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


# --- segmentation -----------------------------------------------------------------------------


def ade20k_palette() -> NDArray[np.uint8]:
    """ADE20K's 150 class colours, in class order."""
    text = resources.files("retouch.data").joinpath("ade20k_palette.json").read_text("utf-8")
    return np.asarray(json.loads(text)["colours"], np.uint8)


def segmentation_map(
    rgb: NDArray[np.uint8], model: str | None, threads: int | None = None
) -> NDArray[np.uint8]:
    """Each pixel in the colour of its ADE20K class (what segmentation ControlNets read), from
    an ONNX model that takes a normalised image (size from the catalog, default 512) and
    gives 150 class scores per pixel at any resolution (SegFormer: a quarter of its input)."""
    import cv2

    path, io = _model("segmentation", model)
    size = int(io.get("size", 512))
    session = _session(path, threads)
    name = session.get_inputs()[0].name
    scores = np.asarray(session.run(None, {name: _normalised(rgb, (size, size), io)})[0])
    palette = ade20k_palette()
    if scores.ndim != 4 or scores.shape[1] != len(palette):
        raise InvalidRequest(
            f"{path}: expected {len(palette)} ADE20K class scores per pixel "
            f"([1, {len(palette)}, H, W]), got shape {scores.shape}"
        )
    classes = np.argmax(scores[0], axis=0).astype(np.uint8)
    height, width = rgb.shape[:2]
    classes = cv2.resize(classes, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(palette[classes])


# --- pose ---------------------------------------------------------------------------------------

POSE_MEAN = (123.675, 116.28, 103.53)
POSE_STD = (58.395, 57.12, 57.375)
POSE_PADDING = 1.25
"""A person box is enlarged by this before the pose model sees it (RTMPose's top-down
convention)."""
SIMCC_SPLIT = 2.0
"""RTMPose's SimCC heads give this many bins per input pixel."""
KEYPOINT_THRESHOLD = 0.3
PERSON_THRESHOLD = 0.3
NMS_THRESHOLD = 0.45
DETECTOR_PAD = 114
STRIDES = (8, 16, 32)

# OpenPose's 18 body keypoints, each from the COCO keypoints RTMPose/DWPose gives: nose,
# neck (between the shoulders), right arm, left arm, right leg, left leg, eyes, ears.
COCO_FOR_OPENPOSE = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
# OpenPose's limbs (pairs of its keypoints) and colours, as pose ControlNets were trained on.
LIMBS = (
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
)
POSE_COLOURS = (
    (255, 0, 0),
    (255, 85, 0),
    (255, 170, 0),
    (255, 255, 0),
    (170, 255, 0),
    (85, 255, 0),
    (0, 255, 0),
    (0, 255, 85),
    (0, 255, 170),
    (0, 255, 255),
    (0, 170, 255),
    (0, 85, 255),
    (0, 0, 255),
    (85, 0, 255),
    (170, 0, 255),
    (255, 0, 255),
    (255, 0, 170),
    (255, 0, 85),
)
STICK_WIDTH = 4
JOINT_RADIUS = 4


def pose_map(
    rgb: NDArray[np.uint8], model: str | None, threads: int | None = None
) -> NDArray[np.uint8]:
    """OpenPose body skeletons of the people in ``rgb`` on black.

    People are found by the detector the catalog names beside the pose model (DWPose's
    YOLOX); a pose model without one (an added file) takes the whole image as one person.
    """
    path, io = _model("openpose", model)
    pose = _session(path, threads)
    detector_file = io.get("detector")
    detector = path.parent / str(detector_file) if detector_file else None
    height, width = rgb.shape[:2]
    if detector is not None and detector.is_file():
        boxes = detect_people(rgb, _session(detector, threads))
    else:
        boxes = [(0.0, 0.0, float(width), float(height))]
    canvas = np.zeros((height, width, 3), np.uint8)
    for box in boxes:
        points, scores = estimate_pose(rgb, box, pose)
        draw_body(canvas, *openpose_keypoints(points, scores))
    return canvas


def detect_people(rgb: NDArray[np.uint8], session: Any) -> list[tuple[float, float, float, float]]:
    """Person boxes (x0, y0, x1, y1) from a YOLOX ONNX detector (raw grid outputs, objectness
    and class scores already sigmoid-ed, as DWPose's yolox_l.onnx gives them) at its input
    size, the image letterboxed top-left on grey 114. The detector was trained on BGR."""
    import cv2

    shape = session.get_inputs()[0].shape
    side_h = int(shape[2]) if isinstance(shape[2], int) else 640
    side_w = int(shape[3]) if isinstance(shape[3], int) else 640
    height, width = rgb.shape[:2]
    ratio = min(side_h / height, side_w / width)
    resized = cv2.resize(
        np.ascontiguousarray(rgb[:, :, 2::-1]),
        (max(1, int(width * ratio)), max(1, int(height * ratio))),
        interpolation=cv2.INTER_LINEAR,
    )
    padded = np.full((side_h, side_w, 3), DETECTOR_PAD, np.uint8)
    padded[: resized.shape[0], : resized.shape[1]] = resized
    batch = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], np.float32)
    raw = np.asarray(session.run(None, {session.get_inputs()[0].name: batch})[0], np.float32)[0]
    grids, strides = [], []
    for stride in STRIDES:
        rows, cols = side_h // stride, side_w // stride
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((rows * cols, 1), stride))
    grid, stride_of = np.concatenate(grids), np.concatenate(strides)
    if raw.ndim != 2 or raw.shape[0] != len(grid) or raw.shape[1] < 6:
        raise InvalidRequest(
            f"person detector: expected [1, {len(grid)}, 5 + classes] YOLOX outputs for a "
            f"{side_w} x {side_h} input, got {raw.shape}"
        )
    centres = (raw[:, :2] + grid) * stride_of
    sizes = np.exp(raw[:, 2:4]) * stride_of
    person = raw[:, 4] * raw[:, 5]  # objectness x the person class (class 0)
    keep = person > PERSON_THRESHOLD
    if not keep.any():
        return []
    centres, sizes, person = centres[keep] / ratio, sizes[keep] / ratio, person[keep]
    boxes = np.concatenate([centres - sizes / 2, sizes], axis=1)  # x, y, w, h
    chosen = cv2.dnn.NMSBoxes(boxes.tolist(), person.tolist(), PERSON_THRESHOLD, NMS_THRESHOLD)
    found = []
    for index in np.asarray(chosen).reshape(-1):
        x, y, w, h = boxes[int(index)]
        x0, y0 = max(0.0, float(x)), max(0.0, float(y))
        x1, y1 = min(float(width), float(x + w)), min(float(height), float(y + h))
        if x1 > x0 and y1 > y0:
            found.append((x0, y0, x1, y1))
    return found


def estimate_pose(
    rgb: NDArray[np.uint8], box: tuple[float, float, float, float], session: Any
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """COCO keypoints (x, y in the image) and their scores for the person in ``box``, from an
    RTMPose/DWPose SimCC model (input [1, 3, H, W]; outputs simcc_x [1, K, W x 2] and simcc_y
    [1, K, H x 2]); the box, enlarged by ``POSE_PADDING`` to the model's aspect ratio, is
    warped to the model's input size."""
    import cv2

    shape = session.get_inputs()[0].shape
    in_h = int(shape[2]) if isinstance(shape[2], int) else 384
    in_w = int(shape[3]) if isinstance(shape[3], int) else 288
    x0, y0, x1, y1 = box
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32)
    box_w, box_h = (x1 - x0) * POSE_PADDING, (y1 - y0) * POSE_PADDING
    aspect = in_w / in_h
    if box_w > box_h * aspect:
        box_h = box_w / aspect
    else:
        box_w = box_h * aspect
    scale = in_w / box_w
    warp = np.array(
        [
            [scale, 0, in_w / 2 - centre[0] * scale],
            [0, scale, in_h / 2 - centre[1] * scale],
        ],
        np.float32,
    )
    crop = cv2.warpAffine(
        np.ascontiguousarray(rgb[:, :, :3]), warp, (in_w, in_h), flags=cv2.INTER_LINEAR
    )
    pixels = (crop.astype(np.float32) - np.asarray(POSE_MEAN, np.float32)) / np.asarray(
        POSE_STD, np.float32
    )
    batch = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])
    simcc_x, simcc_y = session.run(None, {session.get_inputs()[0].name: batch})[:2]
    simcc_x, simcc_y = np.asarray(simcc_x)[0], np.asarray(simcc_y)[0]
    xs = np.argmax(simcc_x, axis=1) / SIMCC_SPLIT
    ys = np.argmax(simcc_y, axis=1) / SIMCC_SPLIT
    scores = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1)).astype(np.float32)
    points = np.stack([xs, ys], axis=1).astype(np.float32)
    points = (
        points - np.asarray([in_w / 2, in_h / 2], np.float32)
    ) / scale + centre  # back to the image
    return points.astype(np.float32), scores


def openpose_keypoints(
    coco: NDArray[np.float32], scores: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """OpenPose's 18 body keypoints from COCO's first 17 (the neck between the shoulders),
    and which are seen (score above ``KEYPOINT_THRESHOLD``)."""
    if len(coco) < 17:
        raise InvalidRequest(f"pose model: expected at least 17 COCO keypoints, got {len(coco)}")
    points = np.zeros((18, 2), np.float32)
    seen = np.zeros(18, bool)
    for target, source in enumerate(COCO_FOR_OPENPOSE):
        if source < 0:  # the neck
            points[target] = (coco[5] + coco[6]) / 2
            seen[target] = bool(min(scores[5], scores[6]) > KEYPOINT_THRESHOLD)
        else:
            points[target] = coco[source]
            seen[target] = bool(scores[source] > KEYPOINT_THRESHOLD)
    return points, seen


def draw_body(
    canvas: NDArray[np.uint8], points: NDArray[np.float32], seen: NDArray[np.bool_]
) -> None:
    """OpenPose's body drawing: limbs as ellipses at 60 % of their colour, joints as discs."""
    import cv2

    for index, (a, b) in enumerate(LIMBS):
        if not (seen[a] and seen[b]):
            continue
        (xa, ya), (xb, yb) = points[a], points[b]
        length = float(np.hypot(xa - xb, ya - yb))
        angle = float(np.degrees(np.arctan2(ya - yb, xa - xb)))
        polygon = cv2.ellipse2Poly(
            (int((xa + xb) / 2), int((ya + yb) / 2)),
            (int(length / 2), STICK_WIDTH),
            int(angle),
            0,
            360,
            1,
        )
        colour = tuple(int(c * 0.6) for c in POSE_COLOURS[index])
        cv2.fillConvexPoly(canvas, np.asarray(polygon, np.int32), colour)
    for index in range(18):
        if seen[index]:
            x, y = points[index]
            cv2.circle(canvas, (int(x), int(y)), JOINT_RADIUS, POSE_COLOURS[index], thickness=-1)
