"""Masks from a phrase: ``retouch mask text IMAGE "the red car"``, ``--mask "text:the red car"``.

CLIPSeg (``CIDAS/clipseg-rd64-refined``, Apache-2.0, about 600 MB: ``retouch models pull
clipseg``) run through transformers (``pip install 'retouch[text-masks]'``: torch and
transformers). The picture is resized to the model's square (352), normalised with the
mean and spread its ``preprocessor_config.json`` gives, and the phrase tokenised by the
folder's CLIP tokenizer; the sigmoid of the logits, enlarged to the picture, is cut at
``threshold``. When Segment Anything weights are in the store too, each region found is
refined by SAM from its box and its most certain point (``--no-sam`` keeps CLIPSeg's own
coarse edge).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch._modules import module_available
from retouch.engines import default_threads
from retouch.errors import (
    DependencyMissing,
    InvalidRequest,
    ModelNotAvailable,
    UnsupportedOperation,
)
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

NAME = "clipseg"
DEFAULT_MODEL = "clipseg"
EXTRA = "text-masks"
DEFAULT_LEVEL = 102
"""Probability 0.4 (x 255): CLIPSeg's usual cut for a phrase's area."""
MIN_REGION = 0.001
"""Regions smaller than this share of the picture are dropped before SAM refines them."""


@dataclass(frozen=True)
class TextMaskOptions:
    threshold: int | None = param(
        None,
        low=0,
        high=254,
        metavar="LEVEL",
        help="select where the phrase's probability x 255 > LEVEL (default 102, i.e. 0.4)",
    )
    """Probability x 255 above which a pixel is selected (default 102, i.e. 0.4)."""
    sam: bool = param(
        True,
        flag="--no-sam",
        help="keep CLIPSeg's own edge (default: refined by Segment Anything when its weights "
        "are here)",
    )
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 <= self.threshold <= 254:
            raise ValueError(f"threshold must be 0..254, got {self.threshold}")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")


@dataclass
class ClipSeg:
    name: str
    model: Any
    tokenizer: Any
    size: int
    mean: NDArray[np.float32]
    std: NDArray[np.float32]
    lock: threading.Lock

    def probability(self, rgb: NDArray[np.uint8], phrase: str) -> NDArray[np.float32]:
        """How likely each pixel belongs to what ``phrase`` names (0..1, the picture's size)."""
        import cv2
        import torch

        height, width = rgb.shape[:2]
        square = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_CUBIC)
        x = (square.astype(np.float32) / 255.0 - self.mean) / self.std
        pixels = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
        tokens = self.tokenizer(
            [phrase], padding="max_length", truncation=True, return_tensors="pt"
        )
        with self.lock, torch.inference_mode():
            logits = self.model(
                input_ids=tokens["input_ids"],
                attention_mask=tokens.get("attention_mask"),
                pixel_values=pixels,
            ).logits
        raw = logits.float().numpy()
        grid = raw.reshape(-1, raw.shape[-2], raw.shape[-1])[0]
        probability = 1.0 / (1.0 + np.exp(-np.clip(grid, -30, 30)))
        big = cv2.resize(
            probability.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR
        )
        out: NDArray[np.float32] = np.clip(big, 0.0, 1.0).astype(np.float32)
        return out


def _preprocessing(folder: Path) -> tuple[int, NDArray[np.float32], NDArray[np.float32]]:
    """The square side, mean and spread from the folder's ``preprocessor_config.json``."""
    path = folder / "preprocessor_config.json"
    raw: dict[str, Any] = json.loads(path.read_text("utf-8")) if path.is_file() else {}
    size = raw.get("size", 352)
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or 352
    mean = np.array(raw.get("image_mean", [0.485, 0.456, 0.406]), np.float32)
    std = np.array(raw.get("image_std", [0.229, 0.224, 0.225]), np.float32)
    return int(size), mean, std


class ClipSegProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="masks from a phrase (CLIPSeg through transformers, `retouch models pull "
        "clipseg`); refined by Segment Anything when its weights are here",
        operations={
            "mask": OperationSpec(
                min_side=8,
                honours=frozenset({"model"}),
                choices={"kind": frozenset({"text"})},
                options=TextMaskOptions,
            )
        },
        extra=EXTRA,
        priority=10,
    )

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], ClipSeg] = {}
        self._lock = threading.Lock()
        self._sam: Any = None

    def _store(self) -> Any:
        from retouch.models.store import ModelStore

        return ModelStore()

    def status(self) -> ProviderStatus:
        error: Exception
        for package in ("torch", "transformers"):
            if not module_available(package):
                error = DependencyMissing(package, EXTRA, "masks from a phrase")
                return ProviderStatus(False, str(error), error)
        if self._store().find(DEFAULT_MODEL) is None:
            error = ModelNotAvailable(
                DEFAULT_MODEL,
                "CIDAS/clipseg-rd64-refined, about 600 MB; add --trust: no checksums are "
                "published for its files",
            )
            return ProviderStatus(False, str(error), error, needs_model=True)
        sam = self._sam_provider().available()
        refine = f"; refined by {sam[0]}" if sam else ""
        return ProviderStatus(True, f"{DEFAULT_MODEL}{refine}")

    def _sam_provider(self) -> Any:
        if self._sam is None:
            from retouch.providers.sam import SamProvider

            self._sam = SamProvider()
        return self._sam

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, MaskRequest) or request.kind != "text":
            raise UnsupportedOperation(f"{NAME} makes 'text' masks only")
        phrase = (request.text or "").strip()
        if not phrase:
            raise InvalidRequest("mask text needs a phrase, e.g. 'the red car'", param="text")
        options = parse_options(TextMaskOptions, request.options, provider=NAME)
        model = self.load(
            request.model or DEFAULT_MODEL, threads=options.threads or default_threads()
        )
        rgb = request.image.rgb8()
        progress(Progress("text", 0, 2))
        probability = model.probability(rgb, phrase)
        level = DEFAULT_LEVEL if options.threshold is None else options.threshold
        mask = ((probability * 255.0) > level).astype(np.uint8) * 255
        progress(Progress("text", 1, 2))
        usage: dict[str, Any] = {"peak": round(float(probability.max()), 4), "level": level}
        warnings: list[str] = []
        names = [model.name]
        sam = self._sam_provider()
        if options.sam and mask.any() and sam.available():
            mask, sam_model, regions = self._refine(rgb, mask, probability)
            if regions:
                names.append(sam_model)
            usage["sam_regions"] = regions
        if not mask.any():
            warnings.append(
                f"nothing matched {phrase!r} above level {level} (the best pixel scored "
                f"{probability.max() * 255:.0f}); try a lower --threshold or other words"
            )
        progress(Progress("text", 2, 2))
        return ImageResult(
            images=[OutputImage(pixels=np.dstack([mask] * 3), source_mode="L")],
            provider=NAME,
            model="+".join(names),
            usage=usage,
            warnings=warnings,
        )

    def _refine(
        self, rgb: NDArray[np.uint8], mask: NDArray[np.uint8], probability: NDArray[np.float32]
    ) -> tuple[NDArray[np.uint8], str, int]:
        """Each region's box and its most certain point, given to SAM; the union of SAM's
        masks."""
        import cv2

        from retouch.providers.sam import Prompt

        sam = self._sam_provider()
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            (mask > 0).astype(np.uint8), connectivity=8
        )
        height, width = mask.shape
        out = np.zeros_like(mask)
        model = ""
        regions = 0
        for label in range(1, count):
            left, top, w, h, area = (int(v) for v in stats[label])
            if area < MIN_REGION * height * width:
                continue
            inside = np.where(labels == label, probability, -1.0)
            y, x = np.unravel_index(int(np.argmax(inside)), inside.shape)
            prompt = Prompt(((int(x), int(y)),), (), (left, top, left + w, top + h))
            segment = sam.segment(rgb, prompt)
            out = np.maximum(out, segment.mask)
            model = segment.model
            regions += 1
        return (out if regions else mask), model, regions

    def load(self, name: str, *, threads: int) -> ClipSeg:
        key = (name, threads)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._load_uncached(name, threads)
            return self._cache[key]

    def _load_uncached(self, name: str, threads: int) -> ClipSeg:
        try:
            import torch
            from transformers import AutoTokenizer, CLIPSegForImageSegmentation
        except ImportError as exc:
            raise DependencyMissing(
                exc.name or "transformers", EXTRA, "masks from a phrase"
            ) from exc
        folder = (
            Path(name).expanduser() if ("/" in name or "\\" in name) else self._store().path(name)
        )
        if not (folder / "config.json").is_file():
            raise InvalidRequest(f"{folder} is not a CLIPSeg folder (no config.json)")
        torch.set_num_threads(threads)
        model: Any = CLIPSegForImageSegmentation.from_pretrained(str(folder))
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        size, mean, std = _preprocessing(folder)
        return ClipSeg(
            name=name,
            model=model,
            tokenizer=tokenizer,
            size=size,
            mean=mean,
            std=std,
            lock=threading.Lock(),
        )
