"""The configured ladder (remediation.ladder, contract 004's appliance): pure state machine, table-driven,
on a fake clock (plain numbers)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from monitord.escalation.ladder import (Answer, Confirmed, Done, Failed, Guards, HostState, Ladder, Note, Page, Phase, Policy,
                                        PowerDone, RestartArgs, RestartDone, Step, step)
from tests.test_escalation import boot, play, verified

APPLIANCE = Policy(power_drivers=("vm",), has_ssh=True, boot_timeout=900, max_resets=3, reset_window=86400,
                   grace=300, restartable=frozenset({"console", "agent"}), processes=frozenset({"agent"}),
                   steps=("restart:services", "restart:processes", "power:cycle", "vendor:iaas"), name="vvault1")
OK = Guards()
CONSOLE = Confirmed("console", host_down=False, incident_id=3)
AGENT = Confirmed("agent", host_down=False, incident_id=4)
PING = Confirmed("ping", host_down=True, incident_id=5)
STORAGE = Confirmed("storage", host_down=False, incident_id=6)  # no restart method


def restarted(ok: bool) -> Done:
    return Done(Step.SERVICE_RESTART, ok, "" if ok else "failed", RestartDone(True))


CYCLED = Done(Step.POWER_CYCLE, True, detail=PowerDone("vm"))
LEVEL3 = ["page vendor L2", "page dispatch L3", "sla engineer_on_site"]


@pytest.mark.parametrize("name, events, trace, phase", [
    ("a service restart that works ends the ladder at step 1",
     [CONSOLE, restarted(True)], [["act service_restart L1"], ["resolved"]], Phase.IDLE),
    ("every step in order: the process step does not fit a service check, the vendor, then level 3",
     [CONSOLE, restarted(False), CYCLED, boot(True, True), verified(False)],
     [["act service_restart L1"], ["note", "act power_cycle via vm L2"], ["act wait_boot L2"], ["act verify L2"],
      LEVEL3], Phase.DISPATCHED),
    ("the VM restart verified by ping, login and the check ends the ladder",
     [CONSOLE, restarted(False), CYCLED, boot(True, True), verified(True)],
     [["act service_restart L1"], ["note", "act power_cycle via vm L2"], ["act wait_boot L2"], ["act verify L2"],
      ["resolved"]], Phase.IDLE),
    ("a process check skips the service step and restarts its process at step 2",
     [AGENT, restarted(False), CYCLED, boot(False, False)],
     [["note", "act service_restart L2"], ["act power_cycle via vm L2"], ["act wait_boot L2"], LEVEL3],
     Phase.DISPATCHED),
    ("the host down: no restart fits, the VM is cycled first; not back: vendor, then level 3",
     [PING, CYCLED, boot(False, False)],
     [["note", "note", "act power_cycle via vm L2"], ["act wait_boot L2"], LEVEL3], Phase.DISPATCHED),
    ("a check without a restart method goes straight to the power step",
     [STORAGE], [["note", "note", "act power_cycle via vm L2"]], Phase.ACTING),
    ("the hypervisor refusing the power command moves on to the vendor (no driver left)",
     [CONSOLE, restarted(False), Done(Step.POWER_CYCLE, False, "refused", Failed("vm", ""))],
     [["act service_restart L1"], ["note", "act power_cycle via vm L2"], LEVEL3], Phase.DISPATCHED),
    ("a power command whose outcome is unknown is verified by the boot, never sent again",
     [CONSOLE, restarted(False), Done(Step.POWER_CYCLE, False, "timeout", Failed("vm", "", True))],
     [["act service_restart L1"], ["note", "act power_cycle via vm L2"], ["act wait_boot L2"]], Phase.ACTING),
])
def test_configured_ladder(name, events, trace, phase):
    state, got = play(events, policy=APPLIANCE)
    assert got == trace, name
    assert state.phase is phase
    assert state.ladder is (None if phase is Phase.IDLE else Ladder.CONFIGURED)


def test_the_vendor_page_names_the_vendor_and_what_was_tried():
    _, decisions = step(HostState(), CONSOLE, APPLIANCE, OK, 0)
    assert decisions[0].args == RestartArgs("console")
    s, decisions = guarded([CONSOLE, restarted(False), CYCLED, boot(False, False)], OK)
    vendor, dispatch = [d for d in decisions if isinstance(d, Page)]
    assert vendor.detail["vendor"] == "iaas"
    assert vendor.detail["tried"] == ["service_restart: failed (failed)", "power_cycle: ok", "wait_boot: failed"]
    assert "vendor iaas: paged" in dispatch.detail["tried"]
    assert s.level == 3 and s.phase is Phase.DISPATCHED


STEPS = {  # the events that make each destructive step of the ladder due
    "restart": [CONSOLE],
    "power": [CONSOLE, restarted(False)],
}


def guarded(events, guards, policy=APPLIANCE):
    """Play ``events`` unguarded but the last, which meets ``guards``; return (state, its decisions)."""
    s = HostState()
    for i, e in enumerate(events):
        s, decisions = step(s, e, policy, OK if i < len(events) - 1 else guards, 1000 + i * 10)
    return s, decisions


@pytest.mark.parametrize("where", sorted(STEPS))
@pytest.mark.parametrize("guard, guards", [
    ("maintenance", Guards(maintenance="patch")),
    ("parent_down", Guards(parent_down="hv1")),
    ("quarantined", Guards(quarantined=True)),
    ("blast_radius", Guards(blast_radius="canaries down")),
    ("dry_run", Guards(dry_run=True)),
    ("quarantined", Guards(quarantined=True, maintenance="patch", dry_run=True)),  # several at once: one block
])
def test_every_guard_stops_each_step(where, guard, guards):
    s, decisions = guarded(STEPS[where], guards)
    assert [type(d).__name__ for d in decisions if not isinstance(d, Note)] == ["Blocked"]
    assert decisions[[type(d).__name__ for d in decisions].index("Blocked")].guard == guard
    assert s.phase is Phase.IDLE and s.blocked == guard


def test_the_host_dry_run_setting_stops_the_first_step():
    s, decisions = guarded([CONSOLE], OK, replace(APPLIANCE, dry_run=True))
    assert [type(d).__name__ for d in decisions] == ["Blocked", "Note"] and s.blocked == "dry_run"


def test_a_guard_at_the_vendor_step_holds_the_vendor_page():
    s, decisions = guarded([CONSOLE, restarted(False), CYCLED, boot(False, False)], Guards(maintenance="patch"))
    assert [type(d).__name__ for d in decisions] == ["Blocked"]
    assert decisions[0].guard == "maintenance" and s.phase is Phase.IDLE


def test_at_the_reset_limit_the_vm_is_not_cycled_and_the_vendor_is_paged():
    full = HostState(power_actions=(100.0, 200.0, 300.0))
    state, trace = play([CONSOLE, restarted(False)], policy=APPLIANCE, state=full)
    assert trace == [["act service_restart L1"], ["note", "blocked limit", *LEVEL3]]
    assert state.phase is Phase.DISPATCHED


def test_the_restart_limit_holds_the_ladder_for_humans():
    full = HostState(restarts=(990.0, 991.0, 992.0))
    state, trace = play([CONSOLE], policy=APPLIANCE, state=full)
    assert trace == [["page service_failed L2"]]
    assert state.phase is Phase.HELD


def test_off_hours_contact_first_asks_before_the_vm_restart():
    policy = replace(APPLIANCE, contact_first=frozenset({Step.POWER_CYCLE}))
    off = Guards(off_hours=True)
    state, trace = play([CONSOLE, restarted(False), Done(Step.REQUEST_APPROVAL, True, detail=Answer("granted"))],
                        policy=policy, guards=off)
    assert trace == [["act service_restart L1"], ["note", "act request_approval via vm L2"], ["act power_cycle via vm L2"]]
    denied, trace = play([CONSOLE, restarted(False), Done(Step.REQUEST_APPROVAL, False, detail=Answer("denied"))],
                         policy=policy, guards=off)
    assert trace[-1] == ["blocked denied", "page action_held L2"] and denied.phase is Phase.HELD


def test_a_failure_within_the_grace_period_waits():
    state, _ = play([CONSOLE, restarted(True)], policy=APPLIANCE)
    state, trace = play([CONSOLE], policy=APPLIANCE, state=state, start=1100)
    assert trace == [["retry at 1300"]] and state.phase is Phase.IDLE


def test_a_check_answering_before_the_first_restart_is_verified_instead():
    state, decisions = step(HostState(), CONSOLE, APPLIANCE, Guards(answers=True), 1000)
    assert [(type(d).__name__, d.step) for d in decisions] == [("Act", Step.VERIFY)]
    state, trace = play([verified(False)], policy=APPLIANCE, state=state)
    assert trace == [["act service_restart L1"]]  # not verified: the restart goes ahead


def test_without_steps_the_built_in_ladders_run():
    default = replace(APPLIANCE, steps=())
    _, trace = play([PING], policy=default)
    assert trace == [["act power_reset via vm L1"]]
    _, trace = play([CONSOLE], policy=default)
    assert trace == [["act service_restart L1"]]
