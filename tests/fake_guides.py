"""ONNX graphs shaped like the guide models (depth, DWPose, YOLOX, SegFormer) whose outputs
can be worked out by hand, so a test can compute the guide it expects."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(graph: object, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])  # type: ignore[arg-type]
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def luminance_depth_model(path: Path) -> Path:
    """A depth-model-shaped graph (pixel_values [1,3,H,W] -> predicted_depth [1,H,W]):
    "depth" is the mean of the normalised channels."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["pixel_values", "axis"], ["mean"], keepdims=0)],
        "depth_like",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, "h", "w"])],
        initializer=[numpy_helper.from_array(np.array([1], np.int64), "axis")],
    )
    return _save(graph, path)


POSE_INPUT = (32, 24)
"""(height, width) of the fake pose model's input (DWPose's is 384 x 288: the same aspect)."""
# A standing figure in the pose model's input pixels: COCO's 17 keypoints (x, y), inside
# the part of the input a whole square image covers (the box grows by 1.25 to 3:4).
POSE_POINTS = np.array(
    [
        (12, 9),  # nose
        (11, 8),  # left eye
        (13, 8),  # right eye
        (10, 9),  # left ear
        (14, 9),  # right ear
        (9, 11),  # left shoulder
        (15, 11),  # right shoulder
        (8, 14),  # left elbow
        (16, 14),  # right elbow
        (7, 17),  # left wrist
        (17, 17),  # right wrist
        (10, 17),  # left hip
        (14, 17),  # right hip
        (10, 20),  # left knee
        (14, 20),  # right knee
        (10, 23),  # left ankle
        (14, 23),  # right ankle
    ],
    np.float32,
)


def pose_model(path: Path, points: np.ndarray = POSE_POINTS, hidden: tuple[int, ...] = ()) -> Path:
    """An RTMPose/DWPose-shaped graph (input [1,3,32,24]; simcc_x [1,17,48], simcc_y
    [1,17,64], two bins per pixel) that always finds ``points`` (input pixels) with score
    0.9, except the keypoints in ``hidden`` (score 0.1)."""
    from onnx import TensorProto, helper, numpy_helper

    height, width = POSE_INPUT
    simcc_x = np.zeros((1, 17, width * 2), np.float32)
    simcc_y = np.zeros((1, 17, height * 2), np.float32)
    for index, (x, y) in enumerate(points):
        score = 0.1 if index in hidden else 0.9
        simcc_x[0, index, int(x * 2)] = score
        simcc_y[0, index, int(y * 2)] = score
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x_bins"], ["simcc_x"]),
            helper.make_node("Identity", ["y_bins"], ["simcc_y"]),
        ],
        "pose_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, height, width])],
        [
            helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, list(simcc_x.shape)),
            helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, list(simcc_y.shape)),
        ],
        initializer=[
            numpy_helper.from_array(simcc_x, "x_bins"),
            numpy_helper.from_array(simcc_y, "y_bins"),
        ],
    )
    return _save(graph, path)


DETECTOR_SIDE = 64


def detector_model(path: Path, cell: tuple[int, int], box: tuple[float, float]) -> Path:
    """A YOLOX-shaped graph (input [1,3,64,64]; raw outputs [1, 84, 6]: stride 8, 16 and 32
    grids, one class) that finds one person: in the stride-8 ``cell`` (column, row), centred
    in it, ``box`` (width, height) input pixels big, objectness and class 0.95."""
    from onnx import TensorProto, helper, numpy_helper

    rows = sum((DETECTOR_SIDE // s) ** 2 for s in (8, 16, 32))
    raw = np.zeros((1, rows, 6), np.float32)
    raw[0, :, 2:4] = -5  # tiny boxes, no objectness: nothing
    index = cell[1] * (DETECTOR_SIDE // 8) + cell[0]
    raw[0, index] = (0.5, 0.5, np.log(box[0] / 8), np.log(box[1] / 8), 0.95, 0.95)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["raw"], ["output"])],
        "yolox_like",
        [
            helper.make_tensor_value_info(
                "images", TensorProto.FLOAT, [1, 3, DETECTOR_SIDE, DETECTOR_SIDE]
            )
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(raw.shape))],
        initializer=[numpy_helper.from_array(raw, "raw")],
    )
    return _save(graph, path)


SEGMENT_CLASSES = (2, 4, 12)
"""The fake segmenter's classes for the image's dominant (normalised) red, green, blue."""


