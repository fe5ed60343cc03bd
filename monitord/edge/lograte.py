"""Repeated identical log lines, rate-limited: a flood of one message must not bury the log.

Lines are identical when logger, level, text and exception type are. The first ``burst`` of
them in a ``period`` are written; the rest are counted, and the next one written after the
period says how many were left out. Different lines never suppress each other.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

BURST = 5
PERIOD = 60.0
MAX_KEYS = 10_000


@dataclass
class _Window:
    start: float
    written: int = 1
    dropped: int = 0


class RepeatFilter(logging.Filter):
    """A :class:`logging.Filter` for handlers: at most ``burst`` identical lines per ``period`` seconds."""

    def __init__(self, burst: int = BURST, period: float = PERIOD, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.burst, self.period, self.clock = burst, period, clock
        self._windows: dict[tuple, _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.levelno, record.getMessage(), exc_type)
        now = self.clock()
        window = self._windows.get(key)
        if window is not None and now - window.start < self.period:
            if window.written < self.burst:
                window.written += 1
                return True
            window.dropped += 1
            return False
        if window is not None and window.dropped:
            record.msg = f"{record.getMessage()} [{window.dropped} more identical lines left out " \
                         f"in {self.period:g}s]"
            record.args = None
        if len(self._windows) >= MAX_KEYS:
            self._windows = {k: w for k, w in self._windows.items() if now - w.start < self.period}
        self._windows[key] = _Window(now)
        return True

