"""Loading and saving keep orientation, alpha, bit depth, ICC and metadata; bad files fail clearly."""

from __future__ import annotations

import base64
import io
import struct
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

import retouch
from retouch import imageio
from retouch.errors import InvalidImage, InvalidRequest, OutputExists

from .conftest import box_mask

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _png_bytes(array: np.ndarray, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


# --- sources --------------------------------------------------------------------------------


def test_every_source_kind_decodes_to_the_same_pixels(
    tmp_path: Path, small_photo: np.ndarray
) -> None:
    raw = _png_bytes(small_photo)
    path = tmp_path / "p.png"
    path.write_bytes(raw)
    b64 = base64.b64encode(raw).decode()
    sources = [
        path,
        str(path),
        raw,
        io.BytesIO(raw),
        b64,
        f"data:image/png;base64,{b64}",
        Image.open(io.BytesIO(raw)),
        small_photo,
    ]
    for source in sources:
        picture = imageio.load_image(source)
        assert picture.pixels.dtype == np.uint8
        np.testing.assert_array_equal(picture.pixels, small_photo)


class _Handler(BaseHTTPRequestHandler):
    payloads: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.payloads.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_url_source_with_size_cap_and_http_errors(
    http_server: str, small_photo: np.ndarray
) -> None:
    raw = _png_bytes(small_photo)
    _Handler.payloads = {"/photo.png": raw}
    picture = imageio.load_image(f"{http_server}/photo.png")
    np.testing.assert_array_equal(picture.pixels, small_photo)
    with pytest.raises(InvalidImage, match="byte limit"):
        imageio.fetch_url(f"{http_server}/photo.png", max_bytes=100)
    with pytest.raises(InvalidImage, match="HTTP 404"):
        imageio.load_image(f"{http_server}/missing.png")
    with pytest.raises(InvalidRequest, match="not allowed"):
        imageio.load_image(f"{http_server}/photo.png", allow_url=False)


# --- faithful round trips -------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_pillow_and_cleared(tmp_path: Path, orientation: int) -> None:
    stored = np.zeros((40, 64, 3), np.uint8)
    stored[:10, :20] = (255, 0, 0)  # a marker in one corner tells every orientation apart
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make: must survive
    path = tmp_path / "o.png"
    Image.fromarray(stored).save(path, exif=exif.tobytes())

    picture = imageio.load_image(path)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    np.testing.assert_array_equal(picture.pixels, expected)

    out = tmp_path / "out.png"
    imageio.save_image(picture, out)
    with Image.open(out) as written:
        assert written.getexif().get(0x0112, 1) == 1
        assert written.getexif().get(0x010F) == "TestCam"
        np.testing.assert_array_equal(np.asarray(written.convert("RGB")), expected)


def test_exif_rotated_jpeg_is_erased_upright_and_saved_upright(
    tmp_path: Path, astronaut: np.ndarray
) -> None:
    upright = astronaut[:, :384]  # 384 wide, 512 tall
    stored = np.rot90(upright, k=1)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    path = tmp_path / "phone.jpg"
    Image.fromarray(np.ascontiguousarray(stored)).save(path, quality=95, exif=exif.tobytes())
    mask = box_mask((512, 384), (300, 20, 370, 120))  # sized for the upright photo

    result = retouch.erase(path, mask, seed=1)
    assert (result.image.width, result.image.height) == (384, 512)
    out = tmp_path / "out.jpg"
    result.save(out)
    with Image.open(out) as written:
        assert written.size == (384, 512)
        assert written.getexif().get(0x0112, 1) == 1
        diff = np.abs(np.asarray(written).astype(int) - upright.astype(int))
        assert diff[mask == 0].mean() < 3  # upright, only JPEG noise


def test_rgba_png_alpha_kept_through_erase(tmp_path: Path, small_photo: np.ndarray) -> None:
    alpha = np.tile(
        np.linspace(0, 255, small_photo.shape[1]).astype(np.uint8), (small_photo.shape[0], 1)
    )
    rgba = np.dstack([small_photo, alpha])
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    mask = box_mask(small_photo.shape[:2], (40, 20, 60, 40))

    result = retouch.erase(path, mask, seed=2)
    out = tmp_path / "out.png"
    result.save(out)
    with Image.open(out) as written:
        assert written.mode == "RGBA"
        got = np.asarray(written)
    np.testing.assert_array_equal(got[:, :, 3], alpha)
    np.testing.assert_array_equal(got[mask == 0], rgba[mask == 0])
    assert np.abs(got[:, :, :3].astype(int) - small_photo.astype(int))[mask > 0].mean() > 1


def test_16bit_png_stays_16bit_with_exact_pixels_outside_the_mask(
    tmp_path: Path, small_photo: np.ndarray
) -> None:
    rng = np.random.default_rng(0)
    deep = small_photo.astype(np.uint16) * 257 + rng.integers(0, 200, small_photo.shape).astype(
        np.uint16
    )
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    picture = imageio.load_image(path)
    assert picture.pixels.dtype == np.uint16
    np.testing.assert_array_equal(picture.pixels, deep)

    mask = box_mask(small_photo.shape[:2], (30, 10, 60, 40))
    result = retouch.erase(path, mask, seed=3)
    out = tmp_path / "out.png"
    result.save(out)
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16
    written = cv2.cvtColor(written, cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(written[mask == 0], deep[mask == 0])
    assert imageio.read_parameters(out)["operation"] == "erase"


def test_16bit_grey_png_round_trips_as_16bit_grey(tmp_path: Path) -> None:
    grey = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    path = tmp_path / "grey16.png"
    assert cv2.imwrite(str(path), grey)
    picture = imageio.load_image(path)
    assert picture.source_mode == "I;16"
    out = tmp_path / "out.png"
    imageio.save_image(picture, out)
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.ndim == 2
    np.testing.assert_array_equal(written, grey)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_icc_profile_kept(tmp_path: Path, small_photo: np.ndarray, suffix: str) -> None:
    path = tmp_path / f"icc{suffix}"
    Image.fromarray(small_photo).save(path, icc_profile=SRGB)
    mask = box_mask(small_photo.shape[:2], (30, 10, 60, 40))
    out = tmp_path / f"out{suffix}"
    retouch.erase(path, mask, seed=1).save(out)
    with Image.open(out) as written:
        assert written.info.get("icc_profile") == SRGB


def test_icc_profile_kept_on_16bit_png(tmp_path: Path) -> None:
    deep = (np.random.default_rng(1).integers(0, 65535, (32, 48, 3))).astype(np.uint16)
    picture = imageio.picture_from_array(deep)
    picture.icc_profile = SRGB
    out = tmp_path / "deep.png"
    imageio.save_image(picture, out)
    with Image.open(out) as written:
        assert written.info.get("icc_profile") == SRGB
    np.testing.assert_array_equal(imageio.load_image(out).pixels, deep)


def test_cmyk_jpeg_round_trips_as_cmyk_with_its_profile(
    tmp_path: Path, small_photo: np.ndarray
) -> None:
    cmyk = Image.fromarray(small_photo).convert("CMYK")
    # No CMYK profile ships on this machine; the profile bytes must come back byte-identical
    # even when lcms cannot use them (then Pillow's conversion is used).
    blob = b"\x00\x00\x01\x00retouch-test-cmyk-profile" + bytes(range(200))
    path = tmp_path / "print.jpg"
    cmyk.save(path, quality=98, icc_profile=blob)
    mask = box_mask(small_photo.shape[:2], (30, 10, 60, 40))
    out = tmp_path / "out.jpg"
    retouch.erase(path, mask, seed=1).save(out)
    with Image.open(out) as written:
        assert written.mode == "CMYK"
        assert written.info.get("icc_profile") == blob
        back = np.asarray(written.convert("RGB")).astype(int)
    original = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert np.abs(back - original)[mask == 0].mean() < 3


def test_parameters_written_to_png_and_jpeg(tmp_path: Path, small_photo: np.ndarray) -> None:
    mask = box_mask(small_photo.shape[:2], (30, 10, 60, 40))
    result = retouch.erase(small_photo, mask, seed=42)
    for name in ("p.png", "p.jpg"):
        result.save(tmp_path / name)
        params = imageio.read_parameters(tmp_path / name)
        assert params is not None
        assert params["seed"] == 42 and params["provider"] == "classic"
        assert params["mask"]["selected"] == 30 * 30


# --- bad input --------------------------------------------------------------------------------


def _noise_png() -> bytes:
    return _png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def _giant_png(width: int, height: int) -> bytes:
    raw = _png_bytes(np.zeros((1, 1, 3), np.uint8))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("hello, not an image"), "not an image"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(_noise_png()[:2000]), "truncated or corrupt"),
        (lambda p: p.write_bytes(_giant_png(12000, 12000)), "over the limit"),
        (lambda p: p.write_bytes(_giant_png(30000, 30000)), "too many pixels"),
        (lambda p: p.mkdir(), "folder"),
    ],
)
def test_bad_files_fail_with_a_clear_message(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "in.png"
    make(path)
    with pytest.raises(InvalidImage, match=message) as info:
        imageio.load_image(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_writing_refuses_to_overwrite_and_leaves_no_partial_file(
    tmp_path: Path, small_photo: np.ndarray
) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExists):
        imageio.save_image(small_photo, out)
    assert out.read_bytes() == b"precious"
    imageio.save_image(small_photo, out, overwrite=True)
    np.testing.assert_array_equal(imageio.load_image(out).pixels, small_photo)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_jpeg_output_of_transparent_image_is_refused(
    tmp_path: Path, small_photo: np.ndarray
) -> None:
    rgba = np.dstack([small_photo, np.full(small_photo.shape[:2], 100, np.uint8)])
    with pytest.raises(InvalidRequest, match="JPEG cannot store transparency"):
        imageio.save_image(rgba, tmp_path / "x.jpg")
    assert not (tmp_path / "x.jpg").exists()


def test_unknown_output_extension_names_the_known_ones(
    tmp_path: Path, small_photo: np.ndarray
) -> None:
    with pytest.raises(InvalidRequest, match=r"\.png"):
        imageio.save_image(small_photo, tmp_path / "x.gifv")


def test_outputs_get_the_users_umask(tmp_path: Path, small_photo: np.ndarray) -> None:
    import os

    previous = os.umask(0o027)
    try:
        written = imageio.save_image(small_photo, tmp_path / "out.png")
    finally:
        os.umask(previous)
    assert written.stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
