"""The ``retouch`` command: files in, files out.

The operation commands (erase, inpaint, outpaint, edit, variations, upscale, resize,
remove-bg, restore-faces, stylize) are generated from the declaration in ``retouch.types``:
each field of the operation's request is a flag with its help, range and default, and one
generic command builds the request and runs it. Only what truly differs is written here
(folder input, output naming, the mask and model commands).

The only place that turns retouch errors into exit codes and one-line messages. Work is
checked (inputs readable, output free to write) before anything runs, and an output file is
only ever written complete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from retouch._version import __version__

if TYPE_CHECKING:
    from retouch.api import Toolkit
    from retouch.declaration import FieldSpec
    from retouch.results import ImageResult
    from retouch.types import Operation, Progress

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


# --- argument types (the hand-written commands) -------------------------------------------


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"a size is WIDTHxHEIGHT, e.g. 512x512, got {text!r}")
    try:
        width, height = int(parts[0]), int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a size is two whole numbers, WIDTHxHEIGHT, e.g. 512x512, got {text!r}"
        ) from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"a size needs both sides of at least 1 px, got {text!r}")
    return width, height


def _server_env() -> list[tuple[str, str, Any]]:
    from retouch.server.settings import ENV

    return ENV


def _default_max_pixels() -> int:
    from retouch.imageio import DEFAULT_MAX_PIXELS

    return DEFAULT_MAX_PIXELS


def _common(parser: argparse.ArgumentParser, *, output: bool = True) -> None:
    if output:
        parser.add_argument(
            "-o",
            "--output",
            type=str,  # not Path: a trailing / (a folder to be made) must survive parsing
            help="output file, or a folder for a folder of inputs "
            "(default: INPUT.<op>.<ext> beside the input)",
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
        "-v",
        "--verbose",
        action="store_true",
        help="also show the libraries' own logs and warnings (diffusers, transformers...)",
    )
    limit = _default_max_pixels()
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=limit,
        help=f"refuse larger images (default {limit / 1e6:g} MP)",
    )


# --- operation commands, generated from the declaration -----------------------------------

# The command name of each operation (and more names for it); the default output is named
# INPUT.<command>.<ext>.
COMMAND_NAMES: dict[str, tuple[str, ...]] = {
    "remove-background": ("remove-bg", "remove-background")
}
EXAMPLES: dict[str, str] = {
    "erase": "example: retouch erase photo.jpg --mask mask.png -o clean.jpg",
    "inpaint": "example: OPENAI_API_KEY=... retouch inpaint room.jpg --mask sofa.png "
    '--prompt "a green velvet sofa" --provider openai -o new.jpg',
    "outpaint": "example: retouch outpaint photo.jpg --left 128 --right 128 -o wide.jpg",
    "edit": "examples:\n"
    '  retouch edit photo.jpg --prompt "an oil painting" --strength 0.5 --provider diffusers -o painted.jpg\n'
    '  retouch edit photo.jpg --prompt "a knight" --control openpose --control-image pose.png -o knight.jpg\n'
    '  retouch edit photo.jpg --prompt "a ruin" --control canny,depth --control-scale 0.8 -o ruin.jpg',
    "variations": "example: retouch variations photo.jpg -n 4 --provider diffusers -o var.png",
    "upscale": "examples:\n  retouch upscale photo.jpg -o big.jpg\n"
    "  retouch upscale photo.jpg --scale 2 --model x4plus -o big.png\n"
    "  retouch upscale portrait.jpg --model x4plus --face-enhance -o big.png  # then restore faces\n"
    "  retouch upscale photo.jpg --detail -o detailed.jpg      # then a tiled SD pass (diffusers)\n"
    "  retouch upscale photos/ -o photos-4x/          # a folder, skipping done files",
    "resize": "examples:\n  retouch resize big.png --max-size 1600 -o web.webp --quality 85\n"
    "  retouch resize shots/ --max-width 1920 --max-height 1080 -o web/  # 1920x1080> (shrink only)",
    "adjust": "examples:\n  retouch adjust photo.jpg --white-balance grey-world --auto-contrast -o fixed.jpg\n"
    "  retouch adjust shot.png --match-image reference.jpg -o matched.png\n"
    "  retouch adjust dull.jpg --saturation 1.2 --gamma 1.1 -o vivid.jpg",
    "remove-background": "examples:\n  retouch remove-bg product.jpg -o product.png\n"
    "  retouch remove-bg portrait.jpg --bg-blur 25 -o portrait-blur.jpg\n"
    "  retouch remove-bg shots/ -o cutouts/          # a folder, skipping done files",
    "restore-faces": "examples:\n"
    "  retouch models pull gfpgan-1.4 --trust                 # once (or codeformer, ...)\n"
    "  retouch restore-faces old.jpg -o restored.jpg\n"
    "  retouch restore-faces old.jpg --model codeformer --fidelity 0.7 -o restored.jpg\n"
    "  retouch restore-faces group.jpg --upscale 2 --only-center-face -o big.png\n"
    "Faces are found with OpenCV (no download) or YuNet (retouch models pull yunet),\n"
    "aligned to the FFHQ template, restored at 512 and pasted back through a feathered\n"
    "mask; faces smaller than --min-face are left alone, pixels outside faces unchanged.",
    "stylize": "examples:\n  retouch stylize --list-styles\n"
    "  retouch stylize photo.jpg --style 7 -o styled.jpg\n"
    "  retouch stylize photo.jpg --style-image starry.jpg --strength 0.7 -o styled.jpg\n"
    "  retouch stylize photo.jpg --prompt 'a watercolour painting' -o wc.jpg  # diffusers",
}
MASK_EXAMPLES: dict[str, str] = {
    "click": "examples:\n"
    "  retouch mask click photo.jpg --point 420,100 -o rocket.png\n"
    "  retouch mask click photo.jpg --point 420,100 --point 395,150 --negative 446,150 -o m.png\n"
    "  retouch mask click photo.jpg --box 350,0,475,290 -o m.png\n"
    "  retouch erase photo.jpg --mask 'click:420,100;-446,150' -o clean.jpg  # anywhere\n"
    "Segment Anything when its weights are here (retouch models pull sam2.1-tiny or\n"
    "efficientsam-vitt), else GrabCut from the same points (the result's model says which).",
    "text": "examples:\n"
    "  retouch mask text photo.jpg 'the rocket' -o rocket.png\n"
    "  retouch mask text photo.jpg --text 'the rocket' --threshold 80 -o rocket.png\n"
    "  retouch inpaint photo.jpg --mask 'text:the red car' --prompt 'a blue bus' -o bus.jpg\n"
    "Needs CLIPSeg: pip install 'retouch[text-masks]' and retouch models pull clipseg --trust.",
    "faces": "examples:\n"
    "  retouch mask faces photo.jpg -o faces.png               # feathered ovals\n"
    "  retouch mask faces photo.jpg --shape box -o boxes.png\n"
    "  retouch faces photo.jpg --json                          # boxes, landmarks, scores\n"
    "OpenCV's Haar cascades (no download), or YuNet after: retouch models pull yunet",
}
FIELD = "field:"
"""Prefix of the argparse destinations that hold declared fields."""

_METAVARS = {
    "int": "N",
    "float": "X",
    "text": "TEXT",
    "ratio": "W:H",
    "bytes": "SIZE",
    "box": "L,T,R,B",
    "points": "'X,Y ...'",
    "image": "FILE",
    "mask": "MASK",
}


def _first_sentence(text: str) -> str:
    first = text.split(";")[0].split(". ")[0].split(": ")[0].rstrip(".")
    return first[:1].lower() + first[1:]


def command_name(operation: str) -> str:
    return COMMAND_NAMES.get(operation, (operation,))[0]


def _field_help(spec: FieldSpec) -> str:
    text = spec.param.help
    default = spec.default
    shown = default not in (None, False, True, "", ()) and not spec.required
    if shown and "default" not in text and spec.kind != "options":
        text += f" (default {default})"
    if spec.providers:
        text += f" [{', '.join(spec.providers)}]"
    return text


def _add_field(parser: argparse.ArgumentParser, spec: FieldSpec, *, required: bool = False) -> None:
    p = spec.param
    dest = FIELD + spec.name
    if spec.kind == "options":
        parser.add_argument(
            "--option",
            dest=dest,
            action="append",
            metavar="KEY=VALUE",
            help="provider option, e.g. fast=true or method=telea (repeatable; "
            "see `retouch providers`)",
        )
        return
    flags = [spec.flag, *p.aliases]
    if spec.kind == "bool":
        negative = bool(spec.default)  # a default-on switch is turned off by its flag
        parser.add_argument(
            *flags,
            dest=dest,
            action="store_const",
            const=not negative,
            default=None,
            help=_field_help(spec),
        )
        return
    kwargs: dict[str, Any] = {
        "dest": dest,
        "default": None,
        "metavar": p.metavar or _METAVARS.get(spec.kind, "VALUE"),
        "help": _field_help(spec),
    }
    if p.choices and p.separator is None:
        kwargs["choices"] = p.choices
        del kwargs["metavar"]
    elif p.choices:  # several choices in one value: the declaration checks each
        kwargs["help"] += f" {{{','.join(p.choices)}}}"
    if spec.kind == "points":  # --point X,Y --point X,Y: each adds to the list
        kwargs["action"] = "append"
    if required or (spec.required and spec.kind != "image"):
        kwargs["required"] = True
    parser.add_argument(*flags, **kwargs)


def _fields_parser(
    parser: argparse.ArgumentParser,
    operation: Operation,
    fields: list[FieldSpec],
    options: list[FieldSpec],
    kind: str | None = None,
) -> None:
    """Every declared field (and promoted provider option) as a flag; the main image is the
    positional IMAGE (a file or a folder)."""
    known = {s.name for s in fields}
    for spec in [*fields, *(s for s in options if s.name not in known)]:
        p = spec.param
        if p.only_for and kind not in p.only_for:
            continue
        if spec.name == "image":
            optional = operation == "stylize" or kind in ("rect", "ellipse", "polygon")
            parser.add_argument(
                "image",
                nargs="?" if optional else None,
                help=f"{spec.param.help}, or a folder of them",
            )
        elif p.cli:
            # mask text's phrase may instead follow the image (cmd_operation checks one came)
            positional = kind == "text" and spec.name == "text"
            _add_field(parser, spec, required=kind in p.required_for and not positional)
    parser.set_defaults(operation=operation, kind_value=kind)
    _common(parser)


def add_operation(
    sub: Any, operation: Operation, request_type: type[Any], toolkit: Toolkit
) -> argparse.ArgumentParser:
    """The subcommand of one operation, generated from its declaration; an operation with
    kinds (mask) gets one subcommand per kind, each with the fields that kind takes."""
    from retouch.declaration import request_fields

    names = COMMAND_NAMES.get(operation, (operation,))
    summary = request_type.summary
    parser: argparse.ArgumentParser = sub.add_parser(
        names[0],
        aliases=list(names[1:]),
        help=_first_sentence(summary),
        description=summary,
        epilog=EXAMPLES.get(operation),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fields = request_fields(request_type)
    kinds = next((s for s in fields if s.name == "kind" and s.param.choices), None)
    if kinds is None:
        _fields_parser(parser, operation, fields, toolkit.option_fields(operation))
        if operation == "stylize":
            parser.add_argument(
                "--list-styles", action="store_true", help="list the built-in styles and exit"
            )
        return parser
    from retouch.types import MASK_KINDS

    chooser = parser.add_subparsers(dest="kind_command", metavar="KIND", required=True)
    for kind in kinds.param.choices:
        text = MASK_KINDS.get(kind, kind)
        child = chooser.add_parser(
            kind,
            help=text,
            description=text,
            epilog=MASK_EXAMPLES.get(kind),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _fields_parser(child, operation, fields, toolkit.option_fields(operation, kind), kind)
        if kind in ("rect", "ellipse", "polygon"):
            child.add_argument(
                "--size", type=_size, help="mask size WIDTHxHEIGHT instead of an image"
            )
        if kind == "text":  # the phrase may follow the image, as the command reads aloud
            child.add_argument(
                "phrase", nargs="?", help="what to select, e.g. 'the red car' (or --text)"
            )

    return parser


def build_parser(toolkit: Toolkit | None = None) -> argparse.ArgumentParser:
    """The whole command line; the toolkit's operations are generated from their declaration."""
    parser = argparse.ArgumentParser(
        prog="retouch",
        description="AI image editing: erase objects, fill and extend, upscale, cut out "
        "backgrounds, restyle, restore faces and make masks.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"retouch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if toolkit is None:
        from retouch.api import Toolkit

        toolkit = Toolkit()
    for operation, request_type in toolkit.operations.items():
        add_operation(sub, operation, request_type, toolkit)
    _models_parser(sub)
    from retouch.batch.commands import add_parsers as add_batch_parsers

    add_batch_parsers(sub)  # batch, recipe

    serve = sub.add_parser(
        "serve",
        help="run the HTTP service (pip install 'retouch[server]')",
        description="Serve every installed provider over HTTP: native routes per operation, "
        "OpenAI-compatible /v1/images/edits and /variations, /sd-inpaint, async jobs, /docs. "
        "Settings from the environment or a .env file in the working directory: "
        + ", ".join(name for name, _, _ in _server_env())
        + " (README: HTTP service).",
    )
    _serve_arguments(serve)
    studio = sub.add_parser(
        "studio",
        help="the HTTP service and its web page, opened in your browser",
        description="Start the HTTP service (as `retouch serve`) and open the studio, its web "
        "page, in your browser: open a photo, paint a mask, run any operation, compare and "
        "download. The page is also at / of any `retouch serve`.",
    )
    _serve_arguments(studio)
    studio.add_argument(
        "--no-browser",
        action="store_true",
        help="do not open a browser (a headless machine): open the printed address yourself",
    )

    faces = sub.add_parser(
        "faces",
        help="find the faces in a photo: boxes, five landmarks, scores",
        description="Find the faces in a photo and print their boxes (left, top, right, bottom), "
        "five landmarks (eyes, nose tip, mouth corners) and scores. OpenCV's Haar cascades "
        "need no download (frontal faces; nose and mouth placed from the eyes; no score); "
        "YuNet is used once `retouch models pull yunet` has fetched it (230 KB).",
        epilog="example: retouch faces group.jpg --json",
    )
    faces.add_argument("image", help="the photo")
    faces.add_argument(
        "--detector",
        choices=("auto", "haar", "yunet"),
        default="auto",
        help="auto (default): yunet when it is here, else haar",
    )
    faces.add_argument("--json", action="store_true", help="print JSON")
    faces.add_argument("--max-pixels", type=int, default=_default_max_pixels())

    providers = sub.add_parser(
        "providers", help="list providers, their operations and whether each is ready"
    )
    providers.add_argument("--json", action="store_true")
    operations = sub.add_parser(
        "operations",
        help="list the operations, the providers ready for each, and (with a name) its fields",
        description="What GET /v1/operations answers: every operation with the providers "
        "that can run it now; name one for its fields (type, range, default, flag, help).",
    )
    operations.add_argument("name", nargs="?", help="an operation, e.g. inpaint")
    operations.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--sd-inpaint",
        action="store_true",
        help="serve /sd-inpaint/* (same as LOAD_SD_INPAINT=true)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes that run the work (same as RETOUCH_WORKERS; default 1 per "
        "core, at most 2; 0 runs it in threads of the server, which a cancel cannot stop)",
    )


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
        bar.total = p.total  # a stage may learn its length as it goes (a fill's rounds)
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
    if target.is_dir() or str(args.output or "").endswith(("/", os.sep)):
        # an existing folder (or one named with a trailing /): the default name inside it
        target = target / _default_output(Path(args.image).name, operation, suffix).name
    return imageio.check_output(target, overwrite=args.overwrite)


