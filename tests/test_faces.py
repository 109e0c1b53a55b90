"""Faces: detection (Haar with no download, YuNet through OpenCV), alignment to the FFHQ
template, paste-back, the local restorer provider with tiny ONNX restorers, the face masks,
and the front ends (CLI, HTTP). Real weights are tested when they are in the store."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

import retouch
from retouch import faces as face_ops
from retouch.api import Toolkit
from retouch.errors import InvalidRequest, ModelNotAvailable, ProviderUnavailable
from retouch.models.store import ModelStore
from retouch.types import MaskRequest, RestoreFacesRequest

from .conftest import REAL_HOME
from .tiny_faces import YUNET_BOX, YUNET_LANDMARKS, restorer_like, yunet_like

HAND_BOX = (183, 80, 269, 178)
"""The astronaut's face, measured by hand once: cheek to cheek, fringe to chin."""
HAND_EYES = ((202.4, 101.4), (245.6, 103.6))
"""Her pupils, measured by hand on a 5x enlargement."""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RETOUCH_CATALOG", raising=False)
    return ModelStore()


@pytest.fixture
def coffee() -> np.ndarray:
    return data.coffee()


def two_astronauts(astronaut: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.hstack([astronaut, astronaut]))


# --- detection --------------------------------------------------------------------------------


def test_haar_finds_the_astronauts_face_where_measured_by_hand_and_none_in_coffee(
    astronaut: np.ndarray, coffee: np.ndarray
) -> None:
    detector = face_ops.HaarDetector()
    (face,) = detector.detect(astronaut)
    assert face.detector == "haar" and face.score is None
    assert max(abs(a - b) for a, b in zip(face.box, HAND_BOX, strict=True)) <= 8
    for found, measured in zip(face.landmarks[:2], HAND_EYES, strict=True):
        assert np.hypot(*(found - np.array(measured))) <= 2.5  # the eyes are detected
    assert face.estimated == ("nose", "mouth")
    assert (
        face.landmarks[2, 1] > face.landmarks[0, 1] and face.landmarks[3, 1] > face.landmarks[2, 1]
    )
    assert detector.detect(coffee) == []


def test_yunet_outputs_are_decoded_into_boxes_landmarks_and_scores_at_any_size(
    tmp_path: Path,
) -> None:
    detector = face_ops.YuNetDetector(yunet_like(tmp_path / "yunet.onnx"))
    image = np.zeros((240, 320, 3), np.uint8)
    image[64:72, 96:104] = 255  # fires the stride-8 cell at column 12, row 8
    (face,) = detector.detect(image)
    cx, cy = 12 * 8 + 4, 8 * 8 + 4
    half = YUNET_BOX / 2
    assert np.allclose(face.box, (cx - half, cy - half, cx + half, cy + half), atol=0.01)
    expected = (np.array(YUNET_LANDMARKS) + np.array([12, 8])) * 8
    assert np.allclose(face.landmarks, expected, atol=0.01)
    assert face.score is not None and face.score > 0.95
    # a picture above YuNet's working size is shrunk for it and the face mapped back
    big = np.zeros((960, 1280, 3), np.uint8)
    big[128:160, 384:416] = 255  # at half size: the same 16 px block at 192..208, 64..80
    faces = detector.detect(big)
    assert faces, "no face in the enlarged picture"
    centres = [f.center for f in faces]
    assert any(abs(x - 400) <= 8 and abs(y - 144) <= 8 for x, y in centres)
    assert detector.detect(np.zeros((200, 200, 3), np.uint8)) == []


def test_auto_detector_is_yunet_once_pulled(home: ModelStore, tmp_path: Path) -> None:
    detectors = face_ops.Detectors()
    assert detectors.get("auto").name == "haar"
    with pytest.raises(ModelNotAvailable, match="retouch models pull yunet"):
        detectors.get("yunet")
    home.add("yunet", yunet_like(tmp_path / "y.onnx"), task="face-detect")
    assert detectors.get("auto").name == "yunet"
    assert detectors.get("haar").name == "haar"


# --- alignment and paste-back ------------------------------------------------------------------


def _dots(size: tuple[int, int], points: np.ndarray) -> np.ndarray:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    for index, (x, y) in enumerate(points):
        colour = [0, 0, 0]
        colour[index % 3] = 255
        cv2.circle(image, (round(x * 16), round(y * 16)), 3 * 16, colour, -1, cv2.LINE_AA, 4)
    return image


