"""The daemon's small HTTP API, next to /metrics: acknowledging an incident's pages.

``POST /api/v1/incidents/{id}/ack`` with ``Authorization: Bearer TOKEN`` (``daemon.api_token``)
and an optional JSON body ``{"by": "name"}``. Without a configured token the API is off (403).
"""

from __future__ import annotations

import hmac
import json
from typing import Callable

from aiohttp import web

from monitord.clock import Clock
from monitord.config import Config
from monitord.notify import acknowledge
from monitord.state import Store

ACK_ROUTE = "/api/v1/incidents/{incident}/ack"


def _error(status: int, why: str) -> web.Response:
    return web.json_response({"error": why}, status=status)


class Api:
    """Handlers bound to the daemon's store, clock and (reloadable) config."""

    def __init__(self, store: Store, clock: Clock, config: Callable[[], Config]):
        self.store, self.clock, self._config = store, clock, config

    def install(self, app: web.Application) -> None:
        """Add the API routes to ``app``."""
        app.router.add_post(ACK_ROUTE, self.ack)

    async def ack(self, request: web.Request) -> web.Response:
        """Acknowledge every open page of an incident."""
        token_ref = self._config().daemon.api_token
        if token_ref is None:
            return _error(403, "the API is off: set daemon.api_token")
        given = request.headers.get("Authorization", "")
        if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), token_ref.read().encode()):
            return _error(401, "missing or wrong bearer token")
        try:
            incident_id = int(request.match_info["incident"])
        except ValueError:
            return _error(400, "the incident must be a number")
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return _error(400, "the body must be JSON")
        if not isinstance(body, dict) or set(body) - {"by"} or not isinstance(body.get("by", ""), str):
            return _error(400, 'the body may only be {"by": "name"}')
        if not any(i.id == incident_id for i in self.store.incidents()):
            return _error(404, f"no incident #{incident_id}")
        count = acknowledge(self.store, incident_id, body.get("by") or "api", self.clock.time())
        return web.json_response({"incident": incident_id, "acknowledged": count})
