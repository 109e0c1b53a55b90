"""Recipes: read from YAML or JSON, checked in full before any image runs, with the very
messages the CLI and HTTP give, naming the step, the field and the manifest row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from retouch.api import Toolkit
from retouch.batch import BatchOptions, RecipeError, collect, load_recipe
from retouch.batch.engine import plan
from retouch.batch.recipe import check_rows, step_values
from retouch.cli import main

TOOLKIT = Toolkit()
EXAMPLE = Path(__file__).parents[1] / "examples" / "recipes" / "product-photo.yaml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_public_shape_loads_from_yaml_and_json_alike(tmp_path: Path) -> None:
    text = """
steps:
  - operation: remove-background
  - operation: upscale
    scale: 2
  - operation: resize
    max_size: 1600
    format: webp
"""
    from_yaml = load_recipe(write(tmp_path / "r.yaml", text), TOOLKIT)
    data = {
        "steps": [
            {"operation": "remove-background"},
            {"operation": "upscale", "scale": 2},
            {"operation": "resize", "max_size": 1600, "format": "webp"},
        ]
    }
    from_json = load_recipe(write(tmp_path / "r.json", json.dumps(data)), TOOLKIT)
    assert [s.operation for s in from_yaml.steps] == ["remove-background", "upscale", "resize"]
    assert [s.name for s in from_yaml.steps] == ["remove-background", "upscale", "resize"]
    assert from_yaml.steps[1].values == {"scale": 2}
    assert from_yaml.steps[2].format == "webp" and from_yaml.steps[2].values == {"max_size": 1600}
    assert from_yaml.digest == from_json.digest  # content, not spelling, is the identity
    assert [from_yaml.saved(s) for s in from_yaml.steps] == [False, False, True]


def test_the_example_recipe_is_valid() -> None:
    recipe = load_recipe(EXAMPLE, TOOLKIT)
    assert [s.operation for s in recipe.steps] == [
        "remove-background",
        "upscale",
        "adjust",  # on the cut-out: its statistics are the product's, the grey stays exact
        "remove-background",
        "resize",
    ]
    assert recipe.steps[3].name == "background"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"operation": "upscal"}, "step 1: unknown operation 'upscal'; operations: erase"),
        ({"operation": "upscal"}, "(did you mean 'upscale'?)"),
        (
            {"operation": "upscale", "scal": 2},
            "step 1 (upscale): upscale: unknown field(s) scal; known: ",
        ),
        (
            {"operation": "upscale", "scale": 40},
            "step 1 (upscale): scale must be above 0 and at most 16, got 40",
        ),
        (
            {"operation": "upscale", "scale": "big"},
            "step 1 (upscale): scale must be a number, got 'big'",
        ),
        (
            {"operation": "adjust", "white_balance": "gray"},
            "step 1 (adjust): white_balance must be one of none, grey-world, white-patch, not 'gray'",
        ),
        ({"operation": "adjust"}, "step 1 (adjust): adjust has nothing to do"),
        (
            {"operation": "resize", "max_size": 10, "format": "gif"},
            "step 1 (resize): format must be one of png, jpg, jpeg, webp, got 'gif'",
        ),
        (
            {"operation": "resize", "max_size": 10, "checks": {"seem": 1}},
            "unknown check(s) seem; checks: max_change_outside_mask",
        ),
        (
            {"operation": "resize", "max_size": 10, "checks": {"seam": 1.5}},
            "checks seam measure a mask, and resize takes none",
        ),
        (
            {"operation": "remove-background", "bg_image": "no-such.jpg"},
            "step 1 (remove-background): bg_image ",
        ),
        (
            {"operation": "resize", "max_size": 10, "image": "x.png"},
            "image is the batch's input (or the previous step's output); leave it out",
        ),
        (
            {"operation": "upscale", "provider": "u2net"},
            "step 1 (upscale): provider 'u2net' does not do upscale",
        ),
        (
            {"operation": "upscale", "sharpen": 3, "provider": "classic"},
            "step 1 (upscale): upscale: unknown field(s) sharpen",
        ),
    ],
)
def test_a_bad_step_is_one_message_naming_step_and_field(
    tmp_path: Path, step: dict[str, object], message: str
) -> None:
    path = write(tmp_path / "bad.json", json.dumps({"steps": [step]}))
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, TOOLKIT)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{path}: ")


def test_recipe_messages_are_the_clis_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(photo)
    code, _, err = run(
        ["upscale", str(photo), "--scale", "40", "-o", str(tmp_path / "o.png")], capsys
    )
    assert code == 2
    cli_message = err.strip().removeprefix("retouch: error: ")
    path = write(tmp_path / "r.yaml", "steps:\n  - operation: upscale\n    scale: 40\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, TOOLKIT)
    assert str(caught.value) == f"{path}: step 1 (upscale): {cli_message}"


def test_structure_errors(tmp_path: Path) -> None:
    cases = {
        "stepz: []\n": "unknown key(s) stepz",
        "steps: []\n": "'steps' must be a non-empty list",
        "steps: [upscale]\n": "step 1: a step is a mapping with an 'operation'",
        "steps:\n  - operation: upscale\n    name: a b\n": "name must be letters, digits",
        "steps:\n  - {operation: upscale, name: x}\n  - {operation: upscale, name: x}\n": (
            "step 2: another step is already named 'x'"
        ),
        "steps: [{operation: upscale}]\noutput: '{stem}-{stage}.{ext}'\n": "unknown field {stage}",
        "steps: [{operation: upscale}]\noutput: '{stem}.png'\n": "must end in .{ext}",
        "steps: [{operation: upscale, quality: 0}]\n": "quality must be a whole number 1..100",
        "steps: [{operation: upscale, on_check_failure: maybe}]\n": "fail or warn",
        "steps: [{operation: upscale\n": "not valid YAML",
        "steps:\n  - operation: variations\n    n: 2\n  - operation: resize\n    max_size: 9\n": (
            "n is 2, but only the last step may make several images"
        ),
    }
    for text, message in cases.items():
        with pytest.raises(RecipeError) as caught:
            load_recipe(write(tmp_path / "r.yaml", text), TOOLKIT)
        assert message in str(caught.value), (text, str(caught.value))
    with pytest.raises(RecipeError, match=r"a recipe is a \.yaml, \.yml or \.json file"):
        load_recipe(write(tmp_path / "r.txt", "steps: []"), TOOLKIT)


def test_references_and_columns_are_resolved_per_row(tmp_path: Path) -> None:
    (tmp_path / "masks").mkdir()
    recipe_path = write(
        tmp_path / "r.yaml",
        """
