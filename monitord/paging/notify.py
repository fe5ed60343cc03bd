"""Paging and notices: routes a page to a policy, pages its tiers until someone acknowledges,
resolves on recovery, runs the SLA timers, and sends customers their failure notices.

Every message goes through the durable outbox (:mod:`monitord.paging.outbox`), so a page queued
while a receiver is down, or while the daemon restarts, is delivered afterwards. Acks come
from ``monitord ack`` (it marks the page in the store); the notifier's loop sends the
acknowledgement to the integrations that were paged and stops escalating.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Sequence

from monitord.shared.clock import Clock
from monitord.config import Config
from monitord.edge.metrics import Metrics
from monitord.paging.oncall import PageKind, matching_route, resolve_targets
from monitord.paging.outbox import Outbox
from monitord.records.store import JournalEntry, PageRecord, Store, StoreFault
from remediation.pagers import Message

log = logging.getLogger(__name__)

TICK = 5.0

NOTICES = {
    "ja": {
        "failure": ("【障害発生】{host}: {summary}", "お客様各位\n\n監視対象サーバー {host} で障害を検知しました。\n"
                    "検知時刻: {when}\n内容: {summary}\n\n復旧作業を開始しております。復旧しましたら改めてご連絡いたします。\n"),
        "recovery": ("【復旧】{host}", "お客様各位\n\n{host} の障害は {when} に復旧いたしました。\n"
                     "障害報告書は2営業日以内にご提出いたします。\n"),
        "threshold": ("【容量警告】{host}: {summary}", "お客様各位\n\n{host} で閾値を超えた項目があります ({when})。\n"
                      "内容: {summary}\n\nご確認のうえ、対応方針をご連絡ください。\n"),
        "work": ("【作業予定】{host}: {summary}", "お客様各位\n\n{host} について次の作業を営業時間内に実施いたします。\n"
                 "予定: {when}\n内容: {summary}\n"),
    },
    "en": {
        "failure": ("[Failure] {host}: {summary}", "Dear customer,\n\nWe detected a failure on {host} at {when}.\n"
                    "Details: {summary}\n\nRecovery work has started. We will write again when it is resolved.\n"),
        "recovery": ("[Recovered] {host}", "Dear customer,\n\n{host} recovered at {when}.\n"
                     "The incident report follows within two business days.\n"),
        "threshold": ("[Capacity warning] {host}: {summary}", "Dear customer,\n\nA threshold was crossed on {host} "
                      "({when}).\nDetails: {summary}\n\nPlease tell us how you would like us to proceed.\n"),
        "work": ("[Scheduled work] {host}: {summary}", "Dear customer,\n\nThe following work on {host} will be done "
                 "in business hours.\nScheduled: {when}\nDetails: {summary}\n"),
    },
}


VENDOR_TEXT = {
    "ja": ("【エスカレーション】{host}: {summary}",
           "ご担当者様\n\n弊社管理対象 {host}（{address}、契約番号 {reference}）で障害が発生しております。\n"
           "貴社側の設備・サービスの確認をお願いいたします。\n\n発生: {when}\n内容: {summary}\n"
           "確認結果: {findings}\n実施済みの対応:\n{tried}\n"),
    "en": ("[Escalation] {host}: {summary}",
           "Dear support team,\n\nOur managed host {host} ({address}, contract {reference}) is failing and we "
           "ask you to check your side.\n\nSince: {when}\nProblem: {summary}\nFindings: {findings}\n"
           "What we tried:\n{tried}\n"),
}
"""What a vendor receives (subject, body): the incident's findings and what was tried."""


