"""The diffusers provider with tiny randomly initialised pipelines (no download), loaded from
a diffusers folder through the same code users use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retouch.api import Toolkit
from retouch.errors import Cancelled, InvalidRequest, ModelNotAvailable, UnsupportedOperation
from retouch.models.store import ModelStore
from retouch.providers.diffusion import DiffusersOptions
from retouch.types import Progress

from .conftest import box_mask, require
from .fake_guides import luminance_depth_model, reference, register_guide_models
from .tiny_sd import (
    TINY_X8,
    build,
    build_controlnet,
    build_flux_fill,
    build_lora,
    build_tiny_vae,
    build_xl,
    build_xl_controlnet,
    config_only,
    single_file,
    transparent_vae,
)

require("diffusers")
pytestmark = pytest.mark.slow  # tiny pipelines, but every test runs diffusion steps on the CPU
TOOLKIT = Toolkit()  # one toolkit, so each pipeline loads once for the module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sd")
    plain = build(root / "plain", inpaint_unet=False)
    inpaint = build(root / "inpaint")
    return {
        "inpaint": inpaint,
        "plain": plain,
        "controlnet": build_controlnet(plain, root / "controlnet"),
        "controlnet_b": build_controlnet(plain, root / "controlnet-b", seed=2),
        "safetensors": single_file(inpaint, root / "inpaint.safetensors"),
        "ckpt": single_file(inpaint, root / "inpaint.ckpt"),
        "plain_safetensors": single_file(plain, root / "plain.safetensors"),
        "config": config_only(inpaint, root / "config"),
        "plain_config": config_only(plain, root / "plain-config"),
        "lora": build_lora(inpaint, root / "lora" / "lcm-lora.safetensors"),
        "tiny_vae": build_tiny_vae(root / "taesd"),
    }


@pytest.fixture
def store(tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path / "home"))
    store = ModelStore()
    store.add("tiny-sd", tiny["inpaint"], task="inpaint")
    return store


@pytest.fixture
def scene() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut()[::8, ::8])  # 64 x 64
    return photo, box_mask((64, 64), (20, 16, 44, 40))


def inpaint(photo: np.ndarray, mask: np.ndarray, **kwargs: object):  # type: ignore[no-untyped-def]
    return TOOLKIT.inpaint(photo, mask, "a red hat", provider="diffusers", steps=3, **kwargs)  # type: ignore[arg-type]


def test_seeds_reproduce_and_outside_stays_exact(
    store: ModelStore, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene
    a, b, c = (
        inpaint(photo, mask, seed=1),
        inpaint(photo, mask, seed=1),
        inpaint(photo, mask, seed=2),
    )
    assert a.provider == "diffusers" and a.image.seed == 1
    assert np.array_equal(a.image.pixels, b.image.pixels)
    assert not np.array_equal(a.image.pixels[mask > 0], c.image.pixels[mask > 0])
    for result in (a, c):
        assert np.array_equal(result.image.pixels[mask == 0], photo[mask == 0])
    drawn = inpaint(photo, mask)  # no seed: one is drawn and returned
    assert drawn.image.seed is not None and 0 <= drawn.image.seed < 2**32


def test_progress_once_per_step_and_cancel_between_steps(
    store: ModelStore, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene
    reports: list[Progress] = []
    inpaint(photo, mask, seed=3, progress=reports.append)
    assert [(r.step, r.total) for r in reports if r.stage == "diffusion"] == [
        (0, 3),
        (1, 3),
        (2, 3),
        (3, 3),
    ]
    seen: list[int] = []

    def cancel(report: Progress) -> None:
        seen.append(report.step)
        if report.step == 1:
            raise Cancelled("enough")

    with pytest.raises(Cancelled):
        TOOLKIT.inpaint(photo, mask, "x", provider="diffusers", steps=10, progress=cancel)
    assert max(seen) == 1  # stopped after the first step of ten


def test_edit_strength_zero_is_the_input_and_variations_have_their_seeds(
    store: ModelStore, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, _ = scene
    assert np.array_equal(
        TOOLKIT.edit(photo, "x", strength=0, provider="diffusers").image.pixels, photo
    )
    edited = TOOLKIT.edit(photo, "x", strength=0.5, seed=4, provider="diffusers")
    assert edited.image.pixels.shape == photo.shape and not np.array_equal(
        edited.image.pixels, photo
    )
    variations = TOOLKIT.variations(photo, n=3, seed=10, strength=0.7, provider="diffusers")
    assert [i.seed for i in variations.images] == [10, 11, 12]
    a, b, c = (i.pixels for i in variations.images)
    assert not np.array_equal(a, b) and not np.array_equal(b, c)


def test_outpaint_size_and_interior(
    store: ModelStore, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, _ = scene
    result = TOOLKIT.outpaint(
        photo, left=16, bottom=8, provider="diffusers", prompt="sky", seed=5, feather=8
    )
    out = result.image.pixels
    assert out.shape == (72, 80, 3)
    assert np.array_equal(out[:56, 24:], photo[:56, 8:])  # the original beyond the seam band


def test_outpaint_cli_passes_provider_options(
    store: ModelStore, tmp_path: Path, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    from PIL import Image

    from retouch.cli import main

    photo, _ = scene
    Image.fromarray(photo).save(tmp_path / "p.png")
    argv = ["outpaint", str(tmp_path / "p.png"), "--left", "16", "--prompt", "sky"]
    argv += ["--provider", "diffusers", "--seed", "1", "-q", "-o", str(tmp_path / "o.png")]
    with pytest.raises(SystemExit) as failed:  # the option reached the provider
        main([*argv, "--option", "scheduler=Karras"])
    assert failed.value.code != 0
    assert not (tmp_path / "o.png").exists()
    assert main([*argv, "--option", "scheduler=Euler"]) == 0
    assert np.asarray(Image.open(tmp_path / "o.png")).shape == (64, 80, 3)


def test_plain_checkpoint_folder_path_schedulers_and_errors(
    store: ModelStore, tiny: dict[str, Path], scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene
    plain = inpaint(
        photo, mask, seed=1, options={"model": str(tiny["plain"]), "scheduler": "Euler a"}
    )
    assert np.array_equal(
        plain.image.pixels[mask == 0], photo[mask == 0]
    )  # a 4-channel UNet inpaints too
    for name in ("DDIM", "Euler", "DPM++ 2M"):
        assert (
            inpaint(photo, mask, seed=1, options={"scheduler": name}).image.pixels.shape
            == photo.shape
        )
    with pytest.raises(InvalidRequest, match="scheduler must be one of"):
        inpaint(photo, mask, options={"scheduler": "Karras Magic"})
    with pytest.raises(InvalidRequest, match="not a diffusers folder"):
        inpaint(photo, mask, options={"model": str(tiny["inpaint"] / "unet")})


def test_sd_inpaint_endpoint_uses_the_model(
    store: ModelStore, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from retouch.server import ServerSettings, create_app

    photo, mask = scene

    def png(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG")
        return buffer.getvalue()

    with TestClient(create_app(TOOLKIT, ServerSettings(sd_inpaint=True))) as client:
        health = client.get("/sd-inpaint/health").json()
        assert health == {
            "status": "healthy",
            "service": "stable-diffusion-inpaint",
            "model": "tiny-sd",
        }
        r = client.post(
            "/sd-inpaint/inpaint",
            files={"image": ("a.png", png(photo)), "mask": ("m.png", png(mask))},
            data={"prompt": "a hat", "num_inference_steps": "2", "seed": "9"},
        )
        assert (
            r.status_code == 200
            and r.headers["x-seed"] == "9"
            and r.headers["x-retouch-mode"] == "diffusion"
        )


def test_a_folder_path_runs_with_an_empty_store(
    tiny: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scene: tuple[np.ndarray, np.ndarray],
) -> None:
    from retouch.cli import main

    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path / "empty"))
    photo, mask = scene
    status = Toolkit().registry.get("diffusers").status()
    assert not status.ready and status.needs_model and "retouch models add" in status.detail
    with pytest.raises(ModelNotAvailable):
        Toolkit().inpaint(photo, mask, "x", provider="diffusers")
    out = TOOLKIT.inpaint(
        photo,
        mask,
        "x",
        provider="diffusers",
        steps=2,
        seed=1,
        options={"model": str(tiny["inpaint"])},
    )
    assert np.array_equal(out.image.pixels[mask == 0], photo[mask == 0])
    from PIL import Image

    Image.fromarray(photo).save(tmp_path / "p.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    argv = [
        "inpaint",
        str(tmp_path / "p.png"),
        "--mask",
        str(tmp_path / "m.png"),
        "--prompt",
        "a hat",
        "--provider",
        "diffusers",
        "--model",
        str(tiny["inpaint"]),
        "--steps",
        "2",
        "--seed",
        "3",
        "-n",
        "2",
        "-o",
        str(tmp_path / "out.png"),
        "-q",
    ]
    assert main(argv) == 0
    assert (tmp_path / "out.png").exists() and (tmp_path / "out-1.png").exists()


def test_colour_matching_pulls_the_fill_towards_its_surroundings(
    store: ModelStore, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene
    grown = np.zeros_like(mask)
    grown[12:48, 8:56] = 255
    band = (grown > 0) & (mask == 0)
    matched = inpaint(photo, mask, seed=2, feather=0).image.pixels.astype(float)
    raw = inpaint(
        photo, mask, seed=2, feather=0, options={"match_colour": False}
    ).image.pixels.astype(float)
    target = photo[band].astype(float).mean(axis=0)
    assert (
        np.abs(matched[mask > 0].mean(axis=0) - target).sum()
        < np.abs(raw[mask > 0].mean(axis=0) - target).sum()
    )
    sliced = inpaint(
        photo, mask, seed=2, feather=0, options={"attention_slicing": True, "vae_tiling": True}
    ).image.pixels
    assert np.abs(sliced.astype(float) - matched).mean() < 2  # same result, less memory


def test_controlnet_guided_edit_and_inpaint(
    store: ModelStore, tiny: dict[str, Path], scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene
    guided_options = {"controlnet": str(tiny["controlnet"])}
    plain = TOOLKIT.edit(photo, "x", strength=0.8, seed=6, provider="diffusers")
    guided = TOOLKIT.edit(
        photo, "x", strength=0.8, seed=6, provider="diffusers", options=guided_options
    )
    assert guided.image.pixels.shape == photo.shape
    assert not np.array_equal(plain.image.pixels, guided.image.pixels)  # the edge map took part
    inpainted = inpaint(photo, mask, seed=6, options=guided_options)
    assert np.array_equal(inpainted.image.pixels[mask == 0], photo[mask == 0])
    with pytest.raises(InvalidRequest, match="could not be loaded as a ControlNet"):
        inpaint(photo, mask, options={"controlnet": str(tiny["plain"] / "vae")})


def test_single_file_checkpoints_load_to_the_same_pipeline(
    store: ModelStore,
    tiny: dict[str, Path],
    scene: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Original-layout .safetensors and .ckpt files (weights only, configuration from a
    weightless folder, so nothing can come from the folder's own weights) give the very
    pixels the diffusers folder gives."""
    photo, mask = scene
    folder = inpaint(photo, mask, seed=7, options={"model": str(tiny["inpaint"])}).image.pixels
    for key in ("safetensors", "ckpt"):
        options = {"model": str(tiny[key]), "config": str(tiny["config"])}
        assert np.array_equal(inpaint(photo, mask, seed=7, options=options).image.pixels, folder)
    plain_folder = inpaint(photo, mask, seed=7, options={"model": str(tiny["plain"])})
    plain_file = inpaint(
        photo,
        mask,
        seed=7,
        options={"model": str(tiny["plain_safetensors"]), "config": str(tiny["plain_config"])},
    )
    assert np.array_equal(plain_file.image.pixels, plain_folder.image.pixels)
    # Registered in the store under a name, with its config folder registered too.
    store.add("tiny-file", tiny["safetensors"], task="inpaint")
    store.add("tiny-config", tiny["config"], task="inpaint")
    named = inpaint(photo, mask, seed=7, options={"model": "tiny-file", "config": "tiny-config"})
    assert np.array_equal(named.image.pixels, folder)
    # Offline, a single file without a config is refused before any network is tried.
    monkeypatch.setenv("RETOUCH_OFFLINE", "1")
    with pytest.raises(InvalidRequest, match="config=FOLDER"):
        inpaint(photo, mask, options={"model": str(tiny["safetensors"])})
    with pytest.raises(InvalidRequest, match="no Stable Diffusion UNet"):
        inpaint(photo, mask, options={"model": str(tiny["lora"]), "config": str(tiny["config"])})
    broken = tiny["config"].parent / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidRequest, match=r"not a readable \.safetensors"):
        inpaint(photo, mask, options={"model": str(broken)})
    assert broken.read_bytes() == b"not a checkpoint"  # nothing touched