def _emit(args: argparse.Namespace, result: ImageResult, written: list[Path]) -> None:
    if args.json:
        data = result.metadata()
        data["outputs"] = [str(p) for p in written]
        if result.parameters.get("operation") == "mask":  # a mask's size and extent up front
            data.update(
                width=result.image.width,
                height=result.image.height,
                selected=result.usage.get("selected"),
                box=result.usage.get("box"),
            )
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
    """The toolkit for this command: the caller's (``main(toolkit=...)``) or the default
    one, with the command's pixel limit."""
    from retouch.api import Toolkit

    given: Toolkit | None = getattr(args, "toolkit", None)
    if given is None:
        return Toolkit(max_pixels=getattr(args, "max_pixels", None))
    return Toolkit(
        registry=given.registry,
        max_pixels=getattr(args, "max_pixels", given.max_pixels),
        operations=given.operations,
    )


def _field_values(args: argparse.Namespace) -> dict[str, Any]:
    """The declared fields the user gave, by their flat names (defaults stay unset)."""
    values: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest.startswith(FIELD) and value is not None:
            values[dest[len(FIELD) :]] = value
            if isinstance(value, list) and dest != FIELD + "options":  # repeated --point
                values[dest[len(FIELD) :]] = " ".join(value)
    if "options" in values:
        values["options"] = _parse_options(values["options"])
    return values


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--option takes KEY=VALUE, got {pair!r}")
        options[key.strip().replace("-", "_")] = _typed(value.strip())
    return options