steps:
  - operation: erase
    seed: "${row.seed}"
  - operation: adjust
    gamma: "${row.gamma}"
""",
    )
    recipe = load_recipe(recipe_path, TOOLKIT)
    assert recipe.references() == ["seed", "gamma"]
    row = {"image": "a.png", "mask": "masks/a.png", "seed": "7", "gamma": "1.2", "sku": "X1"}
    values = step_values(
        recipe, recipe.steps[0], TOOLKIT, row, tmp_path / "list", " (l.csv line 2)"
    )
    # the row's mask column fills erase's mask (relative to the manifest's folder)
    assert values == {"seed": "7", "mask": str(tmp_path / "list" / "masks" / "a.png")}
    assert step_values(recipe, recipe.steps[1], TOOLKIT, row, None) == {"gamma": "1.2"}
    bad = {**row, "gamma": "11"}
    with pytest.raises(RecipeError) as caught:
        check_rows(
            recipe,
            TOOLKIT,
            [(row, tmp_path, " (l.csv line 2)"), (bad, tmp_path, " (l.csv line 3)")],
        )
    assert str(caught.value) == (
        f"{recipe_path}: step 2 (adjust) (l.csv line 3): gamma must be 0.1..10, got 11.0"
    )
    with pytest.raises(RecipeError, match=r"refers to \$\{row.gamma\} but the manifest has no"):
        check_rows(
            recipe, TOOLKIT, [({"image": "a.png", "mask": "m.png", "seed": "1"}, tmp_path, "")]
        )


def test_literal_values_beside_references_are_checked_without_a_manifest(tmp_path: Path) -> None:
    text = 'steps:\n  - operation: adjust\n    gamma: "${row.g}"\n    saturation: 9\n'
    with pytest.raises(RecipeError, match=r"step 1 \(adjust\): saturation must be 0\.\.4, got 9"):
        load_recipe(write(tmp_path / "r.yaml", text), TOOLKIT)
    text = 'steps:\n  - operation: adjust\n    gama: "${row.g}"\n'
    with pytest.raises(RecipeError, match=r"adjust: unknown field\(s\) gama"):
        load_recipe(write(tmp_path / "r.yaml", text), TOOLKIT)
    text = 'steps:\n  - operation: adjust\n    gamma: "${row.g}"\n'
    assert load_recipe(write(tmp_path / "r.yaml", text), TOOLKIT).references() == ["g"]


def test_a_recipe_alone_leaves_per_row_fields_to_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe_path = write(
        tmp_path / "inpaint.yaml",
        "steps:\n  - operation: erase\n    checks: {min_change_inside_mask: 2}\n",
    )
    code, out, err = run(["recipe", "validate", str(recipe_path)], capsys)
    assert code == 0, err
    assert "valid, 1 step(s)" in out and "1. erase [classic]" in out
    # plain files give no mask: refused before anything runs, saying where a mask can come from
    photo = tmp_path / "p.png"
    Image.new("RGB", (16, 16)).save(photo)
    recipe = load_recipe(recipe_path, TOOLKIT)
    with pytest.raises(RecipeError) as caught:
        plan(recipe, collect([str(photo)]), BatchOptions(tmp_path / "out"), TOOLKIT)
    assert "step 1 (erase): erase: missing image field(s) mask" in str(caught.value)
    assert "give a manifest with a column of that name" in str(caught.value)
    code, _, err = run(["recipe", "validate", str(recipe_path), str(photo)], capsys)
    assert code == 2 and "missing image field(s) mask" in err


def test_recipe_files_are_relative_to_the_recipe(tmp_path: Path) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(folder / "studio.png")
    recipe = load_recipe(
        write(
            folder / "r.yaml",
            "steps:\n  - operation: remove-background\n    bg_image: studio.png\n",
        ),
        TOOLKIT,
    )
    values = step_values(recipe, recipe.steps[0], TOOLKIT, {}, None)
    assert values == {"bg_image": str(folder / "studio.png")}
    before = recipe.digest
    Image.new("RGB", (4, 4), (99, 20, 30)).save(folder / "studio.png")
    again = load_recipe(folder / "r.yaml", TOOLKIT)
    assert again.digest != before  # a changed background image changes the recipe's identity
