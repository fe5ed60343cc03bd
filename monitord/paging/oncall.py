"""Who gets paged: people, weekly on-call rotations with overrides, escalation policies and
routes. Pure functions of the config and a time; no I/O.

A policy is an ordered list of tiers; each tier names targets (people, schedules, or pager
integrations directly) and how long to wait for an acknowledgement before the next tier is
paged. The whole ladder repeats ``repeat`` times. A route picks a policy by host group/tag
and page severity; the first matching route wins.
"""

from __future__ import annotations

import datetime as dt
import enum
import zoneinfo
from typing import Literal

from pydantic import Field

from monitord.shared.fields import ClockTime, Duration, StrictModel, TimeWindow, TimeZoneName
from remediation.pagers import PagingConfig

Severity = Literal["critical", "error", "warning", "info"]
SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2, "critical": 3}


class PageKind(enum.StrEnum):
    """Every kind of page monitord sends (a route's ``kinds`` name them); the value is what the
    store, the journal, the report and the receivers see."""

    DISPATCH = "dispatch"  # level 3: an engineer on site
    BLAST_RADIUS = "blast_radius"  # the monitor's own side looks broken
    SLA_BREACH = "sla_breach"
    APPROVAL = "approval"  # the emergency contact is asked (off hours)
    BMC_AUTH = "bmc_auth"  # the BMC rejects our credentials
    SERVICE_FAILED = "service_failed"
    ACTION_HELD = "action_held"  # denied or unanswered approval
    VENDOR = "vendor"  # a configured ladder's vendor step
    HARDWARE_TICKET = "hardware_ticket"  # business-hours work (shared.results.Ticket)
    BACKUP_TICKET = "backup_ticket"
    CHECK_WARNING = "check_warning"
    THRESHOLD = "threshold"
    AUTO_FIXED = "auto_fixed"  # information: reset at level 1 and verified

    @property
    def severity(self) -> Severity:
        """How urgent a page of this kind is (routes' ``min_severity`` compares it)."""
        return _SEVERITY.get(self, "error")


_SEVERITY: dict[PageKind, Severity] = {
    PageKind.DISPATCH: "critical", PageKind.BLAST_RADIUS: "critical", PageKind.SLA_BREACH: "critical",
    PageKind.APPROVAL: "critical", PageKind.BMC_AUTH: "critical", PageKind.SERVICE_FAILED: "error",
    PageKind.ACTION_HELD: "warning", PageKind.HARDWARE_TICKET: "warning", PageKind.BACKUP_TICKET: "warning",
    PageKind.CHECK_WARNING: "warning", PageKind.THRESHOLD: "warning", PageKind.AUTO_FIXED: "info",
}


class Person(StrictModel):
    """Someone who can be paged: the integrations that reach them, in order."""

    name: str = ""
    notify: list[str] = Field(min_length=1, description="pager integration names, e.g. [pagerduty-ops, mail-ops]")
    email: str | None = None


class Override(TimeWindow):
    """``person`` is on call instead of the rotation between ``start`` and ``end``."""

    person: str


