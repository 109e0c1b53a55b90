"""Faces in a picture: detection, five landmarks, alignment to the FFHQ template, paste-back.

Two detectors, both run by OpenCV (``opencv-python-headless``, a base dependency):

- **Haar** (no download): the ``haarcascade_frontalface_alt2`` cascade that ships inside
  OpenCV's wheel finds upright frontal faces; ``haarcascade_eye`` then finds the two eyes
  inside each face. The nose tip and mouth corners are not detected: they are placed where
  the FFHQ template puts them relative to the eyes (``Face.estimated`` says so). Without
  both eyes the eyes themselves come from the face box's proportions. Haar gives no
  calibrated confidence, so its faces have no score.
- **YuNet** (``retouch models pull yunet``, 230 KB, MIT): OpenCV's ``FaceDetectorYN`` with
  opencv_zoo's ONNX model: boxes, five detected landmarks and scores; faces turned away
  and small faces too.

Landmarks are always in this order (image coordinates, x then y): the eye on the image's
left, the eye on the image's right, the nose tip, the mouth corner on the image's left, the
mouth corner on the image's right, the order of YuNet's output and of the FFHQ template
(GFPGAN's and CodeFormer's ``face_template``).

Alignment maps those five points onto the FFHQ template at the restorer's size with a
similarity (rotation, uniform scale, shift); ``paste_back`` warps a restored crop back
through the inverse transform and blends it through a feathered mask, so pixels outside the
mask are returned exactly as they were.

Everything here takes and returns RGB; OpenCV's BGR stays inside the detector calls.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from retouch.errors import InvalidRequest

FFHQ_TEMPLATE_512: NDArray[np.float32] = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    np.float32,
)
"""The five FFHQ landmarks of a 512 x 512 aligned face (facexlib's ``face_template``)."""
FACE_BOX_IN_TEMPLATE = (136.0, 176.0, 376.0, 450.0)
"""The face (cheek to cheek, brow to chin) in the 512 template, measured once by hand on
skimage's astronaut (1.9 eye distances wide, the chin 0.6 eye-to-mouth distances below the
mouth): where Haar faces get their box, and the oval of face masks."""
HAAR_FACE = "haarcascade_frontalface_alt2.xml"
HAAR_EYE = "haarcascade_eye.xml"
HAAR_EYES_IN_BOX = ((0.29, 0.38), (0.71, 0.38))
"""Where the eyes sit in a frontal Haar face box (fractions of its width and height), used
when the eye cascade does not find both."""
DETECT_SIDE = 1024
"""Haar runs on a copy whose long side is at most this (faces smaller than about 20 px in
that copy are not found)."""
YUNET_SIDE = 640
"""YuNet finds faces of about 10 to 300 px: it runs on a copy whose long side is this."""

Detector = Literal["auto", "haar", "yunet"]
DETECTORS: tuple[Detector, ...] = ("auto", "haar", "yunet")


@dataclass(frozen=True)
class Face:
    """One detected face, in the image's pixel coordinates."""

    box: tuple[float, float, float, float]
    """left, top, right, bottom: cheek to cheek, brow to chin."""
    landmarks: NDArray[np.float32]
    """5 x 2: eye on the image's left, eye on the right, nose tip, mouth corners left, right."""
    score: float | None
    """The detector's confidence (YuNet); None where it has none (Haar)."""
    detector: str
    estimated: tuple[str, ...] = ()
    """Landmarks placed from the template rather than detected ("nose", "mouth", "eyes")."""

    @property
    def size(self) -> float:
        """The shorter side of the box, in pixels."""
        left, top, right, bottom = self.box
        return min(right - left, bottom - top)

    @property
    def center(self) -> tuple[float, float]:
        left, top, right, bottom = self.box
        return (left + right) / 2, (top + bottom) / 2

    @property
    def eye_distance(self) -> float:
        return float(np.hypot(*(self.landmarks[1] - self.landmarks[0])))

    def describe(self) -> dict[str, Any]:
        """JSON-ready: what ``retouch faces --json`` prints."""
        names = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
        return {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": {
                name: [round(float(x), 1), round(float(y), 1)]
                for name, (x, y) in zip(names, self.landmarks, strict=True)
            },
            "score": None if self.score is None else round(self.score, 4),
            "detector": self.detector,
            "estimated": list(self.estimated),
        }

    def scaled(self, factor: float) -> Face:
        return Face(
            box=tuple(v * factor for v in self.box),  # type: ignore[arg-type]
            landmarks=(self.landmarks * factor).astype(np.float32),
            score=self.score,
            detector=self.detector,
            estimated=self.estimated,
        )


