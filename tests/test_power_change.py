"""The fence-agents discipline of power_change, on an in-memory power switch (pure logic;
the IPMI and PDU drivers are tested against real peers in test_ipmi.py and test_pdu.py)."""

from __future__ import annotations

import pytest

from monitord.shared.results import Reason
from monitord.shared.power import ActionError, PowerAction, PowerState, PowerTimings, power_change

FAST = PowerTimings(power_wait=0, power_timeout=0.05, poll_interval=0.01, retries=1)
"""For switches that never obey (or obey at the first read): every attempt runs to its deadline."""
PATIENT = PowerTimings(power_wait=0, power_timeout=60, poll_interval=0.01, retries=1)
"""For switches that obey after a few reads: a deadline no loaded machine reaches first, never waited for."""


class Switch:
    """A power switch that obeys after ``lag`` status reads, or never (``stuck``)."""

    name = "test"

    def __init__(self, state: PowerState, lag: int = 0, stuck: bool = False):
        self.state, self.lag, self.stuck = state, lag, stuck
        self.sent: list[str] = []
        self._target: PowerState | None = None
        self._reads = 0

    async def status(self) -> PowerState:
        if self._target is not None:
            self._reads += 1
            if self._reads > self.lag and not self.stuck:
                self.state, self._target = self._target, None
        return self.state

    async def command(self, action: PowerAction) -> None:
        self.sent.append(str(action))
        self._reads = 0
        self._target = PowerState.ON if action in (PowerAction.ON, PowerAction.RESET) else PowerState.OFF


@pytest.mark.parametrize("before,action,sent,acted", [
    (PowerState.ON, PowerAction.OFF, ["off"], True),
    (PowerState.OFF, PowerAction.OFF, [], False),
    (PowerState.ON, PowerAction.ON, [], False),
    (PowerState.ON, PowerAction.RESET, ["reset"], True),
    (PowerState.OFF, PowerAction.RESET, ["on"], True),  # a reset does nothing to an off machine
    (PowerState.ON, PowerAction.CYCLE, ["off", "on"], True),
    (PowerState.OFF, PowerAction.CYCLE, ["on"], True),
])
async def test_check_skip_act_verify(before, action, sent, acted):
    switch = Switch(before, lag=2)
    outcome = await power_change(switch, action, PATIENT)
    assert switch.sent == sent and outcome.acted is acted
    assert outcome.final is (PowerState.OFF if action is PowerAction.OFF else PowerState.ON)


async def test_retries_then_gives_up_with_timeout():
    switch = Switch(PowerState.ON, stuck=True)
    with pytest.raises(ActionError) as info:
        await power_change(switch, PowerAction.OFF, FAST)
    assert info.value.reason is Reason.TIMEOUT
    assert switch.sent == ["off", "off"]  # first attempt plus one retry, no more


async def test_a_failure_after_a_command_was_sent_is_marked_maybe_done():
    with pytest.raises(ActionError) as info:
        await power_change(Switch(PowerState.ON, stuck=True), PowerAction.OFF, FAST)
    assert info.value.maybe_done is True


async def test_a_failed_status_read_before_acting_is_not_maybe_done():
    class Dead(Switch):
        async def status(self):
            raise ActionError(Reason.TIMEOUT, "no answer")

    dead = Dead(PowerState.ON)
    with pytest.raises(ActionError) as info:
        await power_change(dead, PowerAction.RESET, FAST)
    assert info.value.maybe_done is False and dead.sent == []


QUARANTINED = "the host is quarantined"


def asking(answer):
    """An objection callback (awaitable, as the store it reads is) that gives ``answer()``."""
    async def objection():
        return answer()
    return objection


async def test_a_quarantine_that_comes_during_a_power_cycle_stops_it_before_powering_on():
    objection: list[str] = []

    class Quarantining(Switch):
        async def command(self, action: PowerAction) -> None:
            await super().command(action)
            objection.append(QUARANTINED)  # the operator's quarantine lands while the machine goes off

    switch = Quarantining(PowerState.ON)
    with pytest.raises(ActionError) as info:
        await power_change(switch, PowerAction.CYCLE, FAST, asking(lambda: objection[0] if objection else None))
    assert switch.sent == ["off"] and switch.state is PowerState.OFF
    assert info.value.summary == f"test: not sending on: {QUARANTINED}" and not info.value.maybe_done


@pytest.mark.parametrize("before,action", [
    (PowerState.ON, PowerAction.RESET), (PowerState.OFF, PowerAction.RESET), (PowerState.OFF, PowerAction.ON),
    (PowerState.OFF, PowerAction.CYCLE),
])
async def test_nothing_that_powers_a_machine_on_is_sent_when_objected_to(before, action):
    switch = Switch(before)
    with pytest.raises(ActionError, match=QUARANTINED):
        await power_change(switch, action, FAST, asking(lambda: QUARANTINED))
    assert switch.sent == [] and switch.state is before


async def test_powering_off_is_never_objected_to():
    switch = Switch(PowerState.ON)
    outcome = await power_change(switch, PowerAction.OFF, FAST, asking(lambda: QUARANTINED))
    assert switch.sent == ["off"] and outcome.final is PowerState.OFF


async def test_a_retry_that_is_objected_to_says_the_first_command_may_have_acted():
    calls: list[int] = []

    def second_time() -> str | None:
        calls.append(1)
        return QUARANTINED if len(calls) > 1 else None

    switch = Switch(PowerState.OFF, stuck=True)  # the first ON is sent but not seen to act
    with pytest.raises(ActionError, match=QUARANTINED) as info:
        await power_change(switch, PowerAction.ON, FAST, asking(second_time))
    assert switch.sent == ["on"] and info.value.maybe_done