def test_alignment_takes_a_turned_face_onto_the_template_within_a_pixel() -> None:
    template = face_ops.template(512)
    angle, scale, shift = np.deg2rad(23), 0.45, np.array([150.0, 90.0])
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    landmarks = template @ turn.T + shift  # the face as it sits in a 420 x 360 photo
    image = _dots((420, 360), landmarks)
    matrix = face_ops.alignment(landmarks, 512)
    aligned = face_ops.crop(image, matrix, 512)
    for index, point in enumerate(template):
        channel = aligned[:, :, index % 3].astype(float)
        window = channel.copy()
        ys, xs = np.mgrid[0 : window.shape[0], 0 : window.shape[1]]
        near = np.hypot(xs - point[0], ys - point[1]) < 30
        window[~near] = 0
        found = np.array([(xs * window).sum(), (ys * window).sum()]) / window.sum()
        assert np.hypot(*(found - point)) < 1.0, (index, found, point)
    back = face_ops.apply(face_ops.invert(matrix), template)
    assert np.abs(back - landmarks).max() < 1e-6


def test_paste_back_of_an_unchanged_face_changes_nothing_outside_and_little_inside(
    astronaut: np.ndarray,
) -> None:
    (face,) = face_ops.HaarDetector().detect(astronaut)
    matrix = face_ops.alignment(face.landmarks, 512)
    aligned = face_ops.crop(astronaut, matrix, 512)
    canvas = astronaut.copy()
    weight = face_ops.paste_back(canvas, aligned, matrix, face_ops.crop_mask(512))
    outside = weight == 0
    assert np.array_equal(canvas[outside], astronaut[outside])
    assert outside.mean() > 0.8  # the pasted square is about the face, not the picture
    inside = weight > 0.99
    error = np.abs(canvas.astype(int) - astronaut.astype(int))[inside]
    assert error.mean() < 2.5  # only the two resamplings' blur


def test_paste_back_of_a_changed_face_leaves_no_seam(astronaut: np.ndarray) -> None:
    """Two pastes of one crop, one 45 levels brighter: their difference is the seam the
    restorer's change leaves. It rises over the feather in small steps, never as an edge."""
    (face,) = face_ops.HaarDetector().detect(astronaut)
    matrix = face_ops.alignment(face.landmarks, 512)
    dim = face_ops.crop(astronaut, matrix, 512) // 2  # no clipping at +45
    soft = face_ops.crop_mask(512)
    same, brighter = astronaut.copy(), astronaut.copy()
    face_ops.paste_back(same, dim, matrix, soft)
    weight = face_ops.paste_back(brighter, dim + 45, matrix, soft)
    seam = brighter.astype(float).mean(axis=2) - same.astype(float).mean(axis=2)
    assert seam[weight > 0.99].min() > 43  # the whole change inside (less rounding)
    assert np.array_equal(brighter[weight == 0], astronaut[weight == 0])
    steps = np.maximum(np.abs(np.diff(seam, axis=0))[:, :-1], np.abs(np.diff(seam, axis=1))[:-1])
    # measured: at most 4 levels between neighbours (45 levels over the ~20 px feather);
    # a pasted box with a hard edge would step by 45
    assert steps.max() < 5
    assert np.abs(np.diff(weight, axis=1)).max() < 0.1


def test_colour_matching_takes_out_a_restorers_tint(astronaut: np.ndarray) -> None:
    (face,) = face_ops.HaarDetector().detect(astronaut)
    aligned = face_ops.crop(astronaut, face_ops.alignment(face.landmarks, 512), 512)
    tinted = np.clip(aligned.astype(int) + np.array([40, 10, -20]), 0, 255).astype(np.uint8)
    weight = np.ones((512, 512), np.float32)
    matched = face_ops.match_colours(tinted, aligned, weight)
    before = np.abs(tinted.astype(float).mean(axis=(0, 1)) - aligned.mean(axis=(0, 1))).max()
    after = np.abs(matched.astype(float).mean(axis=(0, 1)) - aligned.mean(axis=(0, 1))).max()
    assert before > 35 and after < 3


# --- the restorer provider ---------------------------------------------------------------------


def test_without_weights_restore_faces_says_what_to_pull(
    home: ModelStore, astronaut: np.ndarray
) -> None:
    with pytest.raises(ProviderUnavailable, match=r"retouch models pull gfpgan-1\.4"):
        Toolkit().restore_faces(astronaut)
    with pytest.raises(ModelNotAvailable, match=r"retouch models pull gfpgan-1\.4"):
        Toolkit().restore_faces(astronaut, provider="faces")


