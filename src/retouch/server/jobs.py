"""Async jobs: submit returns at once; progress, result and cancel by id.

A job runs its work in a worker thread behind the model's queue slot. Cancel before it starts
marks it cancelled; cancel while running makes the next progress report raise Cancelled.
Finished jobs are kept ``ttl`` seconds, then forgotten; their ids are remembered a while
longer so "expired" (410) and "never existed" (404) are different answers.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from retouch.errors import Cancelled
from retouch.results import ImageResult
from retouch.server.errors import HTTPProblem, for_exception
from retouch.server.limits import Limiter
from retouch.types import Progress, ProgressCallback

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Work = Callable[[ProgressCallback], ImageResult]


@dataclass
class Job:
    id: str
    operation: str
    status: Status = "queued"
    created: float = field(default_factory=time.time)
    finished: float | None = None
    progress: Progress | None = None
    result: ImageResult | None = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
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
            meta = self.result.metadata()
            meta["images"] = [
                {**image, "url": f"{base_url}/v1/jobs/{self.id}/images/{index}"}
                for index, image in enumerate(meta["images"])
            ]
            out["result"] = meta
        if self.error is not None:
            out["error"] = self.error
        return out


class JobManager:
    def __init__(self, limiter: Limiter, *, ttl: float, max_jobs: int) -> None:
        self.limiter = limiter
        self.ttl = ttl
        self.max_jobs = max_jobs
        self.jobs: dict[str, Job] = {}
        self.expired: OrderedDict[str, float] = OrderedDict()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.outcomes: dict[str, int] = {"succeeded": 0, "failed": 0, "cancelled": 0}

    def sweep(self) -> None:
        now = time.time()
        for job_id, job in list(self.jobs.items()):
            if job.finished is not None and now - job.finished > self.ttl:
                del self.jobs[job_id]
                self.expired[job_id] = now
        while len(self.expired) > 10 * self.max_jobs:
            self.expired.popitem(last=False)

    def submit(self, operation: str, lane: str, work: Work) -> Job:
        self.sweep()
        active = sum(1 for j in self.jobs.values() if j.finished is None)
        if active >= self.max_jobs:
            raise HTTPProblem(
                503,
                f"{active} jobs are queued or running; retry later",
                "server_busy",
                headers={"Retry-After": "5"},
            )
        job = Job(id="job_" + secrets.token_hex(12), operation=operation)
        self.jobs[job.id] = job
        self.tasks[job.id] = asyncio.create_task(self._run(job, lane, work))
        return job

    def finished(self, operation: str, result: ImageResult) -> Job:
        """A finished job holding a result made elsewhere (for URL responses)."""
        self.sweep()
        job = Job(
            id="job_" + secrets.token_hex(12),
            operation=operation,
            status="succeeded",
            result=result,
            finished=time.time(),
        )
        self.jobs[job.id] = job
        return job

    async def _run(self, job: Job, lane: str, work: Work) -> None:
        loop = asyncio.get_running_loop()

        def report(progress: Progress) -> None:
            if job.cancel_requested:
                raise Cancelled(f"job {job.id} was cancelled")
            job.progress = progress
            loop.call_soon_threadsafe(self._touch, job)

        try:
            async with self.limiter.slot(lane):
                if job.cancel_requested:
                    raise Cancelled(f"job {job.id} was cancelled before it started")
                job.status = "running"
                self._touch(job)
                job.result = await asyncio.to_thread(work, report)
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
            self._touch(job)
            self.tasks.pop(job.id, None)

    @staticmethod
    def _touch(job: Job) -> None:
        job.version += 1

    def get(self, job_id: str) -> Job:
        self.sweep()
        if job_id in self.jobs:
            return self.jobs[job_id]
        if job_id in self.expired:
            raise HTTPProblem(
                410,
                f"job {job_id} finished more than {int(self.ttl)} s ago and its results were deleted",
                "expired",
            )
        raise HTTPProblem(404, f"no job {job_id}", "not_found")

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.finished is None:
            job.cancel_requested = True
            if job.status == "queued":
                job.status = "cancelled"
            self._touch(job)
        return job

    async def events(self, job_id: str, base_url: str) -> AsyncIterator[dict[str, Any]]:
        """Every change of the job until it finishes (polled; cheap and simple)."""
        seen = -1
        while True:
            job = self.get(job_id)
            if job.version != seen:
                seen = job.version
                yield job.describe(base_url)
            if job.finished is not None or job.status == "cancelled":
                return
            await asyncio.sleep(0.05)

    async def shutdown(self, grace: float) -> None:
        """Let running jobs finish for ``grace`` seconds; cancel the rest."""
        for job in self.jobs.values():
            if job.status == "queued":
                job.cancel_requested = True
        pending = list(self.tasks.values())
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for job_id, task in list(self.tasks.items()):
                if task in still:
                    self.jobs[job_id].cancel_requested = True
            if still:
                await asyncio.wait(still, timeout=grace)

    @property
    def queue_depth(self) -> int:
        return sum(1 for j in self.jobs.values() if j.status == "queued")