class Schedule(StrictModel):
    """A weekly rotation: ``members`` take turns, handing over every week at ``handoff``."""

    members: list[str] = Field(min_length=1)
    start: dt.date = Field(description="the date the first member's first week begins")
    handoff: ClockTime = dt.time(10, 0)
    timezone: TimeZoneName = "Asia/Tokyo"
    rotation: Duration = Field(default=7 * 86400.0, description="how long each turn lasts (default 1 week)")
    overrides: list[Override] = Field(default_factory=list)

    def on_call(self, when: float) -> str:
        """The member on call at epoch ``when``."""
        for override in self.overrides:
            if override.covers(when):
                return override.person
        zone = zoneinfo.ZoneInfo(self.timezone)
        origin = dt.datetime.combine(self.start, self.handoff, zone).timestamp()
        turn = int((when - origin) // self.rotation)
        return self.members[turn % len(self.members)]


class Tier(StrictModel):
    """One step of an escalation policy."""

    targets: list[str] = Field(min_length=1, description="people, schedules or integrations")
    ack_timeout: Duration = Field(default=900.0, description="wait this long for an acknowledgement")


class Policy(StrictModel):
    """Ordered tiers, repeated ``repeat`` times while nobody acknowledges."""

    tiers: list[Tier] = Field(min_length=1)
    repeat: int = Field(default=1, ge=1, le=10, description="how many times to run the whole ladder")

    def steps(self) -> int:
        """How many tier pages at most (tiers × repeat)."""
        return len(self.tiers) * self.repeat

    def tier(self, step: int) -> Tier:
        """The tier paged at ``step`` (0-based, across repeats)."""
        return self.tiers[step % len(self.tiers)]


class Vendor(StrictModel):
    """A vendor to escalate to (contract 004: the network carrier, the IaaS provider): who they
    are and how to reach them (e-mail or webhook integrations)."""

    name: str = Field(default="", description="as the vendor's support desk knows it")
    role: Literal["network", "iaas", "hardware", "software"]
    notify: list[str] = Field(min_length=1, description="pager integrations that reach the vendor (email, webhook)")
    emails: list[str] = Field(default_factory=list, description="the vendor's support addresses, for e-mail integrations")
    reference: str | None = Field(default=None, description="our contract or customer number with the vendor")
    language: Literal["ja", "en"] = "ja"


class Route(StrictModel):
    """Send pages matching ``groups``/``tags``/``min_severity``/``kinds`` to ``policy``, and
    escalate to ``vendors`` (once per incident) with the findings and what was tried."""

    policy: str
    vendors: list[str] = Field(default_factory=list, description="vendors paged too, e.g. on kinds: [dispatch] (level 3)")
    groups: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    kinds: list[PageKind] = Field(default_factory=list, description="page kinds, e.g. dispatch, service_failed")
    min_severity: Severity = "info"

    def matches(self, groups: list[str], tags: list[str], kind: str, severity: Severity) -> bool:
        """Whether a page with these properties takes this route."""
        return ((not self.groups or bool(set(groups) & set(self.groups)))
                and (not self.tags or bool(set(tags) & set(self.tags)))
                and (not self.kinds or kind in self.kinds)
                and SEVERITY_ORDER[severity] >= SEVERITY_ORDER[self.min_severity])


def matching_route(routes: list[Route], groups: list[str], tags: list[str], kind: str,
                   severity: Severity) -> Route | None:
    """The first matching route, or None."""
    return next((r for r in routes if r.matches(groups, tags, kind, severity)), None)


def route(routes: list[Route], groups: list[str], tags: list[str], kind: str, severity: Severity) -> str | None:
    """The policy name of the first matching route, or None."""
    chosen = matching_route(routes, groups, tags, kind, severity)
    return chosen.policy if chosen else None


def resolve_targets(targets: list[str], when: float, people: dict[str, Person], schedules: dict[str, Schedule],
                    integrations: set[str]) -> list[tuple[str | None, str]]:
    """Expand tier targets into (person, integration) pairs at time ``when``.

    A schedule becomes the person on call; a person becomes their integrations; an integration
    named directly is paged as itself (person None). Duplicates are dropped, order kept.
    """
    out: list[tuple[str | None, str]] = []
    for target in targets:
        person = schedules[target].on_call(when) if target in schedules else target
        if person in people:
            pairs = [(person, integration) for integration in people[person].notify]
        elif person in integrations:
            pairs = [(None, person)]
        else:
            pairs = []
        out.extend(p for p in pairs if p not in out)
    return out


class SlaTargets(StrictModel):
    """The contract's on-site targets (002 障害対応レベル 3)."""

    engineer_on_site: Duration = Field(default=7200.0, description="from the dispatch decision")
    replacement_on_network: Duration = Field(default=7200.0, description="from the swap decision")
    report_due: int = Field(default=2, ge=1, le=30,
                            description="business days after recovery an incident report is due (002 障害報告)")


class PagingSection(PagingConfig):
    """The ``paging`` section: integrations and retries (the outbox), and who gets paged."""

    people: dict[str, Person] = Field(default_factory=dict)
    schedules: dict[str, Schedule] = Field(default_factory=dict)
    policies: dict[str, Policy] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list, description="first match wins")
    vendors: dict[str, Vendor] = Field(default_factory=dict, description="vendors routes can escalate to")
    sla: SlaTargets = SlaTargets()

    def problems(self) -> list[tuple[tuple, str]]:
        """Cross-references that do not resolve, as (path, message)."""
        known = set(self.people) | set(self.schedules) | set(self.integrations)
        out: list[tuple[tuple, str]] = []
        for name, person in self.people.items():
            out += [(("paging", "people", name, "notify", i), f"unknown integration {n!r}")
                    for i, n in enumerate(person.notify) if n not in self.integrations]
        for name, schedule in self.schedules.items():
            out += [(("paging", "schedules", name, "members", i), f"unknown person {m!r}")
                    for i, m in enumerate(schedule.members) if m not in self.people]
            out += [(("paging", "schedules", name, "overrides", i, "person"), f"unknown person {o.person!r}")
                    for i, o in enumerate(schedule.overrides) if o.person not in self.people]
        for name, policy in self.policies.items():
            for t, tier in enumerate(policy.tiers):
                out += [(("paging", "policies", name, "tiers", t, "targets", i),
                         f"unknown target {target!r}: not a person, schedule or integration")
                        for i, target in enumerate(tier.targets) if target not in known]
        out += [(("paging", "routes", i, "policy"), f"unknown policy {r.policy!r}")
                for i, r in enumerate(self.routes) if r.policy not in self.policies]
        out += [(("paging", "routes", i, "vendors", j), f"unknown vendor {v!r}")
                for i, r in enumerate(self.routes) for j, v in enumerate(r.vendors) if v not in self.vendors]
        for name, vendor in self.vendors.items():
            out += [(("paging", "vendors", name, "notify", i), f"unknown integration {n!r}")
                    for i, n in enumerate(vendor.notify) if n not in self.integrations]
        return out

