"""The daemon's small HTTP API, next to /metrics: what operators ask of the running daemon, so
that it acts at once and under its own locks (the CLI uses it when the daemon runs).

- ``POST /api/v1/incidents/{id}/ack``, body ``{"by": "name"}``: acknowledge an incident's pages.
- ``POST /api/v1/hosts/{host}/quarantine``, body ``{"reason": "...", "by": "name"}``: record the
  quarantine, then power the host off under its lock; answers ``{"powered_off": bool, "summary": "..."}``.
- ``POST /api/v1/hosts/{host}/release``, body ``{"by": "name"}``: lift it (409 if not quarantined).
- ``POST /api/v1/hosts/{host}/approve`` and ``/deny``, body ``{"by": "name"}``: the emergency
  contact's answer for the host's pending off-hours action; the ladder waiting for it goes on at once.
- ``POST /api/v1/pagerduty``: PagerDuty's V3 webhooks, signed instead of carrying the token
  (:mod:`monitord.paging.pdwebhook`).

These write: every request carries ``Authorization: Bearer TOKEN`` (``daemon.api_token``); bodies are
optional JSON objects with only those keys. Without a configured token the API is off (403);
a token file that cannot be read also turns it off (403, and the daemon logs why). The id is
plain digits. Limits, timeouts and JSON error answers come from :mod:`monitord.edge.listener`.
The reads, and maintenance windows, are in :mod:`monitord.edge.readapi`.
"""

from __future__ import annotations

import functools
from typing import Callable, Protocol

from aiohttp import web

from monitord.shared.clock import Clock
from monitord.config import Config
from monitord.shared.http import (Refusal, bearer_token, loads, path_id, read_body, read_token, token_matches,
                                  unauthorised)
from monitord.edge import acts, views
from monitord.escalation.ladder import Phase
from monitord.paging.notify import acknowledge
from monitord.paging.pdwebhook import ROUTE as PAGERDUTY_ROUTE, PagerDutyWebhook
from monitord.records.store import Store

ACK_ROUTE = "/api/v1/incidents/{incident}/ack"
QUARANTINE_ROUTE = "/api/v1/hosts/{host}/quarantine"
RELEASE_ROUTE = "/api/v1/hosts/{host}/release"
ANSWER_ROUTES = {"granted": "/api/v1/hosts/{host}/approve", "denied": "/api/v1/hosts/{host}/deny"}


class Actions(Protocol):
    """What the API asks the daemon's engine to do, under the host's lock."""

    async def quarantine(self, host: str, reason: str, by: str | None) -> tuple[bool, str]: ...

    async def release(self, host: str, by: str | None) -> bool: ...

    def answered(self, host: str) -> None: ...


class Api:
    """Handlers bound to the daemon's store, clock, (reloadable) config and engine."""

    def __init__(self, store: Store, clock: Clock, config: Callable[[], Config], actions: Actions | None = None):
        self.store, self.clock, self.config, self.actions = store, clock, config, actions

    def install(self, app: web.Application) -> None:
        """Add the API routes to ``app``."""
        app.router.add_post(ACK_ROUTE, self.ack)
        app.router.add_post(PAGERDUTY_ROUTE, PagerDutyWebhook(self.store, self.clock, self.config).handle)
        if self.actions is not None:
            app.router.add_post(QUARANTINE_ROUTE, self.quarantine)
            app.router.add_post(RELEASE_ROUTE, self.release)
            for answer, route in ANSWER_ROUTES.items():
                app.router.add_post(route, functools.partial(self.answer, answer))

    def authenticate(self, request: web.Request) -> None:
        """Refuse the request unless it carries the API token."""
        self.check_token(bearer_token(request))

    def check_token(self, given: bytes) -> None:
        """Refuse unless ``given`` is the API token (a bearer token, or typed into the status page)."""
        token_ref = self.config().daemon.api_token
        if token_ref is None:
            raise Refusal(403, "the API is off: set daemon.api_token")
        token = read_token(token_ref, "the API token (daemon.api_token)")
        if token is None:
            raise Refusal(403, "the API is off: its token cannot be read (see the daemon's log)")
        if not token_matches(given, [token]):
            raise unauthorised()

    async def ack(self, request: web.Request) -> web.Response:
        """Acknowledge every open page of an incident."""
        self.authenticate(request)
        incident_id = path_id(request, "incident")
        body = await body_of(request, "by")
        count = await self.acknowledge(incident_id, body.get("by") or "api")
        return web.json_response({"incident": incident_id, "acknowledged": count})

    async def acknowledge(self, incident_id: int, by: str) -> int:
        """Acknowledge an incident's open pages (404 if there is no such incident); how many."""
        if await self.store.incidents.get(incident_id) is None:
            raise Refusal(404, f"no incident #{incident_id}")
        return await acknowledge(self.store, incident_id, by, self.clock.time())

    async def quarantine(self, request: web.Request) -> web.Response:
        """Quarantine a host: recorded at once, powered off under the host's lock."""
        self.authenticate(request)
        host = self.known_host(request)
        body = await body_of(request, "by", "reason")
        powered_off, summary = await self.actions.quarantine(
            host, body.get("reason") or "compromised: stopped to prevent secondary damage", body.get("by") or "api")
        return web.json_response({"host": host, "powered_off": powered_off, "summary": summary})

    async def release(self, request: web.Request) -> web.Response:
        """Lift a host's quarantine (it is not powered on)."""
        self.authenticate(request)
        host = self.known_host(request)
        body = await body_of(request, "by")
        if not await self.actions.release(host, body.get("by") or "api"):
            raise Refusal(409, f"{host} is not quarantined")
        return web.json_response({"host": host, "released": True})

    async def answer(self, answer: str, request: web.Request) -> web.Response:
        """The emergency contact's answer for a host's pending action: recorded, and the ladder
        waiting for it told at once; ``awaiting`` says whether one was waiting."""
        self.authenticate(request)
        host = self.known_host(request)
        body = await body_of(request, "by")
        state = (await views.host_states(self.store)).get(host)
        awaiting = state is not None and state.phase is Phase.AWAITING_APPROVAL
        await acts.answer_approval(self.store, host, answer, body.get("by") or "api", self.clock.time())
        self.actions.answered(host)
        return web.json_response({"host": host, "answer": answer, "awaiting": awaiting})

    def known_host(self, request: web.Request) -> str:
        """The request's ``{host}``, which must be in the running config (404)."""
        host = request.match_info["host"]
        if host not in self.config().hosts:
            raise Refusal(404, "no such host in the running config")
        return host


async def body_of(request: web.Request, *keys: str) -> dict[str, str]:
    """The request's optional JSON body: an object with only ``keys``, each a string."""
    raw = await read_body(request)
    try:
        body = loads(raw) if raw.strip() else {}
    except ValueError:
        raise Refusal(400, "the body must be JSON") from None
    if not isinstance(body, dict) or set(body) - set(keys) or not all(isinstance(v, str) for v in body.values()):
        raise Refusal(400, "the body may only be a JSON object with string values for " + ", ".join(keys))
    return body
