"""PagerDuty V3 webhooks: an acknowledgement made in PagerDuty (on the phone) acknowledges the
monitord incident it belongs to, so monitord stops paging the next tier.

PagerDuty posts to ``POST /api/v1/pagerduty`` (a V3 webhook subscription on the service the
``pagerduty`` integration triggers). Each delivery is signed: ``X-PagerDuty-Signature`` holds
one ``v1=<hex HMAC-SHA256 of the raw body>`` per signing secret, comma separated (several while
a secret is rotated); the delivery is trusted when one of them is the HMAC with the
``webhook_secret`` of one of the config's ``pagerduty`` integrations.

The event's ``data.incident_key`` is the dedup key monitord triggered the PagerDuty alert with
(``monitord-page-N``, see :mod:`monitord.paging.notify`); it names the page, and so the incident.

- ``incident.acknowledged``: every open page of that incident is acknowledged (as ``monitord
  ack`` does), journaled with who acknowledged it in PagerDuty; the notifier stops escalating.
- ``incident.resolved``: the same, journaled as resolved in PagerDuty. monitord does not close
  the incident: it closes incidents only when its own checks (and the ladder's verification)
  see the recovery, so a resolve in PagerDuty while the host is still down cannot hide it.
- any other event type, or a key monitord did not send or whose pages are closed: 200, ignored.

A delivery is answered only after it is journaled. Retried or replayed deliveries change nothing
(each event id is journaled once per incident; acknowledged pages stay acknowledged). Answers:
200 ``{"event": id, "acknowledged": N}`` or ``{"ignored": why}``; 401 a missing or wrong
signature; 403 while no integration has a ``webhook_secret``; 400 a body that is not a V3 event.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Callable

from aiohttp import web

from monitord.config import Config
from monitord.paging.notify import acknowledge
from monitord.records.store import Store
from monitord.shared.clock import Clock
from monitord.shared.http import Refusal, loads, read_body, read_token

log = logging.getLogger(__name__)

ROUTE = "/api/v1/pagerduty"
SIGNATURE = "X-PagerDuty-Signature"
HANDLED = {"incident.acknowledged": "acknowledged in PagerDuty",
           "incident.resolved": "resolved in PagerDuty; monitord closes the incident when its checks see the recovery"}


def signed(raw: bytes, header: str, secrets: list[str]) -> bool:
    """Whether one of the header's ``v1=`` signatures is the HMAC-SHA256 of ``raw`` with one of ``secrets``."""
    given = [part.strip()[3:].lower().encode() for part in header.split(",") if part.strip().startswith("v1=")]
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest().encode()
        for signature in given:
            matched |= hmac.compare_digest(expected, signature)
    return matched


def parse_event(raw: bytes) -> dict:
    """The ``event`` object of a V3 delivery; :class:`ValueError` says what is wrong."""
    try:
        body = loads(raw)
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    event = body.get("event") if isinstance(body, dict) else None
    if not isinstance(event, dict):
        raise ValueError('body must be a PagerDuty V3 webhook: {"event": {...}}')
    for key in ("id", "event_type"):
        if not isinstance(event.get(key), str) or not event[key]:
            raise ValueError(f"event.{key} must be a non-empty string")
    if not isinstance(event.get("data"), dict):
        raise ValueError("event.data must be an object")
    return event


class PagerDutyWebhook:
    """The receiver of PagerDuty's V3 webhooks, bound to the daemon's store, clock and config."""

    def __init__(self, store: Store, clock: Clock, config: Callable[[], Config]):
        self.store, self.clock, self.config = store, clock, config

    def secrets(self) -> list[str]:
        """The webhook secrets of the config's pagerduty integrations (unreadable ones are logged and skipped)."""
        refs = [(name, i.webhook_secret) for name, i in self.config().paging.integrations.items()
                if getattr(i, "webhook_secret", None) is not None]
        if not refs:
            raise Refusal(403, "the PagerDuty webhook is off: set webhook_secret on a pagerduty integration")
        return [s for name, ref in refs if (s := read_token(ref, f"paging.integrations.{name}.webhook_secret"))]

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /api/v1/pagerduty``: verify the signature, then acknowledge the incident the event names."""
        secrets = self.secrets()
        raw = await read_body(request)
        header = request.headers.get(SIGNATURE, "")
        if not header:
            raise Refusal(401, f"missing {SIGNATURE}")
        if not signed(raw, header, secrets):
            log.warning("PagerDuty webhook from %s refused: no valid signature", request.remote)
            raise Refusal(401, f"{SIGNATURE} matches no webhook secret")
        try:
            event = parse_event(raw)
        except ValueError as exc:
            raise Refusal(400, str(exc)) from None
        what = HANDLED.get(event["event_type"])
        if what is None:
            return web.json_response({"ignored": f"event type {event['event_type']} is not acted on"})
        key = event["data"].get("incident_key")
        incidents = {p.incident_id for p in await self.store.outbox.pages()
                     if p.incident_id is not None and any(k == key for _, k in p.paged)}
        if not incidents:
            return web.json_response({"ignored": "the incident key names no open page"})
        agent = event.get("agent")
        by = "pagerduty" + (f": {agent['summary']}" if isinstance(agent, dict) and isinstance(agent.get("summary"), str)
                            else "")
        count = 0
        for incident_id in sorted(incidents):
            if any(e.detail.get("pagerduty_event") == event["id"]
                   for e in await self.store.incidents.journal(incident_id, limit=1_000_000) if e.event == "ack"):
                continue  # a retried or replayed delivery
            count += await acknowledge(self.store, incident_id, by, self.clock.time(), what, pagerduty_event=event["id"])
            log.info("incident %d: %s (%s)", incident_id, what, by)
        return web.json_response({"event": event["id"], "acknowledged": count})
