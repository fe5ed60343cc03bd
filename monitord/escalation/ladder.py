"""The escalation state machine: the contracts' level 1/2/3 ladders, with no I/O.

``step(state, event, policy, guards, now) -> (state, decisions)``. The engine
(:mod:`monitord.escalation.engine`) feeds it events (a check confirmed down or recovered, an action's
outcome, an approval), journals the decisions durably, and only then carries them out.

Host-down ladder (a confirmed ping failure, or a check marked ``host_critical``):
  L1  read the BMC (power, SEL, sensors), then a hardware reset (IPMI, else the PDU outlet),
      wait for boot, verify: the host answers ping AND an SSH login succeeds.
  L2  back but login fails or the boot log shows filesystem errors: force a filesystem check
      over SSH and reboot (when SSH works), else power-cycle; not back at all: power-cycle
      (off, verified off, on). Wait and verify once more.
  L3  still not up: page for on-site dispatch with the BMC findings, what was tried and the
      customer's instructions, and start the SLA timer (engineer on site: ``paging.sla``).
Service-down ladder (a confirmed port or database check failure):
  L1  SSH login, check the service, restart it, wait the grace period, re-probe at once.
  L2  login fails: hand over to the host-down ladder.
    A restart that does not bring the service back pages a human.
Configured ladder (``Policy.steps``, e.g. contract 004's appliance: restart services, restart
processes, restart the VM, escalate to the vendor): replaces both ladders for the host. Each
step is verified before the next: a restart by re-probing the check, a power step by ping and
SSH login and then the check; a step that does not fit the failing check (a process restart
for a service check) is skipped with a note; after the last step, level 3 dispatch.
Recovery: an open ladder ends only when its own verification passes (ping AND an SSH login,
plus the service probe for a service ladder). A check that recovers while an action is in
flight is left to that action's verification; one that recovers while the ladder waits for
humans (dispatched, held) starts a verification, repeated until ``boot_timeout`` has passed.

Guards are checked before every action decision, never after: maintenance, parent down
(the host is unreachable, not down), blast radius (the monitor's side is broken),
quarantine, dry-run, attempt limits, the grace period after an action, and the off-hours
contact-first rule.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field, fields, replace
from typing import Literal

from monitord.config import RemediationSettings
from monitord.paging.oncall import PageKind, SlaTargets


class Ladder(enum.StrEnum):
    HOST = "host_down"
    SERVICE = "service_down"
    CONFIGURED = "configured"  # the host's remediation.ladder steps


class Phase(enum.StrEnum):
    """Where a host's escalation stands."""

    IDLE = "idle"  # nothing in progress (possibly blocked: see ``blocked``)
    ACTING = "acting"  # an action was decided and its outcome is awaited
    AWAITING_APPROVAL = "awaiting_approval"  # asked the emergency contact; waiting
    DISPATCHED = "dispatched"  # level 3: humans are on it; no more automatic action
    HELD = "held"  # stopped by policy (no approval, dry-run); humans decide


class Step(enum.StrEnum):
    """Actions the engine can carry out."""

    BMC_READ = "bmc_read"
    POWER_RESET = "power_reset"
    POWER_CYCLE = "power_cycle"
    WAIT_BOOT = "wait_boot"
    FSCK = "fsck"
    SERVICE_RESTART = "service_restart"
    REQUEST_APPROVAL = "request_approval"
    VERIFY = "verify"  # one pass of the ladder's verification, after a check recovered by itself


DESTRUCTIVE = {Step.POWER_RESET, Step.POWER_CYCLE, Step.FSCK, Step.SERVICE_RESTART}
POWER_STEPS = {Step.POWER_RESET, Step.POWER_CYCLE}


# -- inputs ---------------------------------------------------------------------------------


_DEFAULTS, _SLA = RemediationSettings(), SlaTargets()  # the contract's values live in the config's models only