def test_restore_faces_changes_the_face_only(
    home: ModelStore, tmp_path: Path, astronaut: np.ndarray
) -> None:
    home.add("gfpgan-1.4", restorer_like(tmp_path / "g.onnx"), task="restore-faces")
    result = Toolkit().restore_faces(astronaut)
    assert (result.provider, result.model) == ("faces", "gfpgan-1.4")
    out = result.image.pixels
    (face,) = result.usage["faces"]
    assert face["restored"] and result.usage["restored"] == 1
    changed = np.abs(out.astype(int) - astronaut.astype(int)).max(axis=2) > 0
    left, top, right, bottom = face["box"]
    ys, xs = np.nonzero(changed)
    # the pasted square reaches a little past the face box (hair, ears), never far
    assert xs.min() > left - 0.8 * (right - left) and xs.max() < right + 0.8 * (right - left)
    assert ys.min() > top - 0.8 * (bottom - top) and ys.max() < bottom + 0.8 * (bottom - top)
    inner = (slice(round(top) + 20, round(bottom) - 20), slice(round(left) + 20, round(right) - 20))
    assert np.abs(out[inner].astype(int) - astronaut[inner].astype(int)).mean() > 4
    # the colour shift a restorer adds is taken out: the face keeps its mean colour
    # (measured: 4.9 levels off at most with matching, 74 without)
    assert np.abs(out[inner].mean(axis=(0, 1)) - astronaut[inner].mean(axis=(0, 1))).max() < 7
    raw = Toolkit().restore_faces(astronaut, options={"color_match": False}).image.pixels
    assert np.abs(raw[inner].mean(axis=(0, 1)) - astronaut[inner].mean(axis=(0, 1))).max() > 40


def test_sixteen_bit_and_alpha_are_kept_outside_the_faces(
    home: ModelStore, tmp_path: Path, astronaut: np.ndarray
) -> None:
    home.add("gfpgan-1.4", restorer_like(tmp_path / "g.onnx"), task="restore-faces")
    fine = astronaut.astype(np.uint16) * 257 + np.uint16(77)  # low bits 8-bit would lose
    alpha = np.full((512, 512, 1), 40000, np.uint16)
    result = Toolkit().restore_faces(np.dstack([fine, alpha]))
    out = result.image.pixels
    assert out.dtype == np.uint16 and out.shape == (512, 512, 4)
    assert (out[:, :, 3] == 40000).all()
    same = (out[:, :, :3] == fine).all(axis=2)
    assert 0.8 < same.mean() < 0.97 and result.usage["restored"] == 1


@pytest.mark.slow
def test_small_faces_and_other_faces_are_left_alone(
    home: ModelStore, tmp_path: Path, astronaut: np.ndarray
) -> None:
    home.add("gfpgan-1.4", restorer_like(tmp_path / "g.onnx"), task="restore-faces")
    toolkit = Toolkit()
    tiny = toolkit.restore_faces(astronaut, options={"min_face": 400})
    assert np.array_equal(tiny.image.pixels, astronaut)
    assert tiny.usage["restored"] == 0 and "left alone" in tiny.warnings[0]
    pair = two_astronauts(astronaut)
    both = toolkit.restore_faces(pair)
    assert both.usage["restored"] == 2
    centre = toolkit.restore_faces(pair, options={"only_center_face": True})
    assert centre.usage["restored"] == 1
    kept = next(f for f in centre.usage["faces"] if f["restored"])
    assert kept["box"][0] > 512  # the right-hand face is nearer the centre (x 512)
    assert np.array_equal(centre.image.pixels[:, :512], pair[:, :512])
    none = toolkit.restore_faces(data.coffee())
    assert np.array_equal(none.image.pixels, data.coffee()) and "no face" in none.warnings[0]


def test_codeformer_fidelity_reaches_the_model_and_gfpgan_refuses_it(
    home: ModelStore, tmp_path: Path, astronaut: np.ndarray
) -> None:
    home.add("codeformer", restorer_like(tmp_path / "c.onnx", weight=True), task="restore-faces")
    home.add("gfpgan-1.4", restorer_like(tmp_path / "g.onnx"), task="restore-faces")
    toolkit = Toolkit()
    options = {"color_match": False}

    def change(fidelity: float) -> float:
        out = toolkit.restore_faces(
            astronaut, model="codeformer", fidelity=fidelity, options=options
        ).image.pixels
        return float(np.abs(out.astype(int) - astronaut.astype(int)).mean())

    strongest, middle, closest = change(0.0), change(0.5), change(1.0)
    assert strongest > middle > closest and closest < 0.3  # w = 1: the input back
    with pytest.raises(InvalidRequest, match="fidelity is CodeFormer's weight"):
        toolkit.restore_faces(astronaut, model="gfpgan-1.4", fidelity=0.8)
    half = toolkit.restore_faces(astronaut, model="gfpgan-1.4", options={"blend": 0.5, **options})
    full = toolkit.restore_faces(astronaut, model="gfpgan-1.4", options=options)
    d_half = np.abs(half.image.pixels.astype(int) - astronaut.astype(int)).mean()
    d_full = np.abs(full.image.pixels.astype(int) - astronaut.astype(int)).mean()
    assert 0.35 * d_full < d_half < 0.65 * d_full


