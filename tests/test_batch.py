"""Batches end to end: outputs, audit log, resume, failures isolated and summarised,
interruption, nothing replaced without --force, quality checks."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from retouch import imageio
from retouch.api import Toolkit
from retouch.batch import BatchOptions, ItemReport, collect, load_recipe, report, run_batch
from retouch.cli import main
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    OperationSpec,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
)

from .conftest import box_mask

EXAMPLES = Path(__file__).parents[1] / "examples" / "recipes"
SOURCES = ("astronaut", "coffee", "chelsea", "rocket")


@cache
def _source(name: str) -> np.ndarray:
    return np.ascontiguousarray(getattr(data, name)())


def photo(index: int, size: tuple[int, int]) -> np.ndarray:
    """A different real-photo crop per index, ``size`` (width, height)."""
    source = _source(SOURCES[index % len(SOURCES)])
    width, height = size
    scale = max(1, min(source.shape[1] // (width + 8), source.shape[0] // (height + 8)) // 2)
    small = source[::scale, ::scale]
    top = (index * 7) % max(1, small.shape[0] - height)
    left = (index * 11) % max(1, small.shape[1] - width)
    return np.ascontiguousarray(small[top : top + height, left : left + width])


def make_photos(folder: Path, count: int, size: tuple[int, int], ext: str = "png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"img{index:02d}.{ext}"
        Image.fromarray(photo(index, size)).save(path)
        paths.append(path)
    return paths


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(text) for text in path.read_text().splitlines() if text.strip()]


def run(
    argv: list[str], capsys: pytest.CaptureFixture[str], toolkit: Toolkit | None = None
) -> tuple[int, str, str]:
    try:
        code = main(argv, toolkit=toolkit)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


ADJUST = "steps:\n  - operation: adjust\n    gamma: 1.3\n  - operation: resize\n    max_size: 24\n"


# --- the product-photo recipe ------------------------------------------------------------------


@pytest.mark.slow
def test_product_recipe_on_20_photos_then_a_resume_that_skips_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shots = tmp_path / "shots"
    make_photos(shots, 12, (72, 56), "jpg")
    make_photos(shots / "more", 8, (64, 64), "png")
    out = tmp_path / "shop"
    recipe = EXAMPLES / "product-photo.yaml"
    code, _, err = run(["batch", str(recipe), str(shots), "-o", str(out), "-q"], capsys)
    assert code == 0, err
    outputs = sorted(p.relative_to(out) for p in out.rglob("*.webp"))
    assert len(outputs) == 20
    assert Path("more/img03.webp") in outputs  # the folder structure is kept
    for index, name in enumerate(sorted(shots.glob("*.jpg"))):
        written = imageio.load_image(out / f"{name.stem}.webp")
        assert written.format == "WEBP"
        assert written.size == (144, 112)  # upscaled 2x; 1600 px is a ceiling, not a target
        assert not written.has_alpha  # on the new background
        corner = written.pixels[:4, :4].reshape(-1, 3).astype(int)
        if index == 0:
            assert np.ptp(corner.mean(axis=0)) < 12  # a neutral studio grey in the corner
    log = lines(out / "audit.jsonl")
    assert len(log) == 100  # 20 items x 5 steps
    assert all(line["status"] == "ok" for line in log)
    assert all(line["model"] for line in log)  # every step says what ran
    assert {line["provider"] for line in log} == {"u2net", "realesrgan", "adjust", "classic"}
    last = [line for line in log if line["step"] == 5]
    for line in last:
        (output,) = line["outputs"]  # type: ignore[misc]
        assert sha256(Path(output["path"])) == output["sha256"]
        assert line["input_sha256"] == sha256(Path(str(line["input"])))
        assert line["checks"] == {
            "size": {"value": line["checks"]["size"]["value"], "limit": line["checks"]["size"]["limit"], "ok": True}  # type: ignore[index]
        }  # fmt: skip
    upscale = next(line for line in log if line["step"] == 2)
    assert upscale["fields"]["scale"] == 2.0  # type: ignore[index]
    assert upscale["model"] == "animevideov3-x2"
    embedded = imageio.read_parameters(out / "img00.webp")
    assert embedded is not None and embedded["batch"]["key"] == last[0]["key"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.webp")}

    started = time.perf_counter()
    code, _, err = run(["batch", str(recipe), str(shots), "-o", str(out), "-q", "--json"], capsys)
    elapsed = time.perf_counter() - started
    assert code == 0
    summary = json.loads(_)
    assert (summary["skipped"], summary["done"], summary["failed"]) == (20, 0, 0)
    assert elapsed < 2.0, elapsed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.webp")} == before
    assert len(lines(out / "audit.jsonl")) == 120  # one 'skipped' line per item


@pytest.mark.slow
def test_product_recipe_keeps_the_asked_grey_and_the_products_colour_on_real_photos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whole photos whose subject has a strong colour (the orange suit, the red-brown cup,
    the ginger cat): the background is the recipe's #f2f2f2 (242) in the top corners, neutral,
    and the subject keeps its own colour (grey-world balancing after the composite had
    turned the grey cyan, about (210, 252, 255), behind the orange suit)."""
    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        picture = Image.fromarray(_source(name))
        picture.thumbnail((160, 160))
        picture.save(shots / f"{name}.png")
    out = tmp_path / "shop"
    code, _, err = run(["batch", str(EXAMPLES / "product-photo.yaml"), str(shots), "-o", str(out), "-q"], capsys)  # fmt: skip
    assert code == 0, err
    for name in ("astronaut", "coffee", "chelsea"):
        written = imageio.load_image(out / f"{name}.webp").pixels.astype(int)
        corners = np.concatenate([written[:4, :4], written[:4, -4:]]).reshape(-1, 3)  # top
        assert np.abs(corners - 242).max() <= 3, (name, corners.mean(axis=0))  # WebP's loss
    suit = imageio.load_image(out / "astronaut.webp").pixels[200:260, 40:100].astype(int)
    red, green, blue = suit.reshape(-1, 3).mean(axis=0)
    assert red > blue + 60 and red > green + 30, (red, green, blue)  # still orange