@dataclass(frozen=True, slots=True)
class Policy:
    """A host's remediation settings, resolved from the config (:meth:`Engine.policy`); the
    defaults are the config's."""

    power_drivers: tuple[str, ...] = ()  # fallback order, e.g. ("ipmi", "pdu")
    has_bmc: bool = False
    has_ssh: bool = False
    boot_timeout: float = _DEFAULTS.boot_timeout
    max_resets: int = _DEFAULTS.max_resets
    reset_window: float = _DEFAULTS.reset_window
    grace: float = _DEFAULTS.grace
    max_restarts: int = _DEFAULTS.max_restarts
    restart_window: float = _DEFAULTS.restart_window
    contact_first: frozenset[Step] = frozenset()  # actions needing approval outside business hours
    on_no_answer: Literal["hold", "proceed"] = _DEFAULTS.on_no_answer
    dry_run: bool = False
    restartable: frozenset[str] = frozenset()  # checks with a restart method configured
    name: str = ""  # the host's name, for pages that must name it
    verify_interval: float = 30.0  # how often a recovered check is verified again while verification fails
    engineer_on_site: float = _SLA.engineer_on_site  # the SLA target from dispatch to an engineer on site (paging.sla)
    steps: tuple[str, ...] = ()  # a configured ladder: restart:services|processes, power:reset|cycle, vendor:NAME
    processes: frozenset[str] = frozenset()  # restartable checks restarted by kill/start (a process), not a service


@dataclass(frozen=True, slots=True)
class Guards:
    """What the engine found out about the world just before this step (no I/O here)."""

    maintenance: str | None = None  # name of the window covering the host
    parent_down: str | None = None  # a parent that is down: the host is unreachable
    blast_radius: str | None = None  # why the monitor's own side looks broken
    quarantined: bool = False
    off_hours: bool = False
    dry_run: bool = False  # global --dry-run
    answers: bool = False  # the ladder's check passed when probed just now, before its first destructive action


@dataclass(frozen=True, slots=True)
class Confirmed:
    """A check of the host became a hard (confirmed) problem, or still is one."""

    check: str
    host_down: bool  # ping, or a check marked host_critical
    incident_id: int | None = None
    summary: str = ""


@dataclass(frozen=True, slots=True)
class Recovered:
    """A check of the host is OK again."""

    check: str
    host_down: bool


# -- payloads: what an action is told, and what it found, per step ---------------------------


KEEP = {"keep": True}


class Payload:
    """An :class:`Act`'s arguments or a :class:`Done`'s findings; :meth:`journal` is its form in
    the journal (a field that is None by default and unset is left out, unless it is marked
    ``KEEP``: its None says something)."""

    __slots__ = ()

    def journal(self) -> dict:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.default is None and not f.metadata.get("keep"):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True, slots=True)
class PowerArgs(Payload):
    """power_reset, power_cycle: the power driver to use (the fallback order is the policy's)."""

    driver: str


@dataclass(frozen=True, slots=True)
class BootArgs(Payload):
    """wait_boot: how long to wait for ping and an SSH login."""

    timeout: float


@dataclass(frozen=True, slots=True)
class RestartArgs(Payload):
    """service_restart: the check whose service or process is restarted."""

    check: str


@dataclass(frozen=True, slots=True)
class ApprovalArgs(Payload):
    """request_approval: the action the emergency contact is asked about, and its own arguments."""

    action: Step
    then: PowerArgs | RestartArgs | None = None

    def journal(self) -> dict:
        return {"for": str(self.action), **(self.then.journal() if self.then else {})}


Args = PowerArgs | BootArgs | RestartArgs | ApprovalArgs | None


@dataclass(frozen=True, slots=True)
class BmcFound(Payload):
    """bmc_read: what the BMC says (power, SEL, sensors)."""

    findings: str


@dataclass(frozen=True, slots=True)
class PowerDone(Payload):
    """A power step went through ``driver``: the commands and reads it took (``reconciled``:
    read back after a restart, not sent)."""

    driver: str
    steps: tuple[str, ...] = ()
    reconciled: bool | None = None


@dataclass(frozen=True, slots=True)
class BootFound(Payload):
    """wait_boot: does the host answer ping, does an SSH login work, what the boot log says."""

    ping: bool
    login: bool
    fs_errors: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class Verified(BootFound):
    """verify: the boot check, plus the check's own probe for a service ladder, in words."""

    summary: str = ""


@dataclass(frozen=True, slots=True)
class RestartDone(Payload):
    """service_restart: whether the SSH login worked, whether the unit was active, the re-probe."""

    login: bool
    was_active: bool | None = field(default=None, metadata=KEEP)  # None: not asked (a process has no unit)
    probe: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Answer(Payload):
    """request_approval: "granted", "denied", or None (nobody answered in time)."""

    answer: str | None


@dataclass(frozen=True, slots=True)
class Reconciled(Payload):
    """A step taken as done after a restart (fsck): verified by what follows."""

    reconciled: bool = True


