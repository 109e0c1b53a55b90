"""The async API: coroutines for every operation, amap/map in input order with per-item
errors, remote calls overlapped (a fake OpenAI with 1 s latency), local work bounded."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import retouch
from retouch.aio import AsyncToolkit, amap
from retouch.api import Toolkit
from retouch.errors import ConfigurationError, InvalidRequest
from retouch.imageio import load_image
from retouch.results import ImageResult

from .fakes import live
from .fakes.openai_api import KEY, FakeOpenAI

LATENCY_S = 1.0


class Slow:
    """ASGI middleware: every HTTP request waits LATENCY_S first; counts requests in flight."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(LATENCY_S)
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.fixture
def slow_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[Slow]:
    service = FakeOpenAI()
    slow = Slow(service.asgi())
    with live(slow) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{url}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.01")
        yield slow


def _photos(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.slow
def test_amap_overlaps_eight_remote_edits(slow_openai: Slow) -> None:
    items = [
        {
            "image": photo,
            "prompt": f"picture {i}",
            "provider": "openai",
            # gpt-image-2 takes any multiple of 16: a 48 px result keeps the client's and
            # the fake's own work small next to the 1 s of latency being measured.
            "options": {"model": "gpt-image-2"},
            "width": 48,
            "height": 48,
        }
        for i, photo in enumerate(_photos(8))
    ]
    started = time.perf_counter()
    outcomes = retouch.map("edit", items, concurrency=8)
    elapsed = time.perf_counter() - started
    assert [o.index for o in outcomes] == list(range(8))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert all(o.unwrap().provider == "openai" for o in outcomes)
    assert slow_openai.peak == 8  # all eight were waiting on the service at once
    assert elapsed < 3.0  # about 1 s; one after another would take 8 s


@pytest.mark.slow
def test_concurrency_bounds_requests_in_flight(slow_openai: Slow) -> None:
    items = [
        {
            "image": photo,
            "prompt": "x",
            "provider": "openai",
            "options": {"model": "gpt-image-2"},
            "width": 48,
            "height": 48,
        }
        for photo in _photos(4)
    ]
    started = time.perf_counter()
    outcomes = retouch.map("edit", items, concurrency=2)
    elapsed = time.perf_counter() - started
    assert all(o.ok for o in outcomes)
    assert slow_openai.peak == 2
    assert elapsed >= 2 * LATENCY_S  # two rounds of two


def test_results_in_input_order_with_per_item_errors() -> None:
    ramp = np.repeat(np.linspace(0, 200, 32, dtype=np.uint8)[None, :, None], 3, axis=2)
    items: list[Any] = [
        {"image": np.repeat(ramp, 8, axis=0), "brightness": str(b)} for b in (0.1, 0.2, 0.3)
    ]
    items.insert(1, {"image": np.repeat(ramp, 8, axis=0), "gamma": "0"})  # out of range
    seen: list[int] = []
    outcomes = asyncio.run(
        amap("adjust", items, concurrency=3, progress=lambda o: seen.append(o.index))
    )
    assert [o.index for o in outcomes] == [0, 1, 2, 3]
    assert sorted(seen) == [0, 1, 2, 3]
    assert not outcomes[1].ok and isinstance(outcomes[1].error, InvalidRequest)
    assert "gamma must be 0.1..10" in str(outcomes[1].error)
    with pytest.raises(InvalidRequest):
        outcomes[1].unwrap()
    means = [o.unwrap().image.pixels.mean() for o in (outcomes[0], outcomes[2], outcomes[3])]
    assert means[0] < means[1] < means[2]  # each item kept its own brightness, in order


def test_every_operation_is_a_coroutine_with_the_toolkits_parameters(
    small_photo: np.ndarray,
) -> None:
    async def go() -> tuple[ImageResult, ImageResult]:
        async with AsyncToolkit() as tk:
            mask = np.zeros(small_photo.shape[:2], np.uint8)
            mask[20:40, 30:60] = 255
            erased, resized = await asyncio.gather(
                tk.erase(small_photo, mask, seed=5, options={"method": "telea"}),
                tk.resize(small_photo, max_width=48),
            )
            with pytest.raises(TypeError):
                await tk.resize(small_photo, max_widht=48)  # type: ignore[call-arg]
            return erased, resized

    erased, resized = asyncio.run(go())
    out = erased.image.pixels
    mask = np.zeros(small_photo.shape[:2], bool)
    mask[20:40, 30:60] = True
    assert np.array_equal(out[~mask], small_photo[~mask])
    assert (resized.image.width, resized.image.height) == (48, 32)
    for name in ("erase", "inpaint", "outpaint", "edit", "variations", "upscale", "resize",
                 "adjust", "remove_background", "restore_faces", "stylize"):  # fmt: skip
        assert asyncio.iscoroutinefunction(getattr(AsyncToolkit, name)), name
        assert getattr(AsyncToolkit, name).__doc__ == getattr(Toolkit, name).__doc__


def test_local_work_runs_on_a_pool_sized_to_the_cores() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    def watch(_: object) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1

    flat = np.full((16, 16, 3), 90, np.uint8)

    async def go() -> None:
        async with AsyncToolkit(local_workers=2) as tk:
            await asyncio.gather(*(tk.adjust(flat, gamma=1.5, progress=watch) for _ in range(8)))

    asyncio.run(go())
    assert peak == 2


def test_results_as_base64_and_data_uri() -> None:
    result = retouch.adjust(np.full((8, 12, 3), 100, np.uint8), brightness=0.2)
    text = result.to_base64()
    assert load_image(base64.b64decode(text)).pixels[0, 0, 0] == 151
    uri = result.to_data_uri("webp", quality=100)
    assert uri.startswith("data:image/webp;base64,")
    assert np.array_equal(load_image(uri).pixels, result.image.pixels)  # lossless at 100
    jpeg = result.to_data_uri("jpeg")
    assert (
        jpeg.startswith("data:image/jpeg;base64,")
        and abs(int(load_image(jpeg).pixels[4, 6, 0]) - 151) <= 2
    )


def test_map_inside_an_event_loop_says_to_await_amap() -> None:
    async def go() -> None:
        retouch.map("adjust", [])

    with pytest.raises(ConfigurationError, match=r"await retouch\.amap"):
        asyncio.run(go())
