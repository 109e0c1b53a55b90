"""``retouch batch`` and ``retouch recipe``: the command-line face of ``retouch.batch``.

Registered by ``retouch.cli.build_parser``; errors are raised as retouch errors and turned
into exit codes by ``retouch.cli`` (the one place that does).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retouch.api import Toolkit

BATCH_DESCRIPTION = """\
Run a recipe (a YAML or JSON list of steps) over many images.

INPUT is a file, a folder (every file in it, sub-folders too; the structure is kept under
OUTDIR), a glob ('shots/**/*.jpg', quoted), or a manifest: a CSV or JSONL file with an
'image' column and any of 'mask', 'prompt' or another field of the steps per row (paths
relative to the manifest). The recipe is checked in full, for every row, before the first
image runs.

Outputs are named by the recipe's 'output' template (default {stem}-{step}.{ext}) under
OUTDIR; the last step's output is written, and any step's with 'save: true' or a 'format'.
Files are written whole or not at all, and never replace a file this batch did not make
unless --force.

Resume: run the same command again. An item whose outputs exist, made by this recipe from
this input (a key in each output's metadata), is skipped; the rest run. Ctrl+C stops after
the images in flight (twice: at once); nothing half-written is left.

Each item's failure is isolated: the batch goes on (--keep-going, the default) and the
summary counts the failures and shows the first error of each kind; --fail-fast stops at the
first one. The audit log (OUTDIR/audit.jsonl, or --audit) gets one JSON line per item and
step: input and mask sha256, recipe hash, operation, provider, model, every field, seed,
timings, outputs with sha256, quality checks, error. Summarise one with
`retouch batch report LOG`.

--engine ray runs the same recipe as a Ray Data pipeline, one actor pool per step (each actor
loads its model once); pip install 'retouch[ray]'. The outputs and audit lines are the same.
"""

BATCH_EPILOG = """\
recipe example (product.yaml):
  steps:
    - operation: remove-background
    - operation: upscale
      scale: 2
    - operation: resize
      max_size: 1600
      format: webp

examples:
  retouch recipe validate product.yaml
  retouch batch product.yaml shots/ -o out/
  retouch batch erase.yaml list.csv -o cleaned/ --audit logs/erase.jsonl
  retouch batch product.yaml 'shots/*.jpg' -o out/ --engine ray --ray-address auto
  retouch batch report out/audit.jsonl

exit codes: 0 every item done (or done before); 1 some item failed; 2 bad recipe, manifest
or usage (nothing ran); 130 stopped by Ctrl+C (run again to finish)"""


def add_parsers(sub: Any) -> None:
    batch = sub.add_parser(
        "batch",
        help="run a recipe of steps over many images (resumable, with an audit log); "
        "`batch report LOG` summarises a log",
        description=BATCH_DESCRIPTION,
        epilog=BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="retouch batch RECIPE INPUT... -o OUTDIR [options]\n"
        "       retouch batch report LOG [--json]",
    )
    batch.add_argument("recipe", metavar="RECIPE", help="recipe file (.yaml, .yml or .json)")
    batch.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="files, folders, globs or manifests"
    )
    batch.add_argument("-o", "--output", metavar="OUTDIR", help="output folder (made if missing)")
    batch.add_argument(
        "--audit",
        type=Path,
        metavar="PATH",
        help="where the audit log goes (default OUTDIR/audit.jsonl); lines are appended",
    )
    batch.add_argument(
        "--force",
        action="store_true",
        help="redo every item, replacing its outputs even if they exist",
    )
    failing = batch.add_mutually_exclusive_group()
    failing.add_argument(
        "--keep-going",
        action="store_true",
        help="go on after an item fails (the default); the exit code is still 1",
    )
    failing.add_argument(
        "--fail-fast", action="store_true", help="stop after the first item that fails"
    )
    batch.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="images in flight at once with the local engine (default 1: local models use "
        "every core already; raise it for cloud providers)",
    )
    batch.add_argument(
        "--name",
        metavar="TEMPLATE",
        help="output names, e.g. '{stem}.{ext}' or '{row.sku}-{step}.{ext}' (default: the "
        "recipe's 'output', else {stem}-{step}.{ext}); also {name} and {index}",
    )
    batch.add_argument(
        "--quality", type=int, help="JPEG/WebP quality of steps that set none (default 95 / 90)"
    )
    batch.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default) or ray: a Ray Data pipeline (pip install 'retouch[ray]')",
    )
    batch.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join, e.g. auto or ray://head:10001 (default: start one here)",
    )
    batch.add_argument(
        "--ray-actors",
        type=int,
        metavar="N",
        help="most actors per step with Ray (default: the cluster's CPUs, at most 4)",
    )
    batch.add_argument(
        "--json", action="store_true", help="print the summary (or report) as JSON on stdout"
    )
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    batch.add_argument(
        "-v", "--verbose", action="store_true", help="also show the libraries' own logs"
    )
    batch.add_argument(
        "--max-pixels",
        type=int,
        default=100_000_000,
        help="refuse larger images (default 100 MP)",
    )

    recipe = sub.add_parser(
        "recipe",
        help="check a recipe (and its manifest) without running it",
        description="Check a recipe: every step's operation and fields against the "
        "declaration (the same checks and messages as the CLI and HTTP), the provider each "
        "step would use, the files it names. With INPUTs, also every manifest row and the "
        "output names.",
    )
    actions = recipe.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    validate = actions.add_parser("validate", help="check a recipe file")
    validate.add_argument("file", metavar="FILE")
    validate.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="check these inputs / manifests too"
    )
    validate.add_argument(
        "-o", "--output", metavar="OUTDIR", default="out", help="for the output names (default out)"
    )
    validate.add_argument("--json", action="store_true")


def cmd_batch(args: argparse.Namespace, toolkit: Toolkit) -> int:
    from retouch.batch.engine import BatchOptions, run_batch
    from retouch.batch.inputs import collect
    from retouch.batch.recipe import load_recipe
    from retouch.errors import InvalidRequest

    if args.recipe == "report" and not Path("report").is_file():
        return _report(args)
    if not args.inputs:
        raise InvalidRequest("give the INPUT files, folders, globs or manifests after the recipe")
    if not args.output:
        raise InvalidRequest("give the output folder with -o OUTDIR")
    if args.jobs < 1:
        raise InvalidRequest(f"--jobs must be at least 1, got {args.jobs}")
    if args.ray_actors is not None and args.ray_actors < 1:
        raise InvalidRequest(f"--ray-actors must be at least 1, got {args.ray_actors}")
    recipe = load_recipe(args.recipe, toolkit)
    output = Path(args.output)
    items = collect(args.inputs, exclude=output)
    options = BatchOptions(
        output=output,
        audit=args.audit,
        force=args.force,
        fail_fast=args.fail_fast,
        jobs=args.jobs,
        quality=args.quality,
        template=args.name,
        engine=args.engine,
        ray_address=args.ray_address,
        ray_actors=args.ray_actors,
    )
    summary = run_batch(
        recipe,
        items,
        options,
        toolkit=toolkit,
        progress=not args.quiet,
        handle_signals=True,
        notice=lambda text: print(f"\nretouch: {text}", file=sys.stderr),
    )
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    elif not args.quiet or summary.exit_code:
        print(summary.text(), file=sys.stderr)
    return summary.exit_code


def _report(args: argparse.Namespace) -> int:
    from retouch.batch.audit import report
    from retouch.errors import InvalidRequest

    if len(args.inputs) != 1:
        raise InvalidRequest("give one audit log: retouch batch report LOG")
    found = report(args.inputs[0])
    if args.json:
        print(json.dumps(found.as_dict(), indent=2))
    else:
        print(found.text())
    return 0


def cmd_recipe(args: argparse.Namespace, toolkit: Toolkit) -> int:
    from retouch.batch.engine import BatchOptions, plan
    from retouch.batch.inputs import collect
    from retouch.batch.recipe import load_recipe

    recipe = load_recipe(args.file, toolkit)
    described: list[dict[str, Any]] = []
    for step in recipe.steps:
        given = step.values.get("provider")
        try:
            provider = toolkit.provider_for(
                step.operation, given if isinstance(given, str) and "${" not in given else None
            ).info.name
        except Exception as exc:  # shown, not fatal: the recipe itself is valid
            provider = f"none ready ({exc})"
        described.append(
            {
                "step": step.number,
                "name": step.name,
                "operation": step.operation,
                "provider": provider,
                "fields": dict(step.values),
                "saved": recipe.saved(step),
                "format": step.format,
                "checks": {k: v for k, v in vars(step.checks).items() if v is not None},
            }
        )
    result: dict[str, Any] = {
        "recipe": recipe.source,
        "sha256": recipe.digest,
        "steps": described,
        "columns": recipe.references(),
    }
    if args.inputs:
        output = Path(args.output)
        plans = plan(recipe, collect(args.inputs, exclude=output), BatchOptions(output), toolkit)
        result["items"] = len(plans)
        result["outputs"] = sum(len(p.files) for p in plans)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"{recipe.source}: valid, {len(recipe.steps)} step(s), sha256 {recipe.digest[:12]}")
    for d in described:
        fields = ", ".join(f"{k}={v}" for k, v in d["fields"].items()) or "defaults"
        saved = f" -> {d['format'] or 'saved'}" if d["saved"] else ""
        print(f"  {d['step']}. {d['name']} [{d['provider']}] {fields}{saved}")
    if result["columns"]:
        print(f"  manifest columns used: {', '.join(result['columns'])}")
    if args.inputs:
        print(f"  {result['items']} item(s), {result['outputs']} output file(s) planned")
    return 0