# --- failures are isolated and summarised ----------------------------------------------------


def test_manifest_erase_with_one_wrong_size_mask(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = make_photos(tmp_path / "images", 20, (64, 48))
    (tmp_path / "masks").mkdir()
    with (tmp_path / "list.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask", "seed"])
        for index, image in enumerate(images):
            shape = (30, 40) if index == 6 else (48, 64)  # row 7: a 40 x 30 mask
            mask = tmp_path / "masks" / f"m{index:02d}.png"
            Image.fromarray(box_mask(shape, (10, 8, 30, 24))).save(mask)
            writer.writerow([f"images/{image.name}", f"masks/{mask.name}", index])
    recipe = write(
        tmp_path / "erase.yaml",
        "steps:\n  - operation: erase\n    method: telea\n"
        "    checks: {min_change_inside_mask: 1}\n",
    )
    out = tmp_path / "clean"
    code, _, err = run(["batch", str(recipe), str(tmp_path / "list.csv"), "-o", str(out)], capsys)
    assert code == 1
    written = sorted(out.rglob("*.png"))
    assert len(written) == 19
    assert not (out / "images" / "img06-erase.png").exists()
    message = (
        f"MaskError x1, first: {tmp_path / 'images' / 'img06.png'} (list.csv line 8): step 1 "
        f"(erase): {tmp_path / 'masks' / 'm06.png'} is 40 x 30 but the image is 64 x 48"
    )
    assert message in err
    assert "19 done, 0 skipped (done before), 1 failed of 20" in err
    log = lines(out / "audit.jsonl")
    failed = [line for line in log if line["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"]["kind"] == "MaskError"  # type: ignore[index]
    assert "is 40 x 30 but the image is 64 x 48" in failed[0]["error"]["message"]  # type: ignore[index]
    ok = [line for line in log if line["status"] == "ok"]
    assert len(ok) == 19
    for line in ok:
        checks = line["checks"]
        assert checks["max_change_outside_mask"] == {"value": 0.0, "limit": 0.0, "ok": True}  # type: ignore[index]
        assert checks["min_change_inside_mask"]["value"] > 1  # type: ignore[index]
        assert line["mask_sha256"] == sha256(Path(str(line["mask"])))
        assert line["fields"]["seed"] == int(Path(str(line["input"])).stem[3:])  # type: ignore[index]
    # pixels outside each mask are the input's, bit for bit
    result = imageio.load_image(out / "images" / "img03-erase.png").pixels
    source = imageio.load_image(images[3]).pixels
    keep = box_mask((48, 64), (10, 8, 30, 24)) == 0
    assert np.array_equal(result[keep], source[keep])


def test_a_folder_with_a_file_that_is_not_an_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shots = tmp_path / "shots"
    make_photos(shots, 5, (32, 24))
    (shots / "notes.txt").write_text("not a picture")
    (shots / ".hidden.png").write_bytes(b"ignored")
    recipe = write(tmp_path / "r.yaml", ADJUST)
    out = tmp_path / "out"
    code, _, err = run(["batch", str(recipe), str(shots), "-o", str(out)], capsys)
    assert code == 1
    assert len(list(out.glob("*.png"))) == 5
    assert f"InvalidImage x1, first: {shots / 'notes.txt'}: step 1 (adjust)" in err
    assert "is not an image retouch can read" in err


# --- resume and interruption ---------------------------------------------------------------


def test_interrupted_batch_finishes_on_the_next_run_without_duplicates(tmp_path: Path) -> None:
    toolkit = Toolkit()
    make_photos(tmp_path / "in", 50, (32, 24))
    recipe = load_recipe(write(tmp_path / "r.yaml", ADJUST), toolkit)
    options = BatchOptions(output=tmp_path / "out")

    def stop_after_20(report: ItemReport) -> None:
        if report.done == 20:
            raise KeyboardInterrupt  # as Ctrl+C would, between two items

    first = run_batch(recipe, collect([str(tmp_path / "in")]), options, on_item=stop_after_20)
    assert first.interrupted and first.exit_code == 130
    assert (first.done, first.skipped, first.failed) == (20, 0, 0)
    assert "30 not started; run the same command again" in first.text()
    done_first = {p: sha256(p) for p in (tmp_path / "out").glob("*.png")}
    assert len(done_first) == 20
    second = run_batch(recipe, collect([str(tmp_path / "in")]), options)
    assert (second.done, second.skipped, second.failed, second.exit_code) == (30, 20, 0, 0)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == sorted([f"img{i:02d}-resize.png" for i in range(50)] + ["audit.jsonl"])
    assert all(sha256(p) == digest for p, digest in done_first.items())  # untouched
    log = lines(tmp_path / "out" / "audit.jsonl")
    finals = [line["input"] for line in log if line["step"] == 2 and line["status"] == "ok"]
    assert len(finals) == 50 and len(set(finals)) == 50  # each item made exactly once


@pytest.mark.slow
def test_ctrl_c_stops_after_the_images_in_flight(tmp_path: Path) -> None:
    make_photos(tmp_path / "in", 24, (400, 300))
    recipe = write(
        tmp_path / "r.yaml",
        "steps:\n  - operation: upscale\n    scale: 3\n    provider: classic\n"
        "  - operation: adjust\n    match_image: ref.png\n",
    )
    Image.fromarray(photo(3, (64, 64))).save(tmp_path / "ref.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "retouch", "batch", str(recipe), str(tmp_path / "in"),
               "-o", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.png"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "stopping after the items in flight" in err
    made = len(list(out.glob("*.png")))
    assert 3 <= made < 24
    assert not list(out.glob(".*.part"))  # nothing half-written
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{24 - made} done, {made} skipped" in again.stderr
    assert len(list(out.glob("*.png"))) == 24


# --- nothing replaced without asking --------------------------------------------------------


def test_outputs_this_batch_did_not_make_are_never_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_photos(tmp_path / "in", 3, (32, 24))
    recipe = write(tmp_path / "r.yaml", ADJUST)
    out = tmp_path / "out"
    out.mkdir()
    theirs = out / "img01-resize.png"
    theirs.write_bytes(b"someone else's file")
    argv = ["batch", str(recipe), str(tmp_path / "in"), "-o", str(out)]
    code, _, err = run(argv, capsys)
    assert code == 1
    assert theirs.read_bytes() == b"someone else's file"
    assert "OutputExists x1" in err and "pass --force to replace it" in err
    # a changed recipe did not make the outputs that are there: refused too
    code, _, _ = run([*argv, "--force"], capsys)
    assert code == 0 and imageio.load_image(theirs).size == (24, 18)
    write(recipe, ADJUST.replace("1.3", "1.4"))
    code, _, err = run(argv, capsys)
    assert code == 1 and "OutputExists x3" in err
    code, _, err = run([*argv, "--force"], capsys)
    assert code == 0, err
    assert "3 done" in err


def test_jobs_and_names_and_saved_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = make_photos(tmp_path / "in", 4, (32, 24))
    rows = [
        {"image": f"in/{p.name}", "sku": f"SKU-{i}", "gamma": 1.1 + i / 10}
        for i, p in enumerate(images)
    ]
    (tmp_path / "list.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write(
        tmp_path / "r.yaml",
        'output: "{row.sku}/{index}-{step}.{ext}"\n'
        "steps:\n"
        '  - {operation: adjust, gamma: "${row.gamma}", save: true}\n'
        "  - {operation: resize, max_width: 16, format: jpg, quality: 80}\n",
    )
    serial, parallel = tmp_path / "one", tmp_path / "two"
    for out, jobs in ((serial, "1"), (parallel, "2")):
        code, _, err = run(["batch", str(recipe), str(tmp_path / "list.jsonl"), "-o", str(out), "--jobs", jobs], capsys)  # fmt: skip
        assert code == 0, err
    made = sorted(
        str(p.relative_to(serial)) for p in serial.rglob("*.*") if p.name != "audit.jsonl"
    )
    assert made == [f"in/SKU-{i}/{n}" for i in range(4) for n in ("1-adjust.png", "2-resize.jpg")]
    for name in made:
        assert sha256(serial / name) == sha256(parallel / name)
    assert imageio.load_image(serial / "in" / "SKU-2" / "2-resize.jpg").size == (16, 12)
    gammas = [line["fields"]["gamma"] for line in lines(serial / "audit.jsonl") if line["step"] == 1]  # type: ignore[index]  # fmt: skip
    assert sorted(gammas) == [1.1 + i / 10 for i in range(4)]
    # two inputs with one output name are refused before anything runs
    clash = write(tmp_path / "clash.yaml", 'output: "same.{ext}"\n' + ADJUST)
    code, _, err = run(
        ["batch", str(clash), str(tmp_path / "in"), "-o", str(tmp_path / "c")], capsys
    )
    assert code == 2 and "would also be written for" in err
    assert not (tmp_path / "c").exists()


# --- quality checks --------------------------------------------------------------------------


class FlatFill:
    """A bad eraser for tests: fills the hole with flat grey (a seam all round)."""

    info = ProviderInfo(
        name="flat",
        kind="local",
        description="test eraser",
        operations={"erase": OperationSpec(honours=frozenset({"seed"}))},
        priority=100,
    )

    def __init__(self, fill: int | None = 128) -> None:
        self.fill = fill

    def status(self) -> ProviderStatus:
        return ProviderStatus(ready=True)

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        out = request.image.rgb8().copy()
        if self.fill is not None:
            out[request.mask.array > 0] = self.fill  # type: ignore[union-attr]
        return ImageResult(images=[OutputImage(pixels=out, seed=request.seed)], provider="flat", model="grey")  # type: ignore[union-attr]  # fmt: skip


def test_failed_checks_fail_the_item_or_warn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "coffee.png"
    Image.fromarray(np.ascontiguousarray(data.coffee()[::4, ::4])).save(image)
    mask = tmp_path / "mask.png"
    Image.fromarray(box_mask((100, 150), (50, 33, 87, 58))).save(mask)
    recipe = write(
        tmp_path / "r.yaml",
        f"steps:\n  - operation: erase\n    mask: {mask}\n    checks: {{seam: 1.5}}\n",
    )
    flat = Toolkit(providers={"flat": FlatFill()})
    code, _, err = run(["batch", str(recipe), str(image), "-o", str(tmp_path / "a")], capsys, flat)
    assert code == 1
    assert "CheckFailed x1" in err and "check seam is" in err and "limit 1.5" in err
    assert not (tmp_path / "a" / "coffee-erase.png").exists()
    log = lines(tmp_path / "a" / "audit.jsonl")
    assert log[0]["checks"]["seam"]["value"] > 2.5  # type: ignore[index]
    write(recipe, recipe.read_text() + "on_check_failure: warn\n")
    code, _, err = run(["batch", str(recipe), str(image), "-o", str(tmp_path / "b")], capsys, flat)
    assert code == 0 and "1 with check warnings" in err
    assert (tmp_path / "b" / "coffee-erase.png").exists()
    assert "check seam is" in lines(tmp_path / "b" / "audit.jsonl")[0]["warnings"][0]  # type: ignore[index]
    # "did anything change": an eraser that returns its input fails the erase
    write(recipe, f"steps:\n  - operation: erase\n    mask: {mask}\n    checks: {{min_change_inside_mask: 1}}\n")  # fmt: skip
    lazy = Toolkit(providers={"flat": FlatFill(fill=None)})
    code, _, err = run(["batch", str(recipe), str(image), "-o", str(tmp_path / "c")], capsys, lazy)
    assert code == 1 and "check min_change_inside_mask is 0.0, limit 1.0" in err
    # the size a step should make
    write(recipe, "steps:\n  - operation: resize\n    max_size: 50\n    checks: {size: 40x40}\n")
    code, _, err = run(["batch", str(recipe), str(image), "-o", str(tmp_path / "d")], capsys)
    assert code == 1 and "check size is [50, 33], limit [40, 40]" in err


def test_report_summarises_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shots = tmp_path / "shots"
    make_photos(shots, 3, (32, 24))
    (shots / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    recipe = write(tmp_path / "r.yaml", ADJUST)
    out = tmp_path / "out"
    run(["batch", str(recipe), str(shots), "-o", str(out), "-q"], capsys)
    run(["batch", str(recipe), str(shots), "-o", str(out), "-q"], capsys)
    code, text, _ = run(["batch", "report", str(out / "audit.jsonl")], capsys)
    assert code == 0
    assert "4 items over 2 run(s): 3 done, 0 skipped (done before), 1 failed" in text
    assert "adjust" in text and "classic" in text and "lanczos" in text
    assert f"InvalidImage x1, first: {shots / 'broken.png'}" in text
    found = report(out / "audit.jsonl").as_dict()
    assert found["items"] == {"done": 3, "skipped": 0, "failed": 1}
    assert "the last run: 0 done, 3 skipped, 1 failed" in text  # what the second run did
    assert found["last_run"] == {"done": 0, "skipped": 3, "failed": 1}
    assert [s["ok"] for s in found["steps"]] == [3, 3]
    assert [s["failed"] for s in found["steps"]] == [2, 0]  # the broken file, in both runs


def test_a_moved_project_resumes_where_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    images = make_photos(project / "images", 3, (40, 30))
    (project / "masks").mkdir()
    rows = ["image,mask"]
    for image in images:
        Image.fromarray(box_mask((30, 40), (5, 5, 20, 15))).save(project / "masks" / image.name)
        rows.append(f"images/{image.name},masks/{image.name}")
    (project / "list.csv").write_text("\n".join(rows) + "\n")
    write(project / "erase.yaml", "steps:\n  - operation: erase\n    method: telea\n")
    argv = ["batch", "erase.yaml", "list.csv", "-o", "out", "--json"]
    here = Path.cwd()
    try:
        os.chdir(project)
        code, out, _ = run(argv, capsys)
        assert code == 0 and json.loads(out)["done"] == 3
        moved = project.rename(tmp_path / "elsewhere")
        os.chdir(moved)
        code, out, _ = run(argv, capsys)
        assert code == 0 and json.loads(out)["skipped"] == 3  # keys hold file contents, not paths
        Image.fromarray(box_mask((30, 40), (2, 2, 30, 25))).save(moved / "masks" / images[1].name)
        code, out, _ = run(argv, capsys)  # a changed mask: that item's output is not its own
        assert code == 1 and json.loads(out)["skipped"] == 2
        assert "OutputExists" in out
    finally:
        os.chdir(here)
