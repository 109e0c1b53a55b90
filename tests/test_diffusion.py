"""The diffusers provider with tiny randomly initialised pipelines (no download), loaded from
a diffusers folder through the same code users use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")

from retouch.api import Toolkit
from retouch.errors import Cancelled, InvalidRequest, ModelNotAvailable
from retouch.models.store import ModelStore
from retouch.providers.diffusion import DiffusersOptions
from retouch.types import Progress

from .conftest import box_mask
from .tiny_sd import (
    build,
    build_controlnet,
    build_lora,
    build_tiny_vae,
    build_xl,
    build_xl_controlnet,
    config_only,
    single_file,
)

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
        assert health["mode"] == "diffusion" and health["model"] == "diffusers"
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
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
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


def luminance_depth_model(path: Path) -> Path:
    """A depth-model-shaped ONNX graph (pixel_values [1,3,H,W] -> predicted_depth [1,H,W]):
    "depth" is the mean of the normalised channels, so the expected map can be computed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["pixel_values", "axis"], ["mean"], keepdims=0),
        ],
        "depth_like",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, "h", "w"])],
        initializer=[numpy_helper.from_array(np.array([1], np.int64), "axis")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_depth_controlnet(
    store: ModelStore,
    tiny: dict[str, Path],
    tmp_path: Path,
    scene: tuple[np.ndarray, np.ndarray],
) -> None:
    from retouch.providers.diffusion import depth_map

    photo, _ = scene
    options = {"controlnet": str(tiny["controlnet"]), "control": "depth"}
    with pytest.raises(ModelNotAvailable, match="depth-anything-v2-small"):
        TOOLKIT.edit(photo, "x", strength=0.8, seed=6, provider="diffusers", options=options)
    model = luminance_depth_model(tmp_path / "depth.onnx")
    store.add("my-depth", model, task="depth")
    depth = depth_map(photo, None)
    # The model's map at its working size (64 -> 518 rounded to 14s = 518), scaled to 0..255
    # and back to the photo's size: it follows the photo's brightness.
    grey = photo.astype(float).mean(axis=2)
    assert depth.shape == photo.shape and depth.min() == 0 and depth.max() >= 250
    assert np.corrcoef(depth[..., 0].ravel(), grey.ravel())[0, 1] > 0.95
    guided = TOOLKIT.edit(photo, "x", strength=0.8, seed=6, provider="diffusers", options=options)
    edges = TOOLKIT.edit(
        photo,
        "x",
        strength=0.8,
        seed=6,
        provider="diffusers",
        options={"controlnet": str(tiny["controlnet"])},
    )
    assert guided.image.pixels.shape == photo.shape
    assert not np.array_equal(guided.image.pixels, edges.image.pixels)  # depth, not edges
    with pytest.raises(InvalidRequest, match="control must be canny or depth"):
        TOOLKIT.edit(photo, "x", provider="diffusers", options={"control": "pose"})


def test_style_by_prompt_and_mask_blur(
    store: ModelStore, tmp_path: Path, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    from PIL import Image

    from retouch.cli import main

    photo, mask = scene
    styled = TOOLKIT.stylize(photo, style="an oil painting", provider="diffusers")
    assert styled.provider == "diffusers" and styled.image.seed is not None
    assert styled.image.pixels.shape == photo.shape
    assert not np.array_equal(styled.image.pixels, photo)
    assert np.array_equal(
        TOOLKIT.stylize(photo, style="x", strength=0, provider="diffusers").image.pixels, photo
    )
    with pytest.raises(InvalidRequest, match="built-in style number"):
        TOOLKIT.stylize(photo, style="7", provider="diffusers")
    # Without a provider named: prompts go to diffusion, style numbers to the style networks.
    assert TOOLKIT.stylize(photo, style="ink wash").provider == "diffusers"
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
