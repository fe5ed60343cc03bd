"""Soft/hard state machine (Icinga semantics), table-driven."""

from __future__ import annotations

import pytest

from monitord.run.checkstate import CheckState, Event, transition
from monitord.shared.results import Reason, Result, Status

OK, WARN, CRIT, UNK = Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN


def result(status: Status, t: float) -> Result:
    return Result(status, Reason.NONE if status is OK else Reason.TIMEOUT, "x", 0.01, t)


def run(statuses: list[Status], max_attempts: int) -> list[tuple[Status, bool, int, Event]]:
    state, out = CheckState(), []
    for i, status in enumerate(statuses):
        state, event = transition(state, result(status, float(i)), max_attempts)
        out.append((state.status, state.hard, state.attempt, event))
    return out


CASES = {
    "ok stays ok": ([OK, OK], 3, [(OK, True, 1, Event.NONE), (OK, True, 1, Event.NONE)]),
    "confirmed after max_attempts": (
        [CRIT, CRIT, CRIT, CRIT], 3,
        [(CRIT, False, 1, Event.DETECTED), (CRIT, False, 2, Event.RETRY_FAILED),
         (CRIT, True, 3, Event.CONFIRMED), (CRIT, True, 3, Event.NONE)],
    ),
    "max_attempts 1 confirms at once": ([CRIT, OK], 1, [(CRIT, True, 1, Event.CONFIRMED), (OK, True, 1, Event.RECOVERED)]),
    "soft recovery": ([CRIT, CRIT, OK], 3,
                      [(CRIT, False, 1, Event.DETECTED), (CRIT, False, 2, Event.RETRY_FAILED),
                       (OK, True, 1, Event.SOFT_RECOVERY)]),
    "hard recovery": ([CRIT, CRIT, OK], 2,
                      [(CRIT, False, 1, Event.DETECTED), (CRIT, True, 2, Event.CONFIRMED), (OK, True, 1, Event.RECOVERED)]),
    "hard status change": ([WARN, CRIT, UNK], 1,
                           [(WARN, True, 1, Event.CONFIRMED), (CRIT, True, 1, Event.CHANGED), (UNK, True, 1, Event.CHANGED)]),
    "mixed soft statuses still count attempts": (
        [WARN, CRIT, WARN], 3,
        [(WARN, False, 1, Event.DETECTED), (CRIT, False, 2, Event.RETRY_FAILED), (WARN, True, 3, Event.CONFIRMED)]),
    "counter restarts after recovery": (
        [CRIT, OK, CRIT, CRIT], 3,
        [(CRIT, False, 1, Event.DETECTED), (OK, True, 1, Event.SOFT_RECOVERY),
         (CRIT, False, 1, Event.DETECTED), (CRIT, False, 2, Event.RETRY_FAILED)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_transitions(name):
    statuses, max_attempts, expected = CASES[name]
    assert run(statuses, max_attempts) == expected


def test_problem_since_and_levels():
    state = CheckState()
    assert state.level == 0
    state, _ = transition(state, result(CRIT, 100.0), 2)
    assert (state.level, state.problem_since, state.retrying) == (1, 100.0, True)
    state, _ = transition(state, result(CRIT, 160.0), 2)
    assert (state.level, state.problem_since, state.retrying) == (2, 100.0, False)
    state, _ = transition(state, result(OK, 220.0), 2)
    assert (state.level, state.problem_since, state.last_change) == (0, None, 220.0)
