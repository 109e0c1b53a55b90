"""The ``retouch`` command: files in, files out.

The only place that turns retouch errors into exit codes and one-line messages. Work is
checked (inputs readable, output free to write) before anything runs, and an output file is
only ever written complete.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from retouch._version import __version__

if TYPE_CHECKING:
    from retouch.api import Toolkit
    from retouch.results import ImageResult
    from retouch.types import Mask, Progress

EXIT_CODES: list[tuple[str, int]] = [
    # most specific first; looked up by class name along the exception's MRO
    ("OutputExists", 3),
    ("MaskError", 2),
    ("InvalidImage", 2),
    ("InvalidRequest", 2),
    ("UnsupportedOperation", 4),
    ("ModelNotAvailable", 5),
    ("DependencyMissing", 6),
    ("AuthenticationError", 7),
    ("RateLimited", 8),
    ("ContentPolicy", 9),
    ("ProviderTimeout", 10),
    ("ServerError", 11),
    ("ProviderError", 11),
    ("ConfigurationError", 12),
    ("ChecksumMismatch", 14),
    ("DownloadError", 13),
    ("Cancelled", 130),
]
EXIT_HELP = """exit codes:
  0 done; 1 unexpected failure; 2 bad input or usage; 3 output exists (use --overwrite);
  4 unsupported by the provider; 5 model not downloaded; 6 optional package missing;
  7 authentication; 8 rate limited; 9 content policy; 10 timeout; 11 provider/server error;
  12 configuration; 13 download failed; 14 checksum mismatch; 130 cancelled"""


def exit_code_for(exc: BaseException) -> int:
    names = [cls.__name__ for cls in type(exc).__mro__]
    for name, code in EXIT_CODES:
        if name in names:
            return code
    return 1


class UsageError(Exception):
    """Bad command-line usage found after parsing (exit code 2)."""


# --- argument types -----------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _box(text: str) -> tuple[int, int, int, int]:
    parts = text.replace(" ", "").split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"a box is LEFT,TOP,RIGHT,BOTTOM, got {text!r}")
    left, top, right, bottom = (int(p) for p in parts)
    return left, top, right, bottom


def _points(text: str) -> list[tuple[float, float]]:
    points = []
    for pair in text.split():
        xy = pair.split(",")
        if len(xy) != 2:
            raise argparse.ArgumentTypeError(f"points are 'X,Y X,Y X,Y ...', got {pair!r}")
        points.append((float(xy[0]), float(xy[1])))
    return points


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"a size is WIDTHxHEIGHT, e.g. 512x512, got {text!r}")
    return int(parts[0]), int(parts[1])


def _bytes(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if value and value[-1] in units:
            return int(float(value[:-1]) * units[value[-1]])
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a size is a number with K, M or G, e.g. 2G; got {text!r}"
        ) from None


def _aspect(text: str) -> float:
    if ":" in text:
        w, h = text.split(":", 1)
        return float(w) / float(h)
    return float(text)


# --- parser -------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, *, output: bool = True) -> None:
    if output:
        parser.add_argument(
            "-o",
            "--output",
            type=Path,
            help="output file (default: INPUT.<op>.<ext> beside the input)",
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="replace an existing output file"
        )
        parser.add_argument("--quality", type=int, help="JPEG/WebP quality 1-100 (default 95 / 90)")
    parser.add_argument(
        "--json", action="store_true", help="print the result's metadata as JSON on stdout"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--max-pixels", type=int, default=100_000_000, help="refuse larger images (default 100 MP)"
    )


def _mask_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mask",
        "-m",
        required=True,
        help="mask image (white = area to change), or 'subject' / 'background' to make one",
    )
    parser.add_argument(
        "--mask-from",
        choices=["auto", "luminance", "alpha"],
        default="auto",
        help="how to read the mask: brightness (white = edit), alpha (transparent = edit), "
        "or auto: alpha when the mask has transparency (default)",
    )
    parser.add_argument("--invert-mask", action="store_true", help="edit the black part instead")
    parser.add_argument(
        "--resize-mask", action="store_true", help="stretch a mask of another size to the image"
    )
    parser.add_argument(
        "--grow-mask",
        type=_positive_int,
        default=0,
        metavar="PX",
        help="grow the mask by PX pixels first",
    )
    parser.add_argument(
        "--crop-margin",
        type=_positive_int,
        default=128,
        metavar="PX",
        help="context around the mask given to the provider (default 128)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retouch",
        description="AI image editing: erase objects, extend, resize and make masks.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"retouch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    erase = sub.add_parser(
        "erase",
        help="remove what a mask covers and fill it from the surroundings",
        description="Remove the masked area (white = remove) and fill it from the rest of the "
        "photo. Pixels outside the mask are kept exactly.",
        epilog="example: retouch erase photo.jpg --mask mask.png -o clean.jpg",
    )
    erase.add_argument("image", help="image file (PNG, JPEG, WebP, TIFF...)")
    _mask_args(erase)
    erase.add_argument(
        "--method",
        choices=["patchmatch", "telea", "ns"],
        help="classic fill: patchmatch (texture, default), telea or ns (fast, smooth)",
    )
    erase.add_argument("--patch-size", type=int, help="PatchMatch patch radius (default 5)")
    erase.add_argument(
        "--feather",
        type=_positive_int,
        default=0,
        metavar="PX",
        help="soften the mask edge inwards by PX",
    )
    erase.add_argument("--seed", type=int, help="seed for reproducible results")
    erase.add_argument(
        "--provider", help="provider name (default: best available; see `retouch providers`)"
    )
    _common(erase)

    inpaint = sub.add_parser(
        "inpaint",
        help="repaint what a mask covers following a prompt",
        description="Repaint the masked area (white = repaint) following --prompt with a "
        "provider that takes prompts (openai, stability, replicate, vertex, automatic1111, "
        "comfyui, diffusers). Pixels outside the mask are kept exactly, whatever the service does.",
        epilog="example: OPENAI_API_KEY=... retouch inpaint room.jpg --mask sofa.png "
        '--prompt "a green velvet sofa" --provider openai -o new.jpg',
    )
    inpaint.add_argument("image")
    _mask_args(inpaint)
    inpaint.add_argument("--prompt", required=True)
    inpaint.add_argument("--negative-prompt")
    inpaint.add_argument("--seed", type=int)
    inpaint.add_argument("-n", "--n", type=int, default=1, help="how many images (default 1)")
    inpaint.add_argument("--steps", type=int, help="sampling steps (providers that use them)")
    inpaint.add_argument("--guidance", type=float, help="guidance scale (providers that use it)")
    inpaint.add_argument(
        "--feather",
        "--mask-blur",
        dest="feather",
        type=_positive_int,
        default=8,
        metavar="PX",
        help="soften (blur) the mask edge inwards by PX, so the fill blends in (default 8)",
    )
    inpaint.add_argument(
        "--model", help="model name in the store, or a path (e.g. a diffusers folder)"
    )
    inpaint.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="provider option, e.g. model=dall-e-2 (repeatable)",
    )
    inpaint.add_argument("--provider")
    _common(inpaint)

    edit = sub.add_parser("edit", help="change a whole image following a prompt (img2img)")
    edit.add_argument("image")
    edit.add_argument("--prompt", required=True)
    edit.add_argument("--strength", type=float, default=0.6, help="0 keeps the input, 1 ignores it")
    edit.add_argument("--negative-prompt")
    edit.add_argument("--seed", type=int)
    edit.add_argument("-n", "--n", type=int, default=1)
    edit.add_argument("--model", help="model name in the store, or a path")
    edit.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    edit.add_argument("--provider")
    _common(edit)

    variations = sub.add_parser("variations", help="make variations of an image")
    variations.add_argument("image")
    variations.add_argument("-n", "--n", type=int, default=1)
    variations.add_argument("--seed", type=int)
    variations.add_argument("--model", help="model name in the store, or a path")
    variations.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    variations.add_argument("--provider")
    _common(variations)

    outpaint = sub.add_parser(
        "outpaint",
        help="extend the canvas and fill the new area",
        description="Add pixels on any side and fill them from the image. Give pixels per side, "
        "or a target --width/--height or --aspect (the canvas grows evenly).",
        epilog="example: retouch outpaint photo.jpg --left 128 --right 128 -o wide.jpg",
    )
    outpaint.add_argument("image")
    for side in ("left", "right", "top", "bottom"):
        outpaint.add_argument(
            f"--{side}",
            type=_positive_int,
            default=0,
            metavar="PX",
            help=f"pixels to add on the {side}",
        )
    outpaint.add_argument("--width", type=int, help="target canvas width")
    outpaint.add_argument("--height", type=int, help="target canvas height")
    outpaint.add_argument("--aspect", type=_aspect, help="target aspect ratio, e.g. 16:9 or 1.5")
    outpaint.add_argument(
        "--feather",
        "--mask-blur",
        dest="feather",
        type=_positive_int,
        default=16,
        metavar="PX",
        help="seam blend width (default 16)",
    )
    outpaint.add_argument(
        "--prompt", help="what to paint in the new area (providers that use prompts)"
    )
    outpaint.add_argument("--seed", type=int)
    outpaint.add_argument(
        "--model", help="model name in the store, or a path (providers with models)"
    )
    outpaint.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="provider option, e.g. fast=true (repeatable)",
    )
    outpaint.add_argument("--provider")
    _common(outpaint)

    resize = sub.add_parser(
        "resize",
        help="Lanczos resize and convert/compress",
        description="Shrink so the long side is at most --max-size, or resize to --width/--height "
        "(one keeps the aspect ratio). The output format follows the -o extension.",
        epilog="example: retouch resize big.png --max-size 1600 -o web.webp --quality 85",
    )
    resize.add_argument("image")
    resize.add_argument(
        "--max-size", type=int, metavar="PX", help="longest side in pixels (never enlarges)"
    )
    resize.add_argument("--width", type=int)
    resize.add_argument("--height", type=int)
    _common(resize)

    upscale = sub.add_parser(
        "upscale",
        help="enlarge an image (or a folder of images) with Real-ESRGAN",
        description="Enlarge by --scale (any factor up to 16) or to --width/--height. The model "
        "runs at its native scale and a Lanczos resize reaches any other factor. Big images "
        "are processed in blended tiles sized to --max-memory; alpha and 16-bit are kept. "
        "Models: animevideov3 (fast default; x2/x3/x4 picked from the scale), "
        "animevideov3-x2/-x3/-x4, x4plus (photos, slow, best), x4plus-anime, or a path to "
        "an .onnx or ncnn .param super-resolution model. --provider classic uses Lanczos.",
        epilog="examples:\n  retouch upscale photo.jpg -o big.jpg\n"
        "  retouch upscale photo.jpg --scale 2 --model x4plus -o big.png\n"
        "  retouch upscale photos/ -o photos-4x/          # a folder, skipping done files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    upscale.add_argument("image", help="image file or folder of images")
    upscale.add_argument(
        "--scale", type=float, default=4.0, help="factor, above 0 up to 16 (default 4)"
    )
    upscale.add_argument("--width", type=int, help="target width (keeps the aspect ratio alone)")
    upscale.add_argument("--height", type=int, help="target height")
    upscale.add_argument("--model", help="model name or path (default animevideov3)")
    upscale.add_argument("--provider", help="realesrgan (default) or classic (Lanczos)")
    upscale.add_argument(
        "--max-memory",
        type=_bytes,
        metavar="SIZE",
        help="memory budget, e.g. 2G or 800M (default 2G)",
    )
    upscale.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    upscale.add_argument(
        "--tile",
        type=int,
        metavar="PX",
        help="tile side in input pixels (default: from --max-memory)",
    )
    _common(upscale)

    remove_bg = sub.add_parser(
        "remove-bg",
        aliases=["remove-background"],
        help="cut out the subject, or put it on a new background",
        description="Cut out the main subject (PNG with transparency), return its mask, or "
        "replace the background with a colour, an image or a blur of the photo itself. Edge "
        "colours are decontaminated (no halo of the old background); --matting refines hair "
        "and soft edges with alpha matting (pip install 'retouch[matting]').",
        epilog="examples:\n  retouch remove-bg product.jpg -o product.png\n"
        "  retouch remove-bg portrait.jpg --bg-blur 25 -o portrait-blur.jpg\n"
        "  retouch remove-bg shots/ -o cutouts/          # a folder, skipping done files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    remove_bg.add_argument("image", help="image file or folder of images")
    remove_bg.add_argument(
        "--only-mask", action="store_true", help="write the mask (white = subject)"
    )
    background = remove_bg.add_mutually_exclusive_group()
    background.add_argument(
        "--bg-color", metavar="COLOR", help="new background: #rrggbb, a name, or r,g,b[,a]"
    )
    background.add_argument(
        "--bg-image", metavar="FILE", help="new background image (scaled to cover)"
    )
    background.add_argument(
        "--bg-blur",
        type=float,
        metavar="RADIUS",
        help="blur the photo's own background (portrait style)",
    )
    remove_bg.add_argument("--matting", action="store_true", help="refine edges with alpha matting")
    remove_bg.add_argument(
        "--no-decontaminate", action="store_true", help="keep the original edge colours"
    )
    remove_bg.add_argument(
        "--largest-object", action="store_true", help="keep only the largest object"
    )
    remove_bg.add_argument(
        "--fill-holes", action="store_true", help="fill holes inside the subject"
    )
    remove_bg.add_argument(
        "--threshold", type=int, metavar="LEVEL", help="hard edges: subject where the mask > LEVEL"
    )
    remove_bg.add_argument(
        "--soften", type=_positive_int, default=0, metavar="PX", help="feather the edge by PX"
    )
    remove_bg.add_argument(
        "--model", help="u2netp (shipped, default) or a path to a u2net/isnet/birefnet .onnx"
    )
    remove_bg.add_argument("--provider", help="provider name (default: best available)")
    remove_bg.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    _common(remove_bg)

    stylize = sub.add_parser(
        "stylize",
        help="restyle a photo: 26 built-in styles or any painting as the style",
        description="Apply a built-in style (0-25, a name like style-7, or a blend like "
        "3:0.5,12:0.5) or use any picture as the style with --style-image. --strength blends "
        "towards the original (0 returns it unchanged). Full resolution; alpha is kept.",
        epilog="examples:\n  retouch stylize --list-styles\n  retouch stylize photo.jpg --style 7 -o styled.jpg\n"
        "  retouch stylize photo.jpg --style-image starry.jpg --strength 0.7 -o styled.jpg\n"
        "  retouch stylize photo.jpg --prompt 'a watercolour painting' -o wc.jpg  # diffusers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stylize.add_argument("image", nargs="?", help="image file")
    which = stylize.add_mutually_exclusive_group()
    which.add_argument("--style", help="built-in style: N, style-N, or a blend N:W,M:W")
    which.add_argument("--style-image", metavar="FILE", help="any picture to take the style from")
    which.add_argument(
        "--prompt",
        metavar="TEXT",
        help="restyle by a prompt with a diffusion provider (--provider diffusers), e.g. "
        "'a watercolour painting'",
    )
    which.add_argument(
        "--list-styles", action="store_true", help="list the built-in styles and exit"
    )
    stylize.add_argument("--strength", type=float, default=1.0, help="0..1 (default 1)")
    stylize.add_argument("--preserve-color", action="store_true", help="keep the photo's colours")
    stylize.add_argument("--model", help="model name in the store, or a path (with --prompt)")
    stylize.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    stylize.add_argument("--provider")
    _common(stylize)

    _mask_parser(sub)
    _models_parser(sub)

    serve = sub.add_parser(
        "serve",
        help="run the HTTP service (pip install 'retouch[server]')",
        description="Serve every installed provider over HTTP: native routes per operation, "
        "OpenAI-compatible /v1/images/edits and /variations, async jobs, /docs. Settings from "
        "the environment: RETOUCH_API_KEYS (comma-separated), LOAD_SD_INPAINT=true, "
        "RETOUCH_MAX_UPLOAD_BYTES, RETOUCH_MAX_PIXELS, RETOUCH_CONCURRENCY, RETOUCH_QUEUE_SIZE, "
        "RETOUCH_REQUEST_TIMEOUT, RETOUCH_JOB_TTL, RETOUCH_ALLOW_IMAGE_URLS=true.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--sd-inpaint",
        action="store_true",
        help="serve /sd-inpaint/* (same as LOAD_SD_INPAINT=true)",
    )

    providers = sub.add_parser(
        "providers", help="list providers, their operations and whether each is ready"
    )
    providers.add_argument("--json", action="store_true")
    return parser


def _models_parser(sub: Any) -> None:
    models = sub.add_parser(
        "models",
        help="list, pull, add and remove model weights",
        description="Weights that no package ships are downloaded once with `retouch models pull "
        "NAME` (resumable, checksum-verified) into $RETOUCH_HOME (default: your user data "
        "folder), or registered from a local file with `retouch models add`. Nothing is ever "
        "downloaded at first use. RETOUCH_OFFLINE=1 forbids downloads; RETOUCH_CATALOG=FILE "
        "adds catalog entries.",
    )
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="known models and whether each is here")
    listing.add_argument("--task", help="only models for this operation (erase, upscale, ...)")
    listing.add_argument("--json", action="store_true")
    pull = actions.add_parser("pull", help="download a model from the catalog")
    pull.add_argument("name")
    pull.add_argument(
        "--trust", action="store_true", help="download even without a published checksum"
    )
    pull.add_argument("-q", "--quiet", action="store_true")
    add = actions.add_parser("add", help="register a local file under a name")
    add.add_argument("name")
    add.add_argument("path", type=Path)
    add.add_argument(
        "--task",
        required=True,
        help="the operation it serves (erase, upscale, inpaint, ...), or what it helps: "
        "lora, vae (a tiny VAE), controlnet, depth",
    )
    add.add_argument("--format", help="onnx, ncnn, safetensors, diffusers (default: from the file)")
    path = actions.add_parser("path", help="print where a model's file is")
    path.add_argument("name")
    remove = actions.add_parser("rm", help="delete a pulled model or forget an added one")
    remove.add_argument("name")
    verify = actions.add_parser("verify", help="check present models against their checksums")
    verify.add_argument("name", nargs="?")


def _mask_parser(sub: Any) -> None:
    mask = sub.add_parser(
        "mask",
        help="make and edit masks (white = edit)",
        description="Make a mask the size of an image, or change a mask. Masks are grey PNGs: "
        "255 = edit, 0 = keep.",
    )
    kinds = mask.add_subparsers(dest="mask_command", metavar="KIND", required=True)

    def shape(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = kinds.add_parser(name, help=help_text, description=help_text)
        p.add_argument("image", nargs="?", help="image whose size the mask takes")
        p.add_argument("--size", type=_size, help="mask size WIDTHxHEIGHT instead of an image")
        _common(p)
        return p

    shape("rect", "a filled rectangle").add_argument(
        "--box", type=_box, required=True, help="LEFT,TOP,RIGHT,BOTTOM"
    )
    shape("ellipse", "a filled ellipse inside a box").add_argument(
        "--box", type=_box, required=True, help="LEFT,TOP,RIGHT,BOTTOM"
    )
    shape("polygon", "a filled polygon").add_argument(
        "--points", type=_points, required=True, help="'X,Y X,Y X,Y ...'"
    )

    def change(name: str, help_text: str, amount: str | None = None) -> None:
        p = kinds.add_parser(name, help=help_text, description=help_text)
        p.add_argument("mask", help="mask file")
        if amount:
            p.add_argument("--px", type=_positive_int, required=True, metavar="PX", help=amount)
        _common(p)

    for kind in ("subject", "background"):
        made = kinds.add_parser(
            kind,
            help=f"mask of the photo's {kind} (white = {kind}), made by a segmentation model",
            description=f"Make a mask that selects the {kind} of IMAGE. The same is available "
            f"as --mask {kind} wherever a mask is accepted.",
        )
        made.add_argument("image")
        made.add_argument("--provider", help="provider name (default: best available)")
        _common(made)

    change("grow", "grow (dilate) a mask", "pixels to grow")
    change("shrink", "shrink (erode) a mask", "pixels to shrink")
    change("feather", "soften a mask's edge with a Gaussian", "feather radius")
    change("invert", "swap edit and keep")
    threshold = kinds.add_parser("threshold", help="make a grey mask pure black/white")
    threshold.add_argument("mask")
    threshold.add_argument(
        "--level", type=int, default=127, help="grey level above which a pixel is selected"
    )
    _common(threshold)
    from_alpha = kinds.add_parser(
        "from-alpha",
        help="mask from transparency (transparent = edit), as OpenAI/ComfyUI masks are",
        description="Make a retouch mask from an image's alpha: transparent pixels become white (edit).",
    )
    from_alpha.add_argument("image")
    _common(from_alpha)


# --- running ------------------------------------------------------------------------------


def _progress(quiet: bool) -> tuple[Callable[[Progress], None], Callable[[], None]]:
    if quiet or not sys.stderr.isatty():
        return (lambda _: None), (lambda: None)
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def report(p: Progress) -> None:
        bar = bars.get(p.stage)
        if bar is None:
            bar = bars[p.stage] = tqdm(total=p.total, desc=p.stage, unit="step", leave=False)
        bar.n = p.step
        bar.refresh()

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return report, close


def _default_output(image: str, operation: str, suffix: str | None = None) -> Path:
    """``photo.<operation>.<ext>`` beside the input; ``suffix`` overrides the extension."""
    path = Path(image)
    if image.startswith(("http://", "https://", "data:")) or not path.suffix:
        raise UsageError(f"give an output file with -o for {operation}")
    return path.with_name(f"{path.stem}.{operation}{suffix or path.suffix}")


def _prepare_output(args: argparse.Namespace, operation: str, suffix: str | None = None) -> Path:
    from retouch import imageio

    target = Path(args.output) if args.output else _default_output(args.image, operation, suffix)
    return imageio.check_output(target, overwrite=args.overwrite)


def _emit(args: argparse.Namespace, result: ImageResult, written: list[Path]) -> None:
    if args.json:
        data = result.metadata()
        data["outputs"] = [str(p) for p in written]
        print(json.dumps(data, indent=2, default=str))
    else:
        for warning in result.warnings:
            print(f"retouch: warning: {warning}", file=sys.stderr)
        if not args.quiet:
            seconds = result.timings.get("total", 0.0)
            print(
                f"wrote {', '.join(map(str, written))} ({result.provider}, {seconds:.2f}s)",
                file=sys.stderr,
            )


def _run_operation(
    args: argparse.Namespace,
    operation: str,
    call: Callable[[Callable[[Progress], None]], ImageResult],
    suffix: str | None = None,
) -> int:
    from retouch import imageio

    target = _prepare_output(args, operation, suffix)
    report, close = _progress(args.quiet)
    try:
        result = call(report)
    finally:
        close()
    for extra in imageio.output_paths(target, len(result.images))[1:]:
        imageio.check_output(extra, overwrite=args.overwrite)
    written = result.save(target, overwrite=args.overwrite, quality=args.quality)
    _emit(args, result, written)
    return 0


def _toolkit(args: argparse.Namespace) -> Toolkit:
    from retouch.api import Toolkit

    return Toolkit(max_pixels=args.max_pixels)


def cmd_erase(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    if args.method:
        options["method"] = args.method
    if args.patch_size is not None:
        options["patch_size"] = args.patch_size
    toolkit = _toolkit(args)
    return _run_operation(
        args,
        "erase",
        lambda progress: toolkit.erase(
            args.image,
            args.mask,
            provider=args.provider,
            seed=args.seed,
            options=options or None,
            mask_from=args.mask_from,
            invert_mask=args.invert_mask,
            resize_mask=args.resize_mask,
            grow_mask=args.grow_mask,
            feather=args.feather,
            crop_margin=args.crop_margin,
            progress=progress,
        ),
    )


def _parse_options(pairs: list[str], model: str | None = None) -> dict[str, Any] | None:
    options: dict[str, Any] = {"model": model} if model else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--option takes KEY=VALUE, got {pair!r}")
        options[key.strip().replace("-", "_")] = _typed(value.strip())
    return options or None


def _typed(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def cmd_inpaint(args: argparse.Namespace) -> int:
    toolkit = _toolkit(args)
    options = _parse_options(args.option, args.model)
    return _run_operation(
        args,
        "inpaint",
        lambda progress: toolkit.inpaint(
            args.image,
            args.mask,
            args.prompt,
            provider=args.provider,
            negative_prompt=args.negative_prompt,
            seed=args.seed,
            n=args.n,
            steps=args.steps,
            guidance=args.guidance,
            options=options,
            mask_from=args.mask_from,
            invert_mask=args.invert_mask,
            resize_mask=args.resize_mask,
            grow_mask=args.grow_mask,
            feather=args.feather,
            crop_margin=args.crop_margin,
            progress=progress,
        ),
    )


def cmd_edit(args: argparse.Namespace) -> int:
    toolkit = _toolkit(args)
    options = _parse_options(args.option, args.model)
    return _run_operation(
        args,
        "edit",
        lambda progress: toolkit.edit(
            args.image,
            args.prompt,
            strength=args.strength,
            negative_prompt=args.negative_prompt,
            seed=args.seed,
            n=args.n,
            provider=args.provider,
            options=options,
            progress=progress,
        ),
    )


def cmd_variations(args: argparse.Namespace) -> int:
    toolkit = _toolkit(args)
    options = _parse_options(args.option, args.model)
    return _run_operation(
        args,
        "variations",
        lambda progress: toolkit.variations(
            args.image,
            n=args.n,
            seed=args.seed,
            provider=args.provider,
            options=options,
            progress=progress,
        ),
    )


def cmd_outpaint(args: argparse.Namespace) -> int:
    toolkit = _toolkit(args)
    return _run_operation(
        args,
        "outpaint",
        lambda progress: toolkit.outpaint(
            args.image,
            left=args.left,
            right=args.right,
            top=args.top,
            bottom=args.bottom,
            width=args.width,
            height=args.height,
            aspect=args.aspect,
            prompt=args.prompt,
            provider=args.provider,
            seed=args.seed,
            feather=args.feather,
            options=_parse_options(args.option, args.model),
            progress=progress,
        ),
    )


def cmd_resize(args: argparse.Namespace) -> int:
    toolkit = _toolkit(args)
    return _run_operation(
        args,
        "resize",
        lambda progress: toolkit.resize(
            args.image,
            max_size=args.max_size,
            width=args.width,
            height=args.height,
            progress=progress,
        ),
    )


def cmd_upscale(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    for flag, key in (("max_memory", "max_memory"), ("threads", "threads"), ("tile", "tile")):
        if getattr(args, flag) is not None:
            options[key] = getattr(args, flag)
    toolkit = _toolkit(args)

    def call(image: str, progress: Callable[[Progress], None]) -> ImageResult:
        return toolkit.upscale(
            image,
            scale=args.scale,
            width=args.width,
            height=args.height,
            model=args.model,
            provider=args.provider,
            options=options or None,
            progress=progress,
        )

    if Path(args.image).is_dir():
        return _run_folder(args, "upscale", call)
    return _run_operation(args, "upscale", lambda progress: call(args.image, progress))


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}


def _run_folder(
    args: argparse.Namespace,
    operation: str,
    call: Callable[[str, Callable[[Progress], None]], ImageResult],
    suffix: str | None = None,
) -> int:
    """Run ``call`` on every image in a folder into an output folder, skipping done files.

    A file that fails is reported and the rest go on; the exit code is that of the first
    failure (0 when all succeed).
    """
    from retouch.errors import RetouchError

    source = Path(args.image)
    target_dir = (
        Path(args.output) if args.output else source.with_name(f"{source.name}-{operation}")
    )
    if target_dir.exists() and not target_dir.is_dir():
        raise UsageError(f"{target_dir} is a file; for a folder input, -o must be a folder")
    files = sorted(
        p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise UsageError(f"{source} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    target_dir.mkdir(parents=True, exist_ok=True)

    def output_for(path: Path) -> Path:
        return target_dir / (path.stem + suffix if suffix else path.name)

    todo = [p for p in files if args.overwrite or not output_for(p).exists()]
    skipped, failures, first_code = len(files) - len(todo), 0, 0
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=operation, unit="image")
    report: list[dict[str, Any]] = []
    for path in todo:
        out = output_for(path)
        try:
            result = call(str(path), lambda _: None)
            written = result.save(out, overwrite=args.overwrite, quality=args.quality)
            report.append(
                {"input": str(path), "outputs": [str(w) for w in written], **result.metadata()}
            )
        except RetouchError as exc:
            failures += 1
            first_code = first_code or exit_code_for(exc)
            print(f"retouch: error: {path.name}: {exc}", file=sys.stderr)
            report.append({"input": str(path), "error": str(exc)})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if args.json:
        print(
            json.dumps(
                {
                    "done": len(todo) - failures,
                    "skipped": skipped,
                    "failed": failures,
                    "files": report,
                },
                indent=2,
                default=str,
            )
        )
    elif not args.quiet:
        print(
            f"{operation}: {len(todo) - failures} done, {skipped} skipped (already in {target_dir}), {failures} failed",
            file=sys.stderr,
        )
    return first_code


def cmd_remove_bg(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    if args.matting:
        options["matting"] = True
    if args.no_decontaminate:
        options["decontaminate"] = False
    for flag in ("largest_object", "fill_holes"):
        if getattr(args, flag):
            options[flag] = True
    for flag in ("threshold", "threads"):
        if getattr(args, flag) is not None:
            options[flag] = getattr(args, flag)
    if args.soften:
        options["soften"] = args.soften
    toolkit = _toolkit(args)
    see_through = args.only_mask or (
        args.bg_image is None and args.bg_blur is None and not _opaque_colour(args.bg_color)
    )
    suffix = ".png" if see_through else None  # a cut-out needs a format with alpha

    def call(image: str, progress: Callable[[Progress], None]) -> ImageResult:
        return toolkit.remove_background(
            image,
            only_mask=args.only_mask,
            bg_color=args.bg_color,
            bg_image=args.bg_image,
            bg_blur=args.bg_blur,
            model=args.model,
            provider=args.provider,
            options=options or None,
            progress=progress,
        )

    if Path(args.image).is_dir():
        return _run_folder(args, "remove-bg", call, suffix)
    return _run_operation(args, "remove-bg", lambda progress: call(args.image, progress), suffix)


def _opaque_colour(text: str | None) -> bool:
    if text is None:
        return False
    from retouch.compose import parse_colour

    return parse_colour(text)[3] == 255


def cmd_mask(args: argparse.Namespace) -> int:
    from retouch import imageio
    from retouch import masks as mask_ops

    kind = args.mask_command
    source = getattr(args, "image", None) or getattr(args, "mask", None)
    if args.output:
        target = imageio.check_output(args.output, overwrite=args.overwrite)
    elif source:
        target = imageio.check_output(
            _default_output(source, f"mask-{kind}").with_suffix(".png"), overwrite=args.overwrite
        )
    else:
        raise UsageError("give an output file with -o")

    def size() -> tuple[int, int]:
        if args.size:
            width, height = args.size
            return width, height
        if not args.image:
            raise UsageError(f"mask {kind} needs an IMAGE (for its size) or --size WIDTHxHEIGHT")
        return imageio.load_image(args.image, max_pixels=args.max_pixels).size

    def existing() -> Mask:
        picture = imageio.load_image(args.mask, max_pixels=args.max_pixels)
        return mask_ops.mask_from_picture(picture, mask_from="luminance")

    makers: dict[str, Callable[[], Mask]] = {
        "rect": lambda: mask_ops.rectangle(size(), args.box),
        "ellipse": lambda: mask_ops.ellipse(size(), args.box),
        "polygon": lambda: mask_ops.polygon(size(), args.points),
        "grow": lambda: mask_ops.grow(existing(), args.px),
        "shrink": lambda: mask_ops.shrink(existing(), args.px),
        "feather": lambda: mask_ops.feather(existing(), args.px),
        "invert": lambda: mask_ops.invert(existing()),
        "threshold": lambda: mask_ops.threshold(existing(), args.level),
        "subject": lambda: _toolkit(args).subject_mask(
            args.image, "subject", provider=args.provider
        ),
        "background": lambda: _toolkit(args).subject_mask(
            args.image, "background", provider=args.provider
        ),
        "from-alpha": lambda: mask_ops.mask_from_picture(
            imageio.load_image(args.image, max_pixels=args.max_pixels), mask_from="alpha"
        ),
    }
    mask = makers[kind]()
    written = imageio.save_image(
        mask, target, overwrite=args.overwrite, parameters={"operation": f"mask {kind}"}
    )
    if args.json:
        box = mask_ops.bounding_box(mask)
        print(
            json.dumps(
                {
                    "output": str(written),
                    "width": mask.shape[1],
                    "height": mask.shape[0],
                    "selected": int((mask > 0).sum()),
                    "box": box,
                }
            )
        )
    elif not args.quiet:
        print(f"wrote {written}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from retouch.server import ServerSettings, create_app
    except ImportError as exc:
        from retouch.errors import DependencyMissing

        raise DependencyMissing(exc.name or "fastapi", "server", "retouch serve") from exc
    settings = ServerSettings.from_env()
    if args.sd_inpaint:
        settings.sd_inpaint = True
    app = create_app(settings=settings)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
    return 0


def cmd_providers(args: argparse.Namespace) -> int:
    from retouch.api import Toolkit

    reports = Toolkit().providers()
    if args.json:
        print(json.dumps([r.__dict__ for r in reports], indent=2))
        return 0
    for r in reports:
        state = "ready" if r.ready else "not ready"
        print(f"{r.name:<14} {r.kind:<7} {state:<10} {', '.join(r.operations)}")
        if r.detail:
            print(f"{'':<14} {r.detail}")
    return 0


def cmd_stylize(args: argparse.Namespace) -> int:
    if args.list_styles:
        from retouch.providers.stylize import STYLE_NAMES

        for index, name in enumerate(STYLE_NAMES):
            print(f"{index:>2}  {name}")
        print("blend several: --style 3:0.5,12:0.5; any painting: --style-image FILE")
        return 0
    if not args.image:
        raise UsageError("give an IMAGE to stylize (or --list-styles)")
    if args.style is None and args.style_image is None and args.prompt is None:
        raise UsageError("give --style N, --style-image FILE (see --list-styles) or --prompt TEXT")
    toolkit = _toolkit(args)
    options = _parse_options(args.option, args.model) or {}
    if args.preserve_color:
        options["preserve_color"] = True
    if args.prompt is not None and args.provider is None:
        args.provider = "diffusers"  # a prompt needs a diffusion model
    return _run_operation(
        args,
        "stylize",
        lambda progress: toolkit.stylize(
            args.image,
            style=args.prompt if args.prompt is not None else args.style,
            style_image=args.style_image,
            strength=args.strength,
            provider=args.provider,
            options=options or None,
            progress=progress,
        ),
    )


def cmd_models(args: argparse.Namespace) -> int:
    from retouch.models.store import ModelStore

    store = ModelStore()
    action = args.models_command
    if action == "list":
        records = store.records(args.task)
        if args.json:
            print(json.dumps([r.__dict__ for r in records], indent=2))
            return 0
        for r in records:
            size = f"{r.size / 2**20:.0f} MB" if r.size else ""
            print(f"{r.name:<28} {r.task:<18} {r.format:<12} {r.state:<11} {size}")
        return 0
    if action == "pull":
        report, close = _progress(args.quiet)
        try:
            target = store.pull(args.name, trust=args.trust, progress=report)
        finally:
            close()
        print(target)
        return 0
    if action == "add":
        print(store.add(args.name, args.path, task=args.task, format=args.format))
        return 0
    if action == "path":
        print(store.path(args.name))
        return 0
    if action == "rm":
        print(store.remove(args.name), file=sys.stderr)
        return 0
    results = store.verify(args.name)
    for name, ok, message in results:
        print(f"{name:<28} {'ok' if ok else 'FAILED':<7} {message}")
    return 0 if all(ok for _, ok, _ in results) else 14


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "erase": cmd_erase,
    "outpaint": cmd_outpaint,
    "inpaint": cmd_inpaint,
    "edit": cmd_edit,
    "variations": cmd_variations,
    "resize": cmd_resize,
    "upscale": cmd_upscale,
    "remove-bg": cmd_remove_bg,
    "remove-background": cmd_remove_bg,
    "mask": cmd_mask,
    "providers": cmd_providers,
    "serve": cmd_serve,
    "models": cmd_models,
    "stylize": cmd_stylize,
}


def _fail(message: str, code: int) -> NoReturn:
    print(f"retouch: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        _fail(str(exc), 2)
    except KeyboardInterrupt:
        _fail("interrupted; no output was written", 130)
    except BrokenPipeError:  # `retouch ... | head` closed the pipe: not an error
        sys.stderr.close()
        return 0
    except Exception as exc:
        from retouch.errors import RetouchError

        if isinstance(exc, RetouchError):
            _fail(str(exc), exit_code_for(exc))
        raise