def _typed(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def _cutout_suffix(values: Mapping[str, Any]) -> str | None:
    """A cut-out (or a see-through background colour) needs a format with alpha."""
    if values.get("only_mask"):
        return ".png"
    if values.get("bg_image") is not None or values.get("bg_blur") is not None:
        return None
    return None if _opaque_colour(values.get("bg_color")) else ".png"


OUTPUT_SUFFIX: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    "remove-background": _cutout_suffix
}
"""Operations whose output format depends on the request (default: the input's)."""


def cmd_operation(args: argparse.Namespace) -> int:
    """Every generated command: build the request from the declared flags and run it."""
    operation: Operation = args.operation
    if operation == "stylize" and args.list_styles:
        return _list_styles()
    toolkit = _toolkit(args)
    values = _field_values(args)
    label = command_name(operation)
    suffix_rule = OUTPUT_SUFFIX.get(operation)
    suffix = suffix_rule(values) if suffix_rule else None
    image: Any = args.image
    if args.kind_value is not None:  # mask KIND: a grey PNG named after the kind
        values["kind"] = args.kind_value
        phrase = getattr(args, "phrase", None)
        if phrase is not None:
            if values.get("text") is not None:
                raise UsageError("give the phrase once: after the image or with --text")
            values["text"] = phrase
        label, suffix = f"{label}-{args.kind_value}", ".png"
        if not image and getattr(args, "size", None):
            import numpy as np

            width, height = args.size
            # Only its size is used: one black pixel seen at that size (no memory taken, so
            # the pixel limit, not an allocation, answers a huge size).
            image = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (height, width, 3))
            if not args.output:
                raise UsageError("give an output file with -o")
    if image is None or (isinstance(image, str) and not image):
        need = " (for its size) or --size WIDTHxHEIGHT" if hasattr(args, "size") else ""
        raise UsageError(f"{label} needs an IMAGE{need}")

    def call(source: Any, progress: Callable[[Progress], None]) -> ImageResult:
        request = toolkit.build(operation, {**values, "image": source})
        return toolkit.run(request, progress=progress)

    if isinstance(image, str) and Path(image).is_dir():
        return _run_folder(args, label, call, suffix, asked=values)
    return _run_operation(args, label, lambda progress: call(image, progress), suffix)