@dataclass(frozen=True, slots=True)
class Failed(Payload):
    """A step that raised: the driver's typed error (``maybe_done``: the command may have gone out)."""

    driver: str | None
    error: str
    maybe_done: bool | None = None


Found = BmcFound | PowerDone | BootFound | RestartDone | Answer | Reconciled | Failed | None


@dataclass(frozen=True, slots=True)
class Done:
    """An action's outcome. ``ok`` says whether it did its job; ``detail`` what it found (the
    step's payload, :data:`Found`)."""

    step: Step
    ok: bool
    reason: str = ""
    detail: Found = None

    def __post_init__(self) -> None:
        if self.detail is not None and not isinstance(self.detail, Payload):
            raise TypeError(f"{self.step}: findings are a payload (ladder.Found), not {self.detail!r}")


Event = Confirmed | Recovered | Done


# -- outputs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Act:
    """Carry out ``step`` (after journaling this decision)."""

    step: Step
    level: int
    why: str
    args: Args = None

    def __post_init__(self) -> None:
        if self.args is not None and not isinstance(self.args, Payload):
            raise TypeError(f"{self.step}: arguments are a payload (ladder.Args), not {self.args!r}")


GUARDS = ("quarantined", "maintenance", "parent_down", "blast_radius", "dry_run", "limit", "denied", "no_answer")
"""Every guard that can block an action (the ``guard`` of :class:`Blocked`)."""


@dataclass(frozen=True, slots=True)
class Blocked:
    """An action was due but a guard stopped it."""

    guard: str  # one of GUARDS
    why: str


@dataclass(frozen=True, slots=True)
class Page:
    """Tell humans (a page of ``kind``)."""

    kind: PageKind
    level: int
    summary: str
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StartSla:
    """Start an SLA timer (the paging issue pages on breach)."""

    name: str  # engineer_on_site
    due: float


@dataclass(frozen=True, slots=True)
class Resolved:
    """The ladder ended: the host or service is verified back."""

    why: str


@dataclass(frozen=True, slots=True)
class Note:
    """Something worth journaling that is not a decision (e.g. ignored during grace)."""

    text: str


@dataclass(frozen=True, slots=True)
class Retry:
    """Re-evaluate at ``at`` (grace period still running): replay ``event``, or the event that led here."""

    at: float
    why: str
    event: "Event | None" = None


Decision = Act | Blocked | Page | StartSla | Resolved | Note | Retry


# -- state ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostState:
    """A host's escalation state; persisted by the engine with every decision."""

    phase: Phase = Phase.IDLE
    ladder: Ladder | None = None
    level: int = 0
    step: Step | None = None  # the action in flight (ACTING) or awaiting approval
    pending: Step | None = None  # the action an approval request is for
    check: str | None = None  # the check that started the ladder
    incident_id: int | None = None
    started_at: float = 0.0
    acted_at: float = 0.0
    power_actions: tuple[float, ...] = ()  # times of resets/cycles, for the attempt limit
    restarts: tuple[float, ...] = ()
    grace_until: float = 0.0
    drivers_failed: tuple[str, ...] = ()  # power drivers that failed during this step
    blocked: str | None = None  # the last guard that blocked, to journal each block once
    tried: tuple[str, ...] = ()  # what was done in this ladder, for the dispatch page
    causes: tuple[str, ...] = ()  # what humans must fix (e.g. the BMC's credentials), for the dispatch page
    resume: Phase | None = None  # while verifying a recovery: the phase to return to if it fails
    verifying_since: float = 0.0  # when verification of a recovery began (0: not verifying)
    rung: int = 0  # the configured ladder's step in progress (an index into Policy.steps)


def step(state: HostState, event: Event, policy: Policy, guards: Guards, now: float) -> tuple[HostState, list[Decision]]:
    """Advance one host's escalation by one event."""
    if isinstance(event, Confirmed):
        new, decisions = _on_confirmed(state, event, policy, guards, now)
    elif isinstance(event, Recovered):
        new, decisions = _on_recovered(state, event, now)
    else:
        new, decisions = _on_done(state, event, policy, guards, now)
    handing_over = new.phase in (Phase.DISPATCHED, Phase.HELD) and state.phase not in (Phase.DISPATCHED, Phase.HELD)
    block = _hand_over_block(policy, guards) if handing_over else None
    if block is not None:
        # no host is handed to humans while it is quarantined, in maintenance or behind a parent
        # that is down, or while the monitor's side looks broken: the ladder ends blocked and
        # starts again when the guard clears, if the host is still down
        kept = [d for d in decisions if not isinstance(d, (Page, StartSla, Blocked))]
        return _end(new, blocked=block.guard), kept + ([block] if state.blocked != block.guard else [])
    return new, decisions


