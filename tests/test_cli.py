"""The command line as a user meets it: outputs, --json, exit codes, and nothing written on error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retouch import imageio
from retouch.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_erase_writes_output_with_json(
    tmp_path: Path,
    astronaut_file: Path,
    shuttle_mask_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "clean.png"
    code, stdout, _ = run(
        [
            "erase",
            str(astronaut_file),
            "--mask",
            str(shuttle_mask_file),
            "-o",
            str(out),
            "--seed",
            "3",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    meta = json.loads(stdout)
    assert meta["provider"] == "classic" and meta["images"][0]["seed"] == 3
    assert meta["outputs"] == [str(out)]
    original = np.asarray(Image.open(astronaut_file))
    result = np.asarray(Image.open(out))
    mask = np.asarray(Image.open(shuttle_mask_file)) > 0
    assert np.array_equal(result[~mask], original[~mask])
    assert np.abs(result.astype(int) - original.astype(int))[mask].mean() > 20


def test_erase_methods_and_default_output_name(
    astronaut_file: Path, shuttle_mask_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["erase", str(astronaut_file), "--mask", str(shuttle_mask_file), "--method", "telea"],
        capsys,
    )
    assert code == 0, err
    default = astronaut_file.with_name("astronaut.erase.png")
    assert default.exists()
    assert imageio.read_parameters(default)["options"] == {"method": "telea"}


def test_refuses_to_overwrite_and_keeps_the_file(
    tmp_path: Path,
    astronaut_file: Path,
    shuttle_mask_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "exists.png"
    out.write_bytes(b"keep me")
    code, _, err = run(
        ["erase", str(astronaut_file), "--mask", str(shuttle_mask_file), "-o", str(out)], capsys
    )
    assert code == 3 and "--overwrite" in err
    assert out.read_bytes() == b"keep me"
    code, _, _ = run(
        [
            "erase",
            str(astronaut_file),
            "--mask",
            str(shuttle_mask_file),
            "-o",
            str(out),
            "--overwrite",
            "-q",
        ],
        capsys,
    )
    assert code == 0 and out.read_bytes()[:4] == b"\x89PNG"


def _write(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


BAD_INPUTS = {
    "missing file": (lambda d: (d / "nope.png", None), "no such file"),
    "not an image": (
        lambda d: ((d / "x.png").write_text("text") and d / "x.png", None),
        "not an image",
    ),
    "truncated": (lambda d: (d / "t.png", "truncate"), "truncated"),
    "mask wrong size": (
        lambda d: (None, _write(d / "m.png", np.zeros((100, 80), np.uint8))),
        "80 x 100",
    ),
    "empty mask": (
        lambda d: (None, _write(d / "m.png", np.zeros((512, 512), np.uint8))),
        "selects nothing",
    ),
    "mask covers everything": (
        lambda d: (None, _write(d / "m.png", np.full((512, 512), 255, np.uint8))),
        "whole image",
    ),
    "huge dimensions": (lambda d: (d / "huge.png", "huge"), "over the limit"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_error_and_no_output(
    case: str,
    tmp_path: Path,
    astronaut_file: Path,
    shuttle_mask_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make, expected = BAD_INPUTS[case]
    image, mask = make(tmp_path)
    if mask == "truncate":
        data = astronaut_file.read_bytes()
        image.write_bytes(data[: len(data) // 2])
        mask = None
    if mask == "huge":
        from .test_imageio import _giant_png

        image.write_bytes(_giant_png(12000, 12000))
        mask = None
    out = tmp_path / "result.png"
    argv = [
        "erase",
        str(image or astronaut_file),
        "--mask",
        str(mask or shuttle_mask_file),
        "-o",
        str(out),
    ]
    code, _, err = run(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retouch: error:") and expected in lines[0]
    assert not out.exists()
    assert not list(tmp_path.glob("*.part"))


def test_unsupported_operation_exit_code(
    astronaut_file: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        ["upscale", str(astronaut_file), "--provider", "nope", "-o", str(tmp_path / "u.png")],
        capsys,
    )
    assert code == 2 and "known providers" in err


@pytest.mark.slow
def test_outpaint_and_resize(
    tmp_path: Path, astronaut_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = tmp_path / "small.jpg"
    code, _, err = run(
        ["resize", str(astronaut_file), "--max-size", "128", "-o", str(small), "--quality", "80"],
        capsys,
    )
    assert code == 0, err
    assert Image.open(small).size == (128, 128)
    wide = tmp_path / "wide.png"
    code, _, err = run(
        ["outpaint", str(small), "--left", "32", "--right", "32", "-o", str(wide), "--seed", "1"],
        capsys,
    )
    assert code == 0, err
    assert Image.open(wide).size == (192, 128)
    code, _, err = run(["outpaint", str(small), "-o", str(tmp_path / "none.png")], capsys)
    assert code == 2 and "at least one" in err


def test_mask_commands(
    tmp_path: Path, astronaut_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rect = tmp_path / "rect.png"
    code, stdout, _ = run(
        ["mask", "rect", str(astronaut_file), "--box", "10,20,110,70", "-o", str(rect), "--json"],
        capsys,
    )
    assert code == 0 and json.loads(stdout)["selected"] == 100 * 50
    grown = tmp_path / "grown.png"
    assert run(["mask", "grow", str(rect), "--px", "5", "-o", str(grown), "-q"], capsys)[0] == 0
    assert (np.asarray(Image.open(grown)) > 0).sum() > 100 * 50
    inverted = tmp_path / "inv.png"
    assert run(["mask", "invert", str(rect), "-o", str(inverted), "-q"], capsys)[0] == 0
    assert (np.asarray(Image.open(inverted)) > 0).sum() == 512 * 512 - 5000
    poly = tmp_path / "poly.png"
    assert (
        run(
            [
                "mask",
                "polygon",
                "--size",
                "64x64",
                "--points",
                "0,0 63,0 0,63",
                "-o",
                str(poly),
                "-q",
            ],
            capsys,
        )[0]
        == 0
    )
    ell = tmp_path / "ell.png"
    assert (
        run(
            ["mask", "ellipse", "--size", "64x64", "--box", "0,0,64,64", "-o", str(ell), "-q"],
            capsys,
        )[0]
        == 0
    )
    soft = tmp_path / "soft.png"
    assert run(["mask", "feather", str(rect), "--px", "6", "-o", str(soft), "-q"], capsys)[0] == 0
    assert len(np.unique(np.asarray(Image.open(soft)))) > 10
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :, 3] = 255
    rgba[:8, :8, 3] = 0
    _write(tmp_path / "openai.png", rgba)
    from_alpha = tmp_path / "fa.png"
    assert (
        run(
            ["mask", "from-alpha", str(tmp_path / "openai.png"), "-o", str(from_alpha), "-q"],
            capsys,
        )[0]
        == 0
    )
    assert (np.asarray(Image.open(from_alpha)) > 0).sum() == 64
    code, _, err = run(["mask", "rect", "--box", "0,0,4,4", "-o", str(tmp_path / "r.png")], capsys)
    assert code == 2 and "--size" in err


def test_providers_lists_classic_ready(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(["providers", "--json"], capsys)
    classic = next(p for p in json.loads(stdout) if p["name"] == "classic")
    assert code == 0 and classic["ready"] and "erase" in classic["operations"]


def test_help_explains_and_version_is_instant_without_heavy_imports() -> None:
    script = (
        "import sys, retouch, retouch.cli\n"
        "heavy = [m for m in ('cv2', 'torch', 'onnxruntime', 'ncnn', 'patchmatch') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
    version = subprocess.run(
        [sys.executable, "-m", "retouch", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("retouch ")
    helped = subprocess.run(
        [sys.executable, "-m", "retouch", "erase", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--mask" in helped.stdout and "example:" in helped.stdout


def test_upscale_file_and_folder_skipping_done_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        _write(photos / name, rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    (photos / "notes.txt").write_text("not an image")
    single = tmp_path / "big.png"
    code, stdout, err = run(
        [
            "upscale",
            str(photos / "a.png"),
            "--scale",
            "2",
            "--max-memory",
            "512M",
            "--threads",
            "1",
            "-o",
            str(single),
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(stdout)["model"] == "animevideov3-x2"
    assert Image.open(single).size == (64, 48)

    out_dir = tmp_path / "out"
    code, stdout, err = run(
        ["upscale", str(photos), "--scale", "2", "-o", str(out_dir), "--json"], capsys
    )
    summary = json.loads(stdout)
    assert code == 0, err
    assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 0, 0)
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.png", "b.jpg"]
    assert Image.open(out_dir / "b.jpg").size == (64, 48)
    code, stdout, _ = run(
        ["upscale", str(photos), "--scale", "2", "-o", str(out_dir), "--json"], capsys
    )
    assert json.loads(stdout)["skipped"] == 2
    # Skipping trusts only what retouch wrote with the values asked now: another scale, or
    # a file of the same name from elsewhere, is left alone and reported (exit 3), never
    # counted as done.
    made = (out_dir / "b.jpg").read_bytes()
    code, stdout, err = run(
        ["upscale", str(photos), "--scale", "3", "-o", str(out_dir), "--json"], capsys
    )
    assert code == 3 and "was made with scale=2.0, not 3" in err
    assert (json.loads(stdout)["done"], json.loads(stdout)["failed"]) == (0, 2)
    assert (out_dir / "b.jpg").read_bytes() == made
    foreign = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    foreign.save(out_dir / "a.png")
    code, stdout, err = run(
        ["upscale", str(photos), "--scale", "2", "-o", str(out_dir), "--json"], capsys
    )
    assert code == 3 and "a.png exists but was not written by retouch" in err
    summary = json.loads(stdout)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 1, 1)
    assert Image.open(out_dir / "a.png").size == (8, 8)  # kept as it was


def test_upscale_bad_input_writes_nothing(
    tmp_path: Path, astronaut_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "big.png"
    for argv, expected in (
        (["--scale", "0"], "scale"),
        (["--scale", "17"], "scale"),
        (["--model", "nope"], "available: animevideov3"),
        (["--max-memory", "1M"], "max_memory must be at least 64M, got 1M"),
    ):
        code, _, err = run(["upscale", str(astronaut_file), *argv, "-o", str(out)], capsys)
        assert code == 2, err
        assert expected in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
    code, _, err = run(
        ["upscale", str(astronaut_file), "--max-memory", "lots", "-o", str(out)], capsys
    )
    assert code == 2 and "2G" in err


@pytest.mark.slow
def test_remove_bg_file_folder_and_modes(
    tmp_path: Path, astronaut_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["remove-bg", str(astronaut_file), "-q"], capsys)
    assert code == 0, err
    cutout = Image.open(astronaut_file.with_name("astronaut.remove-bg.png"))
    assert cutout.mode == "RGBA" and np.asarray(cutout)[0, 100, 3] == 0

    jpg = tmp_path / "a.jpg"
    Image.open(astronaut_file).convert("RGB").save(jpg)
    code, _, err = run(["remove-background", str(jpg), "--bg-color", "white", "-q"], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "a.remove-bg.jpg").size == (512, 512)  # opaque: keeps .jpg
    code, _, err = run(["remove-bg", str(jpg), "-q"], capsys)
    assert code == 0 and (tmp_path / "a.remove-bg.png").exists()  # a cut-out needs alpha: .png

    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("one.jpg", "two.png"):
        Image.open(astronaut_file).resize((128, 128)).convert("RGB").save(shots / name)
    out_dir = tmp_path / "cutouts"
    code, stdout, err = run(["remove-bg", str(shots), "-o", str(out_dir), "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["done"] == 2
    assert sorted(p.name for p in out_dir.iterdir()) == ["one.png", "two.png"]
    code, stdout, _ = run(["remove-bg", str(shots), "-o", str(out_dir), "--json"], capsys)
    assert json.loads(stdout)["skipped"] == 2


def test_subject_masks_from_the_cli(
    tmp_path: Path, astronaut_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    subject = tmp_path / "subject.png"
    code, stdout, err = run(
        ["mask", "subject", str(astronaut_file), "-o", str(subject), "--json"], capsys
    )
    assert code == 0, err
    selected = json.loads(stdout)["selected"]
    assert 0.3 * 512 * 512 < selected < 0.8 * 512 * 512
    out = tmp_path / "no-background.png"
    code, _, err = run(
        [
            "erase",
            str(astronaut_file),
            "--mask",
            "background",
            "--method",
            "telea",
            "-o",
            str(out),
            "-q",
        ],
        capsys,
    )
    assert code == 0, err
    person = np.asarray(Image.open(subject)) == 255
    assert np.array_equal(
        np.asarray(Image.open(out))[person], np.asarray(Image.open(astronaut_file))[person]
    )


def test_remove_bg_bad_input_writes_nothing(
    tmp_path: Path, astronaut_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cut.png"
    for argv, expected in (
        (["--bg-color", "blurple"], "not a colour"),
        (["--bg-image", str(tmp_path / "missing.jpg")], "no such file"),
        (["--model", str(tmp_path / "nope.onnx")], "no such model file"),
        (["--only-mask", "--bg-blur", "4"], "only_mask"),
    ):
        code, _, err = run(["remove-bg", str(astronaut_file), *argv, "-o", str(out)], capsys)
        assert code == 2, err
        assert expected in err
        assert not out.exists()


@pytest.mark.slow
def test_library_bars_and_warnings_stay_off_the_terminal(tmp_path: Path) -> None:
    """Only retouch's own lines reach stderr: no 'Loading pipeline components' bars, no
    transformers fallback warnings; -v lets the libraries speak."""
    from .tiny_sd import build

    model = build(tmp_path / "sd")
    photo, mask = tmp_path / "p.png", tmp_path / "m.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(photo)
    hole = np.zeros((64, 64), np.uint8)
    hole[16:40, 16:40] = 255
    Image.fromarray(hole).save(mask)
    argv = [sys.executable, "-m", "retouch", "inpaint", str(photo), "--mask", str(mask)]
    argv += ["--prompt", "a hat", "--model", str(model), "--provider", "diffusers"]
    argv += ["--steps", "2", "--seed", "1"]
    env = {**__import__("os").environ, "RETOUCH_HOME": str(tmp_path / "home")}
    quiet = subprocess.run(
        [*argv, "-o", str(tmp_path / "a.png")], capture_output=True, text=True, env=env
    )
    assert quiet.returncode == 0, quiet.stderr
    lines = [line for line in quiet.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wrote "), quiet.stderr
    loud = subprocess.run(
        [*argv, "-v", "-o", str(tmp_path / "b.png")], capture_output=True, text=True, env=env
    )
    assert loud.returncode == 0 and "wrote " in loud.stderr, loud.stderr  # -v: theirs too, if any