# --- geometry -----------------------------------------------------------------------------


def template(size: int = 512) -> NDArray[np.float32]:
    """The five FFHQ landmarks for a ``size`` x ``size`` aligned face."""
    return (FFHQ_TEMPLATE_512 * (size / 512.0)).astype(np.float32)


def similarity(source: NDArray[Any], target: NDArray[Any]) -> NDArray[np.float64]:
    """The least-squares similarity (2 x 3) taking ``source`` points onto ``target`` points
    (Umeyama without reflection): what ``cv2.estimateAffinePartial2D`` estimates, without
    its random sampling, so the same landmarks always give the same crop."""
    src = np.asarray(source, np.float64)
    dst = np.asarray(target, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    variance = float((src_c**2).sum())
    if variance < 1e-9:
        raise InvalidRequest("the face landmarks are all at one point; cannot align the face")
    # a = cos * scale, b = sin * scale: minimise |[a -b; b a] src_c - dst_c|^2
    a = float((src_c * dst_c).sum()) / variance
    b = float((src_c[:, 0] * dst_c[:, 1] - src_c[:, 1] * dst_c[:, 0]).sum()) / variance
    linear = np.array([[a, -b], [b, a]])
    shift = dst_mean - linear @ src_mean
    return np.hstack([linear, shift[:, None]])


def alignment(landmarks: NDArray[Any], size: int = 512) -> NDArray[np.float64]:
    """The 2 x 3 transform from image coordinates to the ``size`` x ``size`` aligned crop."""
    return similarity(landmarks, template(size))


def apply(matrix: NDArray[Any], points: NDArray[Any]) -> NDArray[np.float64]:
    points = np.asarray(points, np.float64)
    out: NDArray[np.float64] = points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]
    return out


def invert(matrix: NDArray[Any]) -> NDArray[np.float64]:
    linear = np.asarray(matrix, np.float64)[:, :2]
    inverse = np.linalg.inv(linear)
    return np.hstack([inverse, (-inverse @ np.asarray(matrix, np.float64)[:, 2])[:, None]])


def box_from_landmarks(landmarks: NDArray[Any]) -> tuple[float, float, float, float]:
    """The face box (cheek to cheek, brow to chin) where the template puts it."""
    to_image = invert(similarity(landmarks, FFHQ_TEMPLATE_512))
    left, top, right, bottom = FACE_BOX_IN_TEMPLATE
    corners = apply(
        to_image, np.array([[left, top], [right, top], [right, bottom], [left, bottom]])
    )
    return (
        float(corners[:, 0].min()),
        float(corners[:, 1].min()),
        float(corners[:, 0].max()),
        float(corners[:, 1].max()),
    )


def landmarks_from_eyes(left: NDArray[Any], right: NDArray[Any]) -> NDArray[np.float32]:
    """All five landmarks, the nose and mouth placed where the template puts them."""
    eyes = np.array([left, right], np.float64)
    to_image = similarity(FFHQ_TEMPLATE_512[:2], eyes)
    return apply(to_image, FFHQ_TEMPLATE_512).astype(np.float32)


