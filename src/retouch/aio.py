"""The async API: every operation as a coroutine, and ``amap`` / ``map`` over many items.

    from retouch.aio import AsyncToolkit, amap

    async with AsyncToolkit() as tk:
        result = await tk.erase("photo.jpg", "mask.png")
        outcomes = await amap("upscale", [{"image": p, "scale": 2} for p in paths], concurrency=8)

Work runs in threads, so the event loop never waits on it: requests for local providers on
a pool sized to the cores (they are CPU-bound; more threads would only queue), requests for
remote providers on a pool of their own sized for waiting on the network (none of retouch's
remote providers has an asyncio client yet, so each call holds a thread while it waits).
``Toolkit.run`` is the one code path: the checks, crops, compositing and metadata are the
same as the synchronous API's. Cancelling an awaiting task does not stop a call already
running in its thread; its result is dropped.

``amap(operation, items)`` builds each item (a mapping of flat field values, as recipes and
the HTTP API name them, or a ready request) and runs it, at most ``concurrency`` at once,
and returns one ``Outcome`` per item in input order: its result, or its error (one item's
failure never stops the others). ``map`` is the same for synchronous callers.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeAlias

from retouch.api import Toolkit
from retouch.errors import ConfigurationError, RetouchError
from retouch.results import ImageResult
from retouch.types import Operation, ProgressCallback, Request, no_progress

if TYPE_CHECKING:
    from retouch.types import Provider

__all__ = ["AsyncToolkit", "Item", "Outcome", "amap", "map"]

P = ParamSpec("P")
Item: TypeAlias = "Mapping[str, Any] | Request"
"""One ``amap`` item: flat field values (``{"image": "a.png", "scale": 2}``) or a request."""
REMOTE_WORKERS = 64
"""Threads for remote providers: each only waits on the network."""


@dataclass(frozen=True)
class Outcome:
    """One item of ``amap``: its result, or the error it met."""

    index: int
    result: ImageResult | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> ImageResult:
        """The result, or the item's error raised."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _coroutine(
    method: Callable[Concatenate[Toolkit, P], ImageResult], operation: Operation
) -> Callable[Concatenate[AsyncToolkit, P], Coroutine[Any, Any, ImageResult]]:
    """``Toolkit.<operation>`` as a coroutine with the very same parameters."""

    async def call(self: AsyncToolkit, /, *args: P.args, **kwargs: P.kwargs) -> ImageResult:
        provider = kwargs.get("provider")
        work = functools.partial(method, self.toolkit, *args, **kwargs)
        return await self._in_thread(
            operation, provider if isinstance(provider, str) else None, work
        )

    call.__name__ = method.__name__
    call.__qualname__ = f"AsyncToolkit.{method.__name__}"
    call.__doc__ = method.__doc__
    return call


