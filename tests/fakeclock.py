"""A fake clock for the scheduler: time moves only when a test advances it."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """Implements :class:`monitord.shared.clock.Clock`; ``advance`` wakes sleepers in time order."""

    def __init__(self, start: float = 1_800_000_000.0):
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._now

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), future))
        await future

    async def settle(self) -> None:
        """Let every runnable task run until all are waiting again."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own time."""
        target = self._now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, future = heapq.heappop(self._sleepers)
            if future.done():
                continue
            self._now = max(self._now, when)
            future.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()
