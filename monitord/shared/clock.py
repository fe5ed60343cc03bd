"""Wall-clock time and sleeping, behind an interface so tests can use a fake clock."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What the scheduler needs from time."""

    def time(self) -> float:
        """Seconds since the epoch."""

    async def sleep_until(self, when: float) -> None:
        """Return at (or soon after) epoch time ``when``."""


class SystemClock:
    """The real clock. Sleeps are re-checked so a wall-clock step cannot oversleep much."""

    MAX_NAP = 30.0

    def time(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    async def sleep_until(self, when: float) -> None:
        """Sleep until epoch time ``when``, in naps of at most 30 s."""
        while (remaining := when - time.time()) > 0:
            await asyncio.sleep(min(remaining, self.MAX_NAP))
