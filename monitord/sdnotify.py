"""The systemd notify protocol (``Type=notify``): readiness, status, reloads, shutdown, watchdog.

``notify("READY=1", "STATUS=monitoring")`` sends one datagram to ``$NOTIFY_SOCKET``; outside
systemd (no socket) it does nothing. :func:`watchdog_interval` says how often to send
``WATCHDOG=1`` when the unit has ``WatchdogSec=``.
"""

from __future__ import annotations

import logging
import os
import socket
import time

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
