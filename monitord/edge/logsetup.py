"""The daemon's log lines: text or JSON (one object a line), with journald priority prefixes
under systemd, every line through secret redaction (:mod:`monitord.shared.redact`) and the repeat
limit (:mod:`monitord.edge.lograte`).

Under systemd (``JOURNAL_STREAM`` names the device and inode of our standard error) each
line starts with its syslog priority, ``<3>`` error, ``<4>`` warning, ``<6>`` info ..., which
journald strips and records, so ``journalctl -p warning -u monitord`` shows exactly the
warnings and worse. Every line of a multi-line record (a traceback) carries the prefix, so none
of it falls to journald's default priority.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TextIO

from monitord.edge.lograte import RepeatFilter
from monitord.shared.redact import Formatter, redact

FORMATS = ("text", "json")
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (2 critical, 3 error, 4 warning, 6 info, 7 debug)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


class JsonFormatter(logging.Formatter):
    """One JSON object a record: ts (UTC, ISO 8601), level, logger, message, exception/stack if any."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "message": redact(record.getMessage())}
        if record.exc_info:
            doc["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            doc["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(doc, ensure_ascii=False)


class JournalPrefix(logging.Formatter):
    """Wraps a formatter: every output line starts with the record's ``<priority>``."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def under_journald(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal stream systemd gave us (``JOURNAL_STREAM=dev:ino``)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def formatter(fmt: str, journald: bool) -> logging.Formatter:
    """The formatter for ``fmt`` (text or json), with journald prefixes if ``journald``."""
    inner = JsonFormatter() if fmt == "json" else Formatter(TEXT_FORMAT)
    return JournalPrefix(inner) if journald else inner


def configure(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send the root logger's records to ``stream`` (standard error) in ``fmt``."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt, under_journald(stream)))
    handler.addFilter(RepeatFilter())
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    # an exception nobody caught is logged too (its text may quote a secret), not printed raw
    sys.excepthook = lambda kind, value, tb: logging.getLogger("monitord").critical(
        "uncaught exception", exc_info=(kind, value, tb))
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.WARNING)  # its INFO is a line per SSH connection