class AsyncToolkit:
    """A ``Toolkit`` whose operations are coroutines. Close it (``async with``, or
    ``await aclose()``) to stop its threads."""

    def __init__(
        self,
        toolkit: Toolkit | None = None,
        *,
        local_workers: int | None = None,
        remote_workers: int = REMOTE_WORKERS,
    ) -> None:
        self.toolkit = toolkit if toolkit is not None else Toolkit()
        self.local_workers = local_workers or os.cpu_count() or 1
        self.remote_workers = remote_workers
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._kinds: dict[tuple[str, str | None], str] = {}

    # --- the operations: Toolkit's own, awaited ------------------------------------------------

    erase = _coroutine(Toolkit.erase, "erase")
    inpaint = _coroutine(Toolkit.inpaint, "inpaint")
    outpaint = _coroutine(Toolkit.outpaint, "outpaint")
    edit = _coroutine(Toolkit.edit, "edit")
    variations = _coroutine(Toolkit.variations, "variations")
    upscale = _coroutine(Toolkit.upscale, "upscale")
    resize = _coroutine(Toolkit.resize, "resize")
    adjust = _coroutine(Toolkit.adjust, "adjust")
    remove_background = _coroutine(Toolkit.remove_background, "remove-background")
    restore_faces = _coroutine(Toolkit.restore_faces, "restore-faces")
    stylize = _coroutine(Toolkit.stylize, "stylize")

    async def run(
        self,
        request: Request,
        *,
        provider: str | None = None,
        progress: ProgressCallback = no_progress,
    ) -> ImageResult:
        """``Toolkit.run`` awaited."""
        chosen = provider or request.provider
        work = functools.partial(self.toolkit.run, request, provider=provider, progress=progress)
        return await self._in_thread(request.operation, chosen, work)

    async def build_and_run(
        self, operation: Operation, item: Item, *, progress: ProgressCallback = no_progress
    ) -> ImageResult:
        """Run flat values (or a request) of ``operation``: what ``amap`` does per item."""
        if isinstance(item, Mapping):
            provider = item.get("provider")

            def work() -> ImageResult:
                return self.toolkit.run(self.toolkit.build(operation, item), progress=progress)

            return await self._in_thread(
                operation, provider if isinstance(provider, str) else None, work
            )
        if item.operation != operation:
            raise ConfigurationError(f"amap over {operation} was given a {item.operation} request")
        return await self.run(item, progress=progress)

    # --- threads --------------------------------------------------------------------------------

    def _kind(self, operation: Operation, provider: str | None) -> str:
        """local or remote: which pool a request goes to (the named provider, else the best
        ready one for the operation)."""
        key = (operation, provider)
        if key not in self._kinds:
            try:
                chosen: Provider = self.toolkit.provider_for(operation, provider)
                self._kinds[key] = chosen.info.kind
            except RetouchError:
                self._kinds[key] = "local"  # run() raises the same error in its thread
        return self._kinds[key]

    def _pool(self, kind: str) -> ThreadPoolExecutor:
        pool = self._pools.get(kind)
        if pool is None:
            size = self.remote_workers if kind == "remote" else self.local_workers
            pool = self._pools[kind] = ThreadPoolExecutor(
                max_workers=size, thread_name_prefix=f"retouch-{kind}"
            )
        return pool

    async def _in_thread(
        self, operation: Operation, provider: str | None, work: Callable[[], ImageResult]
    ) -> ImageResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(self._kind(operation, provider)), work)

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> AsyncToolkit:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def amap(
    operation: Operation,
    items: Iterable[Item],
    *,
    concurrency: int = 8,
    toolkit: Toolkit | AsyncToolkit | None = None,
    progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``operation`` on every item, at most ``concurrency`` at once; one ``Outcome`` per
    item, in input order. ``progress`` is told of each outcome as it arrives."""
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, got {concurrency}")
    owned = not isinstance(toolkit, AsyncToolkit)
    runner = toolkit if isinstance(toolkit, AsyncToolkit) else AsyncToolkit(toolkit)
    pending = enumerate(items)
    outcomes: dict[int, Outcome] = {}

    async def worker() -> None:
        for index, item in pending:  # one shared iterator: each item is taken once
            try:
                outcome = Outcome(index, result=await runner.build_and_run(operation, item))
            except Exception as exc:  # the item's error is its outcome; the rest go on
                outcome = Outcome(index, error=exc)
            outcomes[index] = outcome
            if progress is not None:
                progress(outcome)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        if owned:
            await runner.aclose()
    return [outcomes[i] for i in sorted(outcomes)]


def map(  # shadows builtins.map inside this module only: retouch.map, as asked
    operation: Operation,
    items: Iterable[Item],
    *,
    concurrency: int = 8,
    toolkit: Toolkit | None = None,
    progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """``amap`` for synchronous code (from inside an event loop, await ``amap`` instead)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(
            amap(operation, items, concurrency=concurrency, toolkit=toolkit, progress=progress)
        )
    raise ConfigurationError("retouch.map was called inside an event loop; use await retouch.amap")
