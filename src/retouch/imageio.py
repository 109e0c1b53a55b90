"""Load any image input into a ``Picture`` and write results back faithfully.

The only module that turns paths, bytes, file objects, base64, data URIs, URLs, PIL images
and arrays into pixels, and pixels into files. What it keeps:

- EXIF orientation is applied to the pixels and then reset, so nothing is rotated twice;
  the rest of the EXIF block is written back.
- The ICC profile is written back. CMYK files are converted to RGB for work (through their
  profile when lcms can use it) and written back as CMYK with the same profile when the
  output format can hold CMYK (JPEG, TIFF).
- Alpha stays; 16-bit PNG/TIFF (which Pillow would cut to 8 bits) is decoded with OpenCV
  and written back as 16-bit PNG with its chunks (ICC, text, EXIF) added by hand.
- Grey inputs are worked on as RGB and written back as grey when the result is still grey.
- The parameters used go into a PNG iTXt chunk (key ``retouch``) or a JPEG comment.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import json
import os
import struct
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from retouch.errors import ImageTooLarge, InvalidImage, InvalidRequest, OutputExists
from retouch.picture import Picture, Pixels, to_uint8

if TYPE_CHECKING:
    from retouch.results import ImageResult, OutputImage

ImageSource = (
    str
    | os.PathLike[str]
    | bytes
    | bytearray
    | memoryview
    | BinaryIO
    | Image.Image
    | Pixels
    | Picture
)

DEFAULT_MAX_PIXELS = 100_000_000
"""Refuse larger images unless the caller raises the limit (decompression bombs)."""
URL_MAX_BYTES = 50 * 1024 * 1024
URL_TIMEOUT_S = 20.0

WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
_GREY_MODES = {"1", "L", "LA", "I;16", "I;16B", "I;16L", "I"}
_ORIENTATION = 0x0112


# --- loading ------------------------------------------------------------------------------


def load_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    allow_url: bool = True,
) -> Picture:
    """Decode ``source`` into a Picture (RGB or RGBA, uint8 or uint16, orientation applied)."""
    if isinstance(source, Picture):
        _check_pixels(source.width, source.height, max_pixels, source.name)
        return source
    if isinstance(source, Image.Image):
        label = name or "<PIL image>"
        _check_pixels(source.width, source.height, max_pixels, label)
        return _from_pil(source, label, icc=source.info.get("icc_profile"))
    if isinstance(source, np.ndarray):
        return picture_from_array(source, name=name or "<array>", max_pixels=max_pixels)
    data, label = read_source_bytes(source, name=name, allow_url=allow_url)
    return decode_image(data, name=label, max_pixels=max_pixels)


def read_source_bytes(
    source: ImageSource, *, name: str | None = None, allow_url: bool = True
) -> tuple[bytes, str]:
    """The encoded bytes of a path, URL, data URI, base64 string, bytes or file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        if raw[:5] == b"data:":
            return _decode_data_uri(raw.decode("ascii", "replace"), name or "<data URI>"), (
                name or "<data URI>"
            )
        return raw, name or "<bytes>"
    if isinstance(source, os.PathLike):
        return _read_file(Path(source), name)
    if isinstance(source, str):
        if source.startswith("data:"):
            return _decode_data_uri(source, name or "<data URI>"), name or "<data URI>"
        if source.startswith(("http://", "https://")):
            if not allow_url:
                raise InvalidRequest(f"image URLs are not allowed here: {source}")
            return fetch_url(source), name or source
        if len(source) > 260 and not os.path.exists(source):
            return _decode_base64(source, name or "<base64>"), name or "<base64>"
        return _read_file(Path(source), name)
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidRequest("file objects must be opened in binary mode ('rb')")
        return bytes(data), name or str(getattr(source, "name", "<file>"))
    raise InvalidRequest(f"cannot read an image from {type(source).__name__}")


def _read_file(path: Path, name: str | None) -> tuple[bytes, str]:
    label = name or str(path)
    if not path.exists():
        raise InvalidImage(f"{label}: no such file; check the path")
    if path.is_dir():
        raise InvalidImage(f"{label} is a folder; give an image file")
    try:
        return path.read_bytes(), label
    except OSError as exc:
        raise InvalidImage(f"{label}: cannot read the file ({exc.strerror})") from exc


def decode_text_image(text: str, label: str) -> bytes:
    """An image given as text: a base64 data URI or bare base64 (the one decoder of both)."""
    text = text.strip()
    if text.startswith("data:"):
        return _decode_data_uri(text, label)
    return _decode_base64(text, label)