def segmentation_model(path: Path) -> Path:
    """A SegFormer-shaped graph (pixel_values [1,3,H,W] -> logits [1,150,H/4,W/4]): a 1 x 1
    convolution scores class 2 by the normalised red, 4 by green, 12 by blue (the others
    -10), averaged over 4 x 4 blocks."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((150, 3, 1, 1), np.float32)
    bias = np.full(150, -10.0, np.float32)
    for channel, label in enumerate(SEGMENT_CLASSES):
        weight[label, channel] = 1.0
        bias[label] = 0.0
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["pixel_values", "w", "b"], ["scores"]),
            helper.make_node(
                "AveragePool", ["scores"], ["logits"], kernel_shape=[4, 4], strides=[4, 4]
            ),
        ],
        "segformer_like",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 150, "h4", "w4"])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    return _save(graph, path)


def reference(guide: str, rgb: np.ndarray) -> np.ndarray:
    """The guide a test expects, worked out here from each guide's documented recipe (and,
    for the model-made ones, from what the fakes above compute)."""
    import cv2

    from retouch.compose import resize_pixels

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    height, width = grey.shape
    if guide == "canny":
        out = cv2.Canny(grey, 100, 200)
    elif guide == "lineart":  # darker than the Gaussian (2 px) surroundings, x4, floor 16
        g = grey.astype(np.float32)
        lines = np.clip((cv2.GaussianBlur(g, (0, 0), 2.0) - g) * 4.0, 0, 255)
        lines[lines < 16] = 0
        out = np.rint(lines)
    elif guide == "softedge":  # Sobel magnitude of a 1.5 px blur, its 99th percentile white
        g = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.5)
        magnitude = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
        out = np.rint(np.clip(magnitude / np.percentile(magnitude, 99), 0, 1) * 255)
    elif guide == "scribble":  # Canny of a 2 px blur, thickened by a 3 px disc (small images)
        edges = cv2.Canny(cv2.GaussianBlur(grey, (0, 0), 2.0), 40, 80)
        out = cv2.dilate(edges, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    elif guide == "tile":
        return rgb.copy()
    elif guide == "depth":  # the luminance model at 518 px, stretched to 0..255
        pixels = resize_pixels(rgb, (518, 518)).astype(np.float32) / 255
        normal = (pixels - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
        depth = normal.astype(np.float32).mean(axis=2)
        depth = np.rint((depth - depth.min()) / (depth.max() - depth.min()) * 255)
        out = resize_pixels(depth.astype(np.uint8), (width, height))
    elif guide == "segmentation":  # the dominant normalised channel per 4 x 4 block at 512
        pixels = resize_pixels(rgb, (512, 512)).astype(np.float32) / 255
        normal = (pixels - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
        pooled = normal.reshape(128, 4, 128, 4, 3).mean(axis=(1, 3))
        colours = np.array([(6, 230, 230), (4, 200, 3), (150, 5, 61)], np.uint8)
        coloured = colours[pooled.argmax(axis=2)]
        return np.asarray(cv2.resize(coloured, (width, height), interpolation=cv2.INTER_NEAREST))
    elif guide == "openpose":  # the fake's figure over a whole-image box, OpenPose's drawing
        from retouch import guides

        in_h, in_w = POSE_INPUT
        box_w, box_h = width * 1.25, height * 1.25
        if box_w > box_h * in_w / in_h:
            box_h = box_w * in_h / in_w
        else:
            box_w = box_h * in_w / in_h
        scale = in_w / box_w
        points = (POSE_POINTS - (in_w / 2, in_h / 2)) / scale + (width / 2, height / 2)
        canvas = np.zeros((height, width, 3), np.uint8)
        guides.draw_body(canvas, *guides.openpose_keypoints(points, np.full(17, 0.9, np.float32)))
        return canvas
    else:
        raise ValueError(guide)
    return np.ascontiguousarray(np.dstack([np.asarray(out, np.uint8)] * 3))


def register_guide_models(store: object, folder: Path) -> None:
    """The fakes in the store, under the tasks the guides look for."""
    store.add("fake-depth", luminance_depth_model(folder / "depth.onnx"), task="depth")  # type: ignore[attr-defined]
    store.add("fake-pose", pose_model(folder / "pose.onnx"), task="pose")  # type: ignore[attr-defined]
    store.add("fake-seg", segmentation_model(folder / "seg.onnx"), task="segmentation")  # type: ignore[attr-defined]