def test_a_file_that_is_not_a_restorer_is_refused(
    home: ModelStore, tmp_path: Path, astronaut: np.ndarray
) -> None:
    path = yunet_like(tmp_path / "y.onnx")
    with pytest.raises(InvalidRequest, match="not a face restorer"):
        Toolkit().restore_faces(astronaut, provider="faces", model=str(path))


def test_upscale_face_enhance_is_upscale_then_restore_faces(
    home: ModelStore, tmp_path: Path, astronaut: np.ndarray
) -> None:
    home.add("gfpgan-1.4", restorer_like(tmp_path / "g.onnx"), task="restore-faces")
    small = np.asarray(Image.fromarray(astronaut).resize((256, 256), Image.Resampling.LANCZOS))
    toolkit = Toolkit()
    plain = toolkit.upscale(small, scale=2, provider="classic")
    enhanced = toolkit.run(
        retouch.types.UpscaleRequest(
            image=toolkit.load(small), scale=2, face_enhance=True, provider="classic"
        )
    )
    assert enhanced.provider == "classic+faces" and enhanced.image.width == 512
    assert enhanced.usage["restore-faces"]["restored"] == 1
    assert enhanced.parameters["face_enhance"] is True
    diff = np.abs(enhanced.image.pixels.astype(int) - plain.image.pixels.astype(int)).max(axis=2)
    ys, xs = np.nonzero(diff)
    assert 120 < xs.mean() < 320 and 40 < ys.mean() < 240  # only about the face
    via_restore = toolkit.run(RestoreFacesRequest(image=toolkit.load(small), upscale=2.0))
    assert via_restore.image.width == 512 and via_restore.usage["restore-faces"]["restored"] == 1


# --- face masks -----------------------------------------------------------------------------------


def test_face_masks_are_ovals_or_boxes_and_usable_anywhere(
    home: ModelStore, astronaut: np.ndarray
) -> None:
    toolkit = Toolkit()
    result = toolkit.run(MaskRequest(image=toolkit.load(astronaut), kind="faces"))
    assert (result.provider, result.model) == ("facedetect", "haar")
    oval = result.image.pixels[:, :, 0]
    left, top, right, bottom = result.usage["faces"][0]["box"]
    inside = np.zeros_like(oval, bool)
    inside[round(top) : round(bottom), round(left) : round(right)] = True
    assert oval[~inside].max() == 0  # nothing outside the face box
    assert oval[round((top + bottom) / 2), round((left + right) / 2)] == 255
    assert 0 < (oval[inside] == 255).mean() < 0.8 and ((oval > 0) & (oval < 255)).any()
    box = toolkit.run(
        MaskRequest(image=toolkit.load(astronaut), kind="faces", options={"shape": "box"})
    ).image.pixels[:, :, 0]
    assert set(np.unique(box)) == {0, 255} and (box[inside] == 255).mean() > 0.97
    erased = toolkit.erase(astronaut, "faces", provider="classic", options={"method": "telea"})
    assert np.array_equal(erased.image.pixels[oval == 0], astronaut[oval == 0])
    with pytest.raises(InvalidRequest, match="selects nothing"):
        toolkit.erase(data.coffee(), "faces", provider="classic")


# --- front ends ---------------------------------------------------------------------------------


