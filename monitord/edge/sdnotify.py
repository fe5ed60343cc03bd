"""The systemd notify protocol (``Type=notify``): readiness, status, reloads, shutdown, watchdog.

``notify("READY=1", "STATUS=monitoring")`` sends one datagram to ``$NOTIFY_SOCKET``; outside
systemd (no socket) it does nothing. :func:`watchdog_interval` says how often to send
``WATCHDOG=1`` when the unit has ``WatchdogSec=``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Callable

log = logging.getLogger(__name__)


def notify(*fields: str) -> bool:
    """Send ``fields`` (``KEY=value`` each) to systemd; False if there is no socket or it failed."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)
        return False
    return True


def reloading() -> bool:
    """Tell systemd a reload has started (``READY=1`` again ends it)."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WatchdogSec=``), or None if not asked for."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Watchdog:
    """Pings systemd's watchdog only while ``stalled()`` finds nothing wrong for long.

    ``stalled`` returns why the daemon is not doing its job (a loop ended or is stuck), or None.
    A hung event loop sends nothing at all. A stuck part is given ``patience`` seconds first
    (a wall-clock step makes the scheduler look late until its next wake-up, at most 30 s),
    then the pings stop. Either way systemd kills and restarts monitord after ``WatchdogSec=``.
    """

    def __init__(self, stalled: Callable[[], str | None], patience: float):
        self._stalled = stalled
        self.patience = patience
        self._since: float | None = None
        self._gave_up = False

    def beat(self, now: float) -> bool:
        """One watchdog period at monotonic time ``now``; True if it pinged systemd."""
        reason = self._stalled()
        if reason is None:
            if self._since is not None:
                log.warning("watchdog: healthy again")
                if self._gave_up:
                    notify("STATUS=monitoring")
            self._since, self._gave_up = None, False
            return notify("WATCHDOG=1")
        if self._since is None:
            self._since = now
            log.warning("watchdog: %s", reason)
        if now - self._since < self.patience:
            return notify("WATCHDOG=1")
        if not self._gave_up:
            self._gave_up = True
            log.error("watchdog: %s for %.0fs; not pinging systemd, which will restart monitord",
                      reason, now - self._since)
            notify(f"STATUS={reason}")
        return False

    async def run(self, interval: float) -> None:
        """Beat every ``interval`` seconds until cancelled."""
        while True:
            self.beat(time.monotonic())
            await asyncio.sleep(interval)