def _list_styles() -> int:
    from retouch.providers.stylize import STYLE_NAMES

    for index, name in enumerate(STYLE_NAMES):
        print(f"{index:>2}  {name:<17} style-{index}")
    print(
        "--style takes the number, the name or style-N; blend several: --style 3:0.5,12:0.5; "
        "any painting: --style-image FILE; see them on your photo: retouch studio"
    )
    return 0


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
UNLABELLED_SUFFIXES = {".tif", ".tiff", ".bmp"}
"""Formats retouch writes without its parameters in them (PNG, JPEG and WebP carry them)."""


def _run_folder(
    args: argparse.Namespace,
    operation: str,
    call: Callable[[str, Callable[[Progress], None]], ImageResult],
    suffix: str | None = None,
    asked: Mapping[str, Any] | None = None,
) -> int:
    """Run ``call`` on every image in a folder into an output folder, skipping done files.

    A file counts as done when retouch wrote it for this operation with the values asked
    now (read back from its embedded parameters); any other file of that name is left alone
    and reported. A file that fails is reported and the rest go on; the exit code is that of
    the first failure (0 when all succeed).
    """
    from retouch.errors import OutputExists, RetouchError

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

    report: list[dict[str, Any]] = []
    done = skipped = failures = first_code = 0

    def failed(path: Path, exc: RetouchError) -> None:
        nonlocal failures, first_code
        failures += 1
        first_code = first_code or exit_code_for(exc)
        print(f"retouch: error: {path.name}: {exc}", file=sys.stderr)
        report.append({"input": str(path), "error": str(exc)})

    todo = []
    for path in files:
        out = output_for(path)
        if args.overwrite or not out.exists():
            todo.append(path)
        elif (reason := _not_done(out, args.operation, asked or {})) is not None:
            failed(path, OutputExists(f"{out} exists but {reason}; pass --overwrite to replace it"))
        else:
            skipped += 1
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=operation, unit="image")
    for path in todo:
        try:
            result = call(str(path), lambda _: None)
            written = result.save(output_for(path), overwrite=args.overwrite, quality=args.quality)
            done += 1
            report.append(
                {"input": str(path), "outputs": [str(w) for w in written], **result.metadata()}
            )
        except RetouchError as exc:
            failed(path, exc)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if args.json:
        summary = {"done": done, "skipped": skipped, "failed": failures, "files": report}
        print(json.dumps(summary, indent=2, default=str))
    elif not args.quiet:
        print(
            f"{operation}: {done} done, {skipped} skipped (already in {target_dir}), "
            f"{failures} failed",
            file=sys.stderr,
        )
    return first_code


