"""Where single-image commands write: -o as a folder, folder inputs, shrink-only resize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retouch.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def photo(tmp_path: Path, small_photo: np.ndarray) -> Path:
    path = tmp_path / "cat.png"
    Image.fromarray(small_photo).save(path)  # 96 x 64
    return path


def test_output_naming_an_existing_folder_writes_the_default_name_inside(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    code, _, err = run(["resize", str(photo), "--max-width", "48", "-o", str(folder)], capsys)
    assert code == 0, err
    written = folder / "cat.resize.png"
    assert Image.open(written).size == (48, 32)
    # a name ending in / is a folder even before it exists
    fresh = tmp_path / "new-folder"
    code, _, err = run(["adjust", str(photo), "--gamma", "1.2", "-o", f"{fresh}/"], capsys)
    assert code == 0, err
    assert Image.open(fresh / "cat.adjust.png").size == (96, 64)
    # and nothing is replaced without --overwrite
    code, _, err = run(["resize", str(photo), "--max-width", "48", "-o", str(folder)], capsys)
    assert code == 3 and "exists" in err


def test_shrink_only_bounds_never_enlarge(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["resize", str(photo), "--max-width", "1920", "--max-height", "1080", "-o", str(tmp_path / "a.png")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert Image.open(tmp_path / "a.png").size == (96, 64)
    code, _, err = run(["resize", str(photo), "--max-height", "16", "-o", str(tmp_path / "b.png")], capsys)  # fmt: skip
    assert code == 0, err
    assert Image.open(tmp_path / "b.png").size == (24, 16)
    code, _, err = run(
        ["resize", str(photo), "--width", "50", "--max-height", "16", "-o", str(tmp_path / "c.png")],
        capsys,
    )  # fmt: skip
    assert code == 2 and "not both" in err
    assert not (tmp_path / "c.png").exists()


def test_every_command_takes_a_folder(
    tmp_path: Path, small_photo: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    shots = tmp_path / "shots"
    shots.mkdir()
    for index in range(3):
        Image.fromarray(np.roll(small_photo, index * 7, axis=1)).save(shots / f"s{index}.jpg")
    code, _, err = run(["adjust", str(shots), "--saturation", "0", "-o", str(tmp_path / "grey")], capsys)  # fmt: skip
    assert code == 0, err
    outputs = sorted((tmp_path / "grey").iterdir())
    assert [p.name for p in outputs] == ["s0.jpg", "s1.jpg", "s2.jpg"]
    pixels = np.asarray(Image.open(outputs[1])).astype(int)
    assert np.abs(pixels[:, :, 0] - pixels[:, :, 2]).max() <= 3  # grey, up to JPEG noise
