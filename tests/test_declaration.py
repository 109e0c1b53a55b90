"""One declaration per operation: every front end is generated from the request dataclasses,
and one check (ranges, support) serves Python, the CLI and HTTP with the same message."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import retouch
from retouch.api import Toolkit
from retouch.cli import main
from retouch.declaration import request_fields
from retouch.errors import InvalidRequest, UnsupportedOperation
from retouch.imageio import picture_from_array
from retouch.results import ImageResult, OutputImage
from retouch.server import ServerSettings, create_app
from retouch.types import (
    REQUEST_TYPES,
    InpaintRequest,
    OperationSpec,
    ProviderInfo,
    ProviderStatus,
    ResizeRequest,
    RestoreFacesRequest,
    VariationsRequest,
    param,
)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def files(tmp_path: Path, small_photo: np.ndarray) -> tuple[Path, Path]:
    image, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray(small_photo).save(image)
    hole = np.zeros(small_photo.shape[:2], np.uint8)
    hole[20:40, 30:60] = 255
    Image.fromarray(hole).save(mask)
    return image, mask


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str], **kw: Any) -> tuple[int, str, str]:
    try:
        code = main(argv, **kw)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# --- a field added to a request type appears everywhere ---------------------------------------


@dataclass(frozen=True, kw_only=True)
class SharpResize(ResizeRequest):
    """Resize as declared, plus one field added here and nowhere else."""

    sharpness: float = param(
        0.5, low=0.0, high=1.0, needs_support=True, help="unsharp amount after resizing"
    )


def test_a_new_field_appears_in_cli_openapi_and_operations(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], tmp_path: Path
) -> None:
    toolkit = Toolkit(operations={**REQUEST_TYPES, "resize": SharpResize})
    code, out, _ = run_cli(["resize", "--help"], capsys, toolkit=toolkit)
    assert code == 0 and "--sharpness" in out and "unsharp amount" in out
    with TestClient(create_app(toolkit, ServerSettings())) as client:
        spec = client.get("/openapi.json").json()
        body = spec["paths"]["/v1/resize"]["post"]["requestBody"]["content"]
        for media in ("multipart/form-data", "application/json"):
            prop = body[media]["schema"]["properties"]["sharpness"]
            prop = prop["anyOf"][0] if "anyOf" in prop else prop  # JSON: the value or null
            assert prop["minimum"] == 0 and prop["maximum"] == 1
        listed = client.get("/v1/operations").json()["data"]
        resize = next(o for o in listed if o["name"] == "resize")
        sharp = next(f for f in resize["fields"] if f["name"] == "sharpness")
        assert (sharp["minimum"], sharp["maximum"], sharp["default"]) == (0, 1, 0.5)
        # The range check and the support check come from the declaration too.
        image = files[0]
        too_sharp = client.post(
            "/v1/resize", files={"image": ("p.png", image.read_bytes())}, data={"sharpness": "2"}
        )
        assert too_sharp.status_code == 400 and too_sharp.json()["error"]["param"] == "sharpness"
        unsupported = client.post(
            "/v1/resize",
            files={"image": ("p.png", image.read_bytes())},
            data={"sharpness": "0.9", "max_size": "32"},
        )
        assert unsupported.status_code == 400
        assert "sharpness is not supported by classic" in unsupported.json()["error"]["message"]
    code, _, err = run_cli(
        [
            "resize",
            str(image),
            "--max-size",
            "32",
            "--sharpness",
            "0.9",
            "-o",
            str(tmp_path / "s.png"),
        ],
        capsys,
        toolkit=toolkit,
    )
    assert code == 4 and "sharpness is not supported by classic" in err
    assert not (tmp_path / "s.png").exists()


# --- one range check: Python, CLI, HTTP -----------------------------------------------------------


def test_steps_out_of_range_refused_everywhere_before_any_provider(
    capsys: pytest.CaptureFixture[str],
    files: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image, mask = files
    toolkit = Toolkit()

    def no_lookup(*_: object, **__: object) -> None:
        raise AssertionError("a provider was looked up")

    monkeypatch.setattr(toolkit, "provider_for", no_lookup)
    picture = picture_from_array(np.asarray(Image.open(image)))
    for steps in (0, 151):
        with pytest.raises(InvalidRequest, match=r"steps must be 1\.\.150, got") as caught:
            toolkit.run(InpaintRequest(image=picture, mask=str(mask), prompt="a hat", steps=steps))
        assert caught.value.param == "steps"

    out = tmp_path / "out.png"
    argv = ["inpaint", str(image), "--mask", str(mask), "--prompt", "a hat", "-o", str(out)]
    code, _, err = run_cli([*argv, "--steps", "0"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "steps must be 1..150, got 0" in lines[0]
    assert not out.exists()

    app_toolkit = Toolkit()
    with TestClient(create_app(app_toolkit, ServerSettings())) as client:
        monkeypatch.setattr(client.app.state.service.toolkit, "provider_for", no_lookup)  # type: ignore[attr-defined]
        multipart = client.post(
            "/v1/inpaint",
            files={"image": ("p.png", image.read_bytes()), "mask": ("m.png", mask.read_bytes())},
            data={"prompt": "a hat", "steps": "0"},
        )
        as_json = client.post(
            "/v1/inpaint",
            json={
                "image": base64.b64encode(image.read_bytes()).decode(),
                "mask": base64.b64encode(mask.read_bytes()).decode(),
                "prompt": "a hat",
                "steps": 0,
            },
        )
        for response in (multipart, as_json):
            error = response.json()["error"]
            assert response.status_code == 400 and error["param"] == "steps"
            assert "steps must be 1..150, got 0" in error["message"]
        listed = client.get("/v1/operations").json()["data"]
    names = {o["name"] for o in listed}
    assert {
        "erase",
        "inpaint",
        "outpaint",
        "edit",
        "variations",
        "upscale",
        "resize",
        "remove-background",
        "stylize",
        "restore-faces",
        "mask",
    } <= names
    inpaint = next(o for o in listed if o["name"] == "inpaint")
    steps = next(f for f in inpaint["fields"] if f["name"] == "steps")
    assert (steps["minimum"], steps["maximum"]) == (1, 150)
    assert all(o["fields"] and "providers" in o for o in listed)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("strength", 1.5, "strength must be 0..1, got 1.5"),
        ("guidance", 0.5, "guidance must be 1..20, got 0.5"),
        ("n", 0, "n must be 1..10, got 0"),
        ("seed", -1, "seed must be 0..4294967295, got -1"),
        ("strength", float("nan"), "strength must be a finite number"),
        ("feather", 10_000, "feather must be at most the image's diagonal"),
        ("prompt", "", "inpaint needs prompt"),
        ("prompt", "x" * 32_001, "prompt is longer than 32000 characters"),
    ],
)
def test_ranges_finiteness_and_image_scaled_ceilings(
    small_photo: np.ndarray, field: str, value: object, message: str
) -> None:
    mask = np.zeros(small_photo.shape[:2], np.uint8)
    mask[10:20, 10:20] = 255
    values: dict[str, Any] = {"prompt": "a hat", field: value}
    request = InpaintRequest(image=picture_from_array(small_photo), mask=mask, **values)
    with pytest.raises(InvalidRequest) as caught:
        Toolkit().run(request)
    assert message in str(caught.value) and caught.value.param == field


# --- support computed from the fields -----------------------------------------------------------


def test_guidance_to_openai_is_refused_in_python_cli_and_http(
    capsys: pytest.CaptureFixture[str],
    files: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")  # never reached
    image, mask = files
    with pytest.raises(UnsupportedOperation, match="guidance is not supported by openai"):
        Toolkit().inpaint(image, mask, "a hat", guidance=5.0, provider="openai")
    code, _, err = run_cli(
        [
            "inpaint",
            str(image),
            "--mask",
            str(mask),
            "--prompt",
            "a hat",
            "--guidance",
            "5",
            "--provider",
            "openai",
            "-o",
            str(tmp_path / "o.png"),
        ],
        capsys,
    )
    assert code == 4 and "guidance is not supported by openai" in err
    with TestClient(create_app(Toolkit(), ServerSettings())) as client:
        r = client.post(
            "/v1/inpaint",
            files={"image": ("p.png", image.read_bytes()), "mask": ("m.png", mask.read_bytes())},
            data={"prompt": "a hat", "guidance": "5", "provider": "openai"},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "guidance"
        assert "guidance is not supported by openai" in r.json()["error"]["message"]
    # With no key set, what no key could fix is still said first, not "set OPENAI_API_KEY".
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(UnsupportedOperation, match="guidance is not supported by openai"):
        Toolkit().inpaint(image, mask, "a hat", guidance=5.0, provider="openai")
    with TestClient(create_app(Toolkit(), ServerSettings())) as client:
        r = client.post(
            "/v1/inpaint",
            files={"image": ("p.png", image.read_bytes()), "mask": ("m.png", mask.read_bytes())},
            data={"prompt": "a hat", "guidance": "5", "provider": "openai"},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "guidance"


class Restorer:
    """A restore-faces provider for the tests: a real, simple change (contrast stretch)
    that honours fidelity, and a variations provider that honours prompt and strength."""

    info = ProviderInfo(
        name="restorer",
        kind="local",
        description="test",
        operations={
            "restore-faces": OperationSpec(honours=frozenset({"fidelity"})),
            "variations": OperationSpec(honours=frozenset({"prompt", "strength", "n", "seed"})),
        },
    )
    seen: ClassVar[list[Any]] = []

    def status(self) -> ProviderStatus:
        return ProviderStatus(True)

    def run(self, request, progress):  # type: ignore[no-untyped-def]
        Restorer.seen.append(request)
        rgb = request.image.pixels.astype(np.float32)
        amount = 1 - getattr(request, "fidelity", getattr(request, "strength", 0.5))
        stretched = (rgb - rgb.mean()) * (1 + amount) + rgb.mean()
        out = np.clip(stretched, 0, 255).astype(np.uint8)
        count = getattr(request, "n", 1)
        return ImageResult(
            images=[OutputImage(pixels=out, seed=i) for i in range(count)], provider="restorer"
        )


def test_cli_parity_from_the_declaration(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], tmp_path: Path
) -> None:
    image, _ = files
    for command, flags in (
        ("inpaint", ("--strength", "--steps", "--guidance", "--crop-margin", "--model")),
        ("variations", ("--prompt", "--strength", "-n", "--seed")),
        ("restore-faces", ("--fidelity", "--model")),
        ("edit", ("--mask", "--strength")),
        ("remove-bg", ("--matting", "--no-decontaminate", "--bg-color")),
        ("upscale", ("--max-memory", "--tile", "--threads")),
        ("erase", ("--method", "--patch-size", "--mask-blur")),
    ):
        code, out, _ = run_cli([command, "--help"], capsys)
        assert code == 0
        for flag in flags:
            assert flag in out, (command, flag)
    toolkit = Toolkit(providers={"restorer": Restorer()})
    out = tmp_path / "restored.png"
    code, _, err = run_cli(
        ["restore-faces", str(image), "--fidelity", "0.2", "-o", str(out)], capsys, toolkit=toolkit
    )
    assert code == 0, err
    assert isinstance(Restorer.seen[-1], RestoreFacesRequest)
    assert Restorer.seen[-1].fidelity == pytest.approx(0.2)
    original = np.asarray(Image.open(image)).astype(float)
    assert np.asarray(Image.open(out)).astype(float).std() > original.std() * 1.3
    code, _, err = run_cli(
        [
            "variations",
            str(image),
            "--prompt",
            "brighter",
            "--strength",
            "0.3",
            "-n",
            "2",
            "-o",
            str(tmp_path / "v.png"),
        ],
        capsys,
        toolkit=toolkit,
    )
    assert code == 0, err
    request = Restorer.seen[-1]
    assert isinstance(request, VariationsRequest)
    assert (request.prompt, request.strength, request.n) == ("brighter", 0.3, 2)
    assert (tmp_path / "v.png").exists() and (tmp_path / "v-1.png").exists()


def test_every_request_field_has_a_flag_and_a_json_kind() -> None:
    for operation, cls in REQUEST_TYPES.items():
        for spec in request_fields(cls):
            described = spec.describe()
            assert described["help"], (operation, spec.name)
            assert spec.kind, (operation, spec.name)
            if spec.name != "image" and spec.param.cli:
                assert spec.flag.startswith("--"), (operation, spec.name)


# --- ControlNet guides and detail upscale: declared once ------------------------------------------


def test_control_fields_from_the_declaration(
    capsys: pytest.CaptureFixture[str],
    files: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """control, control_image (an upload), control_scale/start/end on edit and inpaint; the
    guide list is checked item by item; detail and seed on upscale; providers that cannot
    steer by guides refuse them by name."""
    image, mask = files
    for command in ("edit", "inpaint"):
        code, out, _ = run_cli([command, "--help"], capsys)
        assert code == 0
        for flag in ("--control ", "--control-image", "--control-scale", "--control-start"):
            assert flag in out, (command, flag)
        listed = "canny,depth,lineart,softedge,scribble,openpose,segmentation,tile,none"
        assert listed in "".join(out.split())
    code, out, _ = run_cli(["upscale", "--help"], capsys)
    assert code == 0 and "--detail " in out and "--detail-strength" in out and "--upscaler" in out
    with pytest.raises(InvalidRequest, match=r"control takes canny.*not 'pose'"):
        Toolkit().edit(image, "x", control="canny,pose", provider="diffusers")
    with pytest.raises(InvalidRequest, match="names a choice twice"):
        Toolkit().edit(image, "x", control="canny, canny", provider="diffusers")
    with pytest.raises(InvalidRequest, match=r"control_scale must be 0\.\.2"):
        Toolkit().edit(image, "x", control="canny", control_scale=3.0)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")  # never reached
    with pytest.raises(
        UnsupportedOperation, match=r"control is not supported by openai.*diffusers"
    ):
        Toolkit().inpaint(image, mask, "a hat", control="canny", provider="openai")
    with pytest.raises(UnsupportedOperation, match="control_image is not supported by openai"):
        Toolkit().edit(image, "a hat", control_image=image, provider="openai")
    with TestClient(create_app(Toolkit(), ServerSettings())) as client:
        spec = client.get("/openapi.json").json()
        body = spec["paths"]["/v1/edit"]["post"]["requestBody"]["content"]
        multipart = body["multipart/form-data"]["schema"]["properties"]
        assert multipart["control_image"]["format"] == "binary"
        pattern = multipart["control"]["pattern"]
        import re

        assert re.match(pattern, "canny, depth") and not re.match(pattern, "canny,pose")
        listed = client.get("/v1/operations").json()["data"]
        edit = next(o for o in listed if o["name"] == "edit")
        control = next(f for f in edit["fields"] if f["name"] == "control")
        assert control["separator"] == "," and "openpose" in control["choices"]
        upscale = next(o for o in listed if o["name"] == "upscale")
        assert {"detail", "seed"} <= {f["name"] for f in upscale["fields"]}
        r = client.post(
            "/v1/edit",
            files={
                "image": ("p.png", image.read_bytes()),
                "control_image": ("c.png", mask.read_bytes()),
            },
            data={"prompt": "x", "control": "openpose", "provider": "openai"},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "control"


def test_the_operations_command_lists_what_get_operations_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`retouch operations`: each operation with the providers ready now; with a name, its
    fields with their flags and ranges; --json is what retouch.operations() gives."""
    code, out, _ = run_cli(["operations"], capsys)
    assert code == 0
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert names == [op["name"] for op in retouch.operations()]
    erase = next(line for line in out.splitlines() if line.startswith("erase "))
    assert "classic" in erase  # ready with no download
    code, out, _ = run_cli(["operations", "inpaint"], capsys)
    assert code == 0
    steps = out[out.index("--steps") :].splitlines()[0]
    assert "int" in steps and "1..150" in steps
    code, out, _ = run_cli(["operations", "upscale", "--json"], capsys)
    assert json.loads(out) == next(o for o in retouch.operations() if o["name"] == "upscale")
    code, _, err = run_cli(["operations", "paint"], capsys)
    assert code == 2 and "no operation 'paint'" in err
