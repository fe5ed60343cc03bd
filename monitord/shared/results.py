"""Probe results: a status, a typed reason, a summary and measured values."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


class Status(enum.IntEnum):
    """Nagios-compatible check status; the integer is the plugin exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    def __str__(self) -> str:
        return self.name.lower()


class Reason(enum.StrEnum):
    """Why a check is not OK. Escalation decisions depend on it."""

    NONE = ""
    TIMEOUT = "timeout"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    AUTH = "auth"
    PROTOCOL = "protocol"
    THRESHOLD = "threshold"
    ERROR = "error"


class Ticket(enum.StrEnum):
    """A confirmed problem that is business-hours work, announced, never a ladder: a failed drive
    or part the BMC reports, a backup failed twice in a row. The value is the page's kind."""

    HARDWARE = "hardware_ticket"
    BACKUP = "backup_ticket"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a probe measured; the runner turns it into a :class:`Result`. ``ticket``: the
    problem is business-hours work (a signal, not a measured value: never a metric)."""

    status: Status
    summary: str
    reason: Reason = Reason.NONE
    values: Mapping[str, float] = field(default_factory=dict)
    ticket: Ticket | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """One finished probe run."""

    status: Status
    reason: Reason
    summary: str
    duration: float
    started_at: float
    values: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    ticket: Ticket | None = None  # the problem is business-hours work (see :class:`Ticket`)

    @property
    def ok(self) -> bool:
        """True when the status is OK."""
        return self.status is Status.OK

    def to_dict(self) -> dict:
        """A JSON-serialisable form, as stored in the state database."""
        return {
            "status": str(self.status),
            "reason": str(self.reason),
            "summary": self.summary,
            "duration": round(self.duration, 6),
            "started_at": self.started_at,
            "values": dict(self.values),
            **({"ticket": str(self.ticket)} if self.ticket else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "Result":
        """Inverse of :meth:`to_dict`."""
        return cls(
            status=Status[data["status"].upper()],
            reason=Reason(data["reason"]),
            summary=data["summary"],
            duration=float(data["duration"]),
            started_at=float(data["started_at"]),
            values=MappingProxyType(dict(data.get("values", {}))),
            ticket=Ticket(data["ticket"]) if data.get("ticket") else None,
        )


class ProbeError(Exception):
    """A probe failure with a known reason (refused, protocol, auth, ...)."""

    def __init__(self, reason: Reason, summary: str, values: Mapping[str, float] | None = None) -> None:
        super().__init__(summary)
        self.reason = reason
        self.summary = summary
        self.values = dict(values or {})


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The last heartbeat a host posted: when, and the status and message it reported."""

    at: float
    status: Status = Status.OK
    message: str = ""