def _hand_over_block(p: Policy, g: Guards) -> Blocked | None:
    """What stops a dispatch or a page for a host: the guards that stop every step (a host
    without power control, or at its reset limit, reaches level 3 without taking one), and a
    monitor-side failure."""
    block = _guard(Step.VERIFY, p, g)
    if block is None and g.blast_radius:
        block = Blocked("blast_radius", f"monitor-side failure suspected ({g.blast_radius}): host page held")
    return block


def _on_confirmed(s: HostState, e: Confirmed, p: Policy, g: Guards, now: float) -> tuple[HostState, list[Decision]]:
    if s.phase is not Phase.IDLE:
        if e.host_down and s.ladder is Ladder.SERVICE and s.phase is Phase.HELD:
            pass  # a held service problem became a host problem: take the host ladder
        else:
            return s, []  # already handled by the ladder in progress
    if grace_verdict(s, now):
        return s, [Retry(s.grace_until, f"{e.check} failed within the grace period after the last action")]
    ladder = Ladder.CONFIGURED if p.steps else Ladder.HOST if e.host_down else Ladder.SERVICE
    fresh = replace(s, ladder=ladder, level=1, check=e.check, incident_id=e.incident_id, started_at=now,
                    tried=(), causes=(), drivers_failed=(), pending=None, step=None, resume=None, verifying_since=0.0)
    if ladder is Ladder.CONFIGURED:
        return _rung(fresh, 0, f"{e.check} confirmed down", p, g, now)
    if ladder is Ladder.SERVICE:
        if e.check not in p.restartable:
            return _page_held(fresh, PageKind.SERVICE_FAILED, 1, f"{e.check} is down and has no restart method configured")
        if not p.has_ssh:
            return _page_held(fresh, PageKind.SERVICE_FAILED, 1, f"{e.check} is down and the host has no SSH access configured")
        return _decide(fresh, Step.SERVICE_RESTART, 1, f"{e.check} confirmed down: restart it over SSH", p, g, now,
                       args=RestartArgs(e.check))
    if p.has_bmc:
        return _decide(fresh, Step.BMC_READ, 1, "host down: read the BMC (power, SEL, sensors)", p, g, now)
    return _power(fresh, Step.POWER_RESET, 1, "host down: hardware reset (no BMC to read)", p, g, now)


def _on_recovered(s: HostState, e: Recovered, now: float) -> tuple[HostState, list[Decision]]:
    if s.ladder is None or s.phase is Phase.ACTING:
        return replace(s, blocked=None) if s.phase is Phase.IDLE else s, []  # the action's own verification decides
    if e.check != s.check and not (e.host_down and s.ladder is Ladder.HOST):
        return s, []
    # dispatched, held or awaiting an answer: a check answering is not the contract's "recovered"
    verifying = replace(s, phase=Phase.ACTING, step=Step.VERIFY, resume=s.phase,
                        verifying_since=s.verifying_since or now)
    what = "ping and SSH login" + (f" and {s.check}" if s.ladder is Ladder.SERVICE else "")
    return verifying, [Act(Step.VERIFY, s.level, f"{e.check} answers again: verify {what}")]


def _on_verified(s: HostState, e: Done, p: Policy, g: Guards, now: float) -> tuple[HostState, list[Decision]]:
    if e.ok:
        return _end(s), [Resolved(f"verified after {s.check} recovered: {_summary(e, 'ok')}")]
    if s.ladder is Ladder.CONFIGURED and s.resume is None and s.pending is None:  # its step was not enough
        return _rung(s, s.rung + 1, f"not verified after step {s.rung + 1} ({_summary(e, e.reason)})",
                     p, g, now)
    if s.resume is None:  # it answered right before an action: not verified, so the action goes ahead
        return _pending(replace(s, phase=Phase.IDLE, step=None, pending=None, verifying_since=0.0), s.pending,
                        f"{s.check} answered but the host is not verified ({_summary(e, e.reason)})",
                        p, g, now)
    back = replace(s, phase=s.resume, resume=None,
                   step=Step.REQUEST_APPROVAL if s.resume is Phase.AWAITING_APPROVAL else None)
    why = f"recovery not verified ({e.reason or 'failed'}): level {s.level} stays"
    if now - s.verifying_since < p.boot_timeout:
        again = now + p.verify_interval
        return back, [Retry(again, why + "; verifying again", Recovered(s.check or "", s.ladder is Ladder.HOST))]
    return replace(back, verifying_since=0.0), [Note(why + f"; gave up verifying after {p.boot_timeout:g}s")]


