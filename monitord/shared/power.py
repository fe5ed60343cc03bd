"""What every remediation driver shares: typed failures, power states, and the
fence-agents discipline for power changes (check, skip, act, wait, poll-verify, retry)."""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol

from monitord.shared.redact import redact
from monitord.shared.results import Reason


class ActionError(Exception):
    """A remediation step failed, with a typed reason (timeout, refused, auth, protocol, error)."""

    def __init__(self, reason: Reason, summary: str, maybe_done: bool = False) -> None:
        summary = redact(summary)
        super().__init__(summary)
        self.reason = reason
        self.summary = summary
        self.maybe_done = maybe_done
        """True when a command was sent and may have acted: never resend or fall back blindly."""


class PowerState(enum.StrEnum):
    """A machine's power as its BMC or PDU outlet reports it."""

    ON = "on"
    OFF = "off"


class PowerAction(enum.StrEnum):
    """What a power driver can be told to do."""

    ON = "on"
    OFF = "off"
    RESET = "reset"  # hard reset; power stays on (IPMI chassis reset, PDU outlet reboot)
    CYCLE = "cycle"  # off, verified off, on (done by power_change, not by the driver)


class PowerDriver(Protocol):
    """One way to switch one host's power (its BMC, or its PDU outlet)."""

    name: str  # "ipmi" or "pdu", for the journal and metrics

    async def status(self) -> PowerState:
        """Read the power state; raise :class:`ActionError` on failure."""

    async def command(self, action: PowerAction) -> None:
        """Send one ON, OFF or RESET command (no verification); raise :class:`ActionError`."""


@dataclass(frozen=True, slots=True)
class PowerTimings:
    """fence-agents style timings: how long to wait and poll, and how often to retry."""

    power_wait: float = 2.0  # after a command, before the first status poll
    power_timeout: float = 30.0  # poll until the expected state or this deadline
    poll_interval: float = 1.0
    retries: int = 1  # further attempts after the first


@dataclass(frozen=True, slots=True)
class PowerOutcome:
    """What a power change did: ``acted`` False means the target state already held."""

    action: PowerAction
    acted: bool
    final: PowerState
    attempts: int
    steps: tuple[str, ...] = field(default=())


async def _wait_for(driver: PowerDriver, want: PowerState, timings: PowerTimings) -> PowerState:
    """Poll status until ``want`` or the power timeout; return the last state seen."""
    deadline = time.monotonic() + timings.power_timeout
    await asyncio.sleep(timings.power_wait)
    while True:
        state = await driver.status()
        if state is want or time.monotonic() >= deadline:
            return state
        await asyncio.sleep(timings.poll_interval)


async def _no_objection() -> str | None:
    return None


async def power_change(driver: PowerDriver, action: PowerAction, timings: PowerTimings,
                       may_power_on: Callable[[], Awaitable[str | None]] = _no_objection) -> PowerOutcome:
    """Do ``action`` the fence-agents way: read status, skip if already there, act, wait,
    poll-verify until the deadline, retry a bounded number of times.

    RESET of a machine that is off powers it on instead (a reset does nothing to an off
    machine). CYCLE is OFF verified, then ON verified. Raises :class:`ActionError` when the
    state cannot be read or the change is not seen before the last retry's deadline.

    Right before every command that powers a machine on or keeps it running (ON, RESET; the
    second half of a CYCLE), ``may_power_on()`` is asked; a reason it gives (the host was
    quarantined meanwhile) stops the change with an :class:`ActionError` saying so.
    """
    steps: list[str] = []
    if action is PowerAction.CYCLE:
        off = await power_change(driver, PowerAction.OFF, timings)
        on = await power_change(driver, PowerAction.ON, timings, may_power_on)
        return PowerOutcome(action, off.acted or on.acted, on.final, off.attempts + on.attempts, off.steps + on.steps)
    before = await driver.status()
    steps.append(f"{driver.name}: power was {before}")
    if action is PowerAction.RESET and before is PowerState.OFF:
        steps.append(f"{driver.name}: machine is off, powering on instead of resetting")
        action_sent, want = PowerAction.ON, PowerState.ON
    elif action is PowerAction.RESET:
        action_sent, want = PowerAction.RESET, PowerState.ON
    else:
        want = PowerState(action.value)
        if before is want:
            steps.append(f"{driver.name}: already {want}, nothing to do")
            return PowerOutcome(action, False, before, 0, tuple(steps))
        action_sent = action
    last: PowerState = before
    for attempt in range(1, timings.retries + 2):
        objection = await may_power_on() if action_sent is not PowerAction.OFF else None
        if objection:
            steps.append(f"{driver.name}: not sending {action_sent}: {objection}")
            raise ActionError(Reason.ERROR, f"{driver.name}: not sending {action_sent}: {objection}", maybe_done=attempt > 1)
        try:
            await driver.command(action_sent)
            steps.append(f"{driver.name}: sent {action_sent} (attempt {attempt})")
            last = await _wait_for(driver, want, timings)
        except ActionError as exc:
            if attempt > 1 or exc.reason is Reason.TIMEOUT:
                exc.maybe_done = True  # a command is out: its effect is unknown
            raise
        if last is want:
            steps.append(f"{driver.name}: power is {last}")
            return PowerOutcome(action, True, last, attempt, tuple(steps))
        steps.append(f"{driver.name}: still {last} after {timings.power_timeout:g}s")
    raise ActionError(Reason.TIMEOUT, "; ".join(steps[-2:]) + f"; gave up after {timings.retries + 1} attempts",
                      maybe_done=True)
