"""The state store's health, watched while the daemon runs.

A write that fails (disk full, an I/O error, a damaged page), or free space below
:data:`monitord.records.state.MIN_FREE_BYTES`, makes the store report a fault
(:attr:`monitord.records.state.SQLiteStore.fault`): from then on the engine holds every automatic
action, since nothing can be journaled before it is done, while the scheduler keeps probing
and exporting results. :class:`StoreWatch` looks every few seconds, sets ``monitord_store_healthy``, pages the
on-call people once, directly through the pagers (the outbox lives in the same store), and
tries a small durable write every few seconds; when one succeeds with room to spare, it
resolves that page, journals the episode and lets the engine catch up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Mapping

from monitord.shared.clock import Clock
from monitord.config import Config
from monitord.edge.metrics import Metrics
from monitord.paging.oncall import resolve_targets, route
from monitord.records.store import JournalEntry, Store
from remediation.pagers import DeliveryError, Message, Pager

log = logging.getLogger(__name__)

PROBE_EVERY = 5.0
SEND_GRACE = 5.0
KIND = "store_unhealthy"


class StoreWatch:
    """Run :meth:`run` as a task; ``pagers`` returns the configured pagers by integration name."""

    def __init__(self, *, store: Store, clock: Clock, metrics: Metrics, config: Callable[[], Config],
                 pagers: Callable[[], Mapping[str, Pager]], recovered: Callable[[], Awaitable[None]]):
        self.store, self.clock, self.metrics = store, clock, metrics
        self._config, self._pagers, self._recovered = config, pagers, recovered
        self._failing: set[str] = set()  # integrations whose direct send failed (logged once)

    async def run(self) -> None:
        """Look every few seconds; on a fault, page, probe until the store is writable, and resume."""
        while True:
            fault = await self.store.probe()
            self.metrics.store_healthy.set(0 if fault else 1)
            if fault is not None:
                await self._episode(fault)
            await self.clock.sleep_until(self.clock.time() + PROBE_EVERY)

    async def _episode(self, fault: str) -> None:
        since = self.clock.time()
        key = f"monitord-store-{int(since)}"
        summary = f"monitord cannot write its state store; every automatic action is held: {fault}"
        unpaged = self._integrations(since)
        paged: list[str] = []
        self._failing.clear()
        while True:
            for integration in list(unpaged):
                if await self._send(integration, Message(
                        dedup_key=key, summary=summary[:1000], source="monitord", severity="critical",
                        details={"kind": KIND, "since": since}, at=since)):
                    unpaged.remove(integration)
                    paged.append(integration)
            if await self.store.probe() is None:
                break
            await self.clock.sleep_until(self.clock.time() + PROBE_EVERY)
        now = self.clock.time()
        for integration in paged:
            await self._send(integration, Message(dedup_key=key, summary=summary[:1000], action="resolve",
                                                  source="monitord", severity="critical", at=now))
        try:
            async with self.store.transaction(durable=True):
                await self.store.incidents.append(JournalEntry(ts=now, event="store", decision="unwritable", outcome="recovered",
                                                               reason=fault, detail={"since": since, "paged": paged}))
        except Exception:  # noqa: BLE001 - failing again: the next episode starts from the new fault
            pass
        self.metrics.store_healthy.set(1)
        await self._recovered()

    def _integrations(self, now: float) -> list[str]:
        """The integrations of the first tier a ``store_unhealthy`` page is routed to."""
        paging = self._config().paging
        policy = paging.policies.get(route(paging.routes, [], [], KIND, "critical") or "")
        if policy is None:
            log.error("PAGE (no route configured) %s: the state store cannot be written", KIND)
            return []
        pairs = resolve_targets(policy.tier(0).targets, now, paging.people, paging.schedules, set(paging.integrations))
        return list(dict.fromkeys(integration for _, integration in pairs))

    async def _send(self, integration: str, message: Message) -> bool:
        pager = self._pagers().get(integration)
        if pager is None:
            return False
        try:
            async with asyncio.timeout(pager.timeout + SEND_GRACE):
                await pager.send(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - DeliveryError, a timeout, or a pager's bug: try again later
            level = logging.DEBUG if integration in self._failing else logging.ERROR
            self._failing.add(integration)
            log.log(level, "%s: direct %s %s failed (retrying every %gs): %s", integration, message.action,
                    message.dedup_key, PROBE_EVERY, exc.summary if isinstance(exc, DeliveryError) else repr(exc))
            return False
        log.warning("%s: sent %s %s directly (the outbox is in the store)", integration, message.action,
                    message.dedup_key)
        return True