class Notifier:
    """Pages people through policies, and customers through their notice addresses."""

    def __init__(self, *, config: Config, store: Store, outbox: Outbox, clock: Clock, metrics: Metrics,
                 dry_run: bool = False):
        self.config, self.store, self.outbox, self.clock, self.metrics = config, store, outbox, clock, metrics
        self.dry_run = dry_run

    def dry(self, host: str | None) -> bool:
        """Whether what concerns ``host`` runs dry (``monitord run --dry-run``, or the host's
        ``remediation.dry_run``): customer notices are held, pages are marked."""
        return self.dry_run or (host in self.config.hosts and self.config.remediation(host).dry_run)

    # -- pages ----------------------------------------------------------------------------

    async def page(self, host: str | None, kind: PageKind, summary: str, incident_id: int | None = None,
                   details: dict | None = None, targets: list[str] | None = None, escalate: bool = True,
                   vendors: Sequence[str] = ()) -> int | None:
        """Open a page and send its first tier; ``targets`` skips routing (e.g. an approval request);
        ``escalate=False`` sends the first tier only (an information); ``vendors`` are escalated to
        besides the route's (a configured ladder's vendor step)."""
        now = self.clock.time()
        kind = PageKind(kind)  # a kind no route could name is a bug: loud, here
        severity = kind.severity
        if self.dry(host):  # on-call sees what the daemon would have done; it does nothing
            summary, details = f"[dry run] {summary}", {**(details or {}), "dry_run": True}
        paging = self.config.paging
        if targets is None:
            h = self.config.hosts.get(host) if host else None
            chosen = matching_route(paging.routes, h.groups if h else [], h.tags if h else [], kind, severity)
            if chosen is None:
                await self._journal("page_unrouted", host, incident_id, kind, f"no route matches: {summary}")
                log.error("PAGE (no route configured) %s %s: %s", host or "-", kind, summary)
                return None
            policy, vendors = chosen.policy, [*vendors, *(v for v in chosen.vendors if v not in vendors)]
        else:
            policy = ""
        page_id = await self.store.outbox.open_page(incident_id, host, kind, severity, policy, summary, now)
        await self._send(await self._page(page_id), 0, targets, details or {}, escalate)
        for vendor in vendors if escalate else ():  # an information is not escalated, to vendors neither
            await self._escalate_to_vendor(vendor, host, kind, severity, summary, incident_id, page_id, details or {})
        return page_id

    async def _escalate_to_vendor(self, name: str, host: str | None, kind: str, severity: str, summary: str,
                                  incident_id: int | None, page_id: int, details: dict) -> None:
        """Send vendor ``name`` the incident's findings and what was tried, once per incident,
        and journal it (the incident report shows it)."""
        vendor = self.config.paging.vendors[name]
        h = self.config.hosts.get(host) if host else None
        tried = list(details.get("tried") or [])
        facts = {"vendor": name, "role": vendor.role, "reference": vendor.reference, "incident": incident_id,
                 "kind": kind, "host": host, "address": h.address if h else None, "findings": details.get("bmc"),
                 "tried": tried}
        subject, body = VENDOR_TEXT[vendor.language]
        fields = {"host": host or "-", "summary": summary, "reference": vendor.reference or "-",
                  "address": facts["address"] or "-", "tried": "\n".join(f"- {t}" for t in tried) or "-",
                  "findings": details.get("bmc") or "-", "when": self.format_time(self.clock.time())}
        key = f"monitord-vendor-{name}-" + (f"incident-{incident_id}" if incident_id is not None else f"page-{page_id}")
        async with self.store.transaction(durable=True):
            sent = [integration for integration in vendor.notify if await self.outbox.enqueue(integration, Message(
                dedup_key=key, summary=subject.format(**fields), body=body.format(**fields), source=host or "monitord",
                severity=severity, details=facts, to=tuple(vendor.emails), at=self.clock.time(),
                incident_id=incident_id))]
            if sent:
                await self._journal("vendor_escalated", host, incident_id, name,
                                    f"{vendor.name or name} ({vendor.role}): {summary}",
                                    {"integrations": sent, "to": vendor.emails, "tried": tried})
        if sent:
            log.warning("%s: escalated to vendor %s through %s", host or "-", name, ", ".join(sent))

    async def inform(self, host: str, kind: PageKind, summary: str, incident_id: int | None) -> None:
        """Tell the first tier about something already over (e.g. a host reset and verified):
        triggered and resolved at once under the same key, never escalated."""
        page_id = await self.page(host, kind, summary, incident_id, escalate=False)
        if page_id is not None:
            await self._close(await self._page(page_id))

    async def _page(self, page_id: int) -> PageRecord:
        return next(p for p in await self.store.outbox.pages(open_only=False) if p.id == page_id)

    async def _send(self, page: PageRecord, step: int, targets: list[str] | None, details: dict,
                    escalate: bool = True) -> None:
        """Page tier ``step`` (or ``targets``) and set the ack deadline."""
        now = self.clock.time()
        paging = self.config.paging
        policy = paging.policies.get(page.policy)
        tier = policy.tier(step) if policy else None
        pairs = resolve_targets(targets if targets is not None else tier.targets, now, paging.people,
                                paging.schedules, set(paging.integrations))
        round_no = step // len(policy.tiers) if policy else 0
        key = f"monitord-page-{page.id}" + (f"-r{round_no}" if round_no else "")
        paged = list(page.paged)
        async with self.store.transaction(durable=True):
            for person, integration in pairs:
                await self.outbox.enqueue(integration, Message(
                    dedup_key=key, summary=page.summary, source=page.host or "monitord", severity=page.severity,
                    details={"kind": page.kind, "incident": page.incident_id, "tier": step + 1, "person": person,
                             **details},
                    at=now, incident_id=page.incident_id))
                if [integration, key] not in paged:
                    paged.append([integration, key])
            next_at = now + tier.ack_timeout if policy and escalate else None  # the last tier's timeout ends the ladder
            await self.store.outbox.update_page(page.id, step=step, next_at=next_at, paged=paged)
            await self._journal("page_sent", page.host, page.incident_id, page.kind,
                                f"tier {step + 1}: {', '.join(sorted({i for _, i in pairs})) or 'nobody'}",
                                {"page": page.id, "people": sorted({p for p, _ in pairs if p})})
        if not pairs:
            log.error("page %d (%s): tier %d reaches nobody", page.id, page.kind, step + 1)

    async def _follow_up(self, page: PageRecord, action: str) -> None:
        """Send ``acknowledge`` or ``resolve`` to every integration a page reached."""
        for integration, key in page.paged:
            await self.outbox.enqueue(integration, Message(dedup_key=key, summary=page.summary, action=action,
                                                           source=page.host or "monitord", severity=page.severity,
                                                           at=self.clock.time(), incident_id=page.incident_id))

    async def resolve(self, incident_id: int) -> None:
        """The incident recovered: resolve its open pages."""
        async with self.store.transaction(durable=True):
            for page in await self.store.outbox.pages(incident_id=incident_id):
                await self._close(page)

    async def _close(self, page: PageRecord) -> None:
        async with self.store.transaction(durable=True):
            await self._follow_up(page, "resolve")
            await self.store.outbox.update_page(page.id, closed_at=self.clock.time(), next_at=None)
            await self._journal("page_resolved", page.host, page.incident_id, page.kind, page.summary, {"page": page.id})

    async def escalate(self, page: PageRecord, why: str) -> None:
        """Page the next tier now."""
        policy = self.config.paging.policies.get(page.policy)
        if policy is None or page.step + 1 >= policy.steps():
            await self._journal("page_exhausted", page.host, page.incident_id, page.kind, why, {"page": page.id})
            await self.store.outbox.update_page(page.id, next_at=None)
            return
        log.warning("page %d (%s): %s; paging tier %d", page.id, page.kind, why, page.step + 2)
        await self._send(page, page.step + 1, None, {"escalated": why})

    async def tick(self) -> None:
        """Escalate unacknowledged pages, send acks, check SLA timers (called every few seconds)."""
        now = self.clock.time()
        for page in await self.store.outbox.pages():
            if page.acked_at is not None and not page.ack_sent:
                async with self.store.transaction(durable=True):
                    await self._follow_up(page, "acknowledge")
                    await self.store.outbox.update_page(page.id, ack_sent=1, next_at=None)
                self.metrics.ack_latency.observe(max(0.0, page.acked_at - page.opened_at))
            elif page.acked_at is None and page.next_at is not None and now >= page.next_at:
                await self.escalate(page, "not acknowledged in time")
        await self._check_slas(now)

    async def run(self) -> None:
        """Call :meth:`tick` every few seconds until cancelled."""
        while True:
            try:
                if self.store.fault is None:  # escalations and SLA breaches are journaled first
                    await self.tick()
            except StoreFault:
                pass  # the store reported it once; the next tick after it recovers catches up
            except Exception:  # noqa: BLE001 - a bad row must not stop paging
                log.exception("paging tick failed")
            await self.clock.sleep_until(self.clock.time() + TICK)

    # -- SLA timers ----------------------------------------------------------------------

    async def start_sla(self, incident_id: int | None, host: str | None, name: str) -> None:
        """Start an SLA timer with the configured target."""
        if incident_id is None:
            log.error("%s: SLA timer %s has no incident to attach to", host, name)
            return
        now = self.clock.time()
        due = now + getattr(self.config.paging.sla, name)
        await self.store.incidents.start_sla(incident_id, name, host, now, due)  # the decision itself is journaled by the engine

    async def _check_slas(self, now: float) -> None:
        running = breached = 0
        for timer in await self.store.incidents.sla_timers():
            if timer.stopped_at is not None:
                continue
            running += 1
            if timer.breached_at is None and now >= timer.due:
                await self.store.incidents.update_sla(timer.incident_id, timer.name, breached_at=now)
                await self._journal("sla_breach", timer.host, timer.incident_id, timer.name,
                                    f"{timer.name} target missed (due {self.format_time(timer.due)})")
                pages = await self.store.outbox.pages(incident_id=timer.incident_id)
                if pages:
                    await self.escalate(pages[-1], f"SLA {timer.name} breached")
                else:
                    await self.page(timer.host, PageKind.SLA_BREACH, f"SLA {timer.name} breached", timer.incident_id)
            if timer.breached_at is not None or now >= timer.due:
                breached += 1
        self.metrics.sla_running.set(running)
        self.metrics.sla_breached.set(breached)

    # -- customer notices ----------------------------------------------------------------

    async def notice(self, host: str, what: str, summary: str, incident_id: int | None, when: float | None = None) -> None:
        """Send the host's customer a ``failure``, ``recovery``, ``threshold`` or ``work`` notice.

        A recovery resolves the failure notice's key: integrations with alerts close the alert,
        e-mail sends the recovery mail (its own Message-ID, since the action differs)."""
        h = self.config.hosts.get(host)
        customer = self.config.customers.get(h.customer) if h and h.customer else None
        if customer is None or not customer.notify or not customer.emails:
            return
        subject, body = NOTICES[customer.language][what]
        fields = {"host": host, "summary": summary, "when": self.format_time(when or self.clock.time())}
        if self.dry(host):
            await self._journal("held", host, incident_id, f"{what} notice",
                                f"dry run: would notify the customer: {subject.format(**fields)}", {"to": customer.emails})
            return
        kind = "failure" if what == "recovery" else what
        key = f"monitord-notice-{host}-{kind}-{incident_id if incident_id is not None else int(self.clock.time())}"
        async with self.store.transaction(durable=True):
            for integration in customer.notify:
                await self.outbox.enqueue(integration, Message(
                    dedup_key=key, summary=subject.format(**fields), body=body.format(**fields), source=host,
                    action="resolve" if what == "recovery" else "trigger",
                    severity="warning" if what in ("threshold", "work") else "critical",
                    to=tuple(customer.emails), at=self.clock.time(), incident_id=incident_id))
            await self._journal("notice", host, incident_id, what, subject.format(**fields), {"to": customer.emails})

    def format_time(self, ts: float) -> str:
        """``ts`` as customers read it, in the business time zone."""
        zone = zoneinfo.ZoneInfo(self.config.business_hours.timezone)
        return dt.datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M %Z")

    async def _journal(self, event: str, host: str | None, incident_id: int | None, decision: str, reason: str,
                       detail: dict | None = None) -> None:
        async with self.store.transaction(durable=True):
            await self.store.incidents.append(JournalEntry(ts=self.clock.time(), event=event, host=host, incident_id=incident_id,
                                                           decision=decision, reason=reason, detail=detail or {}))


async def acknowledge(store: Store, incident_id: int, by: str | None, now: float, why: str = "", **detail: str) -> int:
    """Mark an incident's unacknowledged pages acknowledged (the CLI, the HTTP API, PagerDuty); return
    how many. ``why`` and ``detail`` add to the journal entry.

    The running daemon's notifier sends the acknowledgements to the receivers and stops escalating.
    """
    pages = [p for p in await store.outbox.pages(incident_id=incident_id) if p.acked_at is None]
    async with store.transaction(durable=True):
        for page in pages:
            await store.outbox.update_page(page.id, acked_at=now, acked_by=by)
        await store.incidents.append(JournalEntry(
            ts=now, event="ack", incident_id=incident_id, decision="acknowledged",
            reason=f"{len(pages)} page(s) acknowledged" + (f": {why}" if why else ""), detail={"by": by, **detail}))
    return len(pages)
