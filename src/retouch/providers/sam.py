"""Point and box masks: ``retouch mask click IMAGE --point X,Y [--negative X,Y] [--box ...]``.

Segment Anything ONNX exports from the store (osam's catalog, MIT):

- **EfficientSAM** (``efficientsam-vitt``, ``efficientsam-vits``): encoder input
  ``batched_images`` 1 x 3 x H x W RGB in 0..1 at any size (it resizes to 1024 inside),
  output ``image_embeddings`` 1 x 256 x 64 x 64; decoder inputs ``image_embeddings``,
  ``batched_point_coords`` 1 x 1 x N x 2 (pixels of the encoded image), ``batched_point_labels``
  1 x 1 x N, ``orig_im_size`` (int64 height, width); outputs ``output_masks`` 1 x 1 x 3 x H x W
  logits and ``iou_predictions`` 1 x 1 x 3.
- **SAM 2.1** (``sam2.1-tiny`` ... ``sam2.1-large``): encoder input ``input`` 1 x 3 x 1024 x
  1024, the image stretched to that square, ImageNet-normalised; outputs ``image_embeddings``,
  ``high_res_features1``, ``high_res_features2``; decoder inputs those three,
  ``point_coords`` 1 x N x 2 in the 1024 square, ``point_labels`` 1 x N, ``mask_input``
  1 x 1 x 256 x 256, ``has_mask_input`` [1], ``orig_im_size``; outputs ``masks`` 1 x M x H x W
  logits and ``iou_predictions`` 1 x M.

Labels: 1 on the object, 0 not on it, 2 and 3 a box's top-left and bottom-right corners.
Of the candidate masks the decoder gives, the best-scored is kept; its edge is then snapped
to the image's edges with a guided filter. The encoder runs once per image: its output is
kept by the image's hash, so further clicks on the same picture (the studio page) cost only
the decoder.

With no SAM weights the same points and box drive OpenCV's GrabCut instead: the result's
model is ``grabcut`` and a warning says how to get SAM.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch._modules import module_available
from retouch.engines import default_threads
from retouch.engines.onnx_session import create_session
from retouch.errors import DependencyMissing, InvalidRequest, UnsupportedOperation
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    MaskRequest,
    OperationSpec,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    param,
    parse_options,
)

NAME = "sam"
GRABCUT = "grabcut"
PREFERRED = (
    "sam2.1-tiny",
    "efficientsam-vitt",
    "sam2.1-small",
    "efficientsam-vits",
    "sam2.1-base-plus",
    "sam2.1-large",
)
ENCODE_SIDE = 1024
"""EfficientSAM is given the picture with its long side at most this (it works at 1024)."""
GRABCUT_SIDE = 512
"""GrabCut runs on a copy with its long side at most this; the edge is refined at full size."""
GRABCUT_RUNS = 3
"""GrabCut runs per mask (different k-means seeds); a pixel is the object when most say so."""
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
CACHED_EMBEDDINGS = 4


@dataclass(frozen=True)
class ClickOptions:
    refine: bool = param(
        True,
        flag="--no-refine",
        help="keep the mask's own edge (default: snapped to the image's edges)",
    )
    grabcut_iterations: int = 5
    threads: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.grabcut_iterations <= 20:
            raise ValueError("grabcut_iterations must be 1..20")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")


@dataclass(frozen=True)
class Prompt:
    """Points and box in the picture's pixels."""

    points: tuple[tuple[int, int], ...]
    negative: tuple[tuple[int, int], ...]
    box: tuple[int, int, int, int] | None

    def coords_and_labels(
        self, scale_x: float, scale_y: float
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """SAM's points (x, y) and labels: 1 object, 0 not, 2/3 the box's corners."""
        coords: list[tuple[float, float]] = []
        labels: list[float] = []
        for x, y in self.points:
            coords.append((x + 0.5, y + 0.5))
            labels.append(1.0)
        for x, y in self.negative:
            coords.append((x + 0.5, y + 0.5))
            labels.append(0.0)
        if self.box is not None:
            left, top, right, bottom = self.box
            coords += [(left, top), (right, bottom)]
            labels += [2.0, 3.0]
        array = np.array(coords, np.float32) * np.array([scale_x, scale_y], np.float32)
        return array, np.array(labels, np.float32)


@dataclass
class Segment:
    mask: NDArray[np.uint8]
    model: str
    usage: dict[str, Any]
    warnings: list[str]


# --- the models -----------------------------------------------------------------------------


def _by_name(names: list[str], outputs: list[Any], wanted: str, index: int) -> Any:
    return outputs[names.index(wanted)] if wanted in names else outputs[index]


@dataclass
class SamModel:
    """An encoder and a decoder of one family, with their input conventions."""

    name: str
    family: str
    encoder: Any
    decoder: Any
    input_size: int
    lock: threading.Lock

    def work_size(self, width: int, height: int) -> tuple[int, int]:
        """The size the picture is encoded at (and the decoder's masks come out at)."""
        factor = min(1.0, ENCODE_SIDE / max(width, height))
        return max(1, round(width * factor)), max(1, round(height * factor))

    def embed(self, rgb: NDArray[np.uint8]) -> dict[str, NDArray[np.float32]]:
        import cv2

        height, width = rgb.shape[:2]
        work_w, work_h = self.work_size(width, height)
        if self.family == "efficientsam":
            small = (
                rgb
                if (work_w, work_h) == (width, height)
                else cv2.resize(rgb, (work_w, work_h), interpolation=cv2.INTER_AREA)
            )
            x = small.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
            feed = {self.encoder.get_inputs()[0].name: np.ascontiguousarray(x)}
            with self.lock:
                outputs = self.encoder.run(None, feed)
            names = [o.name for o in self.encoder.get_outputs()]
            return {"image_embeddings": _by_name(names, outputs, "image_embeddings", 0)}
        side = self.input_size
        square = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
        x = (square.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        feed = {self.encoder.get_inputs()[0].name: np.ascontiguousarray(x.transpose(2, 0, 1)[None])}
        with self.lock:
            outputs = self.encoder.run(None, feed)
        names = [o.name for o in self.encoder.get_outputs()]
        return {
            "image_embeddings": _by_name(names, outputs, "image_embeddings", 0),
            "high_res_features1": _by_name(names, outputs, "high_res_features1", 1),
            "high_res_features2": _by_name(names, outputs, "high_res_features2", 2),
        }

    def decode(
        self, embedding: dict[str, NDArray[np.float32]], prompt: Prompt, size: tuple[int, int]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The candidate masks (M x H x W logits at the work size) and their scores (M)."""
        width, height = size
        work_w, work_h = self.work_size(width, height)
        inputs = {i.name: i for i in self.decoder.get_inputs()}
        size_type = inputs["orig_im_size"].type if "orig_im_size" in inputs else "tensor(int64)"
        work_size = np.array(
            [work_h, work_w], np.int64 if size_type == "tensor(int64)" else np.float32
        )
        if self.family == "efficientsam":
            coords, labels = prompt.coords_and_labels(work_w / width, work_h / height)
            feed: dict[str, Any] = {
                "image_embeddings": embedding["image_embeddings"],
                "batched_point_coords": coords[None, None],
                "batched_point_labels": labels[None, None],
                "orig_im_size": work_size,
            }
        else:
            side = self.input_size
            coords, labels = prompt.coords_and_labels(side / width, side / height)
            feed = {
                **embedding,
                "point_coords": coords[None],
                "point_labels": labels[None],
                "mask_input": np.zeros((1, 1, 256, 256), np.float32),
                "has_mask_input": np.zeros((1,), np.float32),
                "orig_im_size": work_size,
            }
        missing = sorted(set(inputs) - set(feed))
        if missing:
            raise InvalidRequest(
                f"{self.name}: the decoder wants inputs this {self.family} reader does not "
                f"give: {', '.join(missing)}"
            )
        with self.lock:
            outputs = self.decoder.run(None, {k: v for k, v in feed.items() if k in inputs})
        names = [o.name for o in self.decoder.get_outputs()]
        mask_name = "output_masks" if self.family == "efficientsam" else "masks"
        masks = np.asarray(_by_name(names, outputs, mask_name, 0), np.float32)
        scores = np.asarray(_by_name(names, outputs, "iou_predictions", 1), np.float32)
        masks = masks.reshape(-1, masks.shape[-2], masks.shape[-1])
        scores = scores.reshape(-1)
        if masks.shape[1:] != (work_h, work_w) or len(scores) != len(masks):
            raise InvalidRequest(
                f"{self.name}: the decoder answered masks {list(masks.shape)} and scores "
                f"{list(scores.shape)} for a {work_w} x {work_h} picture"
            )
        return masks, scores


def family_of(encoder: Any, decoder: Any, hint: str | None) -> str:
    if hint in ("efficientsam", "sam2"):
        return hint
    encoder_inputs = [i.name for i in encoder.get_inputs()]
    decoder_inputs = {i.name for i in decoder.get_inputs()}
    if "batched_images" in encoder_inputs or "batched_point_coords" in decoder_inputs:
        return "efficientsam"
    if "high_res_features1" in decoder_inputs:
        return "sam2"
    raise InvalidRequest(
        "not an EfficientSAM or SAM 2.1 encoder/decoder pair (decoder inputs: "
        f"{', '.join(sorted(decoder_inputs))})"
    )


def _pair(path: Path, extra: str | None) -> tuple[Path, Path]:
    """The encoder and decoder files: a folder holding *encoder*.onnx and *decoder*.onnx (or
    *preprocess*.onnx and the other), or the encoder file with its decoder beside it."""
    if path.is_dir():
        onnx = sorted(path.glob("*.onnx"))
        encoders = [p for p in onnx if "encoder" in p.name or "preprocess" in p.name]
        decoders = [p for p in onnx if p not in encoders]
        if len(encoders) == 1 and len(decoders) == 1:
            return encoders[0], decoders[0]
        raise InvalidRequest(
            f"{path} should hold one encoder (*encoder*.onnx or *preprocess*.onnx) and one "
            f"decoder .onnx; it holds {', '.join(p.name for p in onnx) or 'none'}"
        )
    if extra is not None:
        return path, path.with_name(extra)
    for guess in (path.name.replace("encoder", "decoder"), path.name.replace("_preprocess", "")):
        if guess != path.name and path.with_name(guess).is_file():
            return path, path.with_name(guess)
    raise InvalidRequest(f"{path}: no decoder found beside this encoder")


# --- masks from probabilities ----------------------------------------------------------------


def guided_filter(
    guide: NDArray[np.float32], source: NDArray[np.float32], radius: int, eps: float
) -> NDArray[np.float32]:
    """He et al.'s guided filter (grey guide): ``source`` smoothed, its edges moved onto the
    guide's edges."""
    import cv2

    size = (2 * radius + 1, 2 * radius + 1)

    def box(a: NDArray[Any]) -> NDArray[np.float32]:
        return np.asarray(
            cv2.boxFilter(a, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT), np.float32
        )

    mean_i, mean_p = box(guide), box(source)
    cov = box(guide * source) - mean_i * mean_p
    var = box(guide * guide) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def refine_to_edges(rgb: NDArray[np.uint8], probability: NDArray[np.float32]) -> NDArray[np.uint8]:
    """A hard mask whose edge follows the image's: the guided filter of the probability
    (guided by the grey image), cut at one half. Only a band around the edge can change."""
    import cv2

    height, width = probability.shape
    radius = max(2, round(max(height, width) / 256))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    smoothed = guided_filter(grey, probability.astype(np.float32), radius, 1e-2)
    hard = probability > 0.5
    band = cv2.dilate(hard.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=radius * 2) > 0
    band &= ~(
        cv2.erode(hard.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=radius * 2) > 0
    )
    refined = np.where(band, smoothed > 0.5, hard)
    return (refined * 255).astype(np.uint8)


def keep_prompted(mask: NDArray[np.uint8], prompt: Prompt) -> NDArray[np.uint8]:
    """Only the connected parts of ``mask`` that hold a clicked point or overlap the box."""
    import cv2

    count, labels = cv2.connectedComponents((mask > 127).astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    keep = set()
    height, width = mask.shape
    for x, y in prompt.points:
        if 0 <= x < width and 0 <= y < height and labels[y, x]:
            keep.add(int(labels[y, x]))
    if prompt.box is not None:
        left, top, right, bottom = prompt.box
        inside = labels[max(0, top) : bottom, max(0, left) : right]
        keep |= {int(v) for v in np.unique(inside) if v}
    if not keep:
        return mask
    return np.where(np.isin(labels, sorted(keep)), 255, 0).astype(np.uint8)


def _grown(
    lab: NDArray[Any], point: tuple[int, int], window: tuple[int, int, int, int]
) -> NDArray[np.bool_]:
    """The pixels around ``point``, inside ``window``, whose colour stays within a small fixed
    distance of the clicked pixel's (4-connected flood fill)."""
    import cv2

    left, top, right, bottom = window
    part = np.ascontiguousarray(lab[top:bottom, left:right])
    region = np.zeros((part.shape[0] + 2, part.shape[1] + 2), np.uint8)
    cv2.floodFill(
        part,
        region,
        (point[0] - left, point[1] - top),
        (0, 0, 0),
        loDiff=(10, 8, 8),
        upDiff=(10, 8, 8),
        flags=4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (1 << 8),
    )
    out = np.zeros(lab.shape[:2], bool)
    out[top:bottom, left:right] = region[1:-1, 1:-1] > 0
    return out


def _expanded(
    box: tuple[int, int, int, int], margin: float, least: int, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    pad_x = max(least, round((right - left) * margin))
    pad_y = max(least, round((bottom - top) * margin))
    return (
        max(0, left - pad_x),
        max(0, top - pad_y),
        min(size[0], right + pad_x),
        min(size[1], bottom + pad_y),
    )


def grabcut(rgb: NDArray[np.uint8], prompt: Prompt, *, iterations: int) -> NDArray[np.float32]:
    """GrabCut from the same points and box, in a window around them (so the background's
    colours are learnt near the object, not from the whole photo). Outside the box is
    background; discs at the points are surely object / surely not. A given box's inside is
    probably the object. With clicks only, a region of similar colour is grown from each
    click and a box guessed around it: first its whole inside counts as probably object;
    if that loses the clicked region (a white object on a pale wall), only the grown
    regions do. Returns the probability (0..1) at the picture's size."""
    import cv2

    height, width = rgb.shape[:2]
    lab = cv2.medianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), 5)  # highlights and noise
    short = min(width, height)
    seeds = list(prompt.points)
    box = prompt.box
    grown = np.zeros((height, width), bool)
    if box is None:
        xs, ys = [p[0] for p in seeds], [p[1] for p in seeds]
        reach = _expanded(
            (min(xs), min(ys), max(xs) + 1, max(ys) + 1), 0.5, short // 4, (width, height)
        )
        for point in seeds:
            grown |= _grown(lab, point, reach)
        gy, gx = np.nonzero(grown)
        found = (
            min(int(gx.min()), min(xs)),
            min(int(gy.min()), min(ys)),
            max(int(gx.max()), max(xs)) + 1,
            max(int(gy.max()), max(ys)) + 1,
        )
        box = _expanded(found, 0.4, short // 20, (width, height))
    left, top, right, bottom = _expanded(box, 0.15, max(4, short // 50), (width, height))
    part = rgb[top:bottom, left:right]
    factor = min(1.0, GRABCUT_SIDE / max(part.shape[:2]))
    size = (max(1, round(part.shape[1] * factor)), max(1, round(part.shape[0] * factor)))
    small = part if factor == 1.0 else cv2.resize(part, size, interpolation=cv2.INTER_AREA)
    bgr = np.ascontiguousarray(small[:, :, ::-1], dtype=np.uint8)
    h, w = small.shape[:2]
    radius = max(2, round(max(h, w) / 60))
    seeded = cv2.resize(
        grown[top:bottom, left:right].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST
    ).astype(bool)

    def at(point: tuple[int, int]) -> tuple[int, int]:
        return (
            int(np.clip(round((point[0] - left + 0.5) * factor - 0.5), 0, w - 1)),
            int(np.clip(round((point[1] - top + 0.5) * factor - 0.5), 0, h - 1)),
        )

    def cut(inside: int) -> NDArray[np.float32]:
        """The share of GRABCUT_RUNS GrabCut runs that call each pixel the object: its
        colour models start from random k-means, and one run can go either way."""
        mask = np.full((h, w), cv2.GC_BGD, np.uint8)
        x0, y0 = at((box[0], box[1]))
        x1, y1 = at((box[2] - 1, box[3] - 1))
        mask[y0 : y1 + 1, x0 : x1 + 1] = inside
        mask[seeded & (mask != cv2.GC_BGD)] = cv2.GC_PR_FGD
        for point in seeds:
            cv2.circle(mask, at(point), radius * 3, cv2.GC_PR_FGD, -1)
            cv2.circle(mask, at(point), radius, cv2.GC_FGD, -1)
        for point in prompt.negative:
            if left <= point[0] < right and top <= point[1] < bottom:
                cv2.circle(mask, at(point), radius, cv2.GC_BGD, -1)
        if not ((mask == cv2.GC_BGD) | (mask == cv2.GC_PR_BGD)).any():
            mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = cv2.GC_PR_BGD
        votes = np.zeros((h, w), np.float32)
        for seed in range(GRABCUT_RUNS):
            trial = mask.copy()
            background = np.zeros((1, 65), np.float64)
            foreground = np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(seed)  # the same clicks always give the same mask
            cv2.grabCut(
                bgr, trial, (0, 0, 0, 0), background, foreground, iterations, cv2.GC_INIT_WITH_MASK
            )
            votes += (trial == cv2.GC_FGD) | (trial == cv2.GC_PR_FGD)
        share: NDArray[np.float32] = (votes / GRABCUT_RUNS).astype(np.float32)
        return share

    chosen = cut(cv2.GC_PR_FGD)
    if prompt.box is None and seeded.any():
        _, labels = cv2.connectedComponents((chosen > 0.5).astype(np.uint8), connectivity=8)
        clicked = {int(labels[at(p)[1], at(p)[0]]) for p in seeds} - {0}
        kept = np.isin(labels, sorted(clicked)).sum() if clicked else 0
        if kept < 0.5 * seeded.sum():
            chosen = cut(cv2.GC_PR_BGD)
    probability = chosen.astype(np.float32)
    if factor != 1.0:
        probability = np.clip(
            cv2.resize(probability, (part.shape[1], part.shape[0]), interpolation=cv2.INTER_LINEAR),
            0,
            1,
        )
    out = np.zeros((height, width), np.float32)
    out[top:bottom, left:right] = probability
    return out


def _image_key(rgb: NDArray[np.uint8]) -> str:
    digest = hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=16)
    digest.update(repr(rgb.shape).encode())
    return digest.hexdigest()


class SamProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="click and box masks: EfficientSAM / SAM 2.1 ONNX from the store; GrabCut "
        "(no download) until one is pulled",
        operations={
            "mask": OperationSpec(
                min_side=8,
                honours=frozenset({"model"}),
                choices={"kind": frozenset({"click"})},
                options=ClickOptions,
            )
        },
        priority=10,
    )

    def __init__(self) -> None:
        self._models: dict[tuple[str, int], SamModel] = {}
        self._embeddings: OrderedDict[tuple[str, str], dict[str, NDArray[np.float32]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self.encoder_runs = 0
        """How many times an encoder ran (the cache's test and the benchmark read it)."""

    def _store(self) -> Any:
        from retouch.models.store import ModelStore

        return ModelStore()

    def available(self) -> list[str]:
        """SAM models here: catalog entries of either family, and models added by hand whose
        file is an .onnx encoder or a folder of .onnx files."""
        store = self._store()
        names = []
        for name in store.names_for("mask"):
            entry = store.entry_for(name)
            if entry is not None:
                if entry.io.get("family") in ("efficientsam", "sam2"):
                    names.append(name)
                continue
            path = store.find(name)
            if path is not None and (
                path.suffix == ".onnx" or (path.is_dir() and any(path.glob("*.onnx")))
            ):
                names.append(name)
        order = {n: i for i, n in enumerate(PREFERRED)}
        return sorted(names, key=lambda n: (order.get(n, len(order)), n))

    def status(self) -> ProviderStatus:
        if not module_available("cv2"):
            error = DependencyMissing("opencv-python-headless", purpose="click masks")
            return ProviderStatus(False, str(error), error)
        available = self.available() if module_available("onnxruntime") else []
        if available:
            return ProviderStatus(True, f"SAM models here: {', '.join(available)}")
        return ProviderStatus(
            True,
            "GrabCut (no weights); for Segment Anything: retouch models pull sam2.1-tiny "
            "(or efficientsam-vitt)",
        )

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, MaskRequest) or request.kind != "click":
            raise UnsupportedOperation(f"{NAME} makes 'click' masks only")
        options = parse_options(ClickOptions, request.options, provider=NAME)
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        prompt = self._prompt(request, width, height)
        segment = self.segment(rgb, prompt, model=request.model, options=options, progress=progress)
        return ImageResult(
            images=[OutputImage(pixels=np.dstack([segment.mask] * 3), source_mode="L")],
            provider=NAME,
            model=segment.model,
            usage=segment.usage,
            warnings=segment.warnings,
        )

    def segment(
        self,
        rgb: NDArray[np.uint8],
        prompt: Prompt,
        *,
        model: str | None = None,
        options: ClickOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> Segment:
        """The object ``prompt`` points at: the best SAM model here (or ``model``), else
        GrabCut. Also what the text-mask provider refines its boxes with."""
        options = options or ClickOptions()
        height, width = rgb.shape[:2]
        name = model
        if name is None:
            available = self.available() if module_available("onnxruntime") else []
            name = available[0] if available else GRABCUT
        warnings: list[str] = []
        usage: dict[str, Any] = {}
        if progress is not None:
            progress(Progress("click", 0, 2))
        if name == GRABCUT:
            probability = grabcut(rgb, prompt, iterations=options.grabcut_iterations)
            if model is None:
                warnings.append(
                    "made with GrabCut (no Segment Anything weights here); for SAM masks: "
                    "retouch models pull sam2.1-tiny"
                )
        else:
            loaded = self.load(name, threads=options.threads or default_threads())
            embedding, cached = self._embedding(loaded, rgb)
            usage["embedding"] = "cached" if cached else "computed"
            if progress is not None:
                progress(Progress("click", 1, 2))
            masks, scores = loaded.decode(embedding, prompt, (width, height))
            best = int(np.argmax(scores))
            usage["scores"] = [round(float(s), 4) for s in scores]
            usage["chosen"] = best
            probability = self._full_size(masks[best], width, height)
        if options.refine:
            mask = refine_to_edges(rgb, probability)
        else:
            mask = (probability > 0.5).astype(np.uint8) * 255
        mask = keep_prompted(mask, prompt)
        if progress is not None:
            progress(Progress("click", 2, 2))
        return Segment(mask=mask, model=name, usage=usage, warnings=warnings)

    @staticmethod
    def _full_size(logits: NDArray[np.float32], width: int, height: int) -> NDArray[np.float32]:
        import cv2

        if logits.shape != (height, width):
            logits = np.asarray(
                cv2.resize(logits, (width, height), interpolation=cv2.INTER_LINEAR), np.float32
            )
        out: NDArray[np.float32] = (1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))).astype(
            np.float32
        )
        return out

    @staticmethod
    def _prompt(request: MaskRequest, width: int, height: int) -> Prompt:
        for field, points in (
            ("points", request.points),
            ("negative_points", request.negative_points),
        ):
            for x, y in points:
                if not (0 <= x < width and 0 <= y < height):
                    raise InvalidRequest(
                        f"point {x},{y} is outside the {width} x {height} image", param=field
                    )
        box = request.box
        if box is not None:
            left, top, right, bottom = box
            left, top = max(0, left), max(0, top)
            right, bottom = min(width, right), min(height, bottom)
            if right - left < 2 or bottom - top < 2:
                raise InvalidRequest(
                    f"box {','.join(map(str, request.box or ()))} leaves nothing of the "
                    f"{width} x {height} image",
                    param="box",
                )
            box = (left, top, right, bottom)
        return Prompt(tuple(request.points), tuple(request.negative_points), box)

    def _embedding(
        self, model: SamModel, rgb: NDArray[np.uint8]
    ) -> tuple[dict[str, NDArray[np.float32]], bool]:
        key = (model.name, _image_key(rgb))
        with self._lock:
            found = self._embeddings.get(key)
            if found is not None:
                self._embeddings.move_to_end(key)
                return found, True
        embedding = model.embed(rgb)
        with self._lock:
            self.encoder_runs += 1
            self._embeddings[key] = embedding
            while len(self._embeddings) > CACHED_EMBEDDINGS:
                self._embeddings.popitem(last=False)
        return embedding, False

    def load(self, name: str, *, threads: int) -> SamModel:
        key = (name, threads)
        with self._lock:
            if key in self._models:
                return self._models[key]
        model = self._load_uncached(name, threads)
        with self._lock:
            return self._models.setdefault(key, model)

    def _load_uncached(self, name: str, threads: int) -> SamModel:
        store = self._store()
        entry = None
        if name.endswith(".onnx") or "/" in name or "\\" in name:
            path = Path(name).expanduser()
        else:
            path, entry = store.path(name), store.entry_for(name)
        extra = entry.extra_files[0].file if entry is not None and entry.extra_files else None
        encoder_path, decoder_path = _pair(path, extra)
        encoder = create_session(encoder_path, threads=threads)
        decoder = create_session(decoder_path, threads=threads)
        hint = entry.io.get("family") if entry is not None else None
        family = family_of(encoder, decoder, hint)
        size = 1024
        if family == "sam2":
            dims = encoder.get_inputs()[0].shape[2:]
            if all(isinstance(d, int) and d > 0 for d in dims):
                size = int(dims[0])
        return SamModel(
            name=name,
            family=family,
            encoder=encoder,
            decoder=decoder,
            input_size=size,
            lock=threading.Lock(),
        )
