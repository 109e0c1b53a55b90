"""Click and box masks: GrabCut with no weights on the astronaut's shuttle (IoU with a mask
drawn by hand), EfficientSAM and SAM 2.1 conventions with tiny ONNX pairs, the encoder
cache, edge refinement, and the front ends."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from retouch import masks
from retouch.api import Toolkit
from retouch.errors import InvalidRequest
from retouch.models.store import ModelStore
from retouch.providers.sam import Prompt, SamProvider, grabcut, refine_to_edges
from retouch.types import MaskRequest

from .conftest import REAL_HOME
from .tiny_faces import RADII, efficientsam_like, sam2_like

SHUTTLE = [
    (405, 0), (428, 0), (436, 20), (438, 42), (447, 38), (452, 45), (453, 220), (456, 224),
    (458, 236), (462, 270), (470, 284), (370, 285), (368, 270), (372, 248), (353, 226),
    (354, 216), (380, 185), (381, 44), (386, 38), (390, 42), (398, 44), (399, 20),
]  # fmt: skip
"""The shuttle (tank, boosters, orbiter, stand) traced by hand on a 4x enlargement."""
CLICKS = ((418, 100), (395, 150), (410, 230))
"""The tank, the orbiter, the lower orbiter."""
SHUTTLE_BOX = (350, 0, 475, 290)
RIGHT_BOOSTER = (446, 150)


@pytest.fixture(scope="module")
def shuttle() -> np.ndarray:
    return masks.polygon((512, 512), SHUTTLE) > 0


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RETOUCH_CATALOG", raising=False)
    return ModelStore()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def click(toolkit: Toolkit, image: np.ndarray, **fields: object) -> np.ndarray:
    result = toolkit.run(MaskRequest(image=toolkit.load(image), kind="click", **fields))  # type: ignore[arg-type]
    return result.image.pixels[:, :, 0] > 127


# --- GrabCut, with no weights ------------------------------------------------------------------


@pytest.mark.slow
def test_grabcut_fallback_finds_the_shuttle_from_clicks_or_a_box(
    home: ModelStore, astronaut: np.ndarray, shuttle: np.ndarray
) -> None:
    toolkit = Toolkit()
    result = toolkit.run(MaskRequest(image=toolkit.load(astronaut), kind="click", points=CLICKS))
    assert (result.provider, result.model) == ("sam", "grabcut")
    assert "GrabCut" in result.warnings[0] and "retouch models pull" in result.warnings[0]
    by_clicks = result.image.pixels[:, :, 0] > 127
    assert iou(by_clicks, shuttle) > 0.62  # measured 0.70
    by_box = click(toolkit, astronaut, box=SHUTTLE_BOX)
    assert iou(by_box, shuttle) > 0.72  # measured 0.78
    assert not by_box[:, :340].any()  # nothing outside the box


@pytest.mark.slow
def test_negative_points_shrink_the_mask(home: ModelStore, astronaut: np.ndarray) -> None:
    toolkit = Toolkit()
    points = CLICKS[:2]
    kept = click(toolkit, astronaut, points=points, box=SHUTTLE_BOX)
    cut = click(
        toolkit, astronaut, points=points, negative_points=(RIGHT_BOOSTER,), box=SHUTTLE_BOX
    )
    booster = np.zeros_like(kept)
    booster[60:155, 442:452] = True  # the booster above the wing, where the click was
    assert kept[booster].mean() > 0.9 and cut[booster].mean() < 0.1
    assert cut.sum() < 0.9 * kept.sum() and not (cut & ~kept).sum() > 0.02 * kept.sum()


@pytest.mark.slow
def test_one_click_selects_the_object_under_it(home: ModelStore, astronaut: np.ndarray) -> None:
    toolkit = Toolkit()
    tank = click(toolkit, astronaut, points=(CLICKS[0],))
    tank_box = masks.rectangle((512, 512), (399, 0, 437, 175)) > 0
    assert iou(tank, tank_box) > 0.6 and not tank[:, :380].any()
    orbiter = click(toolkit, astronaut, points=(CLICKS[1],))
    assert orbiter[150, 395] and orbiter[100:240, 360:400].mean() > 0.5
    assert not orbiter[:40].any()  # not the tank's tip


@pytest.mark.slow
def test_grabcut_alone_is_the_mask_before_refinement(
    astronaut: np.ndarray, shuttle: np.ndarray
) -> None:
    probability = grabcut(astronaut, Prompt((), (), SHUTTLE_BOX), iterations=5)
    assert probability.dtype == np.float32 and 0 <= probability.min() <= probability.max() <= 1
    assert iou(probability > 0.5, shuttle) > 0.72


def test_refinement_moves_a_coarse_edge_onto_the_image_edges(astronaut: np.ndarray) -> None:
    """A crisp shape on the photo, and its mask as a low-resolution decoder gives it
    (64 x 64, enlarged, soft): refined, the mask follows the shape's real edge."""
    truth = np.zeros((512, 512), np.uint8)
    cv2.ellipse(truth, (300, 260), (120, 70), 25, 0, 360, 255, -1)
    cv2.rectangle(truth, (150, 120), (230, 400), 255, -1)
    picture = astronaut.copy()
    picture[truth > 0] = (200, 40, 40)
    coarse = cv2.resize(
        cv2.resize(truth.astype(np.float32) / 255, (64, 64), interpolation=cv2.INTER_AREA),
        (512, 512),
        interpolation=cv2.INTER_LINEAR,
    )
    coarse = cv2.GaussianBlur(coarse, (0, 0), 2)
    refined = refine_to_edges(picture, coarse) > 127
    wrong_before = ((coarse > 0.5) ^ (truth > 0)).sum()
    wrong_after = (refined ^ (truth > 0)).sum()
    assert wrong_after < wrong_before / 2  # measured: 514 pixels wrong -> 132
    far = cv2.dilate(truth, np.ones((3, 3)), iterations=20) == 0
    assert not refined[far].any()  # only the band near the edge can change


