"""Tiny randomly initialised ONNX models with the real models' input/output names, shapes and
conventions, so the providers' real loading and pre/post-processing code runs in tests:

- face restorers as facefusion exports them (GFPGAN / GPEN / RestoreFormer++: ``input``
  1 x 3 x 512 x 512 RGB in -1..1 -> the same; CodeFormer adds ``weight``, float64 [1]);
- YuNet as opencv_zoo ships it (``input`` BGR 0..255 -> ``cls_8`` ... ``kps_32``, each
  1 x cells x 1/1/4/10), read by OpenCV's FaceDetectorYN;
- EfficientSAM and SAM 2.1 encoder/decoder pairs as osam's catalog lists them.

The decoders draw discs around the first point (radii 5, 20, 40 work pixels, scores 0.3,
0.9, 0.5; each negative label lowers the second score by 0.7), so a test can see where the
point landed and which candidate was kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RADII = (5.0, 20.0, 40.0)
SCORES = (0.3, 0.9, 0.5)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _const(name: str, value: object, dtype: object = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


# --- restorers ---------------------------------------------------------------------------------


def restorer_like(path: Path, *, kind: str = "texture", weight: bool = False) -> Path:
    """A facefusion-style restorer. ``identity``: output = input; ``shift``: brighter and
    warmer by a constant; ``texture``: half a random 3x3 convolution through tanh (a real,
    local change). ``weight``: CodeFormer's second input, out = restored (1 - w) + input w."""
    shape = [1, 3, 512, 512]
    rng = np.random.default_rng(7)
    inits = []
    if kind == "identity":
        nodes = [helper.make_node("Identity", ["input"], ["restored"])]
    elif kind == "shift":
        inits.append(_const("delta", np.array([0.35, 0.2, 0.05]).reshape(1, 3, 1, 1)))
        nodes = [
            helper.make_node("Add", ["input", "delta"], ["raw"]),
            helper.make_node("Clip", ["raw", "lo", "hi"], ["restored"]),
        ]
        inits += [_const("lo", -1.0), _const("hi", 1.0)]
    else:
        inits += [
            _const("w", rng.standard_normal((3, 3, 3, 3)) * 0.4),
            _const("half", 0.5),
        ]
        nodes = [
            helper.make_node("Conv", ["input", "w"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Tanh", ["conv"], ["t"]),
            helper.make_node("Add", ["t", "input"], ["sum"]),
            helper.make_node("Mul", ["sum", "half"], ["restored"]),
        ]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)]
    if weight:
        inputs.append(helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1]))
        inits.append(_const("one", 1.0))
        nodes += [
            helper.make_node("Cast", ["weight"], ["w32"], to=TensorProto.FLOAT),
            helper.make_node("Sub", ["one", "w32"], ["keep"]),
            helper.make_node("Mul", ["restored", "keep"], ["a"]),
            helper.make_node("Mul", ["input", "w32"], ["b"]),
            helper.make_node("Add", ["a", "b"], ["output"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["restored"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "restorer_like",
        inputs,
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        initializer=inits,
    )
    return _save(graph, path)


# --- YuNet --------------------------------------------------------------------------------------

YUNET_BOX = 80.0
"""The box side the tiny YuNet reports, in input pixels."""
YUNET_LANDMARKS = ((-1.5, -1.0), (1.5, -1.0), (0.0, 0.5), (-1.0, 2.0), (1.0, 2.0))
"""Landmark offsets from the firing cell's corner, in cells of 8 px (x, y)."""


def yunet_like(path: Path) -> Path:
    """YuNet's twelve output heads. Only the stride-8 head fires, on cells whose 8 x 8 block
    is white: its box is centred on the cell, YUNET_BOX square, and its five landmarks sit
    at YUNET_LANDMARKS from the cell's corner."""
    nodes, inits, outputs = [], [], []
    for stride in (8, 16, 32):
        pooled = f"pool_{stride}"
        nodes.append(
            helper.make_node(
                "AveragePool",
                ["input"],
                [pooled],
                kernel_shape=[stride, stride],
                strides=[stride, stride],
            )
        )
        heads = {
            "cls": (1, None),
            "obj": (1, None),
            "bbox": (
                4,
                [0.5, 0.5, float(np.log(YUNET_BOX / stride)), float(np.log(YUNET_BOX / stride))],
            ),
            "kps": (10, [v for xy in YUNET_LANDMARKS for v in xy]),
        }
        for head, (channels, bias) in heads.items():
            weight = np.zeros((channels, 3, 1, 1), np.float32)
            if head in ("cls", "obj"):
                fires = stride == 8
                weight[:] = 40.0 / (3 * 255.0) if fires else 0.0
                bias_values = [-36.0 if fires else -30.0]  # mean 255 -> 40 - 36 = +4
            else:
                bias_values = bias
            inits += [
                _const(f"{head}{stride}_w", weight),
                _const(f"{head}{stride}_b", np.array(bias_values, np.float32)),
            ]
            conv = f"{head}{stride}_conv"
            nodes.append(
                helper.make_node("Conv", [pooled, f"{head}{stride}_w", f"{head}{stride}_b"], [conv])
            )
            if head in ("cls", "obj"):
                nodes.append(helper.make_node("Sigmoid", [conv], [f"{conv}_s"]))
                conv = f"{conv}_s"
            nodes.append(helper.make_node("Transpose", [conv], [f"{conv}_t"], perm=[0, 2, 3, 1]))
            inits.append(_const(f"{head}{stride}_shape", [1, -1, channels], np.int64))
            name = f"{head}_{stride}"
            nodes.append(
                helper.make_node("Reshape", [f"{conv}_t", f"{head}{stride}_shape"], [name])
            )
            outputs.append((name, channels))
    order = [f"{h}_{s}" for h in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)]
    by_name = dict(outputs)
    graph = helper.make_graph(
        nodes,
        "yunet_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "n", by_name[n]]) for n in order],
        initializer=inits,
    )
    return _save(graph, path)


# --- Segment Anything -----------------------------------------------------------------------------


def _disc_nodes(
    px: str, py: str, height: str, width: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes making ``stack`` (3 x H x W logits: discs of RADII around px, py) from scalar
    float px, py and int64 scalar height, width."""
    nodes = [
        helper.make_node("Range", ["zero_i", width, "one_i"], ["xs_i"]),
        helper.make_node("Range", ["zero_i", height, "one_i"], ["ys_i"]),
        helper.make_node("Cast", ["xs_i"], ["xs0"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["ys_i"], ["ys0"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["xs0", "half"], ["xs"]),
        helper.make_node("Add", ["ys0", "half"], ["ys"]),
        helper.make_node("Sub", ["xs", px], ["dx"]),
        helper.make_node("Sub", ["ys", py], ["dy"]),
        helper.make_node("Mul", ["dx", "dx"], ["dx2"]),
        helper.make_node("Mul", ["dy", "dy"], ["dy2"]),
        helper.make_node("Unsqueeze", ["dx2", "axis0"], ["dx2r"]),
        helper.make_node("Unsqueeze", ["dy2", "axis1"], ["dy2c"]),
        helper.make_node("Add", ["dy2c", "dx2r"], ["d2"]),
        helper.make_node("Unsqueeze", ["d2", "axis0"], ["d2s"]),
        helper.make_node("Sub", ["r2", "d2s"], ["diff"]),
        helper.make_node("Div", ["diff", "r1"], ["stack"]),
    ]
    inits = [
        _const("zero_i", 0, np.int64),
        _const("one_i", 1, np.int64),
        _const("half", 0.5),
        _const("axis0", [0], np.int64),
        _const("axis1", [1], np.int64),
        _const("r2", np.array(RADII, np.float32).reshape(3, 1, 1) ** 2),
        _const("r1", np.array(RADII, np.float32).reshape(3, 1, 1)),
    ]
    return nodes, inits


def _score_nodes(labels: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    nodes = [
        helper.make_node("Equal", [labels, "zero_f"], ["is_neg"]),
        helper.make_node("Cast", ["is_neg"], ["neg_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["neg_f"], ["negatives"], keepdims=0),
        helper.make_node("Mul", ["negatives", "penalty"], ["drop"]),
        helper.make_node("Sub", ["base_scores", "drop"], ["scores"]),
    ]
    inits = [
        _const("zero_f", 0.0),
        _const("penalty", [0.0, 0.7, 0.0]),
        _const("base_scores", list(SCORES)),
    ]
    return nodes, inits


def efficientsam_like(folder: Path) -> Path:
    """EfficientSAM's encoder (``batched_images`` -> ``image_embeddings`` 1x256x64x64) and
    decoder, saved as osam's file names in ``folder``; returns the encoder's path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    encoder = helper.make_graph(
        [
            helper.make_node(
                "Resize", ["batched_images", "", "", "size"], ["small"], mode="linear"
            ),
            helper.make_node("Conv", ["small", "w"], ["image_embeddings"]),
        ],
        "efficientsam_encoder_like",
        [helper.make_tensor_value_info("batched_images", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("image_embeddings", TensorProto.FLOAT, [1, 256, 64, 64])],
        initializer=[
            _const("size", [1, 3, 64, 64], np.int64),
            _const("w", rng.standard_normal((256, 3, 1, 1)) * 0.1),
        ],
    )
    disc, disc_inits = _disc_nodes("px", "py", "height", "width")
    scores, score_inits = _score_nodes("batched_point_labels")
    nodes = [
        helper.make_node("Gather", ["orig_im_size", "i0"], ["height"], axis=0),
        helper.make_node("Gather", ["orig_im_size", "i1"], ["width"], axis=0),
        helper.make_node("Reshape", ["batched_point_coords", "flat"], ["coords"]),
        helper.make_node("Gather", ["coords", "i0"], ["px"], axis=0),
        helper.make_node("Gather", ["coords", "i1"], ["py"], axis=0),
        *disc,
        helper.make_node("ReduceMean", ["image_embeddings"], ["feature"], keepdims=0),
        helper.make_node("Mul", ["feature", "zero_f"], ["nothing"]),
        helper.make_node("Add", ["stack", "nothing"], ["masks3"]),
        helper.make_node("Unsqueeze", ["masks3", "axes01"], ["output_masks"]),
        *scores,
        helper.make_node("Reshape", ["scores", "score_shape"], ["iou_predictions"]),
        helper.make_node("Identity", ["output_masks"], ["low_res_masks"]),
    ]
    decoder = helper.make_graph(
        nodes,
        "efficientsam_decoder_like",
        [
            helper.make_tensor_value_info("image_embeddings", TensorProto.FLOAT, [1, 256, 64, 64]),
            helper.make_tensor_value_info(
                "batched_point_coords", TensorProto.FLOAT, [1, 1, "n", 2]
            ),
            helper.make_tensor_value_info("batched_point_labels", TensorProto.FLOAT, [1, 1, "n"]),
            helper.make_tensor_value_info("orig_im_size", TensorProto.INT64, [2]),
        ],
        [
            helper.make_tensor_value_info("output_masks", TensorProto.FLOAT, [1, 1, 3, "H", "W"]),
            helper.make_tensor_value_info("iou_predictions", TensorProto.FLOAT, [1, 1, 3]),
            helper.make_tensor_value_info("low_res_masks", TensorProto.FLOAT, [1, 1, 3, "H", "W"]),
        ],
        initializer=[
            *disc_inits,
            *score_inits,
            _const("i0", 0, np.int64),
            _const("i1", 1, np.int64),
            _const("flat", [-1], np.int64),
            _const("axes01", [0, 1], np.int64),
            _const("score_shape", [1, 1, 3], np.int64),
        ],
    )
    encoder_path = _save(encoder, folder / "efficient_sam_vitt_encoder.onnx")
    _save(decoder, folder / "efficient_sam_vitt_decoder.onnx")
    return encoder_path


def sam2_like(folder: Path, *, side: int = 1024) -> Path:
    """SAM 2.1's encoder (``input`` 1x3xSxS -> ``image_embeddings``, ``high_res_features1``,
    ``high_res_features2``) and decoder (points in the S x S square, masks at
    ``orig_im_size``), saved as osam's file names; returns the encoder's path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    encoder = helper.make_graph(
        [
            helper.make_node(
                "AveragePool", ["input"], ["p16"], kernel_shape=[16, 16], strides=[16, 16]
            ),
            helper.make_node("AveragePool", ["input"], ["p4"], kernel_shape=[4, 4], strides=[4, 4]),
            helper.make_node("AveragePool", ["input"], ["p8"], kernel_shape=[8, 8], strides=[8, 8]),
            helper.make_node("Conv", ["p16", "w0"], ["image_embeddings"]),
            helper.make_node("Conv", ["p4", "w1"], ["high_res_features1"]),
            helper.make_node("Conv", ["p8", "w2"], ["high_res_features2"]),
        ],
        "sam2_encoder_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, side, side])],
        [
            helper.make_tensor_value_info(
                "image_embeddings", TensorProto.FLOAT, [1, 256, side // 16, side // 16]
            ),
            helper.make_tensor_value_info(
                "high_res_features1", TensorProto.FLOAT, [1, 32, side // 4, side // 4]
            ),
            helper.make_tensor_value_info(
                "high_res_features2", TensorProto.FLOAT, [1, 64, side // 8, side // 8]
            ),
        ],
        initializer=[
            _const("w0", rng.standard_normal((256, 3, 1, 1)) * 0.1),
            _const("w1", rng.standard_normal((32, 3, 1, 1)) * 0.1),
            _const("w2", rng.standard_normal((64, 3, 1, 1)) * 0.1),
        ],
    )
    disc, disc_inits = _disc_nodes("px", "py", "height", "width")
    scores, score_inits = _score_nodes("point_labels")
    nodes = [
        helper.make_node("Gather", ["orig_im_size", "i0"], ["height"], axis=0),
        helper.make_node("Gather", ["orig_im_size", "i1"], ["width"], axis=0),
        helper.make_node("Cast", ["height"], ["height_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["width"], ["width_f"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["point_coords", "flat"], ["coords"]),
        helper.make_node("Gather", ["coords", "i0"], ["sx"], axis=0),
        helper.make_node("Gather", ["coords", "i1"], ["sy"], axis=0),
        # from the square back to the picture: x * W / S, y * H / S
        helper.make_node("Mul", ["sx", "width_f"], ["sxw"]),
        helper.make_node("Div", ["sxw", "side"], ["px"]),
        helper.make_node("Mul", ["sy", "height_f"], ["syh"]),
        helper.make_node("Div", ["syh", "side"], ["py"]),
        *disc,
        helper.make_node("ReduceMean", ["image_embeddings"], ["f0"], keepdims=0),
        helper.make_node("ReduceMean", ["high_res_features1"], ["f1"], keepdims=0),
        helper.make_node("ReduceMean", ["high_res_features2"], ["f2"], keepdims=0),
        helper.make_node("ReduceMean", ["mask_input"], ["f3"], keepdims=0),
        helper.make_node("Sum", ["f0", "f1", "f2", "f3"], ["feature"]),
        helper.make_node("Mul", ["feature", "zero_f"], ["nothing0"]),
        helper.make_node("Mul", ["has_mask_input", "zero_f"], ["nothing1"]),
        helper.make_node("Add", ["nothing0", "nothing1"], ["nothing"]),
        helper.make_node("Add", ["stack", "nothing"], ["masks3"]),
        helper.make_node("Unsqueeze", ["masks3", "axis0"], ["masks"]),
        *scores,
        helper.make_node("Unsqueeze", ["scores", "axis0"], ["iou_predictions"]),
        helper.make_node("Identity", ["masks"], ["low_res_masks"]),
    ]
    decoder = helper.make_graph(
        nodes,
        "sam2_decoder_like",
        [
            helper.make_tensor_value_info(
                "image_embeddings", TensorProto.FLOAT, [1, 256, side // 16, side // 16]
            ),
            helper.make_tensor_value_info(
                "high_res_features1", TensorProto.FLOAT, [1, 32, side // 4, side // 4]
            ),
            helper.make_tensor_value_info(
                "high_res_features2", TensorProto.FLOAT, [1, 64, side // 8, side // 8]
            ),
            helper.make_tensor_value_info("point_coords", TensorProto.FLOAT, [1, "n", 2]),
            helper.make_tensor_value_info("point_labels", TensorProto.FLOAT, [1, "n"]),
            helper.make_tensor_value_info("mask_input", TensorProto.FLOAT, [1, 1, 256, 256]),
            helper.make_tensor_value_info("has_mask_input", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("orig_im_size", TensorProto.INT64, [2]),
        ],
        [
            helper.make_tensor_value_info("masks", TensorProto.FLOAT, [1, 3, "H", "W"]),
            helper.make_tensor_value_info("iou_predictions", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("low_res_masks", TensorProto.FLOAT, [1, 3, "H", "W"]),
        ],
        initializer=[
            *disc_inits,
            *score_inits,
            _const("i0", 0, np.int64),
            _const("i1", 1, np.int64),
            _const("flat", [-1], np.int64),
            _const("side", float(side)),
        ],
    )
    encoder_path = _save(encoder, folder / "sam2.1_tiny_preprocess.onnx")
    _save(decoder, folder / "sam2.1_tiny.onnx")
    return encoder_path