def _on_done(s: HostState, e: Done, p: Policy, g: Guards, now: float) -> tuple[HostState, list[Decision]]:
    if s.phase not in (Phase.ACTING, Phase.AWAITING_APPROVAL) or e.step is not s.step:
        return s, [Note(f"outcome of {e.step} ignored: not the step in flight")]
    if e.step is Step.VERIFY:
        return _on_verified(s, e, p, g, now)
    if _bmc_auth_failed(e):
        cause = f"BMC authentication failed for {p.name or 'the host'} — fix the credentials or reset it by hand"
        if cause not in s.causes:
            state, decisions = _on_done(replace(s, causes=s.causes + (cause,)), e, p, g, now)
            return state, [Page(PageKind.BMC_AUTH, s.level, cause, {"tried": list(s.tried)}), *decisions]
    s = replace(s, phase=Phase.IDLE, step=None, tried=s.tried + (f"{e.step}: {'ok' if e.ok else 'failed'}"
                                                                  + (f" ({e.reason})" if e.reason else ""),))
    if e.step is Step.REQUEST_APPROVAL:
        return _on_approval(s, e, p, g, now)
    if e.step is Step.BMC_READ:
        return _power(s, Step.POWER_RESET, 1, "BMC read; hardware reset", p, g, now)
    if e.step in POWER_STEPS:
        if not e.ok and g.quarantined:  # quarantined while it was under way: the power path stopped it
            return _end(s, blocked="quarantined"), [_guard(e.step, p, g)]
        if e.ok:
            return _decide(replace(s, drivers_failed=()), Step.WAIT_BOOT, s.level,
                           f"wait up to {p.boot_timeout:g}s for boot, then verify ping and SSH login", p, g, now,
                           args=BootArgs(p.boot_timeout))
        if isinstance(e.detail, Failed) and e.detail.maybe_done:  # the command went out: verify by the boot, never send another blindly
            return _decide(replace(s, drivers_failed=()), Step.WAIT_BOOT, s.level,
                           f"{e.step} outcome unknown ({e.reason}); verify by waiting for the boot", p, g, now,
                           args=BootArgs(p.boot_timeout))
        failed = s.drivers_failed + (_driver(e),)
        remaining = [d for d in p.power_drivers if d not in failed]
        if remaining:
            return _power(replace(s, drivers_failed=failed), e.step, s.level,
                          f"{e.step} through {failed[-1]} failed ({e.reason}); falling back to {remaining[0]}", p, g,
                          now)
        return _next(s, f"{e.step} failed through every power driver ({e.reason})", p, g, now)
    if e.step is Step.WAIT_BOOT and s.ladder is Ladder.CONFIGURED:
        if e.ok:
            verifying = replace(s, phase=Phase.ACTING, step=Step.VERIFY, resume=None, pending=None)
            return verifying, [Act(Step.VERIFY, s.level, f"host is back: verify ping, SSH login and {s.check}")]
        return _rung(s, s.rung + 1, f"not back after the power step ({e.reason or 'boot log shows errors'})", p, g, now)
    if e.step is Step.WAIT_BOOT:
        return _on_boot(s, e, p, g, now)
    if e.step is Step.FSCK:
        if e.ok:
            return _decide(s, Step.WAIT_BOOT, 2, "filesystem check forced; wait for boot and verify", p, g, now,
                           args=BootArgs(p.boot_timeout))
        return _power(replace(s, level=2), Step.POWER_CYCLE, 2, f"could not force a filesystem check ({e.reason}); power-cycle",
                      p, g, now)
    if e.step is Step.SERVICE_RESTART:
        if e.ok:
            return _end(s), [Resolved(f"{s.check} is answering again after the restart")]
        if s.ladder is Ladder.CONFIGURED:
            return _rung(s, s.rung + 1, f"{s.check} still failing after the restart ({e.reason})", p, g, now)
        if isinstance(e.detail, RestartDone) and not e.detail.login:
            handed = replace(s, ladder=Ladder.HOST, level=1)
            why = f"SSH login failed ({e.reason}): follow the host-down procedure"
            if p.has_bmc:
                return _decide(handed, Step.BMC_READ, 1, why + "; read the BMC", p, g, now)
            return _power(handed, Step.POWER_RESET, 1, why + "; hardware reset", p, g, now)
        return _page_held(s, PageKind.SERVICE_FAILED, 2, f"{s.check} still failing after a restart ({e.reason})")
    return s, [Note(f"unexpected outcome {e.step}")]