# --- Segment Anything conventions, with tiny models ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "builder"), [("efficientsam-vitt", efficientsam_like), ("sam2.1-tiny", sam2_like)]
)
def test_sam_points_land_where_clicked_and_the_best_candidate_is_kept(
    home: ModelStore, tmp_path: Path, name: str, builder: object
) -> None:
    """A 1600 x 1200 picture (EfficientSAM sees it at 1024 x 768, SAM 2.1 stretched to
    1024 x 1024): the tiny decoders draw discs around the first point, and score the
    20 px one best unless a negative point is given (then the 40 px one)."""
    encoder = builder(tmp_path / name)  # type: ignore[operator]
    home.add(name, encoder, task="mask")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)
    toolkit = Toolkit()
    provider = toolkit.registry.get("sam")
    assert isinstance(provider, SamProvider)
    result = toolkit.run(
        MaskRequest(
            image=toolkit.load(image), kind="click", points=((800, 600),), options={"refine": False}
        )
    )
    assert (result.provider, result.model) == ("sam", name) and not result.warnings
    assert result.usage["chosen"] == 1 and result.usage["embedding"] == "computed"
    mask = result.image.pixels[:, :, 0] > 127
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() - 800) < 1.5 and abs(ys.mean() - 600) < 1.5
    work = 1024 / 1600  # the work size's scale, the same for both families here
    radius = RADII[1] / work
    assert abs(mask.sum() / (np.pi * radius**2) - 1) < 0.1
    again = toolkit.run(
        MaskRequest(
            image=toolkit.load(image),
            kind="click",
            points=((800, 600),),
            negative_points=((100, 100),),
            options={"refine": False},
        )
    )
    assert again.usage["embedding"] == "cached" and provider.encoder_runs == 1
    assert again.usage["chosen"] == 2  # the negative label reached the decoder
    assert again.image.pixels[:, :, 0].astype(bool).sum() > 3 * mask.sum()


def test_a_model_added_as_a_folder_is_read_by_its_inputs(
    home: ModelStore, tmp_path: Path, astronaut: np.ndarray
) -> None:
    folder = tmp_path / "my-sam"
    sam2_like(folder)
    home.add("my-sam", folder, task="mask")
    toolkit = Toolkit()
    result = toolkit.run(
        MaskRequest(image=toolkit.load(astronaut), kind="click", points=((256, 256),))
    )
    assert result.model == "my-sam"
    model = toolkit.registry.get("sam").load("my-sam", threads=1)  # type: ignore[attr-defined]
    assert model.family == "sam2"


