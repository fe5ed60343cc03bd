"""The daemon's small HTTP API, next to /metrics: acknowledging an incident's pages.

``POST /api/v1/incidents/{id}/ack`` with ``Authorization: Bearer TOKEN`` (``daemon.api_token``)
and an optional JSON body ``{"by": "name"}``. Without a configured token the API is off (403);
a token file that cannot be read also turns it off (403, and the daemon logs why). The id is
plain digits. Limits, timeouts and JSON error answers come from :mod:`monitord.edge.listener`.
"""

from __future__ import annotations

from typing import Callable

from aiohttp import web

from monitord.shared.clock import Clock
from monitord.config import Config
from monitord.shared.http import (Refusal, bearer_token, loads, path_id, read_body, read_token, token_matches,
                                  unauthorised)
from monitord.paging.notify import acknowledge
from monitord.records.state import Store

ACK_ROUTE = "/api/v1/incidents/{incident}/ack"


class Api:
    """Handlers bound to the daemon's store, clock and (reloadable) config."""

    def __init__(self, store: Store, clock: Clock, config: Callable[[], Config]):
        self.store, self.clock, self._config = store, clock, config

    def install(self, app: web.Application) -> None:
        """Add the API routes to ``app``."""
        app.router.add_post(ACK_ROUTE, self.ack)

    def authenticate(self, request: web.Request) -> None:
        """Refuse the request unless it carries the API token."""
        token_ref = self._config().daemon.api_token
        if token_ref is None:
            raise Refusal(403, "the API is off: set daemon.api_token")
        token = read_token(token_ref, "the API token (daemon.api_token)")
        if token is None:
            raise Refusal(403, "the API is off: its token cannot be read (see the daemon's log)")
        if not token_matches(bearer_token(request), [token]):
            raise unauthorised()

    async def ack(self, request: web.Request) -> web.Response:
        """Acknowledge every open page of an incident."""
        self.authenticate(request)
        incident_id = path_id(request, "incident")
        raw = await read_body(request)
        try:
            body = loads(raw) if raw.strip() else {}
        except ValueError:
            raise Refusal(400, "the body must be JSON") from None
        if not isinstance(body, dict) or set(body) - {"by"} or not isinstance(body.get("by", ""), str):
            raise Refusal(400, 'the body may only be {"by": "name"}')
        if not any(i.id == incident_id for i in self.store.incidents()):
            raise Refusal(404, f"no incident #{incident_id}")
        count = acknowledge(self.store, incident_id, body.get("by") or "api", self.clock.time())
        return web.json_response({"incident": incident_id, "acknowledged": count})
