"""The durable page outbox: pages are queued in the state store and delivered from there.

:meth:`Outbox.enqueue` commits the page durably (fsync) before it returns, so a page the
engine decided on survives ``kill -9`` and is delivered after the restart. Each
(integration, dedup_key, action, e-mail recipients) is queued at most once: enqueueing the
same page again, say when the engine re-decides after a restart, is a no-op. Hence dedup
keys must name an incident (``incident-42``), not a host, and paging the same people again
(an escalation ladder's next round) needs a key of its own (``incident-42/round-2``).

:class:`Dispatcher` delivers due pages, one integration's pages in order and different
integrations concurrently, and never a page before an older pending page of the same
integration and dedup key (a resolve does not overtake its trigger). A failed attempt is
retried with exponential backoff and jitter (:class:`~remediation.pagers.RetryPolicy`,
honouring ``Retry-After``) until it succeeds, fails for good (``DeliveryError`` with
``retryable=False``: a bad key, a refused recipient), or is too old or tried too often;
then it is marked ``dead``, logged, and journaled. Deliveries and deaths are journaled as
``page_delivery`` entries; retries are only logged and counted. At start-up every pending
page is tried at once, whatever its backoff said: the endpoint may be back.

Exactly once, and its limit: a page is marked delivered only after the endpoint accepted
it. A crash between the two (the request was sent, the mark was not yet committed) sends
it once more after the restart: at-least-once, with one duplicate in that window. PagerDuty
(``dedup_key``) and Opsgenie (``alias``) fold such a duplicate into the same alert; the
e-mail has the same ``Message-ID`` and the webhook the same dedup key, so receivers can drop
it; a Slack message would show twice.

Use from the event loop's thread (the store is not shared across threads).
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
from collections import defaultdict
from typing import Callable, Mapping

from monitord.shared.clock import Clock, SystemClock
from monitord.edge.metrics import Metrics
from monitord.shared.results import Reason
from monitord.records.store import JournalEntry, OutboxItem, Store, StoreFault
from remediation.pagers import DeliveryError, HttpClient, Message, Pager, PagingConfig, build_pagers

log = logging.getLogger("monitord.paging.outbox")

TIMEOUT_GRACE = 5.0
"""Added to an integration's own timeout for the dispatcher's hard limit on one attempt."""


class Outbox:
    """Where the engine queues pages (durably); the :class:`Dispatcher` takes them from here."""

    def __init__(self, store: Store, clock: Clock | None = None):
        self.store = store
        self.clock = clock or SystemClock()
        self.wakeup = asyncio.Event()

    async def enqueue(self, integration: str, message: Message) -> bool:
        """Queue ``message`` for ``integration``, durably; False if it was queued before.

        "Before" means the same integration, dedup key, action and e-mail recipients: one
        mail integration can notify several people of the same incident.
        """
        item_id = await self.store.outbox.enqueue(integration, message.dedup_key, message.action, message.to_json(),
                                                  self.clock.time(), recipients=",".join(sorted(set(message.to))))
        if item_id is None:
            log.debug("%s: %s %s already queued", integration, message.action, message.dedup_key)
            return False
        log.info("%s: queued %s %s: %s", integration, message.action, message.dedup_key, message.summary)
        self.wakeup.set()
        return True


class Dispatcher:
    """Delivers queued pages with retries; run :meth:`run` as a task, :meth:`aclose` at exit.

    ``pagers`` replaces the pagers built from ``paging`` (tests); ``random`` draws the
    jitter; ``poll`` bounds how long the loop sleeps, so pages queued by another process
    are noticed too.
    """

    def __init__(self, outbox: Outbox, paging: PagingConfig, metrics: Metrics, *,
                 pagers: Mapping[str, Pager] | None = None, random: Callable[[], float] = _random.random,
                 poll: float = 5.0):
        self.outbox, self.store, self.clock = outbox, outbox.store, outbox.clock
        self.metrics = metrics
        self.http = HttpClient()
        self._random = random
        self._poll = poll
        self._lock = asyncio.Lock()
        self.configure(paging, pagers)

    def configure(self, paging: PagingConfig, pagers: Mapping[str, Pager] | None = None) -> None:
        """Take a (re)loaded ``paging`` section; attempts in flight finish with the old pagers (the
        depth gauges follow at the next delivery pass)."""
        self.policy = paging.retry
        self.pagers = dict(pagers) if pagers is not None else build_pagers(paging, self.http)

    async def run(self) -> None:
        """Deliver pages as they fall due, until cancelled."""
        await self._pass(everything=True)
        while True:
            self.outbox.wakeup.clear()
            now = self.clock.time()
            due = await self.store.outbox.next_due()
            until = min(due, now + self._poll) if due is not None else now + self._poll
            if until > now:
                await self._sleep(until)
            await self._pass()

    async def _pass(self, everything: bool = False) -> None:
        try:
            await self.deliver_due(everything)
        except asyncio.CancelledError:
            raise
        except StoreFault:
            pass  # the store reported it once
        except Exception:  # a broken store must not end paging for good; say so and try later
            log.exception("page outbox: delivery pass failed")
            await self.clock.sleep_until(self.clock.time() + self._poll)
        if self.store.fault is not None:  # nothing goes out until the store can record it: look again later
            await self.clock.sleep_until(self.clock.time() + self._poll)

    async def _sleep(self, until: float) -> None:
        """Sleep until ``until`` or until a page is queued."""
        sleeper = asyncio.ensure_future(self.clock.sleep_until(until))
        waker = asyncio.ensure_future(self.outbox.wakeup.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def deliver_due(self, everything: bool = False) -> int:
        """Attempt every page due now (every pending page if ``everything``); return how many were delivered."""
        if self.store.fault is not None:
            return 0  # a delivery could not be recorded, so each pass would send it again: wait
        async with self._lock:
            items = await self.store.outbox.due(float("inf") if everything else self.clock.time())
            by_integration: dict[str, list[OutboxItem]] = defaultdict(list)
            for item in items:
                by_integration[item.integration].append(item)
            results = await asyncio.gather(*(self._deliver_series(series) for series in by_integration.values()))
            await self._update_depth()
            return sum(results)

    async def _deliver_series(self, items: list[OutboxItem]) -> int:
        """One integration's due pages, in order."""
        delivered = 0
        for item in items:
            delivered += await self._deliver(item)
        return delivered

    async def _deliver(self, item: OutboxItem) -> bool:
        """One attempt at one page; record what came of it."""
        attempts = item.attempts + 1
        try:
            message = Message.from_json(item.message)
        except (ValueError, TypeError) as exc:
            await self._finish(item, None, "dead", attempts, f"unreadable message: {exc}")
            return False
        pager = self.pagers.get(item.integration)
        if pager is None:
            await self._finish(item, message, "dead", item.attempts, f"integration {item.integration!r} is not configured")
            return False
        try:
            async with asyncio.timeout(pager.timeout + TIMEOUT_GRACE):
                receipt = await pager.send(message)
        except asyncio.CancelledError:
            raise
        except DeliveryError as exc:
            await self._failed(item, message, attempts, exc)
            return False
        except TimeoutError:
            await self._failed(item, message, attempts, DeliveryError(
                Reason.TIMEOUT, f"no result within {pager.timeout + TIMEOUT_GRACE:g}s", retryable=True))
            return False
        except Exception as exc:  # a bug in a pager: keep the page and retry, loudly
            log.exception("%s: pager failed unexpectedly", item.integration)
            await self._failed(item, message, attempts, DeliveryError(Reason.ERROR, f"{type(exc).__name__}: {exc}", True))
            return False
        await self._finish(item, message, "delivered", attempts, receipt)
        return True

    async def _failed(self, item: OutboxItem, message: Message, attempts: int, exc: DeliveryError) -> None:
        """Reschedule a failed page, or give it up."""
        now = self.clock.time()
        policy = self.policy
        error = f"{exc.reason or 'error'}: {exc.summary}"
        give_up = None
        if not exc.retryable:
            give_up = "not retryable"
        elif policy.max_attempts is not None and attempts >= policy.max_attempts:
            give_up = f"gave up after {attempts} attempts"
        elif now - item.created_at >= policy.give_up_after:
            give_up = f"gave up after {now - item.created_at:.0f}s, {attempts} attempts"
        if give_up:
            await self._finish(item, message, "dead", attempts, f"{error} ({give_up})")
            return
        delay = policy.delay(attempts, self._random())
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, policy.max_delay))
        await self.store.outbox.failed(item.id, attempts, now + delay, error)
        self.metrics.pages_sent.labels(item.integration, "retry").inc()
        log.warning("%s: %s %s failed (attempt %d), retrying in %.1fs: %s", item.integration, message.action,
                    message.dedup_key, attempts, delay, error)

    async def _finish(self, item: OutboxItem, message: Message | None, state: str, attempts: int, note: str) -> None:
        """Mark a page delivered or dead and journal it, in one durable transaction."""
        now = self.clock.time()
        async with self.store.transaction(durable=True):
            await self.store.outbox.done(item.id, state, now, attempts, None if state == "delivered" else note)
            await self.store.incidents.append(JournalEntry(
                ts=now, event="page_delivery", host=message.source if message else None,
                incident_id=message.incident_id if message else None, decision=item.integration, outcome=state,
                reason=note, detail={"dedup_key": item.dedup_key, "action": item.action, "attempts": attempts,
                                     "queued_at": item.created_at}))
        self.metrics.pages_sent.labels(item.integration, state).inc()
        if state == "delivered":
            log.log(logging.INFO if attempts == 1 else logging.WARNING, "%s: delivered %s %s after %d attempt(s)",
                    item.integration, item.action, item.dedup_key, attempts)
        else:
            log.error("%s: GAVE UP on %s %s: %s", item.integration, item.action, item.dedup_key, note)

    async def _update_depth(self) -> None:
        depth = await self.store.outbox.depth()
        for name in set(self.pagers) | set(depth):
            self.metrics.page_outbox_depth.labels(name).set(depth.get(name, 0))

    async def aclose(self) -> None:
        """Close the HTTP session (cancel :meth:`run` first)."""
        await self.http.aclose()
