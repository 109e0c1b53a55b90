"""Where the service's work runs, so that every piece of it can be stopped.

``ProcessExecutor`` (what ``retouch serve`` uses): a pool of worker processes
(``RETOUCH_WORKERS``), each with its own Toolkit whose models stay loaded between requests,
optionally under an address-space limit (``RETOUCH_WORKER_MEMORY``). A task is an operation
and its flat values (images as encoded bytes): the worker decodes, runs and sends back the
result and its progress. A cancel (timeout, client gone, ``DELETE`` of a running job,
shutdown) is first asked of the work (the next progress report raises ``Cancelled``); a
worker that has not stopped within ``stop_grace`` seconds is killed and replaced, so its CPU
and memory come back whatever it was doing (PatchMatch and model inference report no
progress while they run).

``ThreadExecutor``: the same in threads of this process, for an app embedded in another
program and for tests; a cancel only stops work at its next progress report.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

from retouch.errors import Cancelled, RetouchError
from retouch.results import ImageResult
from retouch.server.errors import HTTPProblem, for_exception
from retouch.types import Progress

log = logging.getLogger("retouch.server")
OnProgress = Callable[[Progress], None]


@dataclass(frozen=True)
class Task:
    """One operation to run: its name and flat values as ``Toolkit.build`` takes them."""

    operation: str
    values: dict[str, Any]


class Executor(Protocol):
    async def start(self) -> None: ...

    async def run(self, task: Task, progress: OnProgress, cancel: asyncio.Event) -> ImageResult:
        """The result, or Cancelled once ``cancel`` is set and the work has stopped."""
        ...

    async def close(self) -> None: ...


def _run_task(toolkit: Any, task: Task, progress: Callable[[Progress], None]) -> ImageResult:
    result: ImageResult = toolkit.run(toolkit.build(task.operation, task.values), progress=progress)
    return result


class ThreadExecutor:
    """Work in threads of this process; a cancel stops it at its next progress report."""

    def __init__(self, toolkit: Any) -> None:
        self.toolkit = toolkit

    async def start(self) -> None:
        return None

    async def run(self, task: Task, progress: OnProgress, cancel: asyncio.Event) -> ImageResult:
        loop = asyncio.get_running_loop()

        def report(p: Progress) -> None:
            if cancel.is_set():
                raise Cancelled("the work was cancelled")
            loop.call_soon_threadsafe(progress, p)

        return await asyncio.to_thread(_run_task, self.toolkit, task, report)

    async def close(self) -> None:
        return None


# --- worker processes ------------------------------------------------------------------------


def _worker_main(conn: Connection, toolkit_bytes: bytes, memory_limit: int | None) -> None:
    """A worker's life: build the toolkit once, then run tasks until the pipe closes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the server's to handle
    with contextlib.suppress(OSError):
        os.nice(10)  # the work yields the CPU to the server's own loop (/health answers fast)
    if memory_limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    toolkit = pickle.loads(toolkit_bytes)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != "run":
            continue  # a cancel for work that already finished
        _, task_id, task = message

        def report(p: Progress, task_id: int = task_id) -> None:
            while conn.poll():
                asked = conn.recv()
                if asked[0] == "cancel" and asked[1] == task_id:
                    raise Cancelled("the work was cancelled")
            conn.send(("progress", task_id, p.stage, p.step, p.total))

        try:
            result = _run_task(toolkit, task, report)
            conn.send(("result", task_id, result))
        except Exception as exc:  # every failure goes back as the error it maps to
            if isinstance(exc, MemoryError):
                exc = HTTPProblem(
                    413,
                    "this request needs more memory than a worker may use "
                    "(RETOUCH_WORKER_MEMORY); send a smaller image or ask for a smaller result",
                    "invalid_request_error",
                )
            status, body, headers = for_exception(exc)
            if status == 500:
                log.error("unexpected error in a worker", exc_info=exc)
            conn.send(("error", task_id, status, body, headers, isinstance(exc, Cancelled)))


@dataclass(eq=False)  # workers are told apart by identity (kept in a set)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    inbox: asyncio.Queue[tuple[Any, ...]] = field(default_factory=asyncio.Queue)
    reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid


class WorkerFailed(RetouchError):
    """A worker process ended while it ran a task (killed from outside, or crashed)."""


