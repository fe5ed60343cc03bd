"""Capabilities: what systemd grants monitord (``AmbientCapabilities=CAP_NET_RAW``, for the raw
ICMP socket) stays with monitord and is not handed to the programs it runs (Nagios plugins,
ipmitool). The ambient set is what survives ``execve`` of an ordinary binary; clearing it at
start keeps CAP_NET_RAW in this process's own permitted and effective sets.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def keep_capabilities_to_ourselves() -> None:
    """Clear the ambient capability set, so child processes inherit no capability."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        log.warning("cannot clear ambient capabilities: %s", os.strerror(ctypes.get_errno()))