def test_cli_faces_json_and_mask_faces(
    home: ModelStore,
    tmp_path: Path,
    astronaut_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from retouch.cli import main

    assert main(["faces", str(astronaut_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["detector"] == "haar" and len(report["faces"]) == 1
    assert set(report["faces"][0]["landmarks"]) == {
        "left_eye",
        "right_eye",
        "nose",
        "mouth_left",
        "mouth_right",
    }
    out = tmp_path / "faces.png"
    assert main(["mask", "faces", str(astronaut_file), "--shape", "box", "-o", str(out)]) == 0
    mask = np.asarray(Image.open(out))
    assert mask.ndim == 2 and 8000 < (mask > 0).sum() < 12000


@pytest.mark.slow
def test_cli_restore_faces_and_upscale_face_enhance(
    home: ModelStore,
    tmp_path: Path,
    astronaut_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from retouch.cli import main

    with pytest.raises(SystemExit) as exit_code:
        main(["restore-faces", str(astronaut_file), "-o", str(tmp_path / "r.png")])
    assert exit_code.value.code == 4  # no restorer and no server: it says what to pull
    assert "retouch models pull gfpgan-1.4" in capsys.readouterr().err
    home.add("gfpgan-1.4", restorer_like(tmp_path / "g.onnx"), task="restore-faces")
    out = tmp_path / "restored.png"
    assert (
        main(["restore-faces", str(astronaut_file), "--no-color-match", "-o", str(out), "--json"])
        == 0
    )
    meta = json.loads(capsys.readouterr().out)
    assert meta["provider"] == "faces" and meta["usage"]["restored"] == 1
    big = tmp_path / "big.png"
    argv = ["upscale", str(astronaut_file), "--scale", "2", "--provider", "classic"]
    assert main([*argv, "--face_enhance", "-o", str(big), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["provider"] == "classic+faces" and Image.open(big).size == (1024, 1024)


def test_http_restore_faces_and_face_masks(
    home: ModelStore, tmp_path: Path, astronaut_file: Path
) -> None:
    from fastapi.testclient import TestClient

    from retouch.server import ServerSettings, create_app

    home.add("gfpgan-1.4", restorer_like(tmp_path / "g.onnx"), task="restore-faces")
    with TestClient(create_app(Toolkit(), ServerSettings())) as client:
        files = {"image": ("a.png", astronaut_file.read_bytes(), "image/png")}
        answer = client.post("/v1/restore-faces", files=files, data={"min_face": "16"})
        assert answer.status_code == 200, answer.text
        restored = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))
        assert restored.shape == (512, 512, 3)
        assert not np.array_equal(restored, np.asarray(Image.open(astronaut_file)))
        answer = client.post("/v1/masks/faces", files=files, data={"response_format": "json"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["usage"]["faces"][0]["detector"] == "haar"
        erased = client.post(
            "/v1/erase",
            files=files,
            data={"mask": "faces", "provider": "classic", "method": "telea"},
        )
        assert erased.status_code == 200, erased.text
        out = np.asarray(Image.open(io.BytesIO(erased.content)).convert("RGB"))
        changed = np.abs(out.astype(int) - np.asarray(Image.open(astronaut_file)).astype(int))
        ys, xs = np.nonzero(changed.max(axis=2))
        assert xs.min() > 170 and xs.max() < 275 and ys.min() > 70 and ys.max() < 185
        operations = {op["name"]: op for op in client.get("/v1/operations").json()["data"]}
        restore = {p["name"]: p for p in operations["restore-faces"]["providers"]}
        assert restore["faces"]["ready"] and "fidelity" in restore["faces"]["honours"]
        names = {f["name"] for f in operations["upscale"]["fields"]}
        assert "face_enhance" in names


# --- real weights ----------------------------------------------------------------------------------

REAL = ModelStore(REAL_HOME)


@pytest.mark.slow
@pytest.mark.skipif(
    REAL.find("yunet") is None,
    reason="YuNet is not in the store; enable with: retouch models pull yunet",
)
def test_real_yunet_finds_the_astronaut(
    astronaut: np.ndarray, coffee: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETOUCH_HOME", str(REAL_HOME))
    detector = face_ops.Detectors().get("yunet")
    (face,) = detector.detect(astronaut)
    assert max(abs(a - b) for a, b in zip(face.box, HAND_BOX, strict=True)) <= 12
    for found, measured in zip(face.landmarks[:2], HAND_EYES, strict=True):
        assert np.hypot(*(found - np.array(measured))) <= 4
    assert detector.detect(coffee) == []


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gfpgan-1.4", "codeformer"])
def test_real_restorer_sharpens_a_blurred_face(
    model: str, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    if REAL.find(model) is None:
        pytest.skip(
            f"{model} is not in the store; enable with: retouch models pull {model} --trust"
        )
    monkeypatch.setenv("RETOUCH_HOME", str(REAL_HOME))
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 2.5)
    result = retouch.restore_faces(blurred, model=model)
    left, top, right, bottom = (round(v) for v in result.usage["faces"][0]["box"])
    face = (slice(top, bottom), slice(left, right))

    def sharpness(rgb: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())

    assert sharpness(result.image.pixels[face]) > 2 * sharpness(blurred[face])
    error = np.abs(result.image.pixels[face].astype(int) - astronaut[face].astype(int)).mean()
    assert error < np.abs(blurred[face].astype(int) - astronaut[face].astype(int)).mean() * 1.5
