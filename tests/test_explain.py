"""``Engine.explain`` on the fake clock: the limit, grace and off-hours approval verdicts, and what
the ladder would do next, computed without a journal row or a change of state."""

from __future__ import annotations

import pytest

from monitord.config import parse_config
from monitord.escalation.ladder import HostState
from monitord.records.state import SQLiteStore
from monitord.run.checkstate import CheckState
from monitord.shared.results import Reason, Result, Status
from tests.support import unit_engine

NOW = 1_800_000_000.0  # the fake clock's start: Friday 2027-01-15 17:00 in Tokyo, business hours by default
CONFIG = """
hosts:
  web1:
    address: 127.0.0.1
    bmc: {address: 127.0.0.1, username: admin, password: {env: NOPE}}
    defaults:
      remediation: {contact_first: [power_reset], max_resets: 2, grace: 5m}
    checks:
      ping: {}
"""
DOWN = Result(Status.CRITICAL, Reason.UNREACHABLE, "no reply", 0.01, NOW - 30)


class Down:
    """The scheduler as the engine sees it: web1's ping is confirmed down, next run in 10 s."""

    def state_of(self, check_id):
        return CheckState(status=Status.CRITICAL, hard=True, attempt=3, last_result=DOWN)

    def incident_of(self, check_id):
        return 7

    def due_times(self):
        return {"web1/ping": NOW + 10}


async def explain(tmp_path, state: HostState, extra: str = "") -> tuple[dict, SQLiteStore, object]:
    store = SQLiteStore(tmp_path / "state.db")
    engine = await unit_engine(store, parse_config(CONFIG + extra), Down(), None)
    engine._states["web1"] = state
    return await engine.explain("web1"), store, engine


def verdicts(answer: dict) -> dict[str, str]:
    return {g["guard"]: g["reason"] if g["verdict"] == "block" else "pass" for g in answer["guards"]}


async def test_a_fresh_failure_in_business_hours_would_read_the_bmc_with_every_guard_passing(tmp_path):
    answer, store, engine = await explain(tmp_path, HostState())
    assert set(verdicts(answer).values()) == {"pass"} and answer["guards_for"] == "power_reset"
    assert answer["next"]["decisions"] == ["bmc_read at level 1: host down: read the BMC (power, SEL, sensors)"]
    assert answer["next"]["at"] == NOW + 10
    assert await store.incidents.journal() == [] and await store.checks.escalations() == {} and engine.state("web1") == HostState()


@pytest.mark.parametrize("days, blocked", [("[sun]", True), ("[fri]", False)])
async def test_off_hours_approval_is_needed_outside_business_hours_only(tmp_path, days, blocked):
    answer, _, _ = await explain(tmp_path, HostState(), f"business_hours: {{days: {days}}}\n")
    expected = "outside business hours: the emergency contact is asked before power_reset"
    assert verdicts(answer)["off_hours_approval"] == (expected if blocked else "pass")


async def test_limit_and_grace_block_together_and_the_ladder_waits_for_the_grace_period(tmp_path):
    state = HostState(power_actions=(NOW - 600, NOW - 60), grace_until=NOW + 240)
    answer, store, engine = await explain(tmp_path, state, "business_hours: {days: [sun]}\n")
    found = verdicts(answer)
    assert found["limit"] == "reset limit reached (2/2)"
    assert found["grace"] == "grace period after the last action until 2027-01-15T08:04:00+00:00"
    assert found["off_hours_approval"] != "pass"  # three guards at once, each with its reason
    assert answer["ladder"]["recent_power_actions"] == 2
    assert answer["next"]["at"] == NOW + 240 and "grace period" in answer["next"]["what"]
    assert await store.incidents.journal() == [] and engine.state("web1") == state  # explained, not changed


async def test_old_power_actions_do_not_count_against_the_limit(tmp_path):
    answer, _, _ = await explain(tmp_path, HostState(power_actions=(NOW - 90_000, NOW - 60)))
    assert verdicts(answer)["limit"] == "pass" and answer["ladder"]["recent_power_actions"] == 1
