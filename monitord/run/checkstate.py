"""Soft and hard check states (Icinga semantics), as a pure function of state and result.

A failure is *soft* until ``max_attempts`` results in a row are not OK; then it is *hard*
(confirmed). Only hard problems open incidents and drive escalation. While soft, the check
is re-run every ``retry_interval``; otherwise every ``interval``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from monitord.shared.results import Result, Status


class Event(enum.StrEnum):
    """What a new result did to a check's state."""

    NONE = "none"
    DETECTED = "detected"  # first non-OK result after OK: a soft problem
    RETRY_FAILED = "retry_failed"  # another non-OK result while soft
    CONFIRMED = "confirmed"  # the problem became hard
    CHANGED = "changed"  # hard problem, different status (e.g. warning -> critical)
    SOFT_RECOVERY = "soft_recovery"  # OK again before the problem was confirmed
    RECOVERED = "recovered"  # OK again after a hard problem


@dataclass(frozen=True, slots=True)
class CheckState:
    """Where a check stands."""

    status: Status = Status.OK
    hard: bool = True
    attempt: int = 1
    last_run: float = 0.0
    last_change: float = 0.0
    problem_since: float | None = None
    last_result: Result | None = None

    @property
    def level(self) -> int:
        """0 OK, 1 soft problem, 2 hard problem (the ``monitord_check_state`` metric)."""
        if self.status is Status.OK:
            return 0
        return 2 if self.hard else 1

    @property
    def retrying(self) -> bool:
        """True while a problem is unconfirmed, i.e. the check runs at retry_interval."""
        return self.status is not Status.OK and not self.hard


def transition(state: CheckState, result: Result, max_attempts: int) -> tuple[CheckState, Event]:
    """The state after ``result``, and what happened."""
    now = result.started_at
    base = replace(state, last_run=now, last_result=result)
    if result.status is Status.OK:
        if state.status is Status.OK:
            return replace(base, hard=True, attempt=1), Event.NONE
        event = Event.RECOVERED if state.hard else Event.SOFT_RECOVERY
        return replace(base, status=Status.OK, hard=True, attempt=1, last_change=now, problem_since=None), event
    if state.status is Status.OK:
        hard = max_attempts <= 1
        new = replace(base, status=result.status, hard=hard, attempt=1, last_change=now, problem_since=now)
        return new, Event.CONFIRMED if hard else Event.DETECTED
    if state.hard:
        changed = result.status is not state.status
        new = replace(base, status=result.status, last_change=now if changed else state.last_change)
        return new, Event.CHANGED if changed else Event.NONE
    attempt = state.attempt + 1
    hard = attempt >= max_attempts
    changed = result.status is not state.status
    new = replace(base, status=result.status, hard=hard, attempt=min(attempt, max_attempts),
                  last_change=now if changed else state.last_change)
    return new, Event.CONFIRMED if hard else Event.RETRY_FAILED
