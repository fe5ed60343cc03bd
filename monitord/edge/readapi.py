"""The read side of the daemon's API, and its maintenance windows (``/api/v1``), described by
``openapi.json`` next to this module and served at ``/api/v1/openapi.json``:

- ``GET /api/v1/status``: the daemon's health (version, uptime, checks, scheduler lateness,
  last reload, store health).
- ``GET /api/v1/hosts``, ``/api/v1/hosts/{host}``, ``/api/v1/hosts/{host}/explain``.
- ``GET /api/v1/incidents`` (``?state=open|closed|all``, ``?host=NAME``), ``/api/v1/incidents/{id}``
  (with its journal).
- ``GET /api/v1/maintenance``; ``POST`` (body ``{"target": "host:NAME", "duration": "2h",
  "reason": "...", "by": "...", "start": "2026-12-01T02:00+09:00"}``, ``start`` optional: now)
  and ``DELETE /api/v1/maintenance/{id}`` need the bearer token (:mod:`monitord.edge.acts`).

Reads are open, token-protected or off by ``daemon.api.reads``. Nothing here probes, acts or
journals, except adding and removing a window (journaled like the CLI's).
"""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources
from typing import Mapping, Protocol

from aiohttp import web

from monitord.edge import acts, views
from monitord.edge.api import Api, body_of
from monitord.shared.fields import parse_duration
from monitord.shared.http import Refusal, path_id

OPENAPI = json.loads(resources.files("monitord.edge").joinpath("openapi.json").read_text(encoding="utf-8"))
"""The API's OpenAPI 3 document: the one description of its routes and answers."""


class Live(Protocol):
    """What only the running daemon knows."""

    async def explain(self, host: str) -> dict: ...

    def status(self) -> dict: ...

    def due(self) -> Mapping[str, float]: ...


class ReadApi:
    """Read handlers over an :class:`Api` (its store, clock, config and token check) and the daemon."""

    def __init__(self, api: Api, live: Live):
        self.api, self.live = api, live

    def install(self, app: web.Application) -> None:
        """Add the routes to ``app``."""
        for path, handler in (("/api/v1/openapi.json", self.openapi), ("/api/v1/status", self.status),
                              ("/api/v1/hosts", self.hosts), ("/api/v1/hosts/{host}", self.host),
                              ("/api/v1/hosts/{host}/explain", self.explain), ("/api/v1/incidents", self.incidents),
                              ("/api/v1/incidents/{incident}", self.incident),
                              ("/api/v1/maintenance", self.maintenance)):
            app.router.add_get(path, handler, allow_head=False)
        app.router.add_post("/api/v1/maintenance", self.add_maintenance)
        app.router.add_delete("/api/v1/maintenance/{window}", self.remove_maintenance)

    def _reader(self, request: web.Request) -> None:
        reads = self.api.config().daemon.api.reads
        if reads == "off":
            raise Refusal(403, "the read API is off (daemon.api.reads)")
        if reads == "token":
            self.api.authenticate(request)

    def _host(self, request: web.Request) -> str:
        self._reader(request)
        return self.api.known_host(request)

    async def openapi(self, request: web.Request) -> web.Response:
        self._reader(request)
        return web.json_response(OPENAPI)

    async def status(self, request: web.Request) -> web.Response:
        self._reader(request)
        return web.json_response(self.live.status())

    async def hosts(self, request: web.Request) -> web.Response:
        self._reader(request)
        return web.json_response(await views.hosts(self.api.config(), self.api.store, self.api.clock.time(),
                                                   self.live.due()))

    async def host(self, request: web.Request) -> web.Response:
        name = self._host(request)
        return web.json_response(await views.host(self.api.config(), self.api.store, name, self.api.clock.time(),
                                                  self.live.due()))

    async def explain(self, request: web.Request) -> web.Response:
        name = self._host(request)
        view = await views.host(self.api.config(), self.api.store, name, self.api.clock.time(), self.live.due())
        return web.json_response({**(await self.live.explain(name)), "checks": view["checks"],
                                  "maintenance": view["maintenance"], "quarantined": view["quarantined"]})

    async def incidents(self, request: web.Request) -> web.Response:
        self._reader(request)
        unknown = set(request.query) - {"state", "host"}
        if unknown:
            raise Refusal(400, f"unknown query parameter {sorted(unknown)[0]!r}: use state, host")
        state = request.query.get("state", "all")
        if state not in ("all", "open", "closed"):
            raise Refusal(400, "state must be all, open or closed")
        return web.json_response(await views.incidents(self.api.store, state=state, host_name=request.query.get("host")))

    async def incident(self, request: web.Request) -> web.Response:
        self._reader(request)
        incident_id = path_id(request, "incident")
        found = next((i for i in await self.api.store.incidents.list() if i.id == incident_id), None)
        if found is None:
            raise Refusal(404, f"no incident #{incident_id}")
        return web.json_response(await views.incident(self.api.store, found, await views.host_states(self.api.store),
                                                      journal=True))

    async def maintenance(self, request: web.Request) -> web.Response:
        self._reader(request)
        now = self.api.clock.time()
        return web.json_response([views.window_json(w, now)
                                  for w in await views.maintenance(self.api.config(), self.api.store)])

    async def add_maintenance(self, request: web.Request) -> web.Response:
        """Add a window from now, or from ``start``, for ``duration`` (it expires by itself)."""
        self.api.authenticate(request)
        body = await body_of(request, "target", "duration", "reason", "by", "start")
        config, store, now = self.api.config(), self.api.store, self.api.clock.time()
        try:
            length = parse_duration(body.get("duration", ""))
        except ValueError as exc:
            raise Refusal(400, f"duration: {exc}") from None
        start = now
        if "start" in body:
            try:
                when = dt.datetime.fromisoformat(body["start"])
            except ValueError:
                when = None
            if when is None or when.tzinfo is None:
                raise Refusal(400, "start must be an ISO 8601 time with a UTC offset, e.g. 2026-12-01T02:00+09:00")
            start = when.timestamp()
        try:
            window_id = await acts.add_window(config, store, body.get("target", ""), start, length, body.get("reason", ""),
                                              body.get("by") or "api", now)
        except ValueError as exc:
            raise Refusal(400, str(exc)) from None
        window = next(w for w in await views.maintenance(config, store) if w["id"] == str(window_id))
        return web.json_response(views.window_json(window, now), status=201)

    async def remove_maintenance(self, request: web.Request) -> web.Response:
        self.api.authenticate(request)
        window_id = path_id(request, "window")
        if not await acts.remove_window(self.api.store, window_id, self.api.clock.time()):
            raise Refusal(404, f"no maintenance window #{window_id} (config windows are removed in the config)")
        return web.json_response({"id": str(window_id), "removed": True})