def _bmc_auth_failed(e: Done) -> bool:
    """The BMC rejected the credentials (RAKP HMAC invalid): no retry fixes that, humans must."""
    return not e.ok and e.reason == "auth" and (e.step is Step.BMC_READ or _driver(e) == "ipmi")


def _driver(e: Done) -> str:
    """The power driver a power step's outcome names ("" if none)."""
    return (e.detail.driver or "") if isinstance(e.detail, (PowerDone, Failed)) else ""


def _summary(e: Done, default: str) -> str:
    """A verification's summary in words, else ``default``."""
    return e.detail.summary if isinstance(e.detail, Verified) else default


def _on_boot(s: HostState, e: Done, p: Policy, g: Guards, now: float) -> tuple[HostState, list[Decision]]:
    boot = e.detail if isinstance(e.detail, BootFound) else BootFound(False, False)
    ping, login, fs_errors = boot.ping, boot.login, boot.fs_errors
    if ping and login and not fs_errors:
        return _end(s), [Resolved("host answers ping and an SSH login succeeded")]
    if s.level >= 2:
        what = "did not come back" if not ping else ("login fails" if not login else "filesystem errors remain")
        return _dispatch(s, f"after level 2 the host {what}", p, now)
    if ping and login and fs_errors:
        return _decide(replace(s, level=2), Step.FSCK, 2,
                       f"boot log shows filesystem errors ({fs_errors[0][:80]}): force a check and reboot", p, g, now)
    if ping:
        return _power(replace(s, level=2), Step.POWER_CYCLE, 2,
                      "host answers ping but SSH login fails; power-cycle so the boot-time fsck runs", p, g, now)
    return _power(replace(s, level=2), Step.POWER_CYCLE, 2, "host did not come back after the reset: power-cycle", p, g, now)


def _on_approval(s: HostState, e: Done, p: Policy, g: Guards, now: float) -> tuple[HostState, list[Decision]]:
    pending, answer = s.pending, e.detail.answer if isinstance(e.detail, Answer) else None
    s = replace(s, pending=None)
    if answer == "granted" or (answer is None and p.on_no_answer == "proceed"):
        why = "approved by the emergency contact" if answer else "no answer from the emergency contact; policy: proceed"
        return _pending(s, pending, why, p, g, now, approved=True)
    guard = "denied" if answer == "denied" else "no_answer"
    why = "the emergency contact declined" if answer == "denied" else "no answer from the emergency contact; policy: hold"
    held = replace(s, phase=Phase.HELD)
    return held, [Blocked(guard, f"{pending} not done: {why}"),
                  Page(PageKind.ACTION_HELD, s.level, f"{pending} held: {why}", {"tried": list(s.tried)})]


# -- helpers --------------------------------------------------------------------------------


def _next(s: HostState, why: str, p: Policy, g: Guards, now: float,
          blocked: Blocked | None = None) -> tuple[HostState, list[Decision]]:
    """A step failed or cannot be taken: the configured ladder takes its next step, the built-in
    ladders go to level 3."""
    if s.ladder is Ladder.CONFIGURED:
        state, decisions = _rung(s, s.rung + 1, why, p, g, now)
        return state, ([blocked] if blocked else []) + decisions
    return _dispatch(s, why, p, now, blocked=blocked)


