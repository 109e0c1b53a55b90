"""Style transfer with the shipped networks: the style shows in measured colour statistics,
strength 0 returns the input, full resolution, alpha kept, clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

import retouch
from retouch.errors import InvalidRequest


def mean_colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    lab_a = cv2.cvtColor(a, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(float)
    lab_b = cv2.cvtColor(b, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(float)
    return float(
        np.linalg.norm(lab_a.mean(axis=0) - lab_b.mean(axis=0))
        + np.linalg.norm(lab_a.std(axis=0) - lab_b.std(axis=0))
    )


@pytest.mark.parametrize("painting", ["coffee", "chelsea"])
def test_style_image_moves_colour_statistics_towards_the_painting(
    astronaut: np.ndarray, painting: str
) -> None:
    style = getattr(data, painting)()
    result = retouch.stylize(astronaut, style_image=style)
    out = result.image.pixels
    assert result.model == "arbitrary" and out.shape == astronaut.shape
    before, after = mean_colour_distance(astronaut, style), mean_colour_distance(out, style)
    assert after < before * 0.7, (before, after)
    weaker = retouch.stylize(astronaut, style_image=style, strength=0.5).image.pixels
    assert after < mean_colour_distance(weaker, style) < before


def test_strength_zero_returns_the_input_exactly(astronaut: np.ndarray, tmp_path: Path) -> None:
    assert np.array_equal(retouch.stylize(astronaut, style=7, strength=0).image.pixels, astronaut)
    assert np.array_equal(
        retouch.stylize(astronaut, style_image=data.coffee(), strength=0).image.pixels, astronaut
    )


def test_builtin_styles_change_the_image_in_proportion_to_strength(astronaut: np.ndarray) -> None:
    full = retouch.stylize(astronaut, style=7).image.pixels.astype(float)
    half = retouch.stylize(astronaut, style="style-7", strength=0.5).image.pixels.astype(float)
    original = astronaut.astype(float)
    full_change = np.abs(full - original).mean()
    assert full_change > 30
    assert abs(np.abs(half - original).mean() - full_change / 2) < 2
    blend = retouch.stylize(astronaut, style="3:0.5,12:0.5").image.pixels.astype(float)
    three = retouch.stylize(astronaut, style=3).image.pixels.astype(float)
    assert np.abs(blend - three).mean() > 5  # a blend is not style 3 alone


@pytest.mark.slow
def test_full_resolution_odd_sizes_and_big_photos(astronaut: np.ndarray) -> None:
    odd = np.ascontiguousarray(astronaut[:301, :237])
    assert retouch.stylize(odd, style=1).image.pixels.shape == (301, 237, 3)
    big = cv2.resize(astronaut, (1024, 1024))
    whole = retouch.stylize(big, style=7).image.pixels
    bounded = retouch.stylize(big, style=7, options={"max_side": 512}).image.pixels
    assert bounded.shape == whole.shape
    # styled at 512 and enlarged: the same colours as the full-size run (tiles were 13-15 dB off)
    assert np.abs(bounded.reshape(-1, 3).mean(0) - whole.reshape(-1, 3).mean(0)).max() < 3


def test_alpha_is_kept(astronaut: np.ndarray, tmp_path: Path) -> None:
    alpha = np.zeros(astronaut.shape[:2], np.uint8)
    cv2.circle(alpha, (256, 256), 200, 255, -1)
    path = tmp_path / "cut.png"
    Image.fromarray(np.dstack([astronaut, alpha]), "RGBA").save(path)
    out = retouch.stylize(path, style=5).image.pixels
    assert out.shape == (512, 512, 4) and np.array_equal(out[:, :, 3], alpha)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"style": 40}, "0 to 25"),
        ({"style": "blue"}, "bad style"),
        ({}, "either a built-in style"),
        ({"style": 1, "style_image": np.zeros((64, 64, 3), np.uint8)}, "either a built-in style"),
        ({"style": 1, "strength": 1.5}, "strength"),
    ],
)
def test_bad_requests(astronaut: np.ndarray, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        retouch.stylize(astronaut, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="at least 32"):
        retouch.stylize(np.zeros((20, 20, 3), np.uint8), style=1)


def test_cli(tmp_path: Path, astronaut_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from retouch.cli import main

    assert main(["stylize", "--list-styles"]) == 0
    assert "style-25" in capsys.readouterr().out
    out = tmp_path / "styled.png"
    assert (
        main(
            [
                "stylize",
                str(astronaut_file),
                "--style",
                "7",
                "--strength",
                "0",
                "-o",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(astronaut_file)))
    painted = tmp_path / "painted.jpg"
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.jpg")
    args = [
        "stylize",
        str(astronaut_file),
        "--style-image",
        str(tmp_path / "coffee.jpg"),
        "--preserve-color",
        "-o",
        str(painted),
        "-q",
    ]
    assert main(args) == 0 and Image.open(painted).size == (512, 512)
    try:
        code = main(["stylize", str(astronaut_file), "-o", str(tmp_path / "none.png")])
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == 2 and not (tmp_path / "none.png").exists()
