"""The engine's view of the checks: which checks a host has, which of them mean "the host is
down", the hosts' parents, and the one way the engine runs a probe.

Every probe the engine runs — a guard's fresh look at a parent or at recently failed hosts, a
boot check, a verification, the re-probe before a destructive action — goes through the
scheduler's :meth:`~CheckRunner.run_now`, the path scheduled runs take: the result updates the
check's state and its metrics. Such a result cannot close an incident the ladder owns: the
scheduler asks the engine for the host's episode, and a check that recovers inside an episode
leaves the incident open until the ladder's own verification closes it.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from monitord.config import CheckSpec, Config
from monitord.run.checkstate import CheckState
from monitord.shared.results import Reason, Result, Status


class CheckRunner(Protocol):
    """What the engine asks of the scheduler (:class:`monitord.run.scheduler.Scheduler`)."""

    def state_of(self, check_id: str) -> CheckState:
        """A check's state; KeyError for a check that is not scheduled."""

    def incident_of(self, check_id: str) -> int | None:
        """The incident a check has open."""

    def due_times(self) -> dict[str, float]:
        """When each check runs next."""

    async def run_now(self, check_id: str) -> Result:
        """Run a check now and record its result like a scheduled run; KeyError if not scheduled."""

    def run_soon(self, check_id: str) -> None:
        """:meth:`run_now` in the background."""


def is_host_down_check(spec: CheckSpec) -> bool:
    """Whether a confirmed failure of ``spec`` means its host is down."""
    return spec.kind.host_down or spec.params.host_critical


class Fleet:
    """The configured checks, read through the scheduler that runs them."""

    def __init__(self, config: Config, checks: CheckRunner):
        self.config, self.checks = config, checks
        self.specs = {(s.host, s.name): s for s in config.checks()}
        self.by_host: dict[str, list[CheckSpec]] = {}
        for spec in self.specs.values():
            self.by_host.setdefault(spec.host, []).append(spec)

    def spec(self, host: str, check: str) -> CheckSpec | None:
        return self.specs.get((host, check))

    def of_host(self, host: str) -> list[CheckSpec]:
        return self.by_host.get(host, [])

    def host_down_specs(self, host: str) -> list[CheckSpec]:
        return [s for s in self.of_host(host) if is_host_down_check(s)]

    def state(self, host: str, check: str) -> CheckState | None:
        """The check's state as the scheduler holds it, or None (not configured, not scheduled)."""
        spec = self.specs.get((host, check))
        try:
            return self.checks.state_of(spec.id) if spec is not None else None
        except KeyError:
            return None

    def ancestors(self, host: str) -> list[str]:
        """``host``'s parents, their parents, and so on (configured hosts only)."""
        seen: list[str] = []
        stack = list(self.config.hosts[host].parents)
        while stack:
            parent = stack.pop()
            if parent not in seen and parent in self.config.hosts:
                seen.append(parent)
                stack.extend(self.config.hosts[parent].parents)
        return seen

    def failing_hosts(self) -> dict[str, float]:
        """Hosts whose host-down checks fail now (soft or hard), with when the failure began."""
        failing: dict[str, float] = {}
        for (host, name), spec in self.specs.items():
            if is_host_down_check(spec):
                check = self.state(host, name)
                if check is not None and check.status is not Status.OK:
                    failing[host] = min(failing.get(host, check.problem_since or 0.0), check.problem_since or 0.0)
        return failing

    async def probe(self, spec: CheckSpec) -> Result:
        """Run ``spec`` now through the scheduler (recorded as a run of the check)."""
        try:
            return await self.checks.run_now(spec.id)
        except KeyError:  # left the schedule (a reload): no answer is not an answer
            return Result(Status.UNKNOWN, Reason.ERROR, f"{spec.id} is not scheduled", 0.0, 0.0)

    async def probe_all(self, specs: list[CheckSpec]) -> list[Result]:
        return list(await asyncio.gather(*(self.probe(s) for s in specs)))

    async def answers(self, host: str) -> bool:
        """Probe ``host``'s host-down checks now: True when they all pass."""
        return all(r.ok for r in await self.probe_all(self.host_down_specs(host)))