def crop(rgb: NDArray[np.uint8], matrix: NDArray[Any], size: int) -> NDArray[np.uint8]:
    """The aligned ``size`` x ``size`` face crop. Where the crop leaves the image it is
    filled by reflection (a grey border would be restored as a grey border)."""
    import cv2

    out = cv2.warpAffine(
        rgb,
        np.asarray(matrix, np.float64),
        (size, size),
        flags=cv2.INTER_LINEAR if _scale(matrix) >= 1 else cv2.INTER_AREA,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return np.ascontiguousarray(out, dtype=np.uint8)


def _scale(matrix: NDArray[Any]) -> float:
    m = np.asarray(matrix, np.float64)
    return float(math.sqrt(abs(np.linalg.det(m[:, :2]))))


# --- masks in crop space --------------------------------------------------------------------


def crop_mask(size: int, *, margin: float = 0.02, feather: float = 0.12) -> NDArray[np.float32]:
    """A soft square for pasting a whole crop back: 0 within ``margin`` of the crop's edge,
    rising to 1 over ``feather`` (fractions of the side) with a smoothstep, so the restored
    crop fades into the picture with no visible edge."""
    ramp = np.arange(size, dtype=np.float32) + 0.5
    edge = np.minimum(ramp, size - ramp) / size  # distance to the nearer edge, 0..0.5
    t = np.clip((edge - margin) / max(feather, 1e-6), 0.0, 1.0)
    smooth = t * t * (3 - 2 * t)
    out: NDArray[np.float32] = np.minimum(smooth[:, None], smooth[None, :]).astype(np.float32)
    return out


def face_ellipse_in_template() -> tuple[tuple[float, float], tuple[float, float]]:
    """Centre and semi-axes of the face oval in the 512 template."""
    left, top, right, bottom = FACE_BOX_IN_TEMPLATE
    return ((left + right) / 2, (top + bottom) / 2), ((right - left) / 2, (bottom - top) / 2)


def face_mask(
    size: tuple[int, int],
    faces: Sequence[Face],
    *,
    shape: Literal["ellipse", "box"] = "ellipse",
    feather: float | None = None,
) -> NDArray[np.uint8]:
    """255 on each face: its box, or the face oval turned with the face; ``feather`` px of
    soft edge (None: a tenth of each face's size for ellipses, none for boxes)."""
    import cv2

    width, height = size
    out = np.zeros((height, width), np.float32)
    for face in faces:
        layer = np.zeros((height, width), np.uint8)
        if shape == "box":
            left, top, right, bottom = face.box
            cv2.rectangle(
                layer,
                (round(left), round(top)),
                (round(right) - 1, round(bottom) - 1),
                255,
                thickness=-1,
            )
        else:
            to_image = invert(similarity(face.landmarks, FFHQ_TEMPLATE_512))
            (cx, cy), (ax, ay) = face_ellipse_in_template()
            centre = apply(to_image, np.array([[cx, cy]]))[0]
            scale = _scale(to_image)
            angle = math.degrees(math.atan2(to_image[1, 0], to_image[0, 0]))
            shift = 4  # sub-pixel precision for cv2.ellipse
            cv2.ellipse(
                layer,
                (round(centre[0] * 2**shift), round(centre[1] * 2**shift)),
                (round(ax * scale * 2**shift), round(ay * scale * 2**shift)),
                angle,
                0,
                360,
                255,
                thickness=-1,
                lineType=cv2.LINE_AA,
                shift=shift,
            )
        soft = layer.astype(np.float32) / 255.0
        px = feather if feather is not None else (face.size / 10 if shape == "ellipse" else 0)
        if px and px > 0:
            # inward: the feathered mask stays inside the shape it was drawn as
            inner = cv2.erode(layer, np.ones((3, 3), np.uint8), iterations=max(1, round(px / 2)))
            blurred = cv2.GaussianBlur(
                inner.astype(np.float32) / 255.0, (0, 0), sigmaX=max(px / 2, 0.5)
            )
            soft = np.asarray(blurred, np.float32)
            soft = np.where(layer > 0, soft, 0.0).astype(np.float32)
        out = np.maximum(out, soft)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


# --- paste-back -------------------------------------------------------------------------------


def match_colours(
    restored: NDArray[np.uint8], reference: NDArray[np.uint8], weight: NDArray[np.float32]
) -> NDArray[np.uint8]:
    """``restored`` with the mean Lab colour of ``reference`` where ``weight`` is high:
    restorers shift skin tones and brightness a little; this takes the shift out and keeps
    the detail they added."""
    import cv2

    w = weight.astype(np.float64)
    total = float(w.sum())
    if total < 1.0:
        return restored
    lab_out = cv2.cvtColor(restored.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    lab_ref = cv2.cvtColor(reference.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    shift = [
        float((lab_ref[:, :, c] * w).sum() - (lab_out[:, :, c] * w).sum()) / total for c in range(3)
    ]
    lab_out += np.array(shift, np.float32)
    rgb = np.asarray(cv2.cvtColor(lab_out, cv2.COLOR_LAB2RGB), np.float32)
    out: NDArray[np.uint8] = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return out


def paste_back(
    canvas: NDArray[Any],
    restored: NDArray[np.uint8],
    matrix: NDArray[Any],
    mask: NDArray[np.float32],
) -> NDArray[np.float32]:
    """Blend ``restored`` (the aligned 8-bit crop, ``matrix`` image -> crop) into ``canvas``
    (8 or 16 bit) in place through ``mask`` (crop space, 0..1) warped back to the image.
    Returns the warped mask over the whole canvas (0 where the canvas was left exactly as
    it was)."""
    import cv2

    height, width = canvas.shape[:2]
    size = restored.shape[0]
    to_image = invert(matrix)
    corners = apply(to_image, np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64))
    left = max(0, math.floor(corners[:, 0].min()) - 1)
    top = max(0, math.floor(corners[:, 1].min()) - 1)
    right = min(width, math.ceil(corners[:, 0].max()) + 2)
    bottom = min(height, math.ceil(corners[:, 1].max()) + 2)
    whole = np.zeros((height, width), np.float32)
    if right <= left or bottom <= top:
        return whole
    face: NDArray[Any] = restored
    soft: NDArray[Any] = mask
    shrink = _scale(to_image)
    if shrink < 0.5:  # shrink most of the way with area averaging: no aliasing on small faces
        step = min(1.0, shrink * 2)
        side = max(8, round(size * step))
        step = side / size
        face = cv2.resize(restored, (side, side), interpolation=cv2.INTER_AREA)
        soft = cv2.resize(mask, (side, side), interpolation=cv2.INTER_AREA)
        to_image = to_image.copy()
        to_image[:, :2] /= step
    to_region = to_image.copy()
    to_region[:, 2] -= (left, top)
    region = (right - left, bottom - top)
    warped = cv2.warpAffine(
        face, to_region, region, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    weight = cv2.warpAffine(
        soft, to_region, region, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    weight = np.clip(weight, 0.0, 1.0)
    weight[weight < 1e-3] = 0.0  # interpolation crumbs: leave those pixels exact
    part = canvas[top:bottom, left:right]
    peak = float(np.iinfo(canvas.dtype).max)
    base = part.astype(np.float32)
    blended = base + weight[:, :, None] * (warped.astype(np.float32) * (peak / 255.0) - base)
    part[:] = np.clip(np.rint(blended), 0, peak).astype(canvas.dtype)
    whole[top:bottom, left:right] = weight
    return whole


# --- detection ------------------------------------------------------------------------------


def _cascade(name: str) -> Any:
    import cv2

    folder: str = cv2.data.haarcascades  # type: ignore[attr-defined]  # the stubs omit it
    path = Path(folder) / name
    classifier = cv2.CascadeClassifier(str(path))
    if classifier.empty():
        raise InvalidRequest(f"OpenCV's {name} could not be read from {path}")
    return classifier


class HaarDetector:
    """Frontal faces with OpenCV's shipped cascades; eyes by cascade, the rest estimated."""

    name = "haar"

    def __init__(self) -> None:
        self._face = _cascade(HAAR_FACE)
        self._eye = _cascade(HAAR_EYE)
        self._lock = threading.Lock()  # a CascadeClassifier is not safe across threads

    def detect(self, rgb: NDArray[np.uint8], *, min_size: int = 20) -> list[Face]:
        import cv2

        height, width = rgb.shape[:2]
        factor = min(1.0, DETECT_SIDE / max(height, width))
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        small = (
            gray
            if factor == 1.0
            else cv2.resize(
                gray, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA
            )
        )
        equalised = cv2.equalizeHist(small)
        side = max(20, round(min_size * factor))
        with self._lock:
            found = self._face.detectMultiScale(
                equalised, scaleFactor=1.1, minNeighbors=5, minSize=(side, side)
            )
        faces = []
        for x, y, w, h in np.asarray(found, dtype=np.int64).reshape(-1, 4):
            eyes = self._eyes(small, int(x), int(y), int(w), int(h))
            estimated: tuple[str, ...] = ("nose", "mouth")
            if eyes is None:
                (lx, ly), (rx, ry) = HAAR_EYES_IN_BOX
                eyes = np.array([[x + lx * w, y + ly * h], [x + rx * w, y + ry * h]], np.float64)
                estimated = ("eyes", "nose", "mouth")
            landmarks = landmarks_from_eyes(eyes[0] / factor, eyes[1] / factor)
            faces.append(
                Face(
                    box=box_from_landmarks(landmarks),
                    landmarks=landmarks,
                    score=None,
                    detector=self.name,
                    estimated=estimated,
                )
            )
        return faces

    def _eyes(self, gray: NDArray[Any], x: int, y: int, w: int, h: int) -> NDArray[Any] | None:
        """The two eye centres in the upper part of a face box, or None unless one is found
        on each side at about the same height and a plausible distance apart."""
        top, bottom = y + round(0.15 * h), y + round(0.62 * h)
        region = gray[max(0, top) : bottom, max(0, x) : x + w]
        if region.size == 0:
            return None
        smallest = max(6, round(w * 0.12))
        with self._lock:
            found = self._eye.detectMultiScale(
                region, scaleFactor=1.05, minNeighbors=3, minSize=(smallest, smallest)
            )
        centres = [
            (max(0, x) + ex + ew / 2, max(0, top) + ey + eh / 2)
            for ex, ey, ew, eh in np.asarray(found, dtype=np.int64).reshape(-1, 4)
        ]
        middle = x + w / 2
        lefts = [c for c in centres if c[0] < middle]
        rights = [c for c in centres if c[0] >= middle]
        best: tuple[float, Any] | None = None
        for left in lefts:
            for right in rights:
                distance = right[0] - left[0]
                tilt = abs(right[1] - left[1])
                if not 0.25 * w <= distance <= 0.65 * w or tilt > 0.25 * distance:
                    continue
                # prefer pairs placed as eyes usually are in the box
                cost = abs(distance - 0.42 * w) + tilt
                if best is None or cost < best[0]:
                    best = (cost, np.array([left, right], np.float64))
        return None if best is None else best[1]


class YuNetDetector:
    """OpenCV's FaceDetectorYN with opencv_zoo's YuNet ONNX model."""

    name = "yunet"

    def __init__(self, path: Path, *, score_threshold: float = 0.7) -> None:
        import cv2

        if not path.is_file():
            raise InvalidRequest(f"{path}: no such model file")
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(path), "", (YUNET_SIDE, YUNET_SIDE), score_threshold, 0.3, 5000
            )
        except cv2.error as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cv2.error"
            raise InvalidRequest(f"{path} is not a YuNet face detector ({first[:200]})") from exc
        self._lock = threading.Lock()

    def detect(self, rgb: NDArray[np.uint8], *, min_size: int = 10) -> list[Face]:
        height, width = rgb.shape[:2]
        faces = self._detect_at(rgb, min(1.0, YUNET_SIDE / max(height, width)))
        if not faces and max(height, width) > YUNET_SIDE // 2:
            # faces larger than YuNet's ~300 px range: look again on a smaller copy
            faces = self._detect_at(rgb, (YUNET_SIDE // 2) / max(height, width))
        return [f for f in faces if f.size >= min_size]

    def _detect_at(self, rgb: NDArray[np.uint8], factor: float) -> list[Face]:
        import cv2

        height, width = rgb.shape[:2]
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        small = (
            rgb if size == (width, height) else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        )
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        with self._lock:
            self._net.setInputSize(size)
            _, found = self._net.detect(bgr)
        faces = []
        scale_x, scale_y = width / size[0], height / size[1]
        for row in np.asarray(found if found is not None else [], np.float32).reshape(-1, 15):
            x, y, w, h = (float(v) for v in row[:4])
            points = row[4:14].reshape(5, 2) * np.array([scale_x, scale_y], np.float32)
            faces.append(
                Face(
                    box=(x * scale_x, y * scale_y, (x + w) * scale_x, (y + h) * scale_y),
                    landmarks=points.astype(np.float32),
                    score=float(row[14]),
                    detector=self.name,
                )
            )
        return faces


def select(
    faces: Sequence[Face],
    size: tuple[int, int],
    *,
    min_size: float = 0,
    only_center: bool = False,
) -> tuple[list[Face], list[Face]]:
    """(the faces to work on, the faces left alone): too small ones are left alone; with
    ``only_center`` only the one nearest the image's centre is kept (facexlib's rule)."""
    kept = [f for f in faces if f.size >= min_size]
    skipped = [f for f in faces if f.size < min_size]
    if only_center and len(kept) > 1:
        cx, cy = size[0] / 2, size[1] / 2
        nearest = min(kept, key=lambda f: math.hypot(f.center[0] - cx, f.center[1] - cy))
        skipped += [f for f in kept if f is not nearest]
        kept = [nearest]
    return kept, skipped


YUNET_MODEL = "yunet"
"""The store name of opencv_zoo's YuNet (``retouch models pull yunet``)."""


class Detectors:
    """Detectors by name, loaded once: ``auto`` is YuNet when its model is in the store,
    else Haar (no download)."""

    def __init__(self) -> None:
        self._haar: HaarDetector | None = None
        self._yunet: dict[str, YuNetDetector] = {}
        self._lock = threading.Lock()

    @staticmethod
    def yunet_path() -> Path | None:
        from retouch.models.store import ModelStore

        return ModelStore().find(YUNET_MODEL)

    def get(self, which: str = "auto") -> HaarDetector | YuNetDetector:
        if which not in DETECTORS:
            raise InvalidRequest(
                f"detector must be one of {', '.join(DETECTORS)}, not {which!r}", param="detector"
            )
        path = self.yunet_path() if which in ("auto", "yunet") else None
        if which == "yunet" and path is None:
            from retouch.errors import ModelNotAvailable

            raise ModelNotAvailable(YUNET_MODEL, "or use detector=haar, which needs no download")
        with self._lock:
            if path is not None:
                key = str(path)
                if key not in self._yunet:
                    self._yunet[key] = YuNetDetector(path)
                return self._yunet[key]
            if self._haar is None:
                self._haar = HaarDetector()
            return self._haar