@pytest.mark.slow
def test_grabcut_can_be_asked_for_when_sam_is_here(
    home: ModelStore, tmp_path: Path, astronaut: np.ndarray
) -> None:
    home.add("efficientsam-vitt", efficientsam_like(tmp_path / "e"), task="mask")
    toolkit = Toolkit()
    result = toolkit.run(
        MaskRequest(image=toolkit.load(astronaut), kind="click", box=SHUTTLE_BOX, model="grabcut")
    )
    assert result.model == "grabcut" and not result.warnings


# --- checks and front ends --------------------------------------------------------------------------


def test_click_needs_points_or_a_box_inside_the_image(
    home: ModelStore, astronaut: np.ndarray
) -> None:
    toolkit = Toolkit()
    with pytest.raises(InvalidRequest, match="--point"):
        MaskRequest(image=toolkit.load(astronaut), kind="click")
    with pytest.raises(InvalidRequest, match="outside the 512 x 512 image"):
        click(toolkit, astronaut, points=((600, 10),))
    with pytest.raises(InvalidRequest, match="negative_points is not used by mask polygon"):
        toolkit.run(
            MaskRequest(
                image=toolkit.load(astronaut),
                kind="polygon",
                points=((1, 1), (50, 1), (9, 40)),
                negative_points=((3, 3),),
            )
        )


@pytest.mark.slow
def test_click_masks_from_the_cli_and_anywhere_a_mask_goes(
    home: ModelStore,
    tmp_path: Path,
    astronaut_file: Path,
    astronaut: np.ndarray,
    shuttle: np.ndarray,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from retouch.cli import main

    out = tmp_path / "click.png"
    argv = ["mask", "click", str(astronaut_file), "--point", "418,100", "--point", "395,150"]
    assert main([*argv, "--point", "410,230", "-o", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["model"] == "grabcut"
    assert iou(np.asarray(Image.open(out)) > 127, shuttle) > 0.62
    erased = tmp_path / "erased.png"
    spec = "click:418,100;395,150;-446,150;box=350,0,475,290"
    assert main(["erase", str(astronaut_file), "--mask", spec, "-o", str(erased), "-q"]) == 0
    changed = (
        np.abs(np.asarray(Image.open(erased)).astype(int) - astronaut.astype(int)).max(axis=2) > 0
    )
    assert changed[shuttle].mean() > 0.4 and not changed[:, :340].any()
    with pytest.raises(SystemExit) as bad:
        main(
            ["erase", str(astronaut_file), "--mask", "click:x,y", "-o", str(erased), "--overwrite"]
        )
    assert bad.value.code == 2
    assert "is not X,Y" in capsys.readouterr().err


@pytest.mark.slow
def test_the_click_tool_is_published_and_served(home: ModelStore, astronaut_file: Path) -> None:
    from fastapi.testclient import TestClient

    from retouch.server import ServerSettings, create_app

    with TestClient(create_app(Toolkit(), ServerSettings())) as client:
        described = {op["name"]: op for op in client.get("/v1/operations").json()["data"]}
        sam = next(p for p in described["mask"]["providers"] if p["name"] == "sam")
        assert sam["ready"] and sam["choices"]["kind"] == ["click"]
        files = {"image": ("a.png", astronaut_file.read_bytes(), "image/png")}
        answer = client.post("/v1/masks/click", files=files, data={"points": "418,100 395,150"})
        assert answer.status_code == 200, answer.text
        mask = np.asarray(Image.open(io.BytesIO(answer.content)))
        assert mask.shape == (512, 512) and mask[100, 418] == 255 and mask[300, 100] == 0
        answer = client.post("/v1/masks/click", files=files)
        assert answer.status_code == 400 and "--point" in answer.text
        spec = {"mask": "click:418,100;395,150;box=350,0,475,290", "provider": "classic"}
        erased = client.post("/v1/erase", files=files, data=spec)
        assert erased.status_code == 200, erased.text


# --- real weights ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model", ["sam2.1-tiny", "efficientsam-vitt"])
def test_real_sam_finds_the_shuttle(
    model: str, astronaut: np.ndarray, shuttle: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    if ModelStore(REAL_HOME).find(model) is None:
        pytest.skip(f"{model} is not in the store; enable with: retouch models pull {model}")
    monkeypatch.setenv("RETOUCH_HOME", str(REAL_HOME))
    toolkit = Toolkit()
    mask = click(toolkit, astronaut, points=CLICKS[:2], box=SHUTTLE_BOX, model=model)
    assert iou(mask, shuttle) > 0.8