def test_lora_fast_path_and_tiny_vae(
    store: ModelStore, tiny: dict[str, Path], scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene
    base = inpaint(photo, mask, seed=8).image.pixels
    lora = {"lora": str(tiny["lora"])}
    with_lora = inpaint(photo, mask, seed=8, options=lora).image.pixels
    assert not np.array_equal(with_lora, base)
    assert np.array_equal(inpaint(photo, mask, seed=8, options=lora).image.pixels, with_lora)
    off = inpaint(photo, mask, seed=8, options={**lora, "lora_scale": 0.0}).image.pixels
    assert np.array_equal(off, base)  # fused at scale 0: the UNet is unchanged
    # The base pipeline was not changed by fusing (each setup is its own load).
    assert np.array_equal(inpaint(photo, mask, seed=8).image.pixels, base)

    small = inpaint(photo, mask, seed=8, options={"tiny_vae": str(tiny["tiny_vae"])})
    assert not np.array_equal(small.image.pixels, base)
    assert np.array_equal(small.image.pixels[mask == 0], photo[mask == 0])

    # fast: LCM-LoRA and tiny VAE found in the store by task; 4 LCM steps, guidance 1.
    with pytest.raises(ModelNotAvailable, match="lcm-lora-sdv1-5"):
        TOOLKIT.inpaint(photo, mask, "x", provider="diffusers", options={"fast": True})
    store.add("my-lcm-lora", tiny["lora"], task="lora")
    store.add("my-taesd", tiny["tiny_vae"], task="vae")
    steps: list[Progress] = []
    fast = TOOLKIT.inpaint(
        photo,
        mask,
        "x",
        provider="diffusers",
        seed=8,
        options={"fast": True},
        progress=steps.append,
    )
    assert [r.step for r in steps if r.stage == "diffusion"] == [0, 1, 2, 3, 4]
    pipe = TOOLKIT.registry.get("diffusers").load(DiffusersOptions(fast=True))  # type: ignore[attr-defined]
    assert type(pipe.inpaint.scheduler).__name__ == "LCMScheduler"
    assert type(pipe.inpaint.vae).__name__ == "AutoencoderTiny"
    assert np.array_equal(fast.image.pixels[mask == 0], photo[mask == 0])
    with pytest.raises(InvalidRequest, match="could not be loaded as a AutoencoderTiny"):
        inpaint(photo, mask, options={"tiny_vae": str(tiny["controlnet"])})


def test_dtype_choices(
    store: ModelStore, scene: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import retouch.providers.diffusion as diffusion

    photo, mask = scene
    with pytest.raises(InvalidRequest, match="float16 is for GPUs"):
        inpaint(photo, mask, options={"dtype": "float16"})
    with pytest.raises(InvalidRequest, match="dtype must be"):
        inpaint(photo, mask, options={"dtype": "int8"})
    if diffusion.cpu_has_bf16():
        half = inpaint(photo, mask, seed=1, options={"dtype": "bfloat16"}).image.pixels
        full = inpaint(photo, mask, seed=1).image.pixels
        assert np.array_equal(half[mask == 0], photo[mask == 0])
        assert np.abs(half.astype(float) - full).mean() < 8  # the same picture, rounded
    monkeypatch.setattr(diffusion, "cpu_has_bf16", lambda: False)
    with pytest.raises(InvalidRequest, match="emulated"):
        inpaint(photo, mask, options={"dtype": "bfloat16", "threads": 1})


def test_a_diffusers_folder_pulled_by_name_runs(
    tiny: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scene: tuple[np.ndarray, np.ndarray],
) -> None:
    """`retouch models pull NAME` fetches a diffusers folder file by file from a (local)
    server, then the model runs by that name; the catalog's few-step defaults apply."""
    import functools
    import json
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from PIL import Image

    from retouch.cli import main

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    folder = tiny["inpaint"]
    files = sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not p.relative_to(folder).parts[0].startswith("_")
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    try:
        catalog = tmp_path / "catalog.json"
        entry = {
            "name": "tiny-remote",
            "task": "inpaint",
            "format": "diffusers",
            "file": None,
            "files": files,
            "base_urls": [f"http://127.0.0.1:{httpd.server_address[1]}/"],
            "io": {"steps": 2, "guidance": 1.0},
        }
        catalog.write_text(json.dumps({"models": [entry]}))
        monkeypatch.setenv("RETOUCH_CATALOG", str(catalog))
        monkeypatch.setenv("RETOUCH_HOME", str(tmp_path / "home"))
        assert main(["models", "pull", "tiny-remote", "--trust", "-q"]) == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
    pulled = tmp_path / "home" / "models" / "tiny-remote"
    assert sorted(str(p.relative_to(pulled)) for p in pulled.rglob("*") if p.is_file()) == files
    photo, mask = scene
    steps: list[Progress] = []
    by_name = Toolkit().inpaint(
        photo,
        mask,
        "a hat",
        provider="diffusers",
        seed=4,
        options={"model": "tiny-remote"},
        progress=steps.append,
    )
    assert max(r.total for r in steps if r.stage == "diffusion") == 2  # the catalog's steps
    by_folder = Toolkit().inpaint(
        photo,
        mask,
        "a hat",
        provider="diffusers",
        seed=4,
        steps=2,
        guidance=1.0,
        options={"model": str(folder)},
    )
    assert np.array_equal(by_name.image.pixels, by_folder.image.pixels)
    Image.fromarray(photo).save(tmp_path / "p.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    argv = ["inpaint", str(tmp_path / "p.png"), "--mask", str(tmp_path / "m.png")]
    argv += ["--prompt", "a hat", "--provider", "diffusers", "--model", "tiny-remote"]
    assert main([*argv, "--seed", "4", "-o", str(tmp_path / "o.png"), "-q"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), by_name.image.pixels)


def test_depth_controlnet(
    store: ModelStore,
    tiny: dict[str, Path],
    tmp_path: Path,
    scene: tuple[np.ndarray, np.ndarray],
) -> None:
    photo, _ = scene
    options = {"controlnet": str(tiny["controlnet"])}
    with pytest.raises(ModelNotAvailable, match="depth-anything-v2-small"):
        TOOLKIT.edit(
            photo, "x", strength=0.8, seed=6, provider="diffusers", control="depth", options=options
        )
    store.add("my-depth", luminance_depth_model(tmp_path / "depth.onnx"), task="depth")
    guided = TOOLKIT.edit(
        photo, "x", strength=0.8, seed=6, provider="diffusers", control="depth", options=options
    )
    edges = TOOLKIT.edit(photo, "x", strength=0.8, seed=6, provider="diffusers", options=options)
    assert guided.image.pixels.shape == photo.shape
    assert guided.usage["control"] == ["depth"] and edges.usage["control"] == ["canny"]
    assert not np.array_equal(guided.image.pixels, edges.image.pixels)  # depth, not edges
    with pytest.raises(InvalidRequest, match="control takes canny, depth"):
        TOOLKIT.edit(photo, "x", provider="diffusers", control="pose")


def test_style_by_prompt_and_mask_blur(
    store: ModelStore, tmp_path: Path, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    from PIL import Image

    from retouch.cli import main

    photo, mask = scene
    styled = TOOLKIT.stylize(photo, prompt="an oil painting", provider="diffusers")
    assert styled.provider == "diffusers" and styled.image.seed is not None
    assert styled.image.pixels.shape == photo.shape
    assert not np.array_equal(styled.image.pixels, photo)
    assert np.array_equal(
        TOOLKIT.stylize(photo, prompt="x", strength=0, provider="diffusers").image.pixels, photo
    )
    # A style number and a prompt are two fields: diffusers refuses the number, by name.
    with pytest.raises(UnsupportedOperation, match="style is not supported by diffusers"):
        TOOLKIT.stylize(photo, style="7", provider="diffusers")
    # Without a provider named: prompts go to diffusion, style numbers to the style networks.
    assert TOOLKIT.stylize(photo, prompt="ink wash").provider == "diffusers"
    assert TOOLKIT.stylize(photo, style="style-7").provider == "stylize"
    Image.fromarray(photo).save(tmp_path / "p.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert (
        main(
            [
                "stylize",
                str(tmp_path / "p.png"),
                "--prompt",
                "ink",
                "-o",
                str(tmp_path / "s.png"),
                "-q",
            ]
        )
        == 0
    )
    assert np.asarray(Image.open(tmp_path / "s.png")).shape == photo.shape
    # --mask-blur is --feather: a wider blur changes pixels next to the mask edge only.
    runs = {}
    for blur in ("0", "6"):
        out = tmp_path / f"b{blur}.png"
        argv = ["inpaint", str(tmp_path / "p.png"), "--mask", str(tmp_path / "m.png")]
        argv += ["--prompt", "hat", "--provider", "diffusers", "--steps", "2", "--seed", "1"]
        assert main([*argv, "--mask-blur", blur, "-o", str(out), "-q"]) == 0
        runs[blur] = np.asarray(Image.open(out)).astype(int)
    changed = np.abs(runs["0"] - runs["6"]).max(axis=2) > 0
    assert changed.any() and not changed[mask == 0].any()
    ring = np.zeros(mask.shape, bool)  # the first 2 px inside the mask's edge
    ring[20:44, 16:40] = True
    ring[22:42, 18:38] = False
    distance = {k: np.abs(v - photo)[ring].mean() for k, v in runs.items()}
    assert distance["6"] < distance["0"] / 2  # blurred: the edge blends into the photo


def test_sdxl_family(
    store: ModelStore, tmp_path: Path, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    """A (tiny) SDXL folder: two text encoders and size conditioning, same provider code."""
    photo, mask = scene
    xl = build_xl(tmp_path / "xl")
    options = {"model": str(xl)}
    a, b = (inpaint(photo, mask, seed=3, options=options) for _ in range(2))
    assert np.array_equal(a.image.pixels, b.image.pixels)
    assert np.array_equal(a.image.pixels[mask == 0], photo[mask == 0])
    pipe = TOOLKIT.registry.get("diffusers").load(DiffusersOptions(model=str(xl)))  # type: ignore[attr-defined]
    assert type(pipe.inpaint).__name__ == "StableDiffusionXLInpaintPipeline"
    edited = TOOLKIT.edit(photo, "x", strength=0.5, seed=3, provider="diffusers", options=options)
    assert not np.array_equal(edited.image.pixels, photo)
    controlnet = build_xl_controlnet(xl, tmp_path / "xl-controlnet")
    guided = inpaint(photo, mask, seed=3, options={**options, "controlnet": str(controlnet)})
    assert not np.array_equal(guided.image.pixels, a.image.pixels)
    assert np.array_equal(guided.image.pixels[mask == 0], photo[mask == 0])


# --- ControlNet guides --------------------------------------------------------------------------

GUIDES = ("canny", "lineart", "softedge", "scribble", "tile", "depth", "openpose", "segmentation")
AT_64 = {"resolution": 64}  # the 64 px scene at 64 px: the pipeline sees the photo itself


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, float]]:
    """What every ControlNet call receives: its conditioning image (as 8-bit RGB) and scale."""
    from diffusers import ControlNetModel

    calls: list[tuple[np.ndarray, float]] = []
    forward = ControlNetModel.forward

    def spy(self: object, *args: object, **kwargs: object) -> object:
        condition = kwargs["controlnet_cond"]
        pixels = condition[0].float().permute(1, 2, 0).numpy()  # type: ignore[index]
        calls.append((np.rint(pixels * 255).astype(np.uint8), float(kwargs["conditioning_scale"])))  # type: ignore[arg-type]
        return forward(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ControlNetModel, "forward", spy)
    return calls


def edit(photo: np.ndarray, **kwargs: object):  # type: ignore[no-untyped-def]
    """An img2img edit of 6 of the model's 30 steps."""
    return TOOLKIT.edit(photo, "x", strength=0.2, seed=6, provider="diffusers", **kwargs)  # type: ignore[arg-type]


UNGUIDED: dict[str, np.ndarray] = {}


def unguided(photo: np.ndarray, model: Path) -> np.ndarray:
    """The edit without a ControlNet, made once for the module."""
    if "edit" not in UNGUIDED:
        UNGUIDED["edit"] = edit(photo, options={**AT_64, "model": str(model)}).image.pixels
    return UNGUIDED["edit"]


@pytest.mark.parametrize("guide", GUIDES)
def test_each_guide_is_what_its_controlnet_sees(
    guide: str,
    store: ModelStore,
    tiny: dict[str, Path],
    tmp_path: Path,
    scene: tuple[np.ndarray, np.ndarray],
    seen: list[tuple[np.ndarray, float]],
) -> None:
    """The guide made from the image reaches the ControlNet exactly as its recipe says, the
    guide's ControlNet is found in the store by name, and at control_scale 0 the result is
    the one without any ControlNet."""
    photo, _ = scene
    register_guide_models(store, tmp_path)
    store.add(f"tiny-{guide}-controlnet", tiny["controlnet"], task="controlnet")
    options = {**AT_64, "model": str(tiny["inpaint"])}
    guided = edit(photo, control=guide, options=options)
    expected = reference(guide, photo)
    assert seen and all(np.array_equal(image, expected) for image, _ in seen)
    assert {scale for _, scale in seen} == {1.0}
    seen.clear()
    off = edit(photo, control=guide, control_scale=0.0, options=options)
    assert seen and {scale for _, scale in seen} == {0.0}  # the ControlNet ran, at scale 0
    plain = unguided(photo, tiny["inpaint"])
    assert np.array_equal(off.image.pixels, plain)
    assert not np.array_equal(guided.image.pixels, plain)


def test_several_controlnets_at_once_and_the_guidance_window(
    store: ModelStore,
    tiny: dict[str, Path],
    tmp_path: Path,
    scene: tuple[np.ndarray, np.ndarray],
    seen: list[tuple[np.ndarray, float]],
) -> None:
    photo, mask = scene
    register_guide_models(store, tmp_path)
    nets = f"{tiny['controlnet']},{tiny['controlnet_b']}"
    both = edit(photo, control="canny,depth", options={**AT_64, "controlnet": nets})
    # MultiControlNetModel calls them in order at every step: canny, depth, canny, depth...
    firsts, seconds = seen[0::2], seen[1::2]
    assert len(firsts) == len(seconds) >= 1
    assert all(np.array_equal(image, reference("canny", photo)) for image, _ in firsts)
    assert all(np.array_equal(image, reference("depth", photo)) for image, _ in seconds)
    canny_alone = edit(
        photo, control="canny", options={**AT_64, "controlnet": str(tiny["controlnet"])}
    )
    assert not np.array_equal(both.image.pixels, canny_alone.image.pixels)
    # control_start / control_end: the ControlNet steers only inside its window of the steps.
    seen.clear()
    TOOLKIT.inpaint(
        photo,
        mask,
        "x",
        provider="diffusers",
        steps=4,
        seed=1,
        control="canny",
        control_start=0.5,
        options={"controlnet": str(tiny["controlnet"])},
    )
    assert [scale for _, scale in seen] == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(InvalidRequest, match="2 ControlNet"):
        edit(photo, control="canny", options={"controlnet": nets})
    with pytest.raises(InvalidRequest, match="control_start"):
        edit(photo, control="canny", control_start=0.6, control_end=0.5)


def test_your_own_guide_image(
    store: ModelStore,
    tiny: dict[str, Path],
    tmp_path: Path,
    scene: tuple[np.ndarray, np.ndarray],
    seen: list[tuple[np.ndarray, float]],
) -> None:
    """control_image is the first guide, as given (scaled to the working size); with a mask
    it is cropped with the image, so it lines up with the crop the model repaints."""
    import cv2
    from PIL import Image

    from retouch.cli import main

    photo, mask = scene
    store.add("tiny-openpose", tiny["controlnet"], task="controlnet")
    with pytest.raises(ModelNotAvailable, match=r"dwpose.*--control-image"):
        edit(photo, control="openpose")
    pose = np.zeros((128, 128, 3), np.uint8)  # a pose skeleton drawn elsewhere, twice the size
    cv2.line(pose, (64, 20), (64, 90), (255, 85, 0), 6)
    cv2.line(pose, (30, 50), (100, 50), (0, 255, 85), 6)
    edit(photo, control="openpose", control_image=pose, options=AT_64)
    assert seen and all(
        np.array_equal(image, cv2.resize(pose, (64, 64), interpolation=cv2.INTER_AREA))
        for image, _ in seen
    )
    # Masked: the Toolkit crops the guide with the image (mask box + 8 px margin, 40 px),
    # and the provider scales that crop to its 64 px working size.
    seen.clear()
    guide = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    result = TOOLKIT.inpaint(
        photo,
        mask,
        "x",
        provider="diffusers",
        steps=2,
        seed=2,
        crop_margin=8,
        control="openpose",
        control_image=guide,
        options=AT_64,
    )
    crop = guide[8:48, 12:52]
    expected = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_LANCZOS4)
    assert seen and all(np.array_equal(image, expected) for image, _ in seen)
    assert np.array_equal(result.image.pixels[mask == 0], photo[mask == 0])
    with pytest.raises(InvalidRequest, match=r"control_image is 64 x 32 but the image is 64 x 64"):
        edit(photo, control="openpose", control_image=guide[:32])
    with pytest.raises(InvalidRequest, match="control_image needs --control"):
        edit(photo, control_image=guide)
    # The command line and HTTP get it from the declaration: --control-image FILE.
    Image.fromarray(photo).save(tmp_path / "p.png")
    Image.fromarray(pose).save(tmp_path / "pose.png")
    seen.clear()
    argv = ["edit", str(tmp_path / "p.png"), "--prompt", "a dancer", "--provider", "diffusers"]
    argv += ["--control", "openpose", "--control-image", str(tmp_path / "pose.png")]
    argv += ["--control-scale", "0.7", "--option", "resolution=64", "--seed", "1"]
    assert main([*argv, "-o", str(tmp_path / "o.png"), "-q"]) == 0
    assert seen and {scale for _, scale in seen} == {0.7}
    assert np.array_equal(seen[0][0], cv2.resize(pose, (64, 64), interpolation=cv2.INTER_AREA))


def test_controlnet_errors_name_what_to_pull(
    store: ModelStore, tiny: dict[str, Path], tmp_path: Path, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, _ = scene
    with pytest.raises(ModelNotAvailable, match=r"retouch models pull controlnet-sd15-lineart"):
        edit(photo, control="lineart")
    xl_net = build_xl_controlnet(build_xl(tmp_path / "xl"), tmp_path / "xl-controlnet")
    with pytest.raises(InvalidRequest, match="ControlNet for 32 models; this model is 16"):
        edit(photo, control="canny", options={"controlnet": str(xl_net)})
    store.add("tiny-canny", tiny["controlnet"], task="controlnet")
    assert edit(photo, control="none").usage.get("control") is None
    with pytest.raises(InvalidRequest, match="none means no guide"):
        edit(photo, control="none,canny")


# --- SDXL inpainting -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xl(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xl")
    plain = build_xl(root / "xl")
    aesthetic = build_xl(root / "xl-aesthetic", aesthetics=True)
    return {
        "xl": plain,
        "aesthetic": aesthetic,
        "controlnet": build_xl_controlnet(plain, root / "xl-controlnet"),
        "aesthetic_controlnet": build_xl_controlnet(aesthetic, root / "xl-aesthetic-controlnet"),
        "lora": build_lora(plain, root / "lora" / "lcm-lora-xl.safetensors"),
        "tiny_vae": build_tiny_vae(root / "taesdxl"),
    }


def check_family(
    folder: Path, scene: tuple[np.ndarray, np.ndarray], family: str, **extra: object
) -> None:
    """What every model family must do: seeds reproduce, pixels outside the mask stay exact,
    progress once per step, cancel between steps, outpaint to the right size."""
    photo, mask = scene
    options = {"model": str(folder), **extra}
    steps: list[Progress] = []
    a = TOOLKIT.inpaint(
        photo,
        mask,
        "a red hat",
        provider="diffusers",
        steps=3,
        seed=1,
        options=options,
        progress=steps.append,
    )
    b = TOOLKIT.inpaint(
        photo, mask, "a red hat", provider="diffusers", steps=3, seed=1, options=options
    )
    c = TOOLKIT.inpaint(
        photo, mask, "a red hat", provider="diffusers", steps=3, seed=2, options=options
    )
    assert a.usage["family"] == family
    assert np.array_equal(a.image.pixels, b.image.pixels)
    assert not np.array_equal(a.image.pixels[mask > 0], c.image.pixels[mask > 0])
    for result in (a, c):
        assert np.array_equal(result.image.pixels[mask == 0], photo[mask == 0])
    assert [(r.step, r.total) for r in steps if r.stage == "diffusion"] == [
        (0, 3),
        (1, 3),
        (2, 3),
        (3, 3),
    ]
    seen_steps: list[int] = []

    def cancel(report: Progress) -> None:
        seen_steps.append(report.step)
        if report.step == 1:
            raise Cancelled("enough")

    with pytest.raises(Cancelled):
        TOOLKIT.inpaint(
            photo, mask, "x", provider="diffusers", steps=10, options=options, progress=cancel
        )
    assert max(seen_steps) == 1
    wide = TOOLKIT.outpaint(
        photo,
        left=16,
        bottom=8,
        provider="diffusers",
        prompt="sky",
        seed=5,
        feather=8,
        options=options,
    )
    assert wide.image.pixels.shape == (72, 80, 3)
    assert np.array_equal(wide.image.pixels[:56, 24:], photo[:56, 8:])


def test_sdxl_inpainting_family(
    store: ModelStore, xl: dict[str, Path], scene: tuple[np.ndarray, np.ndarray]
) -> None:
    check_family(xl["xl"], scene, "sdxl")
    check_family(xl["aesthetic"], scene, "sdxl")
    pipe = TOOLKIT.registry.get("diffusers").load(DiffusersOptions(model=str(xl["aesthetic"])))  # type: ignore[attr-defined]
    assert type(pipe.inpaint).__name__ == "StableDiffusionXLInpaintPipeline"
    assert pipe.resolution == 32 and pipe.defaults == (30, 7.5)
    photo, mask = scene
    # The ControlNet pipeline builds the same size conditioning as the model's own pipeline.
    pairs = ((xl["xl"], xl["controlnet"]), (xl["aesthetic"], xl["aesthetic_controlnet"]))
    for folder, net in pairs:
        guided = TOOLKIT.inpaint(
            photo,
            mask,
            "x",
            provider="diffusers",
            steps=2,
            seed=3,
            control="canny",
            options={"model": str(folder), "controlnet": str(net)},
        )
        assert np.array_equal(guided.image.pixels[mask == 0], photo[mask == 0])
    with pytest.raises(InvalidRequest, match="size conditioning as 64 numbers, this model as 56"):
        TOOLKIT.inpaint(
            photo,
            mask,
            "x",
            provider="diffusers",
            control="canny",
            options={"model": str(xl["aesthetic"]), "controlnet": str(xl["controlnet"])},
        )


def test_sdxl_fast_path_takes_the_sdxl_lora_and_tiny_vae(
    store: ModelStore,
    tiny: dict[str, Path],
    xl: dict[str, Path],
    scene: tuple[np.ndarray, np.ndarray],
) -> None:
    photo, mask = scene
    options = {"model": str(xl["xl"]), "fast": True}
    store.add("my-lcm-lora", tiny["lora"], task="lora")  # SD 1.5's: not for SDXL
    with pytest.raises(ModelNotAvailable, match="lcm-lora-sdxl"):
        TOOLKIT.inpaint(photo, mask, "x", provider="diffusers", options=options)
    store.add("my-lcm-lora-xl", xl["lora"], task="lora")
    store.add("my-taesdxl", xl["tiny_vae"], task="vae")
    steps: list[Progress] = []
    fast = TOOLKIT.inpaint(
        photo, mask, "x", provider="diffusers", seed=1, options=options, progress=steps.append
    )
    assert [r.step for r in steps if r.stage == "diffusion"] == [0, 1, 2, 3, 4]
    pipe = TOOLKIT.registry.get("diffusers").load(DiffusersOptions(model=str(xl["xl"]), fast=True))  # type: ignore[attr-defined]
    assert type(pipe.inpaint.scheduler).__name__ == "LCMScheduler"
    assert type(pipe.inpaint.vae).__name__ == "AutoencoderTiny"
    assert np.array_equal(fast.image.pixels[mask == 0], photo[mask == 0])


# --- FLUX.1 Fill -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_flux_fill(tmp_path_factory.mktemp("flux") / "flux-fill")


def test_flux_fill_family(
    store: ModelStore, flux: Path, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    """A tiny random FLUX.1 Fill folder: detected by its model_index.json, 64 px work, the
    family's defaults (50 steps, guidance 30), the same guarantees as SD."""
    check_family(flux, scene, "flux", resolution=64)
    pipe = TOOLKIT.registry.get("diffusers").load(DiffusersOptions(model=str(flux)))  # type: ignore[attr-defined]
    assert type(pipe.inpaint).__name__ == "FluxFillPipeline"
    assert pipe.family == "flux" and pipe.defaults == (50, 30.0) and pipe.multiple == 4
    photo, mask = scene
    options = {"model": str(flux), "resolution": 64}
    steps: list[Progress] = []
    edited = TOOLKIT.edit(
        photo,
        "x",
        strength=0.5,
        seed=4,
        provider="diffusers",
        options={**options},
        progress=steps.append,
    )
    assert max(r.total for r in steps) == 25  # half of the family's 50 steps
    assert edited.image.pixels.shape == photo.shape and not np.array_equal(
        edited.image.pixels, photo
    )
    with pytest.raises(InvalidRequest, match="no negative prompt"):
        TOOLKIT.inpaint(
            photo, mask, "x", negative_prompt="blur", provider="diffusers", options=options
        )
    with pytest.raises(InvalidRequest, match="FLUX Fill takes none"):
        TOOLKIT.inpaint(photo, mask, "x", control="canny", provider="diffusers", options=options)
    with pytest.raises(InvalidRequest, match="flow-matching"):
        TOOLKIT.inpaint(
            photo, mask, "x", provider="diffusers", options={**options, "scheduler": "DDIM"}
        )
    with pytest.raises(InvalidRequest, match=r"SD 1\.5 and SDXL"):
        TOOLKIT.inpaint(photo, mask, "x", provider="diffusers", options={**options, "fast": True})
    with pytest.raises(InvalidRequest, match="nothing to offload"):
        TOOLKIT.inpaint(
            photo, mask, "x", provider="diffusers", options={**options, "offload": "model"}
        )


# --- detail upscale ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detail(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A plain SD pipeline that downsamples by 8 and carries the picture through its VAE (so
    tiled and one-tile results can be compared), and its tile ControlNet."""
    root = tmp_path_factory.mktemp("detail")
    base = build(root / "x8", inpaint_unet=False, shape=TINY_X8, vae=transparent_vae())
    return {"model": base, "tile": build_controlnet(base, root / "tile", embedding=(8, 8, 16, 16))}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float(10 * np.log10(255**2 / error))


def test_detail_upscale_is_4x_without_seams(
    store: ModelStore, detail: dict[str, Path], tmp_path: Path
) -> None:
    """`retouch upscale --detail` on a 256 px photo: Real-ESRGAN to 1024 px, then 3 x 3 tiles
    of 512 px repainted and blended. Against the whole image done as one tile, the tiles are
    as close as another seed is (no seam adds error); pasted without blending they are not."""
    from PIL import Image
    from skimage import data

    from retouch.cli import main

    photo = np.ascontiguousarray(data.astronaut()[::2, ::2])
    store.add("tiny-x8", detail["model"], task="edit")
    store.add("tiny-tile-controlnet", detail["tile"], task="controlnet")
    assert TOOLKIT.provider_for("upscale").info.name == "realesrgan"  # plain upscale: unchanged
    Image.fromarray(photo).save(tmp_path / "p.png")
    argv = ["upscale", str(tmp_path / "p.png"), "--detail", "--model", "tiny-x8", "--seed", "1"]
    argv += ["--detail-tile", "512", "--detail-strength", "0.5", "--option", "detail_steps=2"]
    assert main([*argv, "-o", str(tmp_path / "big.png"), "-q"]) == 0
    tiled = np.asarray(Image.open(tmp_path / "big.png"))
    assert tiled.shape == (1024, 1024, 3)

    def upscale(seed: int, **options: object) -> np.ndarray:
        chosen = {"detail_strength": 0.5, "detail_steps": 2, **options}
        return TOOLKIT.upscale(
            photo, detail=True, seed=seed, model="tiny-x8", options=chosen
        ).image.pixels

    reports: list[Progress] = []
    again = TOOLKIT.upscale(
        photo,
        detail=True,
        seed=1,
        model="tiny-x8",
        options={"detail_tile": 512, "detail_strength": 0.5, "detail_steps": 2},
        progress=reports.append,
    )
    assert again.provider == "diffusers" and again.usage["tiles"] == 9
    assert np.array_equal(again.image.pixels, tiled)  # the command line is the library
    assert [r.step for r in reports if r.stage == "detail"] == list(range(10))
    whole = upscale(1, detail_tile=1024)
    other_seed = upscale(2, detail_tile=1024)
    pasted = upscale(1, detail_tile=512, detail_overlap=0)
    floor = psnr(whole, other_seed)
    # Measured: tiled 52.6 dB from whole, another seed 53.3 dB, pasted 28.7 dB.
    assert psnr(tiled, whole) > 45 and psnr(tiled, whole) > floor - 1.5
    assert psnr(pasted, whole) < psnr(tiled, whole) - 15  # what a seam costs
    enlarged = TOOLKIT.upscale(photo).image.pixels
    assert psnr(tiled, enlarged) > 15  # the picture survives the pass (blurred by its VAE)

    def cancel(report: Progress) -> None:
        if report.stage == "detail" and report.step == 1:
            raise Cancelled("enough")

    with pytest.raises(InvalidRequest, match=r"2 steps at detail_strength 0\.35 leave no step"):
        TOOLKIT.upscale(photo, detail=True, model="tiny-x8", options={"detail_steps": 2})
    reports.clear()
    with pytest.raises(Cancelled):
        TOOLKIT.upscale(
            photo,
            detail=True,
            model="tiny-x8",
            options={"detail_tile": 512, "detail_steps": 2, "detail_strength": 0.5},
            progress=lambda report: (reports.append(report), cancel(report)),
        )
    assert max(r.step for r in reports if r.stage == "detail") == 1  # stopped after a tile
    with pytest.raises(InvalidRequest, match="pass --detail"):
        TOOLKIT.upscale(photo, provider="diffusers", model="tiny-x8")


def test_loaded_setups_are_bounded_least_recently_used_first(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from retouch.providers.diffusion import DiffusersProvider

    inpaint, plain = (DiffusersOptions(model=str(tiny[k])) for k in ("inpaint", "plain"))
    monkeypatch.delenv("RETOUCH_MAX_LOADED_PIPELINES", raising=False)
    provider = DiffusersProvider()
    assert provider.pipelines.capacity == 1  # each setup of an SD 1.5 model holds ~4 GB
    first = provider.load(inpaint)
    assert provider.load(inpaint) is first
    second = provider.load(plain)
    assert len(provider.pipelines) == 1 and provider.load(plain) is second
    assert provider.load(inpaint) is not first and provider.pipelines.loads == 3

    monkeypatch.setenv("RETOUCH_MAX_LOADED_PIPELINES", "2")
    provider = DiffusersProvider()
    first = provider.load(inpaint)
    provider.load(plain)
    assert provider.load(inpaint) is first and provider.pipelines.loads == 2
    monkeypatch.setenv("RETOUCH_MAX_LOADED_PIPELINES", "none")
    from retouch.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="RETOUCH_MAX_LOADED_PIPELINES"):
        DiffusersProvider()
