"""The same recipe as a Ray Data pipeline (``pip install 'retouch[ray]'``).

    read (decode each input on a worker)
      -> map_batches(StepWorker, step 1)   one actor pool per step; each actor builds its
      -> map_batches(StepWorker, step 2)   own Toolkit, so a step's model is loaded once per
      -> ...                               actor and reused for every item it is given
      -> the driver: audit lines, summary  (each step's actor writes that step's outputs,
                                            with the same names, bytes and metadata as the
                                            local engine: both call ``engine.run_step``)

Resume, planning and the audit log stay in the driver (``engine.run_batch``); only the items
to do are shipped. Actors ask for a fraction of a CPU sized so that every step's pool fits
on the cluster at once: a 2-core machine runs a 5-step recipe without waiting on itself.
On a cluster the inputs and the output folder must be on storage every node sees, and
retouch (with the same providers and models) installed on every node.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from retouch.errors import ConfigurationError, DependencyMissing

if TYPE_CHECKING:
    from retouch.api import Toolkit
    from retouch.batch.engine import BatchContext, ItemState

DEFAULT_MAX_ACTORS = 4


def _toolkit_factory(toolkit: Toolkit) -> Callable[[], Toolkit]:
    from retouch.api import Toolkit

    return functools.partial(Toolkit, max_pixels=toolkit.max_pixels)


def _read(batch: dict[str, Any], max_pixels: int | None) -> dict[str, Any]:
    """Decode each input (as ``Toolkit.load`` does); one that does not decode is left for
    step 1 to report, so its audit line is the local engine's."""
    from retouch import imageio

    out = []
    for blob in batch["state"]:
        state: ItemState = pickle.loads(blob)
        try:
            state.picture = imageio.load_image(state.plan.item.image, max_pixels=max_pixels)
        except Exception:  # step 1 reads it again and records why it failed
            state.picture = None
        out.append(pickle.dumps(state))
    return {"state": np.array(out, dtype=object)}


class StepWorker:
    """One actor of a step's pool: a Toolkit of its own (models loaded once, then kept)."""

    def __init__(self, ctx: BatchContext, number: int, factory: Callable[[], Toolkit]) -> None:
        self.ctx = ctx
        self.step = ctx.recipe.steps[number - 1]
        self.toolkit = factory()
        provider = self.step.values.get("provider")
        # resolve the provider now (imports its runtime); its model loads with the first item.
        # Not here on this node: each item's step fails and says why.
        with contextlib.suppress(Exception):
            self.toolkit.provider_for(
                self.step.operation, provider if isinstance(provider, str) else None
            )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from retouch.batch.engine import run_step

        out = []
        for blob in batch["state"]:
            state: ItemState = pickle.loads(blob)
            run_step(self.ctx, self.toolkit, state, self.step)
            if self.step.number == len(self.ctx.recipe.steps) or state.failed:
                state.picture = None  # nothing more to carry back to the driver
            out.append(pickle.dumps(state))
        return {"state": np.array(out, dtype=object)}


def run_on_ray(
    ctx: BatchContext,
    todo: Sequence[ItemState],
    record: Callable[[ItemState], None],
    stop: threading.Event,
    toolkit: Toolkit,
    factory: Callable[[], Toolkit] | None = None,
) -> None:
    """Run ``todo`` through one actor pool per step; ``record`` each item as it comes back."""
    if not todo:
        return
    try:
        import ray
        import ray.data
        from ray.data import ActorPoolStrategy
    except ImportError as exc:
        raise DependencyMissing("ray", "ray", "--engine ray") from exc
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(
                address=ctx.options.ray_address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        except Exception as exc:
            where = ctx.options.ray_address or "a local Ray instance"
            raise ConfigurationError(
                f"could not start or join {where}: {exc}; check --ray-address, or run "
                "without --engine ray"
            ) from exc
    try:
        data_context = ray.data.DataContext.get_current()
        data_context.enable_progress_bars = False
        data_context.print_on_execution_start = False
        make = factory or _toolkit_factory(toolkit)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        steps = len(ctx.recipe.steps)
        actors = ctx.options.ray_actors or max(1, min(DEFAULT_MAX_ACTORS, int(cpus)))
        # every step's pool at its largest, and the read tasks, fit at once: no deadlock
        share = max(0.01, min(1.0, cpus / (steps * actors + actors)))
        dataset = ray.data.from_items([{"state": pickle.dumps(s)} for s in todo])
        dataset = dataset.map_batches(
            _read, fn_kwargs={"max_pixels": toolkit.max_pixels}, batch_size=1, num_cpus=share
        )
        for step in ctx.recipe.steps:
            dataset = dataset.map_batches(
                StepWorker,
                fn_constructor_args=(ctx, step.number, make),
                batch_size=1,
                compute=ActorPoolStrategy(min_size=1, max_size=actors),
                num_cpus=share,
            )
        for row in dataset.iter_rows():
            record(pickle.loads(row["state"]))
            if stop.is_set():
                break
    finally:
        if started_here:
            ray.shutdown()
