"""Async jobs: submit returns at once; progress, result and cancel by id.

A job's work runs on the service's executor (a worker process that a cancel stops for
certain) behind its operation's queue slot. Results go to disk at once (PNG files and the
result's metadata in a folder per job) under a bounded store: memory holds only running
work, the oldest finished jobs are evicted past ``max_bytes``, and each is deleted ``ttl``
seconds after it finished. A server restarted on the same folder answers its finished jobs
again and marks the ones it was running failed, saying why. Jobs belong to the API key that
made them: another key gets 404, as for an id that never existed. Expired ids answer 410.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from retouch import imageio
from retouch.errors import Cancelled
from retouch.results import ImageResult
from retouch.server.errors import HTTPProblem, for_exception
from retouch.server.limits import Limiter
from retouch.server.workers import Executor, Task
from retouch.types import Progress

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ENDED = ("succeeded", "failed", "cancelled")
Encode = Callable[[ImageResult, int], bytes]


@dataclass
class Job:
    id: str
    operation: str
    owner: str = ""
    status: Status = "queued"
    created: float = field(default_factory=time.time)
    finished: float | None = None
    progress: Progress | None = None
    result: dict[str, Any] | None = None
    """The result's metadata (no pixels: the images are files in the store)."""
    images: int = 0
    error: dict[str, Any] | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    version: int = 0
    """Bumped on every change, so event streams send only news."""

    def describe(self, base_url: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "job",
            "operation": self.operation,
            "status": self.status,
            "created": int(self.created),
        }
        if self.progress is not None:
            p = self.progress
            out["progress"] = {
                "stage": p.stage,
                "step": p.step,
                "total": p.total,
                "fraction": round(p.fraction, 4),
            }
        if self.result is not None:
            meta = dict(self.result)
            meta["images"] = [
                {**image, "url": f"{base_url}/v1/jobs/{self.id}/images/{index}"}
                for index, image in enumerate(meta["images"])
            ]
            out["result"] = meta
        if self.error is not None:
            out["error"] = self.error
        return out

    def record(self) -> dict[str, Any]:
        """What goes to disk."""
        return {
            "id": self.id,
            "operation": self.operation,
            "owner": self.owner,
            "status": self.status,
            "created": self.created,
            "finished": self.finished,
            "result": self.result,
            "images": self.images,
            "error": self.error,
        }