class ProcessExecutor:
    def __init__(
        self,
        toolkit: Any,
        size: int,
        *,
        memory_limit: int | None = None,
        stop_grace: float = 1.0,
    ) -> None:
        self.toolkit_bytes = pickle.dumps(toolkit)
        self.size = max(1, size)
        self.memory_limit = memory_limit
        self.stop_grace = stop_grace
        self.context = multiprocessing.get_context("spawn")  # no fork with threads running
        self.idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self.workers: set[_Worker] = set()
        self.ids = itertools.count(1)
        self.closing = False
        self.replacing: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        self.closing = False
        started = await asyncio.gather(*(asyncio.to_thread(self._spawn) for _ in range(self.size)))
        for worker in started:
            self._listen(worker)
            self.idle.put_nowait(worker)

    def _spawn(self) -> _Worker:
        parent, child = self.context.Pipe()
        process = self.context.Process(
            target=_worker_main,
            args=(child, self.toolkit_bytes, self.memory_limit),
            daemon=True,
            name="retouch-worker",
        )
        process.start()
        child.close()
        worker = _Worker(process, parent)
        self.workers.add(worker)
        return worker

    def _listen(self, worker: _Worker) -> None:
        """A thread per worker moves its messages onto the event loop (a recv never blocks
        the loop, and a worker that dies is noticed at once)."""
        loop = asyncio.get_running_loop()

        def read() -> None:
            while True:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    message = ("dead",)
                try:
                    loop.call_soon_threadsafe(worker.inbox.put_nowait, message)
                except RuntimeError:  # the loop is gone: the server stopped
                    return
                if message[0] == "dead":
                    return

        worker.reader = threading.Thread(target=read, daemon=True, name="retouch-worker-reader")
        worker.reader.start()

    async def run(self, task: Task, progress: OnProgress, cancel: asyncio.Event) -> ImageResult:
        worker = await self.idle.get()
        task_id = next(self.ids)
        healthy = True
        try:
            # Off the event loop: the images ride along, and a pipe takes 64 KB at a time.
            await asyncio.to_thread(worker.conn.send, ("run", task_id, task))
            while True:
                message = await self._next(worker, cancel)
                if message is None:  # cancelled: ask, then make sure
                    healthy = await self._stop(worker, task_id)
                    raise Cancelled("the work was cancelled")
                kind = message[0]
                if kind == "dead":
                    healthy = False
                    raise WorkerFailed("the worker running this request stopped unexpectedly")
                if message[1] != task_id:
                    continue  # left over from a task that was cancelled
                if kind == "progress":
                    progress(Progress(message[2], message[3], message[4]))
                elif kind == "result":
                    result: ImageResult = message[2]
                    return result
                elif kind == "error":
                    if message[5]:
                        raise Cancelled("the work was cancelled")
                    raise _Mapped(message[2], message[3], message[4])
        except asyncio.CancelledError:  # the caller itself was cancelled (shutdown): stop it
            healthy = False
            self._kill(worker)
            raise
        finally:
            if healthy and not self.closing:
                self.idle.put_nowait(worker)
            else:
                self._kill(worker)
                replacing = asyncio.ensure_future(self._replace(worker))  # we may be cancelled
                self.replacing.add(replacing)
                replacing.add_done_callback(self.replacing.discard)

    async def _next(self, worker: _Worker, cancel: asyncio.Event) -> tuple[Any, ...] | None:
        if cancel.is_set():
            return None
        getting = asyncio.ensure_future(worker.inbox.get())
        waiting = asyncio.ensure_future(cancel.wait())
        done, _ = await asyncio.wait({getting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if getting in done:
            waiting.cancel()
            return getting.result()
        getting.cancel()
        return None

    async def _stop(self, worker: _Worker, task_id: int) -> bool:
        """Ask the work to stop; kill the worker if it has not within the grace. Whether
        the worker is still usable."""
        try:
            worker.conn.send(("cancel", task_id))
        except OSError:
            return False
        deadline = asyncio.get_running_loop().time() + self.stop_grace
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                message = await asyncio.wait_for(worker.inbox.get(), left)
            except asyncio.TimeoutError:
                break
            if message[0] == "dead":
                return False
            if message[0] in ("result", "error") and message[1] == task_id:
                return True
        self._kill(worker)
        return False

    def _kill(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)

    async def _replace(self, worker: _Worker) -> None:
        self._kill(worker)
        worker.conn.close()
        self.workers.discard(worker)
        if self.closing:
            return
        fresh = await asyncio.to_thread(self._spawn)
        self._listen(fresh)
        self.idle.put_nowait(fresh)

    async def close(self) -> None:
        self.closing = True
        for worker in list(self.workers):
            with contextlib.suppress(OSError):
                worker.conn.close()
            await asyncio.to_thread(self._stop_process, worker)
        self.workers.clear()

    @staticmethod
    def _stop_process(worker: _Worker) -> None:
        worker.process.join(timeout=2)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.pid is not None]


class _Mapped(HTTPProblem):
    """An error the worker already mapped to its HTTP answer."""

    def __init__(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
        error = payload.get("error", {})
        super().__init__(
            status,
            str(error.get("message", "")),
            str(error.get("type", "server_error")),
            headers=headers,
            param=error.get("param"),
        )


def default_workers() -> int:
    """What ``retouch serve`` uses: one per core, at most two (each holds its own models)."""
    return max(1, min(2, os.cpu_count() or 1))
