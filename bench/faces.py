"""Face restoration and detection costs.

    .venv/bin/python bench/faces.py

- **Seconds per face at 512** through retouch's restorer path (detect, align, run the ONNX
  restorer, match colours, paste back) against a bare onnxruntime session running the same
  model on one 1 x 3 x 512 x 512 input: their ratio is what the path adds. Two stand-ins
  with facefusion's exact inputs and outputs are timed: ``tiny`` (one 3x3 convolution: the
  figures are the plumbing's alone) and ``medium`` (eight 3x3 convolutions of 32 channels
  at 256 px: about 5 GFLOP, a model whose own cost dominates); the real GFPGAN / CodeFormer
  when they are in your store (``retouch models pull gfpgan-1.4 --trust``).
- **Detection milliseconds per megapixel**: Haar (no download) on the astronaut at 512,
  1024 and 2048 px, and YuNet (a tiny stand-in with its twelve output heads, so the figure
  is OpenCV's decoding and NMS, and the real model when it is in your store).
- **Click masks**: GrabCut (no weights) per click on the shuttle.

Best of ``--repeat`` runs (default 3) after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retouch import compose
from retouch import faces as face_ops
from retouch.api import Toolkit
from retouch.models.store import ModelStore, default_home
from retouch.providers.sam import Prompt, grabcut


def best(call: Callable[[], object], repeat: int) -> float:
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def medium_restorer(path: Path) -> Path:
    """Facefusion's restorer signature around eight 32-channel convolutions at 256 px."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("AveragePool", ["input"], ["x0"], kernel_shape=[2, 2], strides=[2, 2])
    ]
    inits = [
        numpy_helper.from_array((rng.standard_normal((32, 3, 3, 3)) * 0.2).astype(np.float32), "w0")
    ]
    nodes.append(helper.make_node("Conv", ["x0", "w0"], ["c0"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c0"], ["r0"]))
    for i in range(1, 7):
        inits.append(
            numpy_helper.from_array(
                (rng.standard_normal((32, 32, 3, 3)) * 0.06).astype(np.float32), f"w{i}"
            )
        )
        nodes.append(helper.make_node("Conv", [f"r{i - 1}", f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
    inits.append(
        numpy_helper.from_array(
            (rng.standard_normal((3, 32, 3, 3)) * 0.06).astype(np.float32), "w7"
        )
    )
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
    nodes += [
        helper.make_node("Conv", ["r6", "w7"], ["c7"], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c7", "", "scales"], ["up"], mode="linear"),
        helper.make_node("Tanh", ["up"], ["t"]),
        helper.make_node("Add", ["t", "input"], ["output"]),
    ]
    shape = [1, 3, 512, 512]
    graph = helper.make_graph(
        nodes,
        "medium_restorer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def bare_session_seconds(path: Path, repeat: int) -> float:
    import onnxruntime as ort

    from retouch.engines import default_threads

    options = ort.SessionOptions()
    options.intra_op_num_threads = default_threads()
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    feed = {"input": np.zeros((1, 3, 512, 512), np.float32)}
    names = {i.name for i in session.get_inputs()}
    if "weight" in names:
        feed["weight"] = np.array([0.5], np.float64)
    return best(lambda: session.run(None, feed), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    repeat = args.repeat
    photo = data.astronaut()
    real = ModelStore(default_home())
    with tempfile.TemporaryDirectory() as home:
        from tests.tiny_faces import restorer_like, yunet_like

        os.environ["RETOUCH_HOME"] = home
        store = ModelStore()
        models = {
            "tiny": restorer_like(Path(home) / "tiny.onnx"),
            "medium": medium_restorer(Path(home) / "medium.onnx"),
        }
        for name in ("gfpgan-1.4", "codeformer"):
            found = real.find(name)
            if found is not None:
                models[name] = found
        print("restore-faces, one face, the astronaut at 512 px")
        print(
            f"{'model':<12} {'retouch s/face':>15} {'bare ORT s':>11} {'ratio':>6} {'detect s':>9}"
        )
        toolkit = Toolkit()
        detect = best(lambda: face_ops.HaarDetector().detect(photo), repeat)
        for name, path in models.items():
            store.add(f"bench-{name}", path, task="restore-faces")
            result = toolkit.restore_faces(photo, model=f"bench-{name}")
            count = max(1, result.usage["restored"])
            ours = best(
                lambda name=name: toolkit.restore_faces(photo, model=f"bench-{name}"), repeat
            )
            bare = bare_session_seconds(path, repeat)
            print(
                f"{name:<12} {ours / count:>15.3f} {bare:>11.3f} {ours / count / bare:>6.2f} {detect:>9.3f}"
            )

        print("\nface detection, milliseconds per megapixel (the astronaut, resized)")
        yunet = face_ops.YuNetDetector(yunet_like(Path(home) / "yunet.onnx"))
        detectors: dict[str, object] = {"haar": face_ops.HaarDetector(), "yunet (stand-in)": yunet}
        real_yunet = real.find("yunet")
        if real_yunet is not None:
            detectors["yunet"] = face_ops.YuNetDetector(real_yunet)
        print(f"{'detector':<18} " + " ".join(f"{s:>9}" for s in ("512 px", "1024 px", "2048 px")))
        for label, detector in detectors.items():
            row = []
            for side in (512, 1024, 2048):
                image = photo if side == 512 else compose.resize_pixels(photo, (side, side))
                seconds = best(
                    lambda image=image, detector=detector: detector.detect(image), repeat
                )  # type: ignore[attr-defined]
                row.append(seconds * 1000 / (side * side / 1e6))
            print(f"{label:<18} " + " ".join(f"{v:>9.0f}" for v in row))

        print("\nclick masks with no weights (GrabCut), the shuttle")
        for label, prompt in (
            ("box", Prompt((), (), (350, 0, 475, 290))),
            ("3 clicks", Prompt(((418, 100), (395, 150), (410, 230)), (), None)),
        ):
            seconds = best(lambda prompt=prompt: grabcut(photo, prompt, iterations=5), repeat)
            print(f"{label:<10} {seconds:.2f} s")


if __name__ == "__main__":
    main()
