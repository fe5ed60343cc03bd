"""A fake clock for the scheduler: time moves only when a test advances it."""

from __future__ import annotations

import asyncio
import heapq
import itertools


QUIET_WITHIN = 100_000
"""Loop turns :meth:`FakeClock.settle` waits for quiescence before it calls the test failed."""


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
        """Let every runnable task run until all are waiting again (quiescence): until, when this
        coroutine resumes, the event loop has nothing else ready to run. A loop that never gets
        quiet (a task that keeps yielding) is a test failure, not a hang."""
        loop = asyncio.get_running_loop()
        for _ in range(QUIET_WITHIN):
            await asyncio.sleep(0)
            if not loop._ready:  # asyncio's ready queue: only our own wake-up was in it
                return
        raise AssertionError(f"the event loop did not get quiet within {QUIET_WITHIN} turns")

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
