"""Batches and recipes: many images through chained steps, resumable, with an audit log.

    from retouch.api import Toolkit
    from retouch.batch import BatchOptions, collect, load_recipe, run_batch

    toolkit = Toolkit()
    recipe = load_recipe("product.yaml", toolkit)          # checked in full, before any image
    summary = run_batch(recipe, collect(["shots/"]), BatchOptions(output=Path("out")))
    print(summary.text())                                   # counts, first error of each kind

The same as ``retouch batch product.yaml shots/ -o out/``. ``retouch.batch.recipe`` holds the
format, ``retouch.batch.engine`` planning, resume and the local engine, ``ray_engine`` the Ray
Data pipeline, ``checks`` the quality checks and ``audit`` the log and its report.
"""

from __future__ import annotations

from retouch.batch.audit import Report, report
from retouch.batch.engine import BatchOptions, ItemReport, Summary, run_batch
from retouch.batch.inputs import Item, collect
from retouch.batch.recipe import Checks, Recipe, RecipeError, Step, load_recipe

__all__ = [
    "BatchOptions",
    "Checks",
    "Item",
    "ItemReport",
    "Recipe",
    "RecipeError",
    "Report",
    "Step",
    "Summary",
    "collect",
    "load_recipe",
    "report",
    "run_batch",
]