class JobStore:
    """Finished jobs on disk: ``ROOT/<id>/job.json`` and ``ROOT/<id>/<n>.png``."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def write(self, job: Job, images: list[bytes] | None = None) -> None:
        folder = self.folder(job.id)
        folder.mkdir(exist_ok=True)
        for index, data in enumerate(images or []):
            imageio.write_bytes_atomic(folder / f"{index}.png", data, overwrite=True)
        imageio.write_bytes_atomic(
            folder / "job.json", json.dumps(job.record(), default=str).encode(), overwrite=True
        )

    def image(self, job_id: str, index: int) -> Path:
        return self.folder(job_id) / f"{index}.png"

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def load(self) -> list[dict[str, Any]]:
        records = []
        for path in sorted(self.root.glob("*/job.json")):
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                shutil.rmtree(path.parent, ignore_errors=True)
        return records

    def size(self, job_id: str) -> int:
        return sum(p.stat().st_size for p in self.folder(job_id).glob("*") if p.is_file())


class JobManager:
    def __init__(
        self,
        limiter: Limiter,
        executor: Executor,
        store: JobStore,
        encode: Encode,
        *,
        ttl: float,
        max_jobs: int,
    ) -> None:
        self.limiter = limiter
        self.executor = executor
        self.store = store
        self.encode = encode
        self.ttl = ttl
        self.max_jobs = max_jobs
        self.jobs: dict[str, Job] = {}
        self.sizes: OrderedDict[str, int] = OrderedDict()
        """Bytes on disk of each finished job, oldest first (eviction order)."""
        self.expired: OrderedDict[str, float] = OrderedDict()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.outcomes: dict[str, int] = {"succeeded": 0, "failed": 0, "cancelled": 0}
        self.closing = False

    def restore(self) -> None:
        """Jobs from a previous run of the server on the same store."""
        for record in sorted(self.store.load(), key=lambda r: r.get("finished") or 0):
            job = Job(
                id=str(record["id"]),
                operation=str(record["operation"]),
                owner=str(record.get("owner", "")),
                status=record["status"],
                created=float(record["created"]),
                finished=record.get("finished"),
                result=record.get("result"),
                images=int(record.get("images", 0)),
                error=record.get("error"),
            )
            if job.status not in ENDED:
                job.status, job.finished = "failed", time.time()
                job.error = {
                    "message": "the server restarted while this job was queued or running; "
                    "submit it again",
                    "type": "server_restarted",
                    "param": None,
                    "code": "server_restarted",
                    "status": 503,
                }
                self.store.write(job)
            self.jobs[job.id] = job
            self.sizes[job.id] = self.store.size(job.id)
        self.sweep()

    # --- lifecycle ---------------------------------------------------------------------------

    def sweep(self) -> None:
        now = time.time()
        for job_id, job in list(self.jobs.items()):
            if job.finished is not None and now - job.finished > self.ttl:
                self._forget(job_id, now)
        while len(self.expired) > 10 * self.max_jobs:
            self.expired.popitem(last=False)

    def _forget(self, job_id: str, now: float) -> None:
        self.jobs.pop(job_id, None)
        self.sizes.pop(job_id, None)
        self.store.delete(job_id)
        self.expired[job_id] = now

    def _bound(self) -> None:
        """Evict the oldest finished jobs until the store is within its size."""
        while self.sizes and sum(self.sizes.values()) > self.store.max_bytes:
            oldest = next(iter(self.sizes))
            self._forget(oldest, time.time())

    @property
    def active(self) -> int:
        return sum(1 for j in self.jobs.values() if j.finished is None)

    def admit(self) -> None:
        """Refuse a new job before its body is read when the server cannot take it."""
        self.sweep()
        if self.closing:
            raise HTTPProblem(503, "the server is shutting down", "shutting_down")
        if self.active >= self.max_jobs:
            raise HTTPProblem(
                429,
                f"{self.active} jobs are queued or running; retry later",
                "rate_limit_error",
                headers={"Retry-After": "5"},
            )

    def submit(self, operation: str, task: Task, *, owner: str) -> Job:
        self.admit()
        job = Job(id="job_" + secrets.token_hex(12), operation=operation, owner=owner)
        self.jobs[job.id] = job
        self.tasks[job.id] = asyncio.create_task(self._run(job, task))
        return job

    async def finished(self, operation: str, result: ImageResult, *, owner: str) -> Job:
        """A finished job holding a result made elsewhere (for URL responses)."""
        self.sweep()
        job = Job(id="job_" + secrets.token_hex(12), operation=operation, owner=owner)
        self.jobs[job.id] = job
        await self._keep(job, result)
        job.status, job.finished = "succeeded", time.time()
        self.store.write(job)
        self._account(job)
        return job

    async def _keep(self, job: Job, result: ImageResult) -> None:
        encoded = [
            await asyncio.to_thread(self.encode, result, i) for i in range(len(result.images))
        ]
        job.result, job.images = result.metadata(), len(encoded)
        await asyncio.to_thread(self.store.write, job, encoded)

    def _account(self, job: Job) -> None:
        self.sizes[job.id] = self.store.size(job.id)
        self._bound()

    async def _run(self, job: Job, task: Task) -> None:
        def report(progress: Progress) -> None:
            job.progress = progress
            job.version += 1

        try:
            async with self.limiter.slot(task.operation):
                if job.cancel.is_set():
                    raise Cancelled(f"job {job.id} was cancelled before it started")
                job.status = "running"
                job.version += 1
                result = await self.executor.run(task, report, job.cancel)
                await self._keep(job, result)
                job.status = "succeeded"
        except Cancelled:
            job.status = "cancelled"
        except Exception as exc:  # every failure becomes the job's error, never a crash
            status, body, _ = for_exception(exc)
            job.status = "failed"
            job.error = {**body["error"], "status": status}
        finally:
            job.finished = time.time()
            self.outcomes[job.status] = self.outcomes.get(job.status, 0) + 1
            self.store.write(job)
            self._account(job)
            job.version += 1
            self.tasks.pop(job.id, None)

    # --- reading and cancelling ------------------------------------------------------------------

    def get(self, job_id: str, owner: str | None) -> Job:
        """The job, for its owner (``None``: anyone, for a signed link)."""
        self.sweep()
        job = self.jobs.get(job_id)
        if job is not None and (owner is None or job.owner == owner):
            return job
        if job is None and job_id in self.expired:
            raise HTTPProblem(
                410,
                f"job {job_id} finished more than {int(self.ttl)} s ago and its results were deleted",
                "expired",
            )
        raise HTTPProblem(404, f"no job {job_id}", "not_found")

    def cancel(self, job_id: str, owner: str | None) -> Job:
        job = self.get(job_id, owner)
        if job.finished is None:
            job.cancel.set()
            if job.status == "queued":
                job.status = "cancelled"
            job.version += 1
        return job

    async def events(
        self, job_id: str, owner: str | None, base_url: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Every change of the job until it ends; the last event is its final state."""
        seen = -1
        while True:
            job = self.get(job_id, owner)
            if job.version != seen:
                seen = job.version
                yield job.describe(base_url)
            if job.finished is not None:
                return
            await asyncio.sleep(0.05)

    async def shutdown(self, grace: float) -> None:
        """New jobs are refused; queued ones are cancelled; running ones get ``grace``
        seconds to finish, then are cancelled (their workers stopped)."""
        self.closing = True
        for job in self.jobs.values():
            if job.status == "queued":
                job.cancel.set()
        pending = list(self.tasks.values())
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for job_id, task in list(self.tasks.items()):
                if task in still:
                    self.jobs[job_id].cancel.set()
            if still:
                await asyncio.wait(still, timeout=grace + 5)

    @property
    def queue_depth(self) -> int:
        return sum(1 for j in self.jobs.values() if j.status == "queued")