def _rung(s: HostState, i: int, why: str, p: Policy, g: Guards, now: float) -> tuple[HostState, list[Decision]]:
    """Take step ``i`` of the configured ladder, skipping the steps that do not fit; past the last, level 3."""
    said: list[Decision] = []
    for i in range(i, len(p.steps)):
        kind, _, what = p.steps[i].partition(":")
        level = min(i + 1, 2)  # the contract's levels: 1 and 2 are ours to act, 3 is people on site
        s = replace(s, rung=i, level=level)
        if kind == "power":
            state, decisions = _power(s, Step.POWER_CYCLE if what == "cycle" else Step.POWER_RESET, level,
                                      f"{why}: step {i + 1}, power {what}", p, g, now)
            return state, said + decisions
        if kind == "vendor":
            block = _hand_over_block(p, g)
            if block is not None:
                return _end(s, blocked=block.guard), said + ([block] if s.blocked != block.guard else [])
            said.append(Page(PageKind.VENDOR, level, f"{why}: step {i + 1}, escalate to vendor {what}",
                             {"tried": list(s.tried), "vendor": what}))
            s = replace(s, tried=s.tried + (f"vendor {what}: paged",))
            continue
        fits = s.check in p.restartable and (s.check in p.processes) == (what == "processes")
        if fits and p.has_ssh:
            state, decisions = _decide(s, Step.SERVICE_RESTART, level, f"{why}: step {i + 1}, restart {what} of {s.check}",
                                       p, g, now, args=RestartArgs(s.check or ""))
            return state, said + decisions
        said.append(Note(f"step {i + 1} (restart {what}) skipped: {s.check} has no {what[:-1]} restart"
                         + ("" if p.has_ssh else " (no SSH access)")))
    state, decisions = _dispatch(s, f"{why}; every step of the ladder was tried", p, now)
    return state, said + decisions


def _pending(s: HostState, what: Step | None, why: str, p: Policy, g: Guards, now: float,
             approved: bool = False) -> tuple[HostState, list[Decision]]:
    """Decide the action that waited (for an answer, for a verification)."""
    if what in POWER_STEPS:
        return _power(s, what, s.level, why, p, g, now, approved=approved)
    args = RestartArgs(s.check or "") if what is Step.SERVICE_RESTART else None
    return _decide(s, what, s.level, why, p, g, now, args=args, approved=approved)


def _power(s: HostState, what: Step, level: int, why: str, p: Policy, g: Guards, now: float,
           approved: bool = False) -> tuple[HostState, list[Decision]]:
    """Decide a power action: limit and drivers first, then the common guards."""
    if not p.power_drivers:
        return _next(s, "no power control configured (no BMC, no PDU)", p, g, now)
    recent = recent_power_actions(s, p, now)
    s = replace(s, power_actions=recent)
    limit = limit_verdict(what, s, p, now)
    if limit and not s.drivers_failed:
        return _next(s, f"{len(recent)} power actions within {p.reset_window:g}s (limit {p.max_resets})", p, g, now,
                     blocked=Blocked("limit", limit))
    driver = next(d for d in p.power_drivers if d not in s.drivers_failed)
    return _decide(s, what, level, why, p, g, now, args=PowerArgs(driver), approved=approved)


def _decide(s: HostState, what: Step, level: int, why: str, p: Policy, g: Guards, now: float,
            args: PowerArgs | RestartArgs | BootArgs | None = None,
            approved: bool = False) -> tuple[HostState, list[Decision]]:
    """Check the guards, then decide ``what``."""
    if what in DESTRUCTIVE or what is Step.BMC_READ:
        block = _guard(what, p, g)
        if block is not None:
            decisions: list[Decision] = []
            if s.blocked != block.guard:  # journal each block once, not at every re-evaluation
                decisions.append(block)
                if block.guard == "dry_run":
                    decisions.append(Note(f"dry run: would {what} ({why})"))
            return _end(s, blocked=block.guard), decisions
    if what in DESTRUCTIVE and g.answers:  # recovered meanwhile: verify by the contract's definition instead
        checking = replace(s, phase=Phase.ACTING, step=Step.VERIFY, pending=what, level=level, resume=None,
                           verifying_since=now, blocked=None)
        return checking, [Act(Step.VERIFY, level, f"{s.check} answers again: verify before any {what}")]
    if approval_verdict(what, p, g) and not approved:
        asked = replace(s, phase=Phase.AWAITING_APPROVAL, step=Step.REQUEST_APPROVAL, pending=what, level=level,
                        blocked=None)
        return asked, [Act(Step.REQUEST_APPROVAL, level, f"outside business hours: ask the emergency contact before {what}",
                           ApprovalArgs(what, args if isinstance(args, (PowerArgs, RestartArgs)) else None))]
    new = replace(s, phase=Phase.ACTING, step=what, level=level, blocked=None, acted_at=now)
    if what in POWER_STEPS and not s.drivers_failed:
        new = replace(new, power_actions=s.power_actions + (now,))
    if what in DESTRUCTIVE:
        new = replace(new, grace_until=now + p.grace)
    if what is Step.SERVICE_RESTART:
        new = replace(new, restarts=recent_restarts(s, p, now) + (now,))
        if limit_verdict(what, s, p, now):
            return _page_held(s, PageKind.SERVICE_FAILED, 2,
                              f"{s.check}: {p.max_restarts} restarts within {p.restart_window:g}s; not restarting again")
    return new, [Act(what, level, why, args)]


