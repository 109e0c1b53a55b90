"""A bounded queue with a concurrency limit per model, so a burst waits or is refused
(429 with Retry-After), never runs the machine out of memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from retouch.server.errors import HTTPProblem


@dataclass
class Lane:
    semaphore: asyncio.Semaphore
    waiting: int = 0
    running: int = 0


@dataclass
class Limiter:
    concurrency: int
    queue_size: int
    lanes: dict[str, Lane] = field(default_factory=dict)

    def lane(self, key: str) -> Lane:
        if key not in self.lanes:
            self.lanes[key] = Lane(asyncio.Semaphore(self.concurrency))
        return self.lanes[key]

    @property
    def depth(self) -> int:
        return sum(lane.waiting for lane in self.lanes.values())

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        lane = self.lane(key)
        if lane.running >= self.concurrency and lane.waiting >= self.queue_size:
            raise HTTPProblem(
                429,
                f"the queue for {key} is full ({self.queue_size} waiting); retry shortly",
                "rate_limit_error",
                # The body was not read: close rather than drain it through the event loop.
                headers={"Retry-After": "2", "Connection": "close"},
            )
        lane.waiting += 1
        try:
            await lane.semaphore.acquire()
        finally:
            lane.waiting -= 1
        lane.running += 1
        try:
            yield
        finally:
            lane.running -= 1
            lane.semaphore.release()