def _not_done(out: Path, operation: str, asked: Mapping[str, Any]) -> str | None:
    """Why the file at ``out`` is not this run's output already (None: it is): not an
    image retouch wrote, another operation's, or made with other values than ``asked``."""
    from retouch import imageio

    try:
        made = imageio.read_parameters(out)
    except Exception:  # unreadable, not an image, a folder: not ours to skip
        return "cannot be read as an image"
    if made is None:
        if out.suffix.lower() in UNLABELLED_SUFFIXES:
            return None  # retouch cannot label these formats: the name is all there is
        return "was not written by retouch"
    if made.get("operation") != operation:
        return f"was written by retouch {made.get('operation')}"
    for name, value in asked.items():
        before = made.get(name)
        if name in made and _scalar(before) and _scalar(value) and not _same(before, value):
            return f"was made with {name}={before}, not {value}"
    return None


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _same(before: Any, now: Any) -> bool:
    """A value written back from JSON against the one typed now (``2`` vs ``2.0``, ``"2"``)."""
    try:
        return float(before) == float(now)
    except (TypeError, ValueError):
        return str(before).strip().lower() == str(now).strip().lower()


def _opaque_colour(text: str | None) -> bool:
    if text is None:
        return False
    from retouch.compose import parse_colour

    return parse_colour(text)[3] == 255


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from retouch.server import ServerSettings, create_app
        from retouch.server.run import serve
    except ImportError as exc:
        from retouch.errors import DependencyMissing

        raise DependencyMissing(exc.name or "fastapi", "server", f"retouch {args.command}") from exc
    settings = ServerSettings.from_env()
    if args.sd_inpaint:
        settings.sd_inpaint = True
    if args.workers is not None:
        settings.workers = args.workers
    app = create_app(settings=settings)
    if args.command == "studio":
        url = studio_url(args.host, args.port)
        print(f"retouch studio: {url} (Ctrl+C stops it)", file=sys.stderr)
        if not args.no_browser:
            import threading

            threading.Thread(
                target=open_when_listening, args=(url, args.host, args.port), daemon=True
            ).start()
    serve(app, host=args.host, port=args.port)
    return 0


