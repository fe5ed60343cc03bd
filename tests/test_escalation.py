"""The pure escalation state machine, table-driven, on a fake clock (plain numbers)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from monitord.escalation.ladder import (
    Act, Answer, ApprovalArgs, BootFound, Blocked, Confirmed, Done, Failed, Guards, HostState, Note, Page, Phase, Policy, PowerArgs,
    PowerDone, Recovered, Resolved, RestartDone, Retry, StartSla, Step, Verified, step,
)

FULL = Policy(power_drivers=("ipmi", "pdu"), has_bmc=True, has_ssh=True, boot_timeout=600, max_resets=3,
              reset_window=86400, grace=300, restartable=frozenset({"http"}))
OK = Guards()
DOWN = Confirmed("ping", host_down=True, incident_id=7)
HTTP_DOWN = Confirmed("http", host_down=False, incident_id=8)


def boot(ping: bool, login: bool, fs_errors=()) -> Done:
    return Done(Step.WAIT_BOOT, ping and login and not fs_errors,
                detail=BootFound(ping, login, tuple(fs_errors)))


def verified(ok: bool) -> Done:
    return Done(Step.VERIFY, ok, "" if ok else "not verified", Verified(True, ok))


def _via(args) -> str:
    """The power driver an action (or the action an approval is asked for) goes through."""
    args = args.then if isinstance(args, ApprovalArgs) else args
    return f" via {args.driver}" if isinstance(args, PowerArgs) else ""


def short(decisions) -> list[str]:
    """Decisions as compact strings, for readable tables."""
    out = []
    for d in decisions:
        if isinstance(d, Act):
            out.append(f"act {d.step}" + _via(d.args) + f" L{d.level}")
        elif isinstance(d, Blocked):
            out.append(f"blocked {d.guard}")
        elif isinstance(d, Page):
            out.append(f"page {d.kind} L{d.level}")
        elif isinstance(d, StartSla):
            out.append(f"sla {d.name}")
        elif isinstance(d, Resolved):
            out.append("resolved")
        elif isinstance(d, Retry):
            out.append(f"retry at {d.at:g}")
        elif isinstance(d, Note):
            out.append("note")
    return out


def play(events, policy=FULL, guards=OK, state=None, start=1000.0, dt=10.0):
    """Feed events at start, start+dt, ...; return (final state, decisions per event)."""
    state = state or HostState()
    trace = []
    for i, event in enumerate(events):
        g = guards[i] if isinstance(guards, list) else guards
        state, decisions = step(state, event, policy, g, start + i * dt)
        trace.append(short(decisions))
    return state, trace


LADDERS = {
    "L1 reset brings the host back": (
        [DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, True, detail=PowerDone("ipmi")), boot(True, True)],
        [["act bmc_read L1"], ["act power_reset via ipmi L1"], ["act wait_boot L1"], ["resolved"]],
    ),
    "not back after reset: L2 power cycle, then back": (
        [DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, True, detail=PowerDone("ipmi")), boot(False, False),
         Done(Step.POWER_CYCLE, True, detail=PowerDone("ipmi")), boot(True, True)],
        [["act bmc_read L1"], ["act power_reset via ipmi L1"], ["act wait_boot L1"], ["act power_cycle via ipmi L2"],
         ["act wait_boot L2"], ["resolved"]],
    ),
    "never back: L2 then L3 dispatch with the SLA timer": (
        [DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, True, detail=PowerDone("ipmi")), boot(False, False),
         Done(Step.POWER_CYCLE, True, detail=PowerDone("ipmi")), boot(False, False)],
        [["act bmc_read L1"], ["act power_reset via ipmi L1"], ["act wait_boot L1"], ["act power_cycle via ipmi L2"],
         ["act wait_boot L2"], ["page dispatch L3", "sla engineer_on_site"]],
    ),
    "back with filesystem errors: L2 forced fsck": (
        [DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, True, detail=PowerDone("ipmi")),
         boot(True, True, ["EXT4-fs error (device sda1)"]), Done(Step.FSCK, True), boot(True, True)],
        [["act bmc_read L1"], ["act power_reset via ipmi L1"], ["act wait_boot L1"], ["act fsck L2"],
         ["act wait_boot L2"], ["resolved"]],
    ),
    "back but login fails: L2 power cycle": (
        [DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, True, detail=PowerDone("ipmi")), boot(True, False)],
        [["act bmc_read L1"], ["act power_reset via ipmi L1"], ["act wait_boot L1"], ["act power_cycle via ipmi L2"]],
    ),
    "IPMI fails: falls back to the PDU": (
        [DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, False, "auth", Failed("ipmi", "")),
         Done(Step.POWER_RESET, True, detail=PowerDone("pdu")), boot(True, True)],
        # the BMC rejected the credentials: humans hear of it at once (issue #8 item 5)
        [["act bmc_read L1"], ["act power_reset via ipmi L1"], ["page bmc_auth L1", "act power_reset via pdu L1"],
         ["act wait_boot L1"], ["resolved"]],
    ),
    "a power command whose outcome is unknown is verified, not resent through the PDU": (
        [DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, False, "timeout", Failed("ipmi", "", True)),
         boot(True, True)],
        [["act bmc_read L1"], ["act power_reset via ipmi L1"], ["act wait_boot L1"], ["resolved"]],
    ),
    "every power driver fails: L3 page": (
        [DOWN, Done(Step.BMC_READ, False, "timeout"), Done(Step.POWER_RESET, False, "timeout", Failed("ipmi", "")),
         Done(Step.POWER_RESET, False, "timeout", Failed("pdu", ""))],
        [["act bmc_read L1"], ["act power_reset via ipmi L1"], ["act power_reset via pdu L1"],
         ["page dispatch L3", "sla engineer_on_site"]],
    ),
    "service restart works": (
        [HTTP_DOWN, Done(Step.SERVICE_RESTART, True)],
        [["act service_restart L1"], ["resolved"]],
    ),
    "service restart does not help: page": (
        [HTTP_DOWN, Done(Step.SERVICE_RESTART, False, "refused")],
        [["act service_restart L1"], ["page service_failed L2"]],
    ),
    "service login fails: host-down ladder": (
        [HTTP_DOWN, Done(Step.SERVICE_RESTART, False, "timeout", RestartDone(False)), Done(Step.BMC_READ, True)],
        [["act service_restart L1"], ["act bmc_read L1"], ["act power_reset via ipmi L1"]],
    ),
    # a check answering is not the contract's recovery: the ladder verifies first (issue #8 item 1)
    "recovered while dispatched: verified, then resolved": (
        [DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, False, "x", Failed("ipmi", "")),
         Done(Step.POWER_RESET, False, "x", Failed("pdu", "")), Recovered("ping", True), verified(True)],
        [["act bmc_read L1"], ["act power_reset via ipmi L1"], ["act power_reset via pdu L1"],
         ["page dispatch L3", "sla engineer_on_site"], ["act verify L3"], ["resolved"]],
    ),
    "a stale outcome is ignored": (
        [DOWN, Done(Step.WAIT_BOOT, True)],
        [["act bmc_read L1"], ["note"]],
    ),
    "a second confirmation during a ladder does nothing": (
        [DOWN, Confirmed("ssh", host_down=True)],
        [["act bmc_read L1"], []],
    ),
}


@pytest.mark.parametrize("name", sorted(LADDERS))
def test_ladders(name):
    events, expected = LADDERS[name]
    _, trace = play(events)
    assert trace == expected


def test_dispatch_page_carries_what_was_tried_and_sla_due_in_120_minutes():
    events = LADDERS["never back: L2 then L3 dispatch with the SLA timer"][0]
    state = HostState()
    for i, event in enumerate(events):
        state, decisions = step(state, event, FULL, OK, 1000.0 + i)
    page, sla = decisions
    assert page.detail["tried"][-1] == "wait_boot: failed"
    assert len(page.detail["tried"]) == 5
    assert sla.due == 1005.0 + 7200
    assert (state.phase, state.level) == (Phase.DISPATCHED, 3)


def test_dispatch_sla_due_follows_the_configured_target():

    events = LADDERS["never back: L2 then L3 dispatch with the SLA timer"][0]
    state = HostState()
    for i, event in enumerate(events):
        state, decisions = step(state, event, replace(FULL, engineer_on_site=90 * 60), OK, 1000.0 + i)
    assert decisions[-1] == StartSla("engineer_on_site", 1005.0 + 5400)


async def test_engine_policy_takes_the_sla_target_from_paging(tmp_path):
    from tests.test_engine_notices import make_engine

    engine, store, _ = make_engine(tmp_path, "paging: {sla: {engineer_on_site: 90m}}\nhosts: {web1: {address: 127.0.0.1}}\n")
    try:
        assert engine.policy("web1").engineer_on_site == 5400
    finally:
        await store.close()


@pytest.mark.parametrize("guard,field_value", [
    ("maintenance", {"maintenance": "friday-patching"}),
    ("parent_down", {"parent_down": "core-sw1"}),
    ("quarantined", {"quarantined": True}),
])
def test_guards_block_the_whole_ladder(guard, field_value):
    state, trace = play([DOWN, DOWN, DOWN], guards=Guards(**field_value))
    assert trace == [[f"blocked {guard}"], [], []]  # journaled once, not at every re-evaluation
    assert state.phase is Phase.IDLE and state.power_actions == ()


def test_blast_radius_allows_reading_but_blocks_power():
    state, trace = play([DOWN, Done(Step.BMC_READ, True)], guards=Guards(blast_radius="30 of 30 hosts down"))
    assert trace == [["act bmc_read L1"], ["blocked blast_radius"]]
    assert state.power_actions == ()


@pytest.mark.parametrize("guards,policy", [(Guards(dry_run=True), FULL), (OK, replace(FULL, dry_run=True))])
def test_dry_run_decides_and_journals_but_never_acts(guards, policy):
    state, trace = play([DOWN, Done(Step.BMC_READ, True)], policy=policy, guards=guards)
    assert trace == [["act bmc_read L1"], ["blocked dry_run", "note"]]
    assert state.power_actions == ()


def test_guard_lifted_then_ladder_starts():
    state, trace = play([DOWN, DOWN], guards=[Guards(maintenance="w"), OK])
    assert trace == [["blocked maintenance"], ["act bmc_read L1"]]


def test_reset_limit_goes_straight_to_level_3():
    state = HostState()
    t = 0.0
    for _ in range(3):  # three flaps: reset, back, resolved, down again after the grace period
        for event in (DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, True, detail=PowerDone("ipmi")),
                      boot(True, True)):
            state, decisions = step(state, event, FULL, OK, t)
            t += 10
        assert short(decisions) == ["resolved"]
        t += FULL.grace
    state, d1 = step(state, DOWN, FULL, OK, t)
    state, d2 = step(state, Done(Step.BMC_READ, True), FULL, OK, t + 10)
    assert short(d2) == ["blocked limit", "page dispatch L3", "sla engineer_on_site"]
    assert len(state.power_actions) == 3


def test_reset_limit_window_slides():
    policy = replace(FULL, max_resets=1, reset_window=3600)
    old = HostState(power_actions=(0.0,))
    _, trace = play([DOWN, Done(Step.BMC_READ, True)], policy=policy, state=old, start=3500)
    assert trace[1] == ["blocked limit", "page dispatch L3", "sla engineer_on_site"]
    _, trace = play([DOWN, Done(Step.BMC_READ, True)], policy=policy, state=old, start=3601)
    assert trace[1] == ["act power_reset via ipmi L1"]


def test_grace_period_defers_failures_after_an_action():
    state, _ = play([DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, True, detail=PowerDone("ipmi")),
                     boot(True, True)], start=1000, dt=10)
    assert state.grace_until == 1010 + FULL.grace
    state, decisions = step(state, DOWN, FULL, OK, 1100)
    assert short(decisions) == [f"retry at {1010 + FULL.grace:g}"]
    state, decisions = step(state, DOWN, FULL, OK, 1010 + FULL.grace)
    assert short(decisions) == ["act bmc_read L1"]


def test_no_bmc_resets_through_pdu_without_reading():
    policy = replace(FULL, power_drivers=("pdu",), has_bmc=False)
    _, trace = play([DOWN], policy=policy)
    assert trace == [["act power_reset via pdu L1"]]


def test_no_power_control_dispatches():
    _, trace = play([DOWN], policy=Policy(has_ssh=True))
    assert trace == [["page dispatch L3", "sla engineer_on_site"]]


@pytest.mark.parametrize("policy,reason", [
    (replace(FULL, restartable=frozenset()), "no restart method"),
    (replace(FULL, has_ssh=False), "no SSH access"),
])
def test_service_without_means_pages(policy, reason):
    state = HostState()
    state, decisions = step(state, HTTP_DOWN, policy, OK, 0)
    assert short(decisions) == ["page service_failed L1"] and reason in decisions[0].summary
    assert state.phase is Phase.HELD


def test_service_restart_limit():
    policy = replace(FULL, max_restarts=2, restart_window=3600, grace=0)
    state, trace = play([HTTP_DOWN, Done(Step.SERVICE_RESTART, True)] * 3, policy=policy, dt=1)
    assert trace == [["act service_restart L1"], ["resolved"]] * 2 + [["page service_failed L2"], ["note"]]


OFF_HOURS = replace(FULL, contact_first=frozenset({Step.POWER_RESET}))


@pytest.mark.parametrize("answer,policy,expected", [
    ("granted", OFF_HOURS, ["act power_reset via ipmi L1"]),
    ("denied", OFF_HOURS, ["blocked denied", "page action_held L1"]),
    (None, OFF_HOURS, ["blocked no_answer", "page action_held L1"]),
    (None, replace(OFF_HOURS, on_no_answer="proceed"), ["act power_reset via ipmi L1"]),
])
def test_off_hours_contact_first(answer, policy, expected):
    night = Guards(off_hours=True)
    state, trace = play([DOWN, Done(Step.BMC_READ, True),
                         Done(Step.REQUEST_APPROVAL, answer == "granted", detail=Answer(answer))],
                        policy=policy, guards=night)
    assert trace[1] == ["act request_approval via ipmi L1"]
    assert trace[2] == expected


def test_business_hours_needs_no_approval():
    _, trace = play([DOWN, Done(Step.BMC_READ, True)], policy=OFF_HOURS, guards=Guards(off_hours=False))
    assert trace[1] == ["act power_reset via ipmi L1"]


def test_recovery_while_awaiting_approval_is_verified_then_resolves():
    state, trace = play([DOWN, Done(Step.BMC_READ, True), Recovered("ping", True), verified(True)], policy=OFF_HOURS,
                        guards=Guards(off_hours=True))
    assert trace[2:] == [["act verify L1"], ["resolved"]] and state.phase is Phase.IDLE


def test_recovery_clears_a_block_so_the_next_one_is_journaled_again():
    g = Guards(maintenance="w")
    state, trace = play([DOWN, Recovered("ping", True), DOWN], guards=g)
    assert trace == [["blocked maintenance"], [], ["blocked maintenance"]]


def test_power_action_counts_once_even_with_fallback():
    state, _ = play([DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, False, "x", Failed("ipmi", "")),
                     Done(Step.POWER_RESET, True, detail=PowerDone("pdu"))])
    assert len(state.power_actions) == 1


DISPATCHED_EVENTS = [DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, True, detail=PowerDone("ipmi")),
                     boot(False, False), Done(Step.POWER_CYCLE, True, detail=PowerDone("ipmi")), boot(True, False)]


def test_a_check_answering_while_an_action_is_in_flight_is_left_to_its_verification():
    state, trace = play([DOWN, Done(Step.BMC_READ, True), Recovered("ping", True)])
    assert trace[2] == [] and state.phase is Phase.ACTING and state.step is Step.POWER_RESET


def test_unverified_recovery_keeps_the_dispatch_and_verifies_again_until_boot_timeout():
    policy = replace(FULL, boot_timeout=100, verify_interval=30)
    state, trace = play(DISPATCHED_EVENTS, policy=policy)
    assert trace[-1] == ["page dispatch L3", "sla engineer_on_site"]
    t = 2000.0
    state, decisions = step(state, Recovered("ping", True), policy, OK, t)
    assert short(decisions) == ["act verify L3"] and state.verifying_since == t
    state, decisions = step(state, verified(False), policy, OK, t + 1)  # ping answers, login refused
    [retry] = decisions
    assert (retry.at, retry.event) == (t + 31, Recovered("ping", True))
    assert (state.phase, state.level, state.incident_id) == (Phase.DISPATCHED, 3, 7)
    state, decisions = step(state, retry.event, policy, OK, retry.at)
    state, decisions = step(state, verified(False), policy, OK, t + 101)
    assert short(decisions) == ["note"] and "gave up" in decisions[0].text
    assert state.phase is Phase.DISPATCHED and state.verifying_since == 0.0
    state, decisions = step(state, Recovered("ping", True), policy, OK, t + 500)  # a later recovery: verify again
    state, decisions = step(state, verified(True), policy, OK, t + 501)
    assert short(decisions) == ["resolved"] and state == HostState(power_actions=state.power_actions,
                                                                  grace_until=state.grace_until)


def test_recovery_of_another_check_does_not_verify_a_service_ladder():
    policy = replace(FULL, restartable=frozenset())
    state, trace = play([HTTP_DOWN, Recovered("imap", False), Recovered("http", False)], policy=policy)
    assert trace == [["page service_failed L1"], [], ["act verify L1"]]
    assert "http" in state.check and "verify ping and SSH login and http" in "".join(
        d.why for d in step(replace(state, phase=Phase.HELD, step=None), Recovered("http", False), policy, OK, 0)[1])


def test_unverified_recovery_while_awaiting_approval_goes_back_to_waiting():
    state, _ = play([DOWN, Done(Step.BMC_READ, True), Recovered("ping", True), verified(False)], policy=OFF_HOURS,
                    guards=Guards(off_hours=True))
    assert (state.phase, state.step, state.pending) == (Phase.AWAITING_APPROVAL, Step.REQUEST_APPROVAL,
                                                        Step.POWER_RESET)


def test_bmc_authentication_failure_pages_at_once_and_once_per_ladder():
    policy = replace(FULL, name="web1")
    state = HostState()
    events = [DOWN, Done(Step.BMC_READ, False, "auth"), Done(Step.POWER_RESET, False, "auth", Failed("ipmi", "")),
              Done(Step.POWER_RESET, False, "timeout", Failed("pdu", ""))]
    trace, pages = [], []
    for i, event in enumerate(events):
        state, decisions = step(state, event, policy, OK, i)
        trace.append(short(decisions))
        pages += [d for d in decisions if isinstance(d, Page)]
    assert trace == [["act bmc_read L1"], ["page bmc_auth L1", "act power_reset via ipmi L1"],
                     ["act power_reset via pdu L1"], ["page dispatch L3", "sla engineer_on_site"]]
    cause = "BMC authentication failed for web1 — fix the credentials or reset it by hand"
    assert pages[0].summary == cause
    assert cause in pages[1].summary and pages[1].detail["causes"] == [cause]


@pytest.mark.parametrize("reason,driver,paged", [("timeout", "ipmi", False), ("auth", "pdu", False),
                                                 ("auth", "ipmi", True)])
def test_only_the_bmc_rejecting_credentials_is_a_bmc_auth_page(reason, driver, paged):
    _, trace = play([DOWN, Done(Step.BMC_READ, True), Done(Step.POWER_RESET, False, reason, Failed(driver, ""))],
                    policy=replace(FULL, power_drivers=("ipmi", "pdu") if driver == "ipmi" else ("pdu",)))
    assert ("page bmc_auth L1" in trace[2]) is paged


@pytest.mark.parametrize("events,first", [
    ([HTTP_DOWN], "act service_restart L1"),
    ([DOWN, Done(Step.BMC_READ, True)], "act power_reset via ipmi L1"),
])
def test_a_check_that_answers_right_before_the_first_destructive_action_is_verified_instead(events, first):
    answers = Guards(answers=True)
    state, trace = play(events, guards=[OK] * (len(events) - 1) + [answers])
    assert trace[-1] == ["act verify L1"] and state.pending is not None
    _, decisions = step(state, verified(True), FULL, OK, 2000)
    assert short(decisions) == ["resolved"]
    _, decisions = step(state, verified(False), FULL, OK, 2000)  # answers, but no login: the action goes ahead
    assert short(decisions) == [first]
    _, decisions = step(state, verified(False), FULL, Guards(dry_run=True), 2000)  # with the guards of that moment
    assert short(decisions) == ["blocked dry_run", "note"]


@pytest.mark.parametrize("events,policy", [
    ([DOWN], Policy(has_ssh=True)),  # no power control: would dispatch
    ([HTTP_DOWN], replace(FULL, restartable=frozenset())),  # no restart method: would page
])
@pytest.mark.parametrize("guard,guards", [
    ("blast_radius", Guards(blast_radius="3 of 3 hosts down now")),
    ("maintenance", Guards(maintenance="friday-patching")),
    ("parent_down", Guards(parent_down="core-sw1")),
    ("quarantined", Guards(quarantined=True)),
])
def test_no_host_is_handed_to_humans_while_a_guard_holds_it(events, policy, guard, guards):
    state, trace = play(events + events, policy=policy, guards=guards)
    assert trace == [[f"blocked {guard}"], []]  # journaled once, quietly after
    assert state.phase is Phase.IDLE and state.blocked == guard
    _, trace = play(events, policy=policy, state=state)  # the guard cleared: the host's ladder runs
    assert trace[0][0].startswith("page")


def test_a_power_action_stopped_by_a_quarantine_ends_the_ladder_without_fallback_or_dispatch():
    # the quarantine came while the reset was under way: the power path refused to power on
    stopped = Done(Step.POWER_RESET, False, "error", Failed("ipmi", "not sending on: the host is quarantined"))
    state, trace = play([DOWN, Done(Step.BMC_READ, True), stopped], guards=[OK, OK, Guards(quarantined=True)])
    assert trace == [["act bmc_read L1"], ["act power_reset via ipmi L1"], ["blocked quarantined"]]
    assert state.phase is Phase.IDLE and state.blocked == "quarantined" and state.level == 0


def test_a_power_action_that_failed_otherwise_still_falls_back_to_the_next_driver():
    failed = Done(Step.POWER_RESET, False, "timeout", Failed("ipmi", "no answer"))
    _, trace = play([DOWN, Done(Step.BMC_READ, True), failed])
    assert trace[-1] == ["act power_reset via pdu L1"]


def test_payloads_are_typed_per_step_and_journal_as_before():
    from monitord.escalation.ladder import ApprovalArgs, BmcFound, BootArgs, Reconciled, RestartArgs

    assert ApprovalArgs(Step.POWER_RESET, PowerArgs("ipmi")).journal() == {"for": "power_reset", "driver": "ipmi"}
    assert ApprovalArgs(Step.SERVICE_RESTART, RestartArgs("http")).journal() == {"for": "service_restart", "check": "http"}
    assert BootArgs(600).journal() == {"timeout": 600}
    assert PowerDone("pdu", ("off", "on")).journal() == {"driver": "pdu", "steps": ["off", "on"]}
    assert Failed("ipmi", "no answer").journal() == {"driver": "ipmi", "error": "no answer"}  # maybe_done unknown
    assert Failed(None, "boom", False).journal() == {"driver": None, "error": "boom", "maybe_done": False}
    assert Answer(None).journal() == {"answer": None}  # nobody answered: said so
    assert Verified(True, False, (), "", "ping ok, login failed").journal() == {
        "ping": True, "login": False, "fs_errors": [], "note": "", "summary": "ping ok, login failed"}
    assert BmcFound("power on").journal() == {"findings": "power on"} and Reconciled().journal() == {"reconciled": True}
    with pytest.raises(TypeError, match="payload"):
        Done(Step.POWER_RESET, True, detail={"driver": "ipmi"})  # no magic keys
    with pytest.raises(TypeError, match="payload"):
        Act(Step.POWER_RESET, 1, "reset", {"driver": "ipmi"})
