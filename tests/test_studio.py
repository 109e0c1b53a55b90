"""The studio page (``retouch studio``, ``/`` of the service), driven in a real browser.

Chromium is Debian's ``chromium`` package driven by Playwright for Python (``make test``
installs both); without it these tests fail with the command that installs it, they never
skip. Each test measures an outcome from files the page downloads (masks, results) or from
the service, never "it ran". Screenshots of the main states go to ``out/studio-tests/``
(git-ignored), or ``RETOUCH_TEST_ARTIFACTS``.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from retouch.api import Toolkit
from retouch.demo import sample_mask_path
from retouch.errors import InvalidRequest
from retouch.results import ImageResult, OutputImage
from retouch.server import ServerSettings, create_app
from retouch.types import (
    REQUEST_TYPES,
    OperationSpec,
    Progress,
    ProviderInfo,
    ProviderStatus,
)

from .fakes import live

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("RETOUCH_TEST_ARTIFACTS", ROOT / "out" / "studio-tests"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_CHROMIUM = (
    "the studio's browser tests need Chromium: apt-get install -y chromium "
    "(or set RETOUCH_CHROMIUM to a Chromium binary)"
)
browser_test = pytest.mark.slow


# --- providers for the tests -------------------------------------------------------------------


class Sleepy:
    """An erase that takes ten seconds, reporting progress every tenth of one."""

    info = ProviderInfo(
        name="sleepy",
        kind="local",
        description="test: a slow erase with progress",
        operations={"erase": OperationSpec()},
        priority=-5,
    )

    def status(self) -> ProviderStatus:
        return ProviderStatus(True, "sleeps, reporting progress")

    def run(self, request: Any, progress: Any) -> ImageResult:
        for step in range(100):
            progress(Progress("sleeping", step, 100))
            time.sleep(0.1)
        return ImageResult(
            images=[OutputImage(pixels=request.image.pixels.copy())], provider="sleepy"
        )


GRUMPY_MESSAGE = "grumpy refuses every photo (this is the failing provider of the tests)"


class Grumpy:
    info = ProviderInfo(
        name="grumpy",
        kind="local",
        description="test: every run fails",
        operations={"erase": OperationSpec()},
        priority=-5,
    )

    def status(self) -> ProviderStatus:
        return ProviderStatus(True, "fails on purpose")

    def run(self, request: Any, progress: Any) -> ImageResult:
        raise InvalidRequest(GRUMPY_MESSAGE)


class Shuffler:
    """Variations for the tests: each a different roll of the input, seeded."""

    info = ProviderInfo(
        name="shuffler",
        kind="local",
        description="test: variations",
        operations={"variations": OperationSpec(honours=frozenset({"n", "seed"}))},
    )

    def status(self) -> ProviderStatus:
        return ProviderStatus(True)

    def run(self, request: Any, progress: Any) -> ImageResult:
        base = request.image.pixels
        seed = request.seed or 0
        images = [
            OutputImage(
                pixels=np.ascontiguousarray(np.roll(base, 9 * (i + 1), axis=1)), seed=seed + i
            )
            for i in range(request.n)
        ]
        return ImageResult(images=images, provider="shuffler")


@dataclass(frozen=True, kw_only=True)
class Clicker:
    """Makes a disc of radius 12 around each point labelled 1, minus those labelled 0."""

    info = ProviderInfo(
        name="clicker",
        kind="local",
        description="test: point masks",
        operations={"mask": OperationSpec(choices={"kind": frozenset({"click"})})},
    )

    def status(self) -> ProviderStatus:
        return ProviderStatus(True)

    def run(self, request: Any, progress: Any) -> ImageResult:
        height, width = request.image.pixels.shape[:2]
        ys, xs = np.mgrid[0:height, 0:width]
        mask = np.zeros((height, width), bool)
        for x, y in request.points:
            mask |= (xs - x) ** 2 + (ys - y) ** 2 <= 144
        for x, y in request.negative_points:
            mask &= ~((xs - x) ** 2 + (ys - y) ** 2 <= 144)
        grey = np.where(mask, 255, 0).astype(np.uint8)
        return ImageResult(
            images=[OutputImage(pixels=np.dstack([grey] * 3), source_mode="L")],
            provider="clicker",
        )


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("RETOUCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(INSTALL_CHROMIUM, pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the studio's browser tests need Playwright: pip install -e '.[test]'", pytrace=False
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    toolkit = Toolkit(providers={"sleepy": Sleepy(), "grumpy": Grumpy(), "shuffler": Shuffler()})
    with live(create_app(toolkit, ServerSettings())) as url:
        yield url


class Page:
    """A page of the studio in a fresh browser context; page errors fail the test."""

    def __init__(self, browser: Any, url: str, *, ready: bool = True, **context: Any) -> None:
        self.context = browser.new_context(
            viewport=context.pop("viewport", {"width": 1280, "height": 720}),
            accept_downloads=True,
            **context,
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(url)
        if ready:
            self.page.wait_for_selector("body[data-ready=true]", state="attached", timeout=30_000)

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    opened = Page(browser, f"{server}/")
    yield opened.page
    opened.close()


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def open_image(page: Any, path: Path) -> None:
    size = Image.open(path).size
    page.set_input_files("#open-file", str(path))
    page.wait_for_function(
        "size => document.querySelector('#image-info').textContent.includes(size)",
        arg=f"{size[0]} × {size[1]}",
    )


def to_screen(page: Any, x: float, y: float, layer: str = "#image-layer") -> tuple[float, float]:
    left, top, scale = page.eval_on_selector(
        layer,
        "e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width / e.naturalWidth]; }",
    )
    return left + x * scale, top + y * scale


def paint(page: Any, points: list[tuple[float, float]], *, alt: bool = False) -> None:
    if alt:
        page.keyboard.down("Alt")
    page.mouse.move(*to_screen(page, *points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*to_screen(page, *point), steps=2)
    page.mouse.up()
    if alt:
        page.keyboard.up("Alt")


def drag(page: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*to_screen(page, *start))
    page.mouse.down()
    page.mouse.move(*to_screen(page, *end), steps=5)
    page.mouse.up()


def download(page: Any, selector: str) -> tuple[str, bytes]:
    with page.expect_download() as info:
        page.locator(selector).first.click()
    value = info.value
    return value.suggested_filename, Path(value.path()).read_bytes()


def read_mask(page: Any) -> np.ndarray:
    page.wait_for_timeout(150)  # the mask statistics settle (debounced)
    _, data = download(page, "#mask-download")
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def wait_mask_changed(page: Any, previous: str) -> None:
    page.wait_for_function(
        "old => document.querySelector('#mask-stats').textContent !== old", arg=previous
    )


def mask_text(page: Any) -> str:
    return str(page.text_content("#mask-stats"))


def wait_run(page: Any, number: int, statuses: tuple[str, ...] = ("succeeded",)) -> Any:
    """The card of run ``number`` once it has one of ``statuses`` (and, when succeeded, its
    result fetched)."""
    card = page.locator(f".run[aria-label^='Run {number}:']")
    ended = " or ".join(f"c.dataset.status === '{s}'" for s in statuses)
    page.wait_for_function(
        f"""n => {{
            const c = [...document.querySelectorAll('.run')]
                .find(r => r.getAttribute('aria-label').startsWith(`Run ${{n}}:`));
            if (!c) return false;
            if (c.dataset.status === 'succeeded') return Boolean(c.querySelector('.run-download'));
            return {ended} || ['failed', 'cancelled'].includes(c.dataset.status);
        }}""",
        arg=number,
        timeout=120_000,
    )
    status = card.get_attribute("data-status")
    assert status in statuses, (status, card.text_content())
    return card


LATE_DELETE_REPLIES = """() => {
    const original = window.fetch;
    window.lateRepliesDelivered = 0;
    window.fetch = async (url, options = {}) => {
        const response = await original(url, options);
        if (options.method !== "DELETE") return response;
        await new Promise((resolve) => setTimeout(resolve, 1500));
        window.lateRepliesDelivered += 1;
        return response;
    };
}"""


def small_photo_file(tmp_path: Path, astronaut: np.ndarray, step: int = 4) -> Path:
    path = tmp_path / "small.png"
    Image.fromarray(np.ascontiguousarray(astronaut[::step, ::step])).save(path)
    return path


def operations(url: str, key: str | None = None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data: list[dict[str, Any]] = httpx.get(f"{url}/v1/operations", headers=headers).json()["data"]
    return data


# --- the service serves the page ------------------------------------------------------------------


def test_the_page_is_served_without_a_key_and_the_api_still_needs_one() -> None:
    settings = ServerSettings(api_keys=frozenset({"sk-studio"}))
    with TestClient(create_app(Toolkit(), settings)) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="studio/js/main.js">' in page.text
        for path in ("studio/js/main.js", "studio/js/form.js", "studio/studio.css"):
            asset = client.get(f"/{path}")
            assert asset.status_code == 200 and len(asset.content) > 1000, path
        assert (
            client.get("/studio/js/main.js")
            .headers["content-type"]
            .startswith(("text/javascript", "application/javascript"))
        )
        assert client.get("/studio/sample.jpg").headers["content-type"] == "image/jpeg"
        assert client.get("/v1/operations").status_code == 401
        assert client.get("/v1/styles").status_code == 401
        # the open prefix opens no API route, however the path is spelt
        for sneaky in ("/studio/../v1/operations", "/studio/%2e%2e/v1/operations"):
            answer = client.get(sneaky)
            assert answer.status_code in (401, 404) and "data" not in answer.text
        assert client.post("/", content=b"x").status_code == 405
        assert "/" not in client.get("/openapi.json").json()["paths"]


def test_styles_route_names_every_built_in_style() -> None:
    from retouch.providers.stylize import STYLE_NAMES, parse_style

    with TestClient(create_app(Toolkit(), ServerSettings())) as client:
        styles = client.get("/v1/styles").json()["data"]
    assert len(styles) == 26 == len(set(STYLE_NAMES))
    assert [s["index"] for s in styles] == list(range(26))
    assert {s["provider"] for s in styles} == {"stylize"}
    for style in styles:
        assert style["name"] == STYLE_NAMES[style["index"]] and not style["name"].startswith(
            "style"
        )
        weights = parse_style(style["name"])  # a name is a style, as its number is
        assert (
            np.array_equal(weights, parse_style(style["style"]))
            and weights.argmax() == style["index"]
        )
    blend = parse_style("woven-grid:0.5,3:0.5")
    assert blend[17] == blend[3] == pytest.approx(0.5)


def test_list_styles_prints_names(capsys: pytest.CaptureFixture[str]) -> None:
    from retouch.cli import main
    from retouch.providers.stylize import STYLE_NAMES

    assert main(["stylize", "--list-styles"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for index, name in enumerate(STYLE_NAMES):
        assert lines[index].split() == [str(index), name, f"style-{index}"]


@pytest.mark.slow
def test_studio_opens_the_browser_once_the_server_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    import webbrowser

    from retouch.cli import open_when_listening, studio_url

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    assert studio_url("0.0.0.0", 8000) == "http://127.0.0.1:8000/"
    assert studio_url("::", 8000) == "http://[::1]:8000/"
    with live(create_app(Toolkit(), ServerSettings())) as url:
        port = int(url.rsplit(":", 1)[1])
        assert open_when_listening(studio_url("127.0.0.1", port), "127.0.0.1", port)
    assert opened == [f"http://127.0.0.1:{port}/"]
    with socket.socket() as s:  # nothing listens there: no browser is opened
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert not open_when_listening("http://x/", "127.0.0.1", closed, timeout=0.5)
    assert opened == [f"http://127.0.0.1:{port}/"]


@pytest.mark.slow
def test_retouch_studio_serves_the_page(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "RETOUCH_JOB_DIR": str(tmp_path / "jobs"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "retouch", "studio", "--no-browser", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        page = None
        while time.time() < deadline:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert page is not None and page.status_code == 200 and "retouch studio" in page.text
        ops = httpx.get(f"http://127.0.0.1:{port}/v1/operations").json()["data"]
        assert [op["name"] for op in ops] == list(REQUEST_TYPES)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert f"retouch studio: http://127.0.0.1:{port}/" in err


# --- the page: its controls come from the declaration ----------------------------------------------


def expected_control(field: dict[str, Any]) -> str:
    kind = field["type"]
    if kind == "image":
        return "output" if field["name"] == "image" else "file"
    if kind in ("mask",) or field.get("choices"):
        return "select"
    if kind == "bool":
        return "checkbox"
    if kind in ("int", "float"):
        low = field.get("minimum", field.get("exclusive_minimum"))
        high = field.get("maximum")
        if (
            field["name"] != "seed"
            and low is not None
            and (field.get("maximum_by_image") or (high is not None and high - low <= 10_000))
        ):
            return "slider"
        return "number"
    return "textarea" if kind == "options" or "prompt" in field["name"] else "text"


def describe_control(page: Any, name: str) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate(
        """name => {
            const wrap = [...document.querySelectorAll('#operation-form .field')]
                .find(w => w.dataset.field === name);
            if (!wrap) return null;
            const input = wrap.querySelector(`[data-field="${name}"]`);
            return {
                tag: input.tagName.toLowerCase(),
                type: input.type || '',
                slider: Boolean(wrap.querySelector('input[type=range]')),
                sliderMin: wrap.querySelector('input[type=range]')?.min ?? null,
                sliderMax: wrap.querySelector('input[type=range]')?.max ?? null,
                value: input.type === 'checkbox' ? input.checked : (input.value ?? null),
                visible: !wrap.hidden,
                label: wrap.querySelector('label')?.textContent ?? '',
            };
        }""",
        name,
    )
    return found


@browser_test
def test_every_operation_of_the_cli_and_every_field_has_a_control(page: Any, server: str) -> None:
    from retouch.cli import build_parser

    described = operations(server)
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    listed = page.eval_on_selector_all("#operation-select option", "os => os.map(o => o.value)")
    assert listed == [op["name"] for op in described] == list(REQUEST_TYPES)
    assert set(listed) <= set(commands)  # each CLI operation, as the CLI names it
    for op in described:
        page.select_option("#operation-select", op["name"])
        assert page.text_content("#operation-summary") == op["summary"]
        ready = [p for p in op["providers"] if p["ready"]]
        honoured = {name for p in ready for name in p["honours"]}
        taken = {name for p in ready for name in p["options"]}
        providers = page.eval_on_selector_all(
            "#provider-select option", "os => os.map(o => [o.value, o.disabled])"
        )
        assert providers == [["", False]] + [[p["name"], not p["ready"]] for p in op["providers"]]
        for field in op["fields"] + op["provider_options"]:
            name = field["name"]
            if name == "provider":
                assert page.get_attribute("#provider-select", "data-field") == "provider"
                continue
            control = describe_control(page, name)
            assert control is not None, (op["name"], name)
            want = expected_control(field)
            where = (op["name"], name, want, control)
            if want == "slider":
                assert control["slider"] and control["type"] == "number", where
                low = field.get("minimum", field.get("exclusive_minimum"))
                assert float(control["sliderMin"]) >= low, where
                if "maximum" in field:
                    assert float(control["sliderMax"]) == field["maximum"], where
            elif want == "number":
                assert control["type"] == "number" and not control["slider"], where
            elif want in ("select", "output", "textarea"):
                assert control["tag"] == want, where
            elif want in ("file", "checkbox", "text"):
                assert control["type"] == want, where
            default = field.get("default")
            if want == "checkbox":
                assert control["value"] == (default is True), where
            elif field["type"] in ("int", "float") and default is not None:
                assert float(control["value"]) == default, where
            elif want not in ("file", "output") and field["type"] != "mask":
                shown = "" if default in (None, []) else str(default)
                assert control["value"] == shown, where
            in_list = field in op["provider_options"]
            applies = (
                name in taken
                if in_list
                else field["required"] or not field.get("needs_support") or name in honoured
            )
            assert control["visible"] == applies, where
        for provider in ready:  # a provider's own choice shows what it honours and takes
            page.select_option("#provider-select", provider["name"])
            for field in op["fields"]:
                if field.get("needs_support") and not field["required"]:
                    shown = describe_control(page, field["name"])["visible"]
                    assert shown == (field["name"] in provider["honours"]), (provider, field)
            for field in op["provider_options"]:
                shown = describe_control(page, field["name"])["visible"]
                assert shown == (field["name"] in provider["options"]), (provider, field)
        page.select_option("#provider-select", "")
        if describe_control(page, "seed") and describe_control(page, "seed")["visible"]:
            page.click(".field[data-field=seed] .dice")
            seed = int(page.input_value(".field[data-field=seed] input"))
            assert 0 <= seed <= 2**32 - 1
        run_enabled = page.is_enabled("#run-button")
        assert run_enabled == bool(ready), op["name"]


@browser_test
def test_paint_over_the_shuttle_erase_download_and_undo(
    page: Any, astronaut_file: Path, astronaut: np.ndarray
) -> None:
    shot(page, "01-empty")
    open_image(page, astronaut_file)
    page.fill("#brush-size-number", "50")
    paint(page, [(420, y) for y in range(30, 281, 10)])
    mask = read_mask(page)
    painted = mask > 0
    shuttle = np.asarray(Image.open(sample_mask_path())) > 127
    assert mask.shape == astronaut.shape[:2]
    assert painted.sum() > 50 * 250 * 0.9
    assert (painted & shuttle).sum() > 0.9 * painted.sum()  # where the mouse went
    columns = np.nonzero(painted.any(axis=0))[0]
    assert 390 <= columns.min() <= 397 and 443 <= columns.max() <= 450  # 50 px wide at x 420
    shot(page, "02-painted")

    page.click("#run-button")
    card = wait_run(page, 1)
    assert "classic" in card.text_content()
    shot(page, "03-compare")
    clip = "document.querySelector('#before-image').style.clipPath"
    assert page.evaluate(clip) == "inset(0px 50% 0px 0px)"
    page.keyboard.down("c")  # hold: the whole original
    assert page.evaluate(clip) == "inset(0px 0% 0px 0px)"
    page.keyboard.up("c")
    assert page.evaluate(clip) == "inset(0px 50% 0px 0px)"
    page.mouse.click(*to_screen(page, 128, 256, "#after-image"))  # the divider follows
    assert float(page.input_value("#compare-slider")) == pytest.approx(25, abs=1)
    name, data = download(page, ".run .run-download")
    assert name == "astronaut-erase-seed" + name.split("seed")[1] and name.endswith(".png")
    result = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert result.shape == astronaut.shape
    assert np.array_equal(result[~painted], astronaut[~painted])  # not one pixel outside
    change = np.abs(result.astype(int) - astronaut.astype(int)).sum(axis=2)
    assert change[mask == 255].mean() > 30  # the orange tank is gone
    page.select_option("#download-format", "jpeg")
    name, data = download(page, ".run .run-download")
    jpeg = Image.open(io.BytesIO(data))
    assert name.endswith(".jpg") and jpeg.format == "JPEG" and jpeg.size == (512, 512)
    close = np.abs(np.asarray(jpeg.convert("RGB")).astype(int) - result.astype(int)).mean()
    assert close < 4  # the same picture, re-encoded
    page.select_option("#download-format", "webp")
    name, data = download(page, ".run .run-download")
    assert name.endswith(".webp") and Image.open(io.BytesIO(data)).format == "WEBP"

    page.keyboard.press("Escape")  # back to painting
    assert page.is_hidden("#compare-bar") and page.is_visible("#image-layer")
    page.keyboard.press("Control+z")
    assert read_mask(page).max() == 0  # undo empties the mask
    page.keyboard.press("Control+Shift+z")
    assert np.array_equal(read_mask(page), mask)


@browser_test
def test_open_by_drop_and_paste(page: Any, astronaut: np.ndarray, tmp_path: Path) -> None:
    small = small_photo_file(tmp_path, astronaut)
    data = list(small.read_bytes())
    for event in ("drop", "paste"):
        page.evaluate(
            """([bytes, kind]) => {
                const file = new File([new Uint8Array(bytes)], `${kind}.png`, { type: 'image/png' });
                const transfer = new DataTransfer();
                transfer.items.add(file);
                const event = kind === 'drop'
                    ? new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true })
                    : new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true });
                document.querySelector('#viewport').dispatchEvent(event);
            }""",
            [data, event],
        )
        page.wait_for_function(
            "name => document.querySelector('#image-info').textContent.startsWith(name)",
            arg=f"{event}.png — 128 × 128",
        )
        assert page.is_hidden("#empty-state")
    page.click("#sample-button")
    page.wait_for_function(
        "document.querySelector('#image-info').textContent.includes('512 × 512')"
    )


@browser_test
def test_the_eraser_removes_part_of_a_stroke(page: Any, astronaut_file: Path) -> None:
    open_image(page, astronaut_file)
    page.fill("#brush-size-number", "40")
    paint(page, [(x, 100) for x in range(60, 301, 10)])
    before = read_mask(page)
    page.keyboard.press("e")
    assert page.get_attribute("[data-tool=eraser]", "aria-pressed") == "true"
    paint(page, [(180, y) for y in range(40, 170, 10)])
    after = read_mask(page)
    erased = (before > 127).sum() - (after > 127).sum()
    assert erased > 35 * 35  # the crossing of the two hard cores, at least
    assert after[85:116, 172:189].max() == 0  # the eraser's core holds nothing
    assert after[100, 70] == 255 and after[100, 290] == 255  # both ends kept
    assert np.array_equal(after[:, :140], before[:, :140])  # nothing else touched
    shot(page, "04-eraser")
    page.keyboard.press("b")
    page.keyboard.press("BracketRight")
    assert page.input_value("#brush-size-number") == "45"
    page.keyboard.press("BracketLeft")
    page.keyboard.press("BracketLeft")
    assert page.input_value("#brush-size-number") == "35"
    page.keyboard.press("Shift+BracketLeft")
    assert page.input_value("#brush-hardness-number") == "70"


@browser_test
def test_select_subject_matches_the_cli(page: Any, astronaut_file: Path, tmp_path: Path) -> None:
    from retouch.cli import main

    reference = tmp_path / "subject.png"
    assert main(["mask", "subject", str(astronaut_file), "-o", str(reference), "-q"]) == 0
    expected = np.asarray(Image.open(reference).convert("L")) > 127
    open_image(page, astronaut_file)
    for button, want in (("#select-subject", expected), ("#select-background", ~expected)):
        previous = mask_text(page)
        page.click(button)
        wait_mask_changed(page, previous)
        got = read_mask(page) > 127
        iou = (got & want).sum() / (got | want).sum()
        assert iou > 0.98, (button, iou)
    page.keyboard.press("Control+z")
    assert (read_mask(page) > 127).sum() == expected.sum()
    shot(page, "05-subject")


@browser_test
def test_mask_tools_shapes_fill_refine_upload_undo_zoom(
    page: Any, astronaut_file: Path, tmp_path: Path
) -> None:
    open_image(page, astronaut_file)
    page.keyboard.press("r")
    drag(page, (100, 100), (200, 160))
    rect = read_mask(page) > 127
    assert abs(int(rect.sum()) - 100 * 60) < 400 and rect[130, 150] and not rect[90, 150]
    page.keyboard.press("o")
    drag(page, (300, 300), (400, 400))
    both = read_mask(page) > 127
    assert abs(int((both & ~rect).sum()) - np.pi * 50 * 50) < 400
    opacity = "getComputedStyle(document.querySelector('#mask-layer')).opacity"
    assert page.evaluate(opacity) == "0.55"
    page.eval_on_selector(
        "#mask-opacity", "e => { e.value = 80; e.dispatchEvent(new Event('input')); }"
    )
    assert page.evaluate(opacity) == "0.8"
    page.keyboard.press("h")
    assert page.evaluate(opacity) == "0"
    page.keyboard.press("h")
    assert page.evaluate(opacity) == "0.8"
    page.keyboard.press("Delete")
    assert read_mask(page).max() == 0

    page.keyboard.press("p")  # a triangle by its corners; a click on the first closes it
    for corner in ((50, 300), (250, 300), (150, 450), (50, 300)):
        page.mouse.click(*to_screen(page, *corner))
    triangle = read_mask(page) > 127
    assert abs(int(triangle.sum()) - 200 * 150 / 2) < 600 and triangle[350, 150]
    page.keyboard.press("Control+z")

    page.keyboard.press("l")  # a lasso around a square, closed when the button is let go
    paint(page, [(300, 50), (400, 50), (400, 150), (300, 150)])
    lasso = read_mask(page) > 127
    assert abs(int(lasso.sum()) - 100 * 100) < 500 and lasso[100, 350] and not lasso[40, 350]
    page.keyboard.press("Control+z")

    page.keyboard.press("b")  # a ring, then the fill tool fills its inside
    page.fill("#brush-size-number", "8")
    ring = [(256 + 60 * np.cos(a), 256 + 60 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 60)]
    paint(page, ring)
    outline = read_mask(page) > 127
    page.keyboard.press("g")
    page.mouse.click(*to_screen(page, 256, 256))
    filled = read_mask(page) > 127
    assert filled[256, 256] and not outline[256, 256]
    assert abs(int(filled.sum()) - np.pi * 64 * 64) < 1500 and not filled[50, 50]
    page.keyboard.press("i")
    inverted = read_mask(page) > 127
    assert inverted.sum() == 512 * 512 - filled.sum() and inverted[50, 50]
    page.keyboard.press("Control+z")

    page.select_option("#refine-kind", "grow")  # live preview by the server, then applied
    page.fill("#refine-px-number", "10")
    page.click("#refine-preview")
    page.wait_for_selector("#preview-layer:not([hidden])")
    preview = """() => {
        const c = document.querySelector('#preview-layer');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 127) n++;
        return n;
    }"""
    page.wait_for_function(f"({preview})() > {int(filled.sum())}")
    by_ten = page.evaluate(preview)
    page.fill("#refine-px-number", "30")  # the preview follows the setting
    page.wait_for_function(f"({preview})() > {by_ten + 2 * np.pi * 64 * 15}")
    page.fill("#refine-px-number", "10")
    page.wait_for_function(f"({preview})() === {by_ten}")
    assert (read_mask(page) > 127).sum() == filled.sum()  # a preview changes nothing yet
    shot(page, "06-grow-preview")
    page.click("#refine-apply")
    grown = read_mask(page) > 127
    assert grown.sum() > filled.sum() + 2 * np.pi * 64 * 10 * 0.8 and grown[256, 188]

    upload = np.zeros((512, 512), np.uint8)
    upload[10:60, 400:500] = 255
    Image.fromarray(upload).save(tmp_path / "mask.png")
    page.set_input_files("#mask-upload", str(tmp_path / "mask.png"))
    page.wait_for_function("document.querySelector('#mask-stats').textContent.includes('5,000')")
    assert np.array_equal(read_mask(page), upload)
    page.keyboard.press("Delete")

    page.keyboard.press("b")  # 55 separate dots: 55 steps back and forth
    page.fill("#brush-size-number", "4")
    dots = [(20 + 8 * (i % 11), 20 + 8 * (i // 11)) for i in range(55)]
    for dot in dots:
        page.mouse.click(*to_screen(page, *dot))
    painted = read_mask(page)
    assert all(painted[y, x] for x, y in dots)
    for _ in range(55):
        page.keyboard.press("Control+z")
    assert read_mask(page).max() == 0
    for _ in range(55):
        page.keyboard.press("Control+Shift+z")
    assert np.array_equal(read_mask(page), painted)

    zoom = page.text_content("#zoom-level")
    page.mouse.move(*to_screen(page, 256, 256))
    page.mouse.wheel(0, -400)
    page.wait_for_function("z => document.querySelector('#zoom-level').textContent !== z", arg=zoom)
    assert int(page.text_content("#zoom-level").rstrip("%")) > int(zoom.rstrip("%"))
    before = page.eval_on_selector("#image-layer", "e => e.getBoundingClientRect().x")
    page.keyboard.down("Space")
    page.mouse.move(600, 300)
    page.mouse.down()
    page.mouse.move(500, 300, steps=4)
    page.mouse.up()
    page.keyboard.up("Space")
    moved = page.eval_on_selector("#image-layer", "e => e.getBoundingClientRect().x")
    assert moved == pytest.approx(before - 100, abs=1)
    width = page.eval_on_selector("#image-layer", "e => e.getBoundingClientRect().width")
    page.evaluate(  # two fingers moving apart: the picture grows, nothing is painted
        """() => {
            const view = document.querySelector('#viewport');
            const box = view.getBoundingClientRect();
            const at = (id, type, x) => view.dispatchEvent(new PointerEvent(type, {
                pointerId: id, pointerType: 'touch', isPrimary: id === 1, bubbles: true,
                clientX: box.x + x, clientY: box.y + 200, button: 0, buttons: 1,
            }));
            at(1, 'pointerdown', 300); at(2, 'pointerdown', 400);
            for (let step = 1; step <= 5; step++) { at(1, 'pointermove', 300 - 10 * step); at(2, 'pointermove', 400 + 10 * step); }
            at(1, 'pointerup', 250); at(2, 'pointerup', 450);
        }"""
    )
    pinched = page.eval_on_selector("#image-layer", "e => e.getBoundingClientRect().width")
    assert pinched == pytest.approx(width * 2, rel=0.02)  # 100 px apart, then 200
    assert np.array_equal(read_mask(page), painted)  # panning and pinching painted nothing


@browser_test
def test_a_failed_job_shows_its_message(page: Any, astronaut_file: Path) -> None:
    open_image(page, astronaut_file)
    paint(page, [(420, 60), (420, 200)])
    page.select_option("#provider-select", "grumpy")
    page.click("#run-button")
    card = wait_run(page, 1, ("failed",))
    assert GRUMPY_MESSAGE in card.locator(".run-error").text_content()
    assert card.locator(".run-error").is_visible()
    shot(page, "07-failed")
    # refused when it is sent: the field it names is pointed at
    page.select_option("#provider-select", "")
    page.fill(".field[data-field=options] textarea", "{not json")
    page.click("#run-button")
    card = wait_run(page, 2, ("failed",))
    assert "options must be an object" in card.locator(".run-error").text_content()
    assert "invalid" in page.get_attribute(".field[data-field=options] textarea", "class")


@browser_test
def test_cancel_stops_a_running_job_and_a_queued_one(
    page: Any, server: str, astronaut: np.ndarray, tmp_path: Path
) -> None:
    open_image(page, small_photo_file(tmp_path, astronaut))
    paint(page, [(60, 20), (60, 80)])
    page.select_option("#provider-select", "sleepy")
    page.click("#run-button")
    page.click("#run-button")  # a second run queues behind the first
    page.wait_for_function(
        """() => {
            const p = document.querySelector(".run[aria-label^='Run 1:'] progress");
            return p && Number(p.value) >= 3;
        }"""
    )
    first = page.locator(".run[aria-label^='Run 1:']")
    second = page.locator(".run[aria-label^='Run 2:']")
    assert first.get_attribute("data-status") == "running"
    assert second.get_attribute("data-status") == "queued"
    shot(page, "08-running")
    started = time.monotonic()
    first.locator(".run-cancel").click()
    wait_run(page, 1, ("cancelled",))
    assert time.monotonic() - started < 5  # stopped, not run to its end (10 s)
    second.locator(".run-cancel").click()
    wait_run(page, 2, ("cancelled",))
    for card in (first, second):
        job = httpx.get(f"{server}/v1/jobs/{card.get_attribute('data-job')}").json()
        assert job["status"] == "cancelled"
        assert card.locator(".run-cancel").is_hidden()


@browser_test
def test_results_chain_erase_then_upscale_then_remove_background(
    page: Any, astronaut: np.ndarray, tmp_path: Path
) -> None:
    open_image(page, small_photo_file(tmp_path, astronaut))
    page.fill("#brush-size-number", "14")
    paint(page, [(105, 10), (105, 70)])
    page.click("#run-button")
    wait_run(page, 1).locator(".run-use").click()
    page.wait_for_function("document.querySelector('#image-info').textContent.includes('erase')")
    page.select_option("#operation-select", "upscale")
    page.fill(".field[data-field=scale] input[type=number]", "2")
    page.click("#run-button")
    wait_run(page, 2).locator(".run-use").click()
    page.wait_for_function(
        "document.querySelector('#image-info').textContent.includes('256 × 256')"
    )
    page.select_option("#operation-select", "remove-background")
    page.click("#run-button")
    card = wait_run(page, 3)
    assert "u2net" in card.text_content()
    shot(page, "09-chain")
    _, data = download(page, ".run[aria-label^='Run 3:'] .run-download")
    cut = np.asarray(Image.open(io.BytesIO(data)))
    assert cut.shape == (256, 256, 4)
    alpha = cut[:, :, 3]
    assert (alpha == 0).mean() > 0.2 and (alpha == 255).mean() > 0.2
    details = card.locator("details")
    details.locator("summary").click()
    assert "provider" in details.text_content() and "u2net" in details.text_content()
    card.locator(".run-mask").click()  # the cut-out's transparency becomes the mask
    page.wait_for_function("!document.querySelector('#mask-stats').textContent.includes('empty')")
    assert np.array_equal(read_mask(page) > 127, alpha > 127)


@browser_test
def test_several_images_of_one_run_seed_and_n(
    page: Any, astronaut: np.ndarray, tmp_path: Path
) -> None:
    open_image(page, small_photo_file(tmp_path, astronaut))
    page.select_option("#operation-select", "variations")
    assert page.is_visible(".field[data-field=n]") and page.is_visible(".field[data-field=seed]")
    assert page.is_hidden(".field[data-field=prompt]")  # shuffler takes no prompt
    page.fill(".field[data-field=n] input[type=number]", "3")
    page.fill(".field[data-field=seed] input", "40")
    page.click("#run-button")
    card = wait_run(page, 1)
    assert "seed 40, 41, 42" in card.text_content()
    original = np.ascontiguousarray(astronaut[::4, ::4])
    for index in range(3):
        _, data = download(page, f".run .run-download:text('Download {index + 1}')")
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert np.array_equal(image, np.roll(original, 9 * (index + 1), axis=1))
    card.locator(".run-compare:text('Compare 3')").click()
    after = page.get_attribute("#after-image", "src")
    card.locator(".run-compare:text('Compare 1')").click()
    assert page.get_attribute("#after-image", "src") != after


READY_OPERATION_SETTINGS: dict[str, dict[str, str]] = {
    # what each operation needs beyond its defaults to have something to do on a small photo
    "outpaint": {"left": "16"},
    "upscale": {"scale": "2"},
    "resize": {"max_size": "48"},
    "stylize": {"style": "3"},
    "adjust": {"brightness": "0.1"},
}


@browser_test
def test_every_ready_operation_runs_from_the_page_queued_together(
    page: Any, server: str, astronaut: np.ndarray, tmp_path: Path
) -> None:
    open_image(page, small_photo_file(tmp_path, astronaut))
    paint(page, [(100, 10), (100, 60)])
    ready = [op for op in operations(server) if op["ready"]]
    assert {"erase", "upscale", "remove-background", "stylize", "mask"} <= {
        op["name"] for op in ready
    }
    for number, op in enumerate(ready, start=1):
        page.select_option("#operation-select", op["name"])
        for name, value in READY_OPERATION_SETTINGS.get(op["name"], {}).items():
            page.fill(f".field[data-field={name}] [data-field={name}]", value)
        page.keyboard.press("Control+Enter")
        try:
            page.wait_for_selector(f".run[aria-label^='Run {number}:']", timeout=5000)
        except Exception:
            pytest.fail(f"{op['name']} did not start: {page.text_content('#run-message')}")
    for number, op in enumerate(ready, start=1):
        card = wait_run(page, number)
        assert card.get_attribute("data-operation") == op["name"]
        provider = card.locator(".run-state").text_content().split(" · ")[0]
        assert provider in op["ready"], (op["name"], provider)
    for op in operations(server):
        if not op["ready"]:
            page.select_option("#operation-select", op["name"])
            assert page.is_disabled("#run-button")
            assert "No provider" in page.text_content("#run-message")


@browser_test
def test_api_key_and_cors_from_another_origin(
    browser: Any, server: str, astronaut: np.ndarray, tmp_path: Path
) -> None:
    toolkit = Toolkit(providers={"sleepy": Sleepy()})
    settings = ServerSettings(api_keys=frozenset({"sk-studio"}), cors_origins=(server,))
    with live(create_app(toolkit, settings)) as api:
        opened = Page(browser, f"{server}/?api={api}", ready=False)
        page = opened.page
        page.wait_for_selector("#key-dialog[open]")
        assert "API key" in page.text_content("#run-message")
        page.fill("#api-key", "sk-studio")
        shot(page, "10-api-key")
        page.click("#key-save")
        page.wait_for_selector("body[data-ready=true]", state="attached")
        open_image(page, small_photo_file(tmp_path, astronaut))
        previous = mask_text(page)
        page.click("#select-subject")  # a cross-origin POST with the key
        wait_mask_changed(page, previous)
        page.select_option("#operation-select", "resize")
        page.fill(".field[data-field=max_size] input", "40")
        page.click("#run-button")  # a job: its events and image, cross-origin
        wait_run(page, 1)
        page.select_option("#operation-select", "erase")
        page.select_option("#provider-select", "sleepy")
        page.click("#run-button")
        page.wait_for_selector(".run[aria-label^='Run 2:'][data-status=running]")
        # The cancel's reply (taken while the work still ran) arrives after the event
        # stream's final state, as it may on a loaded machine: the run stays cancelled.
        page.evaluate(LATE_DELETE_REPLIES)
        page.locator(".run[aria-label^='Run 2:'] .run-cancel").click()  # DELETE, cross-origin
        wait_run(page, 2, ("cancelled",))
        page.wait_for_function("() => window.lateRepliesDelivered >= 1")
        page.wait_for_timeout(300)  # the reply is read and applied
        assert page.get_attribute(".run[aria-label^='Run 2:']", "data-status") == "cancelled"
        page.reload()  # the key stays in the browser, for that server
        page.wait_for_selector("body[data-ready=true]", state="attached")
        assert page.evaluate(f"localStorage.getItem('retouch.apiKey {api}')") == "sk-studio"
        opened.close()
        with live(create_app(Toolkit(), settings)) as other:  # same key, another server
            opened = Page(browser, f"{server}/?api={other}", ready=False)
            opened.page.wait_for_selector("#key-dialog[open]")  # it was not sent there
            opened.close()
    with live(create_app(Toolkit(), ServerSettings())) as closed:  # no CORS: said plainly
        opened = Page(browser, f"{server}/?api={closed}", ready=False)
        opened.page.wait_for_function(
            "document.querySelector('#run-message').textContent.includes('RETOUCH_CORS_ORIGINS')"
        )
        opened.page.evaluate("localStorage.clear()")
        opened.close()


@browser_test
def test_exif_orientation_is_shown_and_sent_right(page: Any, tmp_path: Path) -> None:
    stored = np.zeros((40, 60, 3), np.uint8)  # 60 wide as stored: red left, blue right
    stored[:, :30] = (220, 30, 30)
    stored[:, 30:] = (30, 30, 220)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: 40 wide, red on top
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    page.set_input_files("#open-file", str(path))
    page.wait_for_function("document.querySelector('#image-info').textContent.includes('40 × 60')")
    assert read_mask(page).shape == (60, 40)
    page.select_option("#operation-select", "adjust")
    page.fill(".field[data-field=brightness] input[type=number]", "0.05")
    page.click("#run-button")
    wait_run(page, 1)
    _, data = download(page, ".run .run-download")
    result = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert result.shape == (60, 40, 3)
    assert result[:25, :, 0].mean() > 200 > result[:25, :, 2].mean()  # red on top, as shown
    assert result[35:, :, 2].mean() > 200 > result[35:, :, 0].mean()


@browser_test
def test_style_gallery_shows_each_style_on_the_photo(
    page: Any, server: str, astronaut: np.ndarray, tmp_path: Path
) -> None:
    styles = httpx.get(f"{server}/v1/styles").json()["data"]
    open_image(page, small_photo_file(tmp_path, astronaut))
    page.select_option("#operation-select", "stylize")
    page.click(".gallery-button")
    page.wait_for_function(
        "n => [...document.querySelectorAll('#gallery-grid img')]"
        ".filter(i => i.complete && i.naturalWidth).length === n",
        arg=len(styles),
        timeout=120_000,
    )
    shot(page, "11-gallery")
    labels = page.eval_on_selector_all(
        "#gallery-grid button", "bs => bs.map(b => b.getAttribute('aria-label'))"
    )
    assert labels == [f"Style {s['index']}: {s['name']}" for s in styles]
    colours = page.evaluate(
        """() => [...document.querySelectorAll('#gallery-grid img')].map(img => {
            const c = document.createElement('canvas');
            c.width = c.height = 8;
            const ctx = c.getContext('2d');
            ctx.drawImage(img, 0, 0, 8, 8);
            const d = ctx.getImageData(0, 0, 8, 8).data;
            let r = 0, g = 0, b = 0;
            for (let i = 0; i < d.length; i += 4) { r += d[i]; g += d[i + 1]; b += d[i + 2]; }
            return [r, g, b].map(v => Math.round(v / 64 / 8));
        })"""
    )
    assert len({tuple(c) for c in colours}) >= 20  # each thumbnail shows its own style
    page.click("#gallery-grid button[aria-label='Style 17: woven-grid']")
    assert page.input_value(".field[data-field=style] input") == "17"
    page.click("#run-button")
    card = wait_run(page, 1)
    assert "stylize" in card.text_content()


@browser_test
def test_click_select_appears_only_with_a_point_mask_provider(
    browser: Any, page: Any, astronaut: np.ndarray, tmp_path: Path
) -> None:
    from retouch.registry import BUILTIN, Registry

    no_clicks = {n: s for n, s in BUILTIN.items() if n not in ("sam", "clipseg", "stability")}
    without = Toolkit(registry=Registry(no_clicks, builtins=False, entry_points=False))
    with live(create_app(without, ServerSettings())) as url:
        unable = Page(browser, f"{url}/")
        assert unable.page.is_hidden("#click-tool")  # no ready provider makes a click mask
        unable.close()
    toolkit = Toolkit(registry=Registry({"clicker": Clicker()}, builtins=False, entry_points=False))
    with live(create_app(toolkit, ServerSettings())) as url:
        opened = Page(browser, f"{url}/")
        clicking = opened.page
        assert clicking.is_visible("#click-tool")
        open_image(clicking, small_photo_file(tmp_path, astronaut))
        clicking.keyboard.press("k")
        for point in ((30, 30), (90, 60)):
            previous = mask_text(clicking)
            clicking.mouse.click(*to_screen(clicking, *point))
            wait_mask_changed(clicking, previous)
        mask = read_mask(clicking) > 127
        assert mask[30, 30] and mask[60, 90] and not mask[100, 20]
        assert abs(int(mask.sum()) - 2 * np.pi * 144) < 80
        shot(clicking, "12-click-select")
        previous = mask_text(clicking)
        clicking.keyboard.down("Alt")  # a point that takes away
        clicking.mouse.click(*to_screen(clicking, 30, 30))
        clicking.keyboard.up("Alt")
        wait_mask_changed(clicking, previous)
        mask = read_mask(clicking) > 127
        assert not mask[30, 30] and mask[60, 90]
        opened.close()


def accessible_names_missing(page: Any) -> list[str]:
    missing: list[str] = page.evaluate(
        """() => {
            const controls = document.querySelectorAll('button, input, select, textarea, output');
            const named = el => {
                if (el.getAttribute('aria-label')) return true;
                const by = el.getAttribute('aria-labelledby');
                if (by && by.split(' ').every(id => document.getElementById(id)?.textContent.trim())) return true;
                if (el.labels && [...el.labels].some(l => l.textContent.trim())) return true;
                if (el.tagName === 'BUTTON' && el.textContent.trim()) return true;
                return Boolean(el.getAttribute('title'));
            };
            return [...controls].filter(el => !named(el)).map(el => el.outerHTML.slice(0, 120));
        }"""
    )
    return missing


@browser_test
def test_shortcuts_accessible_names_and_small_screens(
    browser: Any, page: Any, server: str, astronaut_file: Path
) -> None:
    page.keyboard.press("Shift+Slash")
    page.wait_for_selector("#help-dialog[open]")
    listed = page.eval_on_selector_all("#shortcut-list dt", "ds => ds.map(d => d.textContent)")
    for keys in ("B", "E", "[ / ]", "Ctrl + Z", "Ctrl + Shift + Z, Ctrl + Y", "Space + drag"):
        assert any(keys in item for item in listed), keys
    shot(page, "13-shortcuts")
    page.keyboard.press("Escape")
    assert page.is_hidden("#help-dialog")
    open_image(page, astronaut_file)
    for op in operations(server):  # every generated form, every control has a name
        page.select_option("#operation-select", op["name"])
        assert accessible_names_missing(page) == [], op["name"]
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    run = page.locator("#run-button").bounding_box()
    assert run and run["y"] + run["height"] <= 720  # Run is on screen without scrolling
    canvas = page.locator("#viewport").bounding_box()
    assert canvas and canvas["width"] * canvas["height"] > 0.45 * 1280 * 720

    opened = Page(browser, f"{server}/", viewport={"width": 390, "height": 844}, has_touch=True)
    phone = opened.page
    open_image(phone, astronaut_file)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    panel = phone.locator("#side-panel").bounding_box()
    assert panel and panel["x"] >= 389  # the panels wait off screen
    image = phone.locator("#image-layer").bounding_box()
    assert image and image["width"] > 300  # the photo takes the width
    shot(phone, "14-phone")
    phone.click("#panels-button")
    phone.wait_for_timeout(300)
    panel = phone.locator("#side-panel").bounding_box()
    assert panel and panel["x"] + panel["width"] <= 391 and panel["x"] < 100
    assert phone.is_visible("#run-button") and phone.is_visible("#select-subject")
    shot(phone, "15-phone-panels")
    opened.close()