def cmd_faces(args: argparse.Namespace) -> int:
    """The faces in a photo, through the mask operation's face kind (the one code path)."""
    from retouch.types import MaskRequest

    toolkit = _toolkit(args)
    request = MaskRequest(
        image=toolkit.load(args.image), kind="faces", options={"detector": args.detector}
    )
    result = toolkit.run(request)
    found = result.usage.get("faces", [])
    if args.json:
        print(
            json.dumps(
                {
                    "image": args.image,
                    "width": result.image.width,
                    "height": result.image.height,
                    "detector": result.usage.get("detector"),
                    "faces": found,
                },
                indent=2,
            )
        )
        return 0
    for index, face in enumerate(found):
        box = ", ".join(f"{v:g}" for v in face["box"])
        score = "" if face["score"] is None else f"  score {face['score']:.2f}"
        print(f"face {index}: box {box}{score}")
    print(f"{len(found)} face(s) ({result.usage.get('detector')})", file=sys.stderr)
    return 0


def studio_url(host: str, port: int) -> str:
    """The address a browser on this machine opens for a server listening on ``host``."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def open_when_listening(url: str, host: str, port: int, timeout: float = 60.0) -> bool:
    """Open ``url`` in the user's browser once the server accepts connections."""
    import socket
    import time
    import webbrowser

    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((target, port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        return False
    return webbrowser.open(url)


def cmd_providers(args: argparse.Namespace) -> int:
    reports = _toolkit(args).providers()
    if args.json:
        print(json.dumps([r.__dict__ for r in reports], indent=2))
        return 0
    for r in reports:
        state = "ready" if r.ready else "not ready"
        print(f"{r.name:<14} {r.kind:<7} {state:<10} {', '.join(r.operations)}")
        if r.detail:
            print(f"{'':<14} {r.detail}")
    return 0


def cmd_operations(args: argparse.Namespace) -> int:
    described = _toolkit(args).describe_operations()
    if args.name is not None:
        wanted = args.name.replace("remove-bg", "remove-background")
        described = [op for op in described if op["name"] == wanted]
        if not described:
            raise UsageError(f"no operation {args.name!r}; `retouch operations` lists them")
    if args.json:
        print(json.dumps(described if args.name is None else described[0], indent=2))
        return 0
    for op in described:
        ready = ", ".join(op["ready"]) or "no provider ready (`retouch providers` says why)"
        print(f"{op['name']:<18} {ready}")
        if args.name is None:
            continue
        print(f"\n{op['summary']}\n")
        for field in op["fields"]:
            flag = "IMAGE" if field["name"] == "image" else " ".join(field.get("cli", []))
            flag = flag or field["name"]
            limits = _field_limits(field)
            print(f"  {flag:<24} {field['type']:<6} {limits}")
            print(f"  {'':<24} {field.get('help', '')}")
    return 0


def _field_limits(field: Mapping[str, Any]) -> str:
    """A field's range, choices and default in a few words."""
    parts = []
    if "choices" in field:
        parts.append("|".join(str(c) for c in field["choices"]))
    low, high = field.get("minimum"), field.get("maximum")
    if low is not None or high is not None:
        parts.append(f"{'' if low is None else low}..{'' if high is None else high}")
    if field.get("required"):
        parts.append("required")
    elif field.get("default") not in (None, False, ""):
        parts.append(f"default {field['default']}")
    return ", ".join(parts)


def cmd_models(args: argparse.Namespace) -> int:
    from retouch.models.store import ModelStore

    store = ModelStore()
    action = args.models_command
    if action == "list":
        records = store.records(args.task)
        if args.json:
            print(json.dumps([r.__dict__ for r in records], indent=2))
            return 0
        rows = [("NAME", "TASK", "FORMAT", "STATE", "SIZE", "LICENCE")]
        for r in records:
            licence = (r.license or "") + (" (gated)" if r.gated else "")
            rows.append((r.name, r.task, r.format, r.state, _megabytes(r.size), licence))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            cells = [row[i].rjust(w) if i == 4 else row[i].ljust(w) for i, w in enumerate(widths)]
            print("  ".join([*cells, row[5]]).rstrip())
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


def cmd_batch(args: argparse.Namespace) -> int:
    from retouch.batch.commands import cmd_batch as run

    return run(args, _toolkit(args))


def cmd_recipe(args: argparse.Namespace) -> int:
    from retouch.batch.commands import cmd_recipe as run

    return run(args, _toolkit(args))


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "faces": cmd_faces,
    "providers": cmd_providers,
    "operations": cmd_operations,
    "serve": cmd_serve,
    "studio": cmd_serve,
    "models": cmd_models,
    "batch": cmd_batch,
    "recipe": cmd_recipe,
}


def _megabytes(size: int | None) -> str:
    """A model's size as people read it ("?" when the catalog does not know it)."""
    if not size:
        return "?"
    megabytes = size / 2**20
    return f"{megabytes:.0f} MB" if megabytes >= 10 else f"{megabytes:.1f} MB"


def _fail(message: str, code: int) -> NoReturn:
    print(f"retouch: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _quiet_libraries() -> None:
    """Our progress bar only: the diffusion libraries' own bars, advisories and fallback
    warnings stay off the terminal unless -v asks for them. Set before they are imported."""
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in ("diffusers", "transformers", "torch", "huggingface_hub", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("diffusers", "transformers", "torch", "huggingface_hub", "accelerate", "peft"):
        warnings.filterwarnings("ignore", module=module)


def main(argv: Sequence[str] | None = None, *, toolkit: Toolkit | None = None) -> int:
    """Run the command line; ``toolkit`` gives it other providers or operations (embedding,
    tests), else the installed ones are used."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list in (["--version"], ["-V"]):  # at once: no providers are looked at
        print(f"retouch {__version__}")
        return 0
    parser = build_parser(toolkit)
    args = parser.parse_args(args_list)
    args.toolkit = toolkit
    if args.command is None:
        parser.print_help()
        return 2
    if not getattr(args, "verbose", False):
        _quiet_libraries()
    try:
        if hasattr(args, "operation"):
            return cmd_operation(args)
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