def guard_verdicts(what: Step, p: Policy, g: Guards) -> list[tuple[str, Blocked | None]]:
    """Each common guard's verdict on ``what``, in the order they are asked: a block, or None (pass)."""
    destructive = what in DESTRUCTIVE
    return [
        ("quarantined", Blocked("quarantined", "host is quarantined: no automatic action until `monitord release`")
         if g.quarantined else None),
        ("maintenance", Blocked("maintenance", f"maintenance window {g.maintenance!r} covers the host")
         if g.maintenance else None),
        ("parent_down", Blocked("parent_down", f"parent {g.parent_down} is down: the host is unreachable, not down")
         if g.parent_down else None),
        ("blast_radius", Blocked("blast_radius", f"monitor-side failure suspected ({g.blast_radius}): no actions")
         if g.blast_radius and destructive else None),
        ("dry_run", Blocked("dry_run", "dry run: decide and journal, never act")
         if (g.dry_run or p.dry_run) and destructive else None),
    ]


def limit_verdict(what: Step, s: HostState, p: Policy, now: float) -> str | None:
    """The attempt limit on ``what`` (power steps count against ``max_resets`` within
    ``reset_window``, restarts against ``max_restarts`` within ``restart_window``): why it blocks, or None."""
    if what in POWER_STEPS:
        kind, used, limit = "reset", len(recent_power_actions(s, p, now)), p.max_resets
    else:
        kind, used, limit = "restart", len(recent_restarts(s, p, now)), p.max_restarts
    return f"{kind} limit reached ({used}/{limit})" if used >= limit else None


def grace_verdict(s: HostState, now: float) -> str | None:
    """The grace period after the last action (a new failure waits for its end): why it holds, or None."""
    if now < s.grace_until:
        at = dt.datetime.fromtimestamp(s.grace_until, dt.timezone.utc).isoformat(timespec="seconds")
        return f"grace period after the last action until {at}"
    return None


def approval_verdict(what: Step, p: Policy, g: Guards) -> str | None:
    """The off-hours contact-first rule: why ``what`` waits for the emergency contact's answer, or None."""
    if what in DESTRUCTIVE and what in p.contact_first and g.off_hours:
        return f"outside business hours: the emergency contact is asked before {what}"
    return None


def _guard(what: Step, p: Policy, g: Guards) -> Blocked | None:
    return next((block for _, block in guard_verdicts(what, p, g) if block is not None), None)


def recent_power_actions(s: HostState, p: Policy, now: float) -> tuple[float, ...]:
    """The power actions that count against ``max_resets`` now."""
    return tuple(t for t in s.power_actions if now - t < p.reset_window)


def recent_restarts(s: HostState, p: Policy, now: float) -> tuple[float, ...]:
    """The service restarts that count against ``max_restarts`` now."""
    return tuple(t for t in s.restarts if now - t < p.restart_window)


def _dispatch(s: HostState, why: str, p: Policy, now: float,
              blocked: Blocked | None = None) -> tuple[HostState, list[Decision]]:
    """Level 3: page for on-site dispatch and start the engineer-on-site timer."""
    s = replace(s, phase=Phase.DISPATCHED, level=max(3, s.level + 1), step=None, blocked=None)
    level = s.level
    decisions: list[Decision] = [blocked] if blocked else []
    why = "; ".join((why, *s.causes))
    decisions += [Page(PageKind.DISPATCH, level, f"level {level}: dispatch an engineer on site: {why}",
                       {"tried": list(s.tried), "causes": list(s.causes)}),
                  StartSla("engineer_on_site", now + p.engineer_on_site)]
    return s, decisions


def _page_held(s: HostState, kind: PageKind, level: int, why: str) -> tuple[HostState, list[Decision]]:
    return replace(s, phase=Phase.HELD, level=level, step=None), [Page(kind, level, why, {"tried": list(s.tried)})]


def _end(s: HostState, blocked: str | None = None) -> HostState:
    """Back to idle, keeping the history the guards need (attempt times, grace)."""
    return HostState(power_actions=s.power_actions, restarts=s.restarts, grace_until=s.grace_until, blocked=blocked)
