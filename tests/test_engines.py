"""The engine descriptor: sizes, layouts and value ranges with tiny ONNX graphs built here,
the ncnn path with the shipped Real-ESRGAN weights, the bounded cache under concurrency,
thread capping, and tiles against one big run."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from skimage import data
from skimage.metrics import peak_signal_noise_ratio as psnr

from retouch.engines import cap_threads
from retouch.engines.cache import ModelCache, capacity_from_env
from retouch.engines.descriptor import (
    ImageModel,
    InputRange,
    MaskInput,
    ModelSpec,
    OutputRange,
    SizeRequirements,
    load_ncnn,
    load_onnx,
)
from retouch.errors import ConfigurationError, InvalidRequest
from retouch.providers.realesrgan import SHIPPED, weights_dir

CORES = os.cpu_count() or 1


def save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def image_graph(
    path: Path,
    nodes: list[onnx.NodeProto],
    *,
    dtype: int = TensorProto.FLOAT,
    layout: str = "NCHW",
    initializers: list[onnx.TensorProto] | None = None,
    extra_inputs: list[onnx.ValueInfoProto] | None = None,
) -> Path:
    """A graph from input ``x`` to output ``y`` over one image of any size."""
    dims = [1, 3, "h", "w"] if layout == "NCHW" else [1, "h", "w", 3]
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", dtype, dims), *(extra_inputs or [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=initializers or [],
    )
    return save(graph, path)


def identity(path: Path, **kwargs: object) -> Path:
    return image_graph(path, [helper.make_node("Identity", ["x"], ["y"])], **kwargs)  # type: ignore[arg-type]


def blocks_of_8(path: Path) -> Path:
    """Identity that only runs on sides that are multiples of 8 (SpaceToDepth there and back)."""
    nodes = [
        helper.make_node("SpaceToDepth", ["x"], ["s"], blocksize=8),
        helper.make_node("DepthToSpace", ["s"], ["y"], blocksize=8, mode="DCR"),
    ]
    return image_graph(path, nodes)


def times(path: Path, factor: float) -> Path:
    constant = numpy_helper.from_array(np.array(factor, np.float32), "k")
    return image_graph(path, [helper.make_node("Mul", ["x", "k"], ["y"])], initializers=[constant])


def photo(height: int, width: int) -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[100 : 100 + height, 150 : 150 + width])


@pytest.fixture
def cache() -> ModelCache[object]:
    return ModelCache(4)


# --- sizes: pad to the requirement, crop back ---------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(37, 51), (8, 8), (1, 13), (64, 3), (101, 9)])
def test_pad_and_crop_round_trip_at_odd_sizes(
    tmp_path: Path, cache: ModelCache[object], height: int, width: int
) -> None:
    spec = ModelSpec(size=SizeRequirements(multiple=8))
    model = load_onnx(blocks_of_8(tmp_path / "blocks.onnx"), spec=spec, cache=cache)
    pixels = photo(height, width)
    out = model.run(pixels)
    assert out.shape == (height, width, 3) and out.dtype == np.float32
    assert np.abs(out - pixels / 255).max() < 1e-6
    assert np.array_equal(model.run(pixels, out_dtype=np.uint8), pixels)


def test_the_padding_is_what_makes_that_model_run(
    tmp_path: Path, cache: ModelCache[object]
) -> None:
    unpadded = load_onnx(blocks_of_8(tmp_path / "blocks.onnx"), cache=cache)
    with pytest.raises(Exception, match="multiple of block_size"):
        unpadded.run(photo(37, 51))


def test_fixed_size_pads_and_refuses_bigger_images(
    tmp_path: Path, cache: ModelCache[object]
) -> None:
    spec = ModelSpec(size=SizeRequirements(fixed=64, pad_mode="reflect-or-edge"))
    model = load_onnx(blocks_of_8(tmp_path / "b.onnx"), name="fixed", spec=spec, cache=cache)
    pixels = photo(40, 23)
    assert np.array_equal(model.run(pixels, out_dtype=np.uint8), pixels)
    assert model.embed(pixels).shape == (1, 3, 64, 64)
    with pytest.raises(InvalidRequest, match="fixed takes at most 64 px"):
        model.run(photo(65, 10))


def test_stretch_fit_resizes_to_the_fixed_size_and_back(
    tmp_path: Path, cache: ModelCache[object]
) -> None:
    spec = ModelSpec(size=SizeRequirements(fixed=32, fit="stretch"))
    model = load_onnx(identity(tmp_path / "id.onnx"), spec=spec, cache=cache)
    pixels = photo(90, 60)
    assert model.embed(pixels).shape == (1, 3, 32, 32)
    out = model.run(pixels, out_dtype=np.uint8)
    assert out.shape == pixels.shape
    assert psnr(pixels, out) > 20  # 90 x 60 -> 32 x 32 -> back: blurred, not garbage


# --- layouts and value ranges ------------------------------------------------------------------


def test_input_ranges_reach_the_model_as_declared(
    tmp_path: Path, cache: ModelCache[object]
) -> None:
    pixels = photo(20, 30)
    unit = pixels.astype(np.float32) / 255
    path = identity(tmp_path / "id.onnx")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    normalised = load_onnx(
        path, spec=ModelSpec(input=InputRange(mean=mean, std=std)), cache=cache
    ).embed(pixels)
    expected = ((unit - mean) / std).transpose(2, 0, 1)[None]
    assert normalised.shape == (1, 3, 20, 30) and np.abs(normalised - expected).max() < 1e-5
    by_peak = load_onnx(
        path, spec=ModelSpec(input=InputRange(white=255.0, by_peak=True)), cache=cache
    ).embed(pixels)
    assert np.abs(by_peak - (unit / unit.max() * 255).transpose(2, 0, 1)[None]).max() < 1e-3
    nhwc = load_onnx(
        identity(tmp_path / "nhwc.onnx", layout="NHWC"),
        spec=ModelSpec(layout="NHWC"),
        cache=cache,
    )
    assert np.abs(nhwc.embed(pixels) - unit[None]).max() < 1e-6
    assert np.abs(nhwc.run(pixels) - unit).max() < 1e-6
    as_uint8 = load_onnx(
        image_graph(
            tmp_path / "u8.onnx",
            [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
            dtype=TensorProto.UINT8,
        ),
        spec=ModelSpec(input=InputRange(white=255.0, dtype="uint8"), output=OutputRange(255.0)),
        cache=cache,
    )
    assert np.array_equal(as_uint8.embed(pixels), pixels.transpose(2, 0, 1)[None])
    assert np.array_equal(as_uint8.run(unit, out_dtype=np.uint8), pixels)  # float in, 8 bit out
    with pytest.raises(ValueError, match="uint8 inputs"):
        InputRange(white=1.0, dtype="uint8")


def test_output_ranges_come_back_as_0_to_1_clamped(
    tmp_path: Path, cache: ModelCache[object]
) -> None:
    pixels = photo(16, 16)
    unit = pixels.astype(np.float32) / 255
    doubled = times(tmp_path / "x2.onnx", 2.0)
    assert (
        np.abs(
            load_onnx(doubled, spec=ModelSpec(output=OutputRange(2.0)), cache=cache).run(pixels)
            - unit
        ).max()
        < 1e-6
    )
    clamped = load_onnx(doubled, spec=ModelSpec(), cache=cache).run(pixels)
    assert clamped.max() == 1.0 and np.abs(clamped - np.minimum(2 * unit, 1)).max() < 1e-6
    scaled = times(tmp_path / "x255.onnx", 255.0)
    guessed = load_onnx(scaled, spec=ModelSpec(output=OutputRange(None)), cache=cache)
    assert np.abs(guessed.run(pixels) - unit).max() < 1e-6  # 0..255 out, told apart by its max
    stretched = load_onnx(scaled, spec=ModelSpec(output=OutputRange(stretch=True)), cache=cache)
    out = stretched.run(pixels)
    assert out.min() == 0.0 and abs(out.max() - 1.0) < 1e-6
    logits = load_onnx(
        identity(tmp_path / "logit.onnx"),
        spec=ModelSpec(input=InputRange(mean=(0.5,) * 3), output=OutputRange(sigmoid=True)),
        cache=cache,
    )
    assert np.abs(logits.run(pixels) - 1 / (1 + np.exp(-(unit - 0.5)))).max() < 1e-6


def test_mask_input_in_the_models_convention(tmp_path: Path, cache: ModelCache[object]) -> None:
    path = image_graph(
        tmp_path / "echo.onnx",
        [helper.make_node("Concat", ["m", "m", "m"], ["y"], axis=1)],
        extra_inputs=[helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 1, "h", "w"])],
    )
    hole = np.zeros((30, 20), bool)
    hole[5:12, 3:9] = True
    spec = ModelSpec(mask=MaskInput(hole=0.0, keep=1.0), size=SizeRequirements(multiple=16))
    model = load_onnx(path, spec=spec, cache=cache)
    out = model.run(photo(30, 20), mask=hole, out_dtype=np.uint8)
    assert out.shape == (30, 20, 3)
    assert (out[hole] == 0).all() and (out[~hole] == 255).all()
    with pytest.raises(InvalidRequest, match="takes mask"):
        model.run(photo(30, 20))
    with pytest.raises(InvalidRequest, match="no input 'nope'"):
        model.run(photo(30, 20), mask=hole, extra={"nope": np.zeros(1)})


# --- ncnn, with the shipped Real-ESRGAN weights -----------------------------------------------


def shipped(name: str, cache: ModelCache[object], **kwargs: object) -> ImageModel:
    folder = weights_dir()
    assert folder is not None
    model = SHIPPED[name]
    spec = ModelSpec(scale=model.scale, tiling="supported", bytes_per_pixel=model.bytes_per_pixel)
    return load_ncnn(folder / f"{model.stem}.param", name=name, spec=spec, cache=cache, **kwargs)  # type: ignore[arg-type]


def test_ncnn_path_with_the_shipped_weights(cache: ModelCache[object]) -> None:
    model = shipped("animevideov3-x2", cache)
    pixels = photo(37, 51)  # width x height not a multiple of 4: ncnn's channel alignment
    out = model.run(pixels)
    assert out.shape == (74, 102, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert np.abs(model.run(pixels / 255) - out).max() < 1e-4  # uint8 and float inputs agree
    assert np.array_equal(model.run(pixels, out_dtype=np.uint8), np.rint(out * 255))
    assert np.abs(model.run(pixels, threads=1) - out).max() < 1e-4
    bicubic = np.asarray(Image.fromarray(pixels).resize((102, 74), Image.Resampling.BICUBIC))
    assert psnr(bicubic, np.rint(out * 255).astype(np.uint8)) > 22
    assert model.probe(32) == (64, 64, 3)


# --- tiles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tile", [48, 61])
def test_tiled_output_matches_one_run_above_45_db(cache: ModelCache[object], tile: int) -> None:
    model = shipped("animevideov3-x2", cache)
    pixels = photo(120, 97)
    whole = model.run(pixels, out_dtype=np.uint8)
    tiled = model.run_tiled(pixels, tile=tile, overlap=12)
    assert tiled.shape == whole.shape and psnr(whole, tiled) > 45  # measured 54.8 and 55.8 dB
    deep = model.run_tiled(pixels, tile=tile, overlap=12, out_dtype=np.uint16)
    assert deep.dtype == np.uint16 and np.abs(deep / 257.0 - whole).mean() < 0.6


def test_models_that_see_the_whole_frame_refuse_tiles(
    tmp_path: Path, cache: ModelCache[object]
) -> None:
    model = load_onnx(identity(tmp_path / "id.onnx"), cache=cache)
    assert model.spec.tiling == "discouraged"
    with pytest.raises(InvalidRequest, match="tiles would come out different"):
        model.run_tiled(photo(64, 64), tile=32, overlap=4)


# --- the cache ----------------------------------------------------------------------------------


def test_cache_keeps_the_most_recently_used_few() -> None:
    cache: ModelCache[str] = ModelCache(2)
    for key in ("a", "b"):
        cache.get(key, lambda key=key: key.upper())  # type: ignore[misc]
    cache.get("a", lambda: "never")  # a is now the most recent
    cache.get("c", lambda: "C")
    assert cache.keys() == ["a", "c"] and cache.loads == 3
    assert cache.get("b", lambda: "B again") == "B again" and cache.loads == 4


def test_onnx_models_beyond_the_bound_are_evicted_and_reloaded(tmp_path: Path) -> None:
    cache: ModelCache[object] = ModelCache(2)
    paths = [identity(tmp_path / f"m{i}.onnx") for i in range(3)]
    first = load_onnx(paths[0], cache=cache)
    for path in paths[1:]:
        load_onnx(path, cache=cache)
    assert len(cache) == 2 and cache.loads == 3
    again = load_onnx(paths[0], cache=cache)
    assert again is not first and cache.loads == 4
    assert np.array_equal(first.run(photo(8, 8)), again.run(photo(8, 8)))  # evicted, still usable


def test_one_load_per_key_under_8_concurrent_callers() -> None:
    cache: ModelCache[object] = ModelCache(4)
    calls: list[int] = []
    gate = threading.Barrier(8)

    def load() -> object:
        calls.append(1)
        time.sleep(0.2)
        return object()

    results: list[object] = []

    def caller() -> None:
        gate.wait()
        results.append(cache.get("model", load))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 8 and all(r is results[0] for r in results)


def test_one_onnx_session_under_8_concurrent_callers(tmp_path: Path) -> None:
    cache: ModelCache[object] = ModelCache(4)
    path = times(tmp_path / "x2.onnx", 2.0)
    gate = threading.Barrier(8)
    models: list[ImageModel] = []

    def caller(threads: int) -> None:
        gate.wait()
        models.append(load_onnx(path, threads=threads, cache=cache))

    workers = [threading.Thread(target=caller, args=(n,)) for n in range(1, 9)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert cache.loads == 1 and all(m is models[0] for m in models)


def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    cache: ModelCache[object] = ModelCache(2)
    gate = threading.Barrier(4)
    errors: list[BaseException] = []

    def load() -> object:
        time.sleep(0.1)
        raise InvalidRequest("broken file")

    def caller() -> None:
        gate.wait()
        try:
            cache.get("bad", load)
        except InvalidRequest as exc:
            errors.append(exc)

    workers = [threading.Thread(target=caller) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(errors) == 4 and cache.loads == 1 and len(cache) == 0
    assert cache.get("bad", lambda: "fixed") == "fixed"


def test_cache_size_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETOUCH_TEST_MAX", "3")
    assert capacity_from_env("RETOUCH_TEST_MAX", 1) == 3
    monkeypatch.setenv("RETOUCH_TEST_MAX", "0")
    with pytest.raises(ConfigurationError, match="RETOUCH_TEST_MAX"):
        capacity_from_env("RETOUCH_TEST_MAX", 1)
    monkeypatch.delenv("RETOUCH_TEST_MAX")
    assert capacity_from_env("RETOUCH_TEST_MAX", 1) == 1


# --- threads ------------------------------------------------------------------------------------


def test_threads_are_capped_at_the_cores_and_not_part_of_the_key(
    tmp_path: Path, cache: ModelCache[object]
) -> None:
    assert cap_threads(1_000_000) == CORES and cap_threads(None) == CORES
    assert cap_threads(0) == 1 and cap_threads(1) == 1
    path = identity(tmp_path / "id.onnx")
    model = load_onnx(path, threads=4096, cache=cache)
    assert model.threads == CORES
    assert model.session.get_session_options().intra_op_num_threads == CORES
    assert load_onnx(path, threads=1, cache=cache) is model and cache.loads == 1
    ncnn = shipped("animevideov3-x2", cache, threads=1_000_000)
    assert ncnn.threads == CORES and ncnn.session.opt.num_threads == CORES
    out = ncnn.run(photo(16, 16), threads=1_000_000)  # libgomp would start a million threads
    assert out.shape == (32, 32, 3) and ncnn.session.opt.num_threads == CORES
    if Path("/proc/self/task").is_dir():  # OS threads (libgomp's are not Python threads)
        assert len(os.listdir("/proc/self/task")) < 64
    assert shipped("animevideov3-x2", cache, threads=1) is ncnn


def test_providers_cap_threads_and_share_one_model(astronaut: np.ndarray) -> None:
    import retouch
    from retouch.providers.realesrgan import RealESRGANProvider
    from retouch.providers.u2net import SegmentOptions, U2NetProvider

    provider = RealESRGANProvider()
    one = provider.load("animevideov3-x2", factor=2, threads=1)
    many = provider.load("animevideov3-x2", factor=2, threads=1_000_000)
    assert one.network is many.network
    small = np.ascontiguousarray(astronaut[:24, :24])
    out = retouch.upscale(small, scale=2, options={"threads": 1024}).image.pixels
    assert out.shape == (48, 48, 3)  # the declared ceiling is accepted, and capped at the cores
    with pytest.raises(InvalidRequest, match=r"threads must be 1\.\.1024"):
        retouch.upscale(small, scale=2, options={"threads": 1_000_000})
    segmenter = U2NetProvider().load("u2netp", SegmentOptions(threads=4096))
    assert segmenter.session.get_session_options().intra_op_num_threads <= CORES
    assert U2NetProvider().load("u2netp", SegmentOptions(threads=1)) is segmenter