def _decode_data_uri(uri: str, label: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or ";base64" not in header:
        raise InvalidImage(
            f"{label}: only base64 data URIs are supported (data:image/png;base64,...)"
        )
    return _decode_base64(payload, label)


def _decode_base64(text: str, label: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(
            f"{label}: not a file that exists and not valid base64; check the path"
        ) from exc


def fetch_url(url: str, *, max_bytes: int = URL_MAX_BYTES, timeout: float = URL_TIMEOUT_S) -> bytes:
    """GET an image over http(s) under the one fetch policy (``retouch.http``)."""
    from retouch import http

    return http.get_bytes(
        url, dataclasses.replace(http.IMAGE_POLICY, max_bytes=max_bytes, timeout=timeout)
    )


def _check_pixels(width: int, height: int, max_pixels: int | None, label: str) -> None:
    if width <= 0 or height <= 0:
        raise InvalidImage(f"{label}: the image is empty ({width} x {height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(
            f"{label} is {width} x {height} = {width * height / 1e6:.1f} MP, over the limit of "
            f"{max_pixels / 1e6:.1f} MP; shrink it first or raise the limit (--max-pixels)"
        )


def decode_image(
    data: bytes, *, name: str = "<bytes>", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Picture:
    """Decode encoded image bytes (any format Pillow reads)."""
    if not data:
        raise InvalidImage(f"{name} is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as exc:
            raise InvalidImage(
                f"{name} is not an image retouch can read (PNG, JPEG, WebP, TIFF, BMP, GIF...)"
            ) from exc
        except Image.DecompressionBombError as exc:
            limit = (Image.MAX_IMAGE_PIXELS or 0) * 2 / 1e6
            raise ImageTooLarge(
                f"{name} has too many pixels to open safely (over {limit:.0f} MP, a possible "
                "decompression bomb); shrink it with another tool first"
            ) from exc
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            # truncated headers, broken chunks, text or ICC chunks over Pillow's limits
            raise InvalidImage(
                f"{name} is truncated or corrupt ({exc}); re-export or re-download it"
            ) from exc
        _check_pixels(im.width, im.height, max_pixels, name)
        icc = im.info.get("icc_profile") or None
        try:
            exif = im.getexif()  # for PNG this decodes the file: inside the try
            orientation = int(exif.get(_ORIENTATION, 1) or 1)
            if _ORIENTATION in exif:
                del exif[_ORIENTATION]
            exif_bytes = exif.tobytes() if len(exif) else None
            if _is_16bit(im, data):
                pixels, mode = _decode_16bit(data, name, im.mode)
                picture = Picture(
                    pixels=pixels, icc_profile=icc, source_mode=mode, name=name, format=im.format
                )
            else:
                im.load()
                picture = _from_pil(im, name, icc=icc)
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImage(
                f"{name} is truncated or corrupt ({exc}); re-export or re-download it"
            ) from exc
    picture.pixels = np.ascontiguousarray(apply_orientation(picture.pixels, orientation))
    picture.exif = exif_bytes
    picture.format = im.format
    return picture


def apply_orientation(pixels: Pixels, orientation: int) -> Pixels:
    """Turn pixels stored with EXIF ``orientation`` upright (the same as ImageOps.exif_transpose)."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(pixels, k=-1)
    if orientation == 7:
        return pixels.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(pixels, k=1)
    return pixels


def _is_16bit(im: Image.Image, data: bytes) -> bool:
    if im.format == "PNG" and data[12:16] == b"IHDR":
        return data[24] == 16
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        if isinstance(bits, int):
            return bits == 16
        return isinstance(bits, tuple) and bool(bits) and all(b == 16 for b in bits)
    return im.mode.startswith("I;16")


def _decode_16bit(data: bytes, name: str, pil_mode: str) -> tuple[Pixels, str]:
    import cv2  # lazily: a heavy import, and only 16-bit files need it

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InvalidImage(f"{name}: could not decode the 16-bit image")
    if array.dtype != np.uint16:
        array = array.astype(np.uint16) * 257
    grey = pil_mode in _GREY_MODES
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2), "I;16"
    if array.shape[2] == 4:
        rgba = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
        return rgba, ("LA" if grey else "RGBA")
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB), ("I;16" if grey else "RGB")


def _from_pil(im: Image.Image, name: str, *, icc: bytes | None) -> Picture:
    mode = im.mode
    if mode in ("RGB", "RGBA"):
        pixels = np.asarray(im)
    elif mode in ("1", "L"):
        pixels = np.repeat(np.asarray(im.convert("L"))[:, :, None], 3, axis=2)
        mode = "L"
    elif mode == "LA":
        la = np.asarray(im)
        pixels = np.dstack([la[:, :, 0], la[:, :, 0], la[:, :, 0], la[:, :, 1]])
    elif mode.startswith("I;16") or mode == "I":
        grey = np.clip(np.asarray(im).astype(np.int64), 0, 65535).astype(np.uint16)
        pixels = np.repeat(grey[:, :, None], 3, axis=2)
        mode = "I;16"
    elif mode == "CMYK":
        pixels = np.asarray(_cmyk_to_rgb(im, icc))
    elif mode == "F":
        raise InvalidImage(
            f"{name}: floating-point images are not supported; convert to 8 or 16 bit"
        )
    else:
        has_alpha = "A" in mode or "transparency" in im.info
        target = "RGBA" if has_alpha else "RGB"
        pixels = np.asarray(im.convert(target))
        mode = target
    return Picture(
        pixels=np.ascontiguousarray(pixels), icc_profile=icc, source_mode=mode, name=name
    )


def _usable_profile(icc: bytes | None) -> ImageCms.ImageCmsProfile | None:
    if not icc:
        return None
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError, TypeError, ValueError):
        return None


def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    profile = _usable_profile(icc)
    if profile is not None:
        try:
            converted = ImageCms.profileToProfile(im, profile, _srgb(), outputMode="RGB")
            if converted is not None:
                return converted
        except ImageCms.PyCMSError:
            pass
    return im.convert("RGB")


def picture_from_array(
    array: Pixels, *, name: str = "<array>", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Picture:
    """An RGB(A) or grey uint8/uint16 array as a Picture (the array is RGB, never BGR)."""
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.dtype not in (np.uint8, np.uint16):
        raise InvalidImage(f"{name}: arrays must be uint8 or uint16, got {array.dtype}")
    if array.ndim == 2:
        _check_pixels(array.shape[1], array.shape[0], max_pixels, name)
        return Picture(pixels=np.repeat(array[:, :, None], 3, axis=2), source_mode="L", name=name)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InvalidImage(f"{name}: arrays must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    _check_pixels(array.shape[1], array.shape[0], max_pixels, name)
    if array.shape[2] == 1:
        return Picture(pixels=np.repeat(array, 3, axis=2), source_mode="L", name=name)
    return Picture(
        pixels=np.ascontiguousarray(array),
        source_mode="RGBA" if array.shape[2] == 4 else "RGB",
        name=name,
    )


def to_pil(pixels: Pixels) -> Image.Image:
    """An 8-bit PIL image of RGB(A) pixels (16-bit is rounded to 8)."""
    p = to_uint8(pixels)
    return Image.fromarray(p, "RGBA" if p.shape[2] == 4 else "RGB")


# --- writing ------------------------------------------------------------------------------


def format_for(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    try:
        return WRITE_FORMATS[suffix]
    except KeyError:
        known = ", ".join(sorted(WRITE_FORMATS))
        raise InvalidRequest(
            f"{path}: cannot tell the image format from {suffix or 'no extension'!r}; use one of {known}"
        ) from None


def encode_image(
    image: OutputImage | Picture,
    fmt: str,
    *,
    parameters: dict[str, Any] | None = None,
    quality: int | None = None,
    name: str = "output",
    compress_level: int = 6,
) -> bytes:
    """Encode pixels as ``fmt`` (PNG, JPEG, WEBP, TIFF, BMP) keeping ICC, EXIF, alpha, depth.

    ``compress_level`` (PNG, 0-9): files use 6; the HTTP service answers at a faster level."""
    pixels = image.pixels
    source_mode = image.source_mode
    fmt = fmt.upper()
    if fmt == "JPG":
        fmt = "JPEG"
    if quality is not None and not 1 <= quality <= 100:
        raise InvalidRequest(f"quality must be between 1 and 100, got {quality}")
    has_alpha = pixels.shape[2] == 4
    if has_alpha and fmt == "JPEG":
        full = 65535 if pixels.dtype == np.uint16 else 255
        if (pixels[:, :, 3] != full).any():
            raise InvalidRequest(
                f"{name}: JPEG cannot store transparency; write .png or .webp instead"
            )
        pixels = pixels[:, :, :3]
        has_alpha = False
    grey = source_mode in _GREY_MODES and _is_grey(pixels)
    text = json.dumps(parameters, default=str, sort_keys=True) if parameters else None

    if pixels.dtype == np.uint16 and fmt in ("PNG", "TIFF"):
        return _encode_16bit(
            pixels, fmt, grey=grey, icc=image.icc_profile, exif=image.exif, text=text
        )

    p8 = to_uint8(pixels)
    if grey:
        im = Image.fromarray(p8[:, :, 0], "L")
        if has_alpha:
            im.putalpha(Image.fromarray(p8[:, :, 3], "L"))
    else:
        im = Image.fromarray(p8, "RGBA" if has_alpha else "RGB")
    icc = image.icc_profile
    if source_mode == "CMYK":
        im, icc = _rgb_for_cmyk_source(im, fmt, icc)
    elif icc and _profile_colour_space(icc) not in (None, "RGB", "GRAY"):
        icc = None  # a profile for another colour space would be wrong on these pixels
    kwargs: dict[str, Any] = {}
    if icc and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        kwargs["icc_profile"] = icc
    if image.exif and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        kwargs["exif"] = image.exif
    if fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("Software", "retouch")
        if text:
            info.add_itxt("retouch", text)
        kwargs["pnginfo"] = info
        kwargs["compress_level"] = compress_level
    elif fmt == "JPEG":
        kwargs["quality"] = quality or 95
        if text:
            kwargs["comment"] = ("retouch " + text).encode("utf-8")[:65000]
    elif fmt == "WEBP":
        kwargs["quality"] = quality or 90
        kwargs["method"] = 4
        if quality == 100:
            kwargs["lossless"] = True
        if text:
            kwargs["xmp"] = xmp_packet(text)
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


XMP_NAMESPACE = "https://retouch.invalid/ns/1.0/"


def xmp_packet(text: str) -> bytes:
    """An XMP packet holding retouch's parameters (WebP has no text chunk; XMP is its place)."""
    from xml.sax.saxutils import escape

    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
        f'xmlns:retouch="{XMP_NAMESPACE}"><retouch:parameters>{escape(text)}'
        "</retouch:parameters></rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()


def _parameters_from_xmp(xmp: bytes | str) -> str | None:
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(xmp)
    except ElementTree.ParseError:
        return None
    found = root.find(f".//{{{XMP_NAMESPACE}}}parameters")
    return found.text if found is not None else None


MEDIA_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}


def data_uri(data: bytes, fmt: str) -> str:
    """Encoded image bytes as a ``data:`` URI (``fmt``: PNG, JPEG, WEBP...)."""
    media = MEDIA_TYPES.get(fmt.upper().replace("JPG", "JPEG"), "application/octet-stream")
    return f"data:{media};base64," + base64.b64encode(data).decode("ascii")


def _profile_colour_space(icc: bytes) -> str | None:
    if len(icc) < 20:
        return None
    return icc[16:20].decode("ascii", "replace").strip()


def _is_grey(pixels: Pixels) -> bool:
    return bool(
        (pixels[:, :, 0] == pixels[:, :, 1]).all() and (pixels[:, :, 1] == pixels[:, :, 2]).all()
    )


def _rgb_for_cmyk_source(
    im: Image.Image, fmt: str, icc: bytes | None
) -> tuple[Image.Image, bytes | None]:
    """CMYK in, CMYK out where the format holds it; else sRGB with an sRGB profile."""
    profile = _usable_profile(icc)
    rgb = im.convert("RGB")
    if fmt in ("JPEG", "TIFF"):
        if profile is not None:
            try:
                converted = ImageCms.profileToProfile(rgb, _srgb(), profile, outputMode="CMYK")
                if converted is not None:
                    return converted, icc
            except ImageCms.PyCMSError:
                pass
        return rgb.convert("CMYK"), icc
    if profile is not None:
        return im, _srgb().tobytes()
    return im, None


def _encode_16bit(
    pixels: Pixels, fmt: str, *, grey: bool, icc: bytes | None, exif: bytes | None, text: str | None
) -> bytes:
    import cv2

    if grey:
        array = (
            pixels[:, :, 0] if pixels.shape[2] == 3 else cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
        )
    elif pixels.shape[2] == 4:
        array = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    else:
        array = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png" if fmt == "PNG" else ".tiff", np.ascontiguousarray(array))
    if not ok:
        raise InvalidRequest("could not encode the 16-bit image")
    data = encoded.tobytes()
    if fmt != "PNG":
        return data
    chunks: list[tuple[bytes, bytes]] = []
    if icc:
        chunks.append((b"iCCP", b"icc\x00\x00" + zlib.compress(icc)))
    if exif:
        chunks.append((b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    chunks.append((b"tEXt", b"Software\x00retouch"))
    if text:
        chunks.append((b"iTXt", b"retouch\x00\x00\x00\x00\x00" + text.encode("utf-8")))
    return insert_png_chunks(data, chunks)


def insert_png_chunks(png: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    """Insert ancillary chunks right after IHDR (where iCCP must stand, before IDAT)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise InvalidRequest("not a PNG stream")
    ihdr_end = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4
    extra = b"".join(
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        for kind, body in chunks
    )
    return png[:ihdr_end] + extra + png[ihdr_end:]


def check_output(path: str | Path, *, overwrite: bool) -> Path:
    """Fail before any work if ``path`` cannot be written: exists, bad format, no folder."""
    target = Path(path)
    format_for(target)
    if target.exists() and not overwrite:
        raise OutputExists(
            f"{target} exists; replace it with --overwrite (overwrite=True in Python)"
        )
    if target.is_dir():
        raise InvalidRequest(f"{target} is a folder; give a file name")
    return target


def write_bytes_atomic(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write via a temporary file in the same folder so no half-written file is ever seen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the user's umask
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the path appeared meanwhile: nothing is lost
            except FileExistsError:
                raise OutputExists(f"{path} exists; pass --overwrite to replace it") from None
            except OSError:
                if path.exists():
                    raise OutputExists(f"{path} exists; pass --overwrite to replace it") from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    try:  # Linux says it without changing it (setting it races with other threads)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere, reading it means setting it: put it straight back
    os.umask(mask)
    return mask


def output_paths(path: str | Path, count: int) -> list[Path]:
    """``out.png`` for one image; ``out.png, out-1.png, ...`` for several."""
    base = Path(path)
    return [base] + [base.with_name(f"{base.stem}-{i}{base.suffix}") for i in range(1, count)]


def save_result(
    result: ImageResult, path: str | Path, *, overwrite: bool = False, quality: int | None = None
) -> list[Path]:
    targets = output_paths(path, len(result.images))
    for target in targets:
        check_output(target, overwrite=overwrite)
    for index, target in enumerate(targets):
        data = encode_result(result, index, format_for(target), quality=quality, name=str(target))
        write_bytes_atomic(target, data, overwrite=overwrite)
    return targets


def encode_result(
    result: ImageResult,
    index: int,
    fmt: str,
    *,
    quality: int | None = None,
    name: str = "output",
    extra: dict[str, Any] | None = None,
) -> bytes:
    """One image of a result, encoded with the result's parameters (and ``extra``) inside."""
    image = result.images[index]
    parameters = dict(
        result.parameters,
        seed=image.seed,
        provider=result.provider,
        model=result.model,
        **(extra or {}),
    )
    return encode_image(image, fmt, parameters=parameters, quality=quality, name=name)


def save_image(
    image: OutputImage | Picture | Pixels,
    path: str | Path,
    *,
    overwrite: bool = False,
    quality: int | None = None,
    parameters: dict[str, Any] | None = None,
) -> Path:
    """Write one image or array (RGB(A), or grey HxW) to ``path``."""
    if isinstance(image, np.ndarray):
        image = picture_from_array(image, max_pixels=None)
    target = check_output(path, overwrite=overwrite)
    data = encode_image(
        image, format_for(target), parameters=parameters, quality=quality, name=str(target)
    )
    write_bytes_atomic(target, data, overwrite=overwrite)
    return target


def read_parameters(path: str | Path) -> dict[str, Any] | None:
    """The parameters retouch wrote into a PNG (iTXt ``retouch``), a JPEG comment or a WebP's
    XMP packet."""
    with Image.open(path) as im:
        text = None
        if im.format == "PNG":  # before the pixels (as retouch writes it) it is in info
            text = im.info.get("retouch") or getattr(im, "text", {}).get("retouch")
        if text is None and im.format == "JPEG":
            comment = im.info.get("comment", b"")
            if isinstance(comment, bytes) and comment.startswith(b"retouch "):
                text = comment[len(b"retouch ") :].decode("utf-8")
        if text is None and im.format == "WEBP" and im.info.get("xmp"):
            text = _parameters_from_xmp(im.info["xmp"])
    if not text:
        return None
    loaded: dict[str, Any] = json.loads(text)
    return loaded
