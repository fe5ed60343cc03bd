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
    """Pings systemd's watchdog only while ``stalled()`` finds nothing wrong.

    ``stalled`` returns why the daemon is not doing its job (a loop ended or is stuck), or None.
    A hung event loop sends nothing at all; a stuck part stops the pings here. Either way
    systemd kills and restarts monitord after ``WatchdogSec=``.
    """

    def __init__(self, stalled: Callable[[], str | None]):
        self._stalled = stalled
        self._reason: str | None = None

    def beat(self) -> bool:
        """One watchdog period: ping if healthy, else say (once) why not. True if it pinged."""
        reason = self._stalled()
        if reason is None:
            if self._reason is not None:
                log.warning("watchdog: healthy again, pinging systemd again")
                notify("STATUS=monitoring")
            self._reason = None
            return notify("WATCHDOG=1")
        if reason != self._reason:
            log.error("watchdog: %s; not pinging systemd, which will restart monitord", reason)
            notify(f"STATUS={reason}")
        self._reason = reason
        return False

    async def run(self, interval: float) -> None:
        """Beat every ``interval`` seconds (monotonic time) until cancelled."""
        while True:
            self.beat()
            await asyncio.sleep(interval)
