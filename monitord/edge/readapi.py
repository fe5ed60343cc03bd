"""The read side of the daemon's API, and its maintenance windows (``/api/v1``), described by
``openapi.json`` next to this module and served at ``/api/v1/openapi.json``:

- ``GET /api/v1/status``: the daemon's health (version, uptime, checks, scheduler lateness,
  last reload, store health).
- ``GET /api/v1/hosts``, ``/api/v1/hosts/{host}``, ``/api/v1/hosts/{host}/explain``.
- ``GET /api/v1/incidents`` (``?state=open|closed|all``, ``?host=NAME``), ``/api/v1/incidents/{id}``
  (with its journal).
- ``GET /api/v1/maintenance``; ``POST`` (body ``{"target": "host:NAME", "duration": "2h",
  "reason": "...", "by": "..."}``) and ``DELETE /api/v1/maintenance/{id}`` need the bearer token.

Reads are open, token-protected or off by ``daemon.api.reads``. Nothing here probes, acts or
journals, except adding and removing a window (journaled like the CLI's).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Mapping, Protocol

from aiohttp import web

from monitord.edge import views
from monitord.edge.api import Api, body_of
from monitord.records.state import JournalEntry
from monitord.shared.fields import parse_duration
from monitord.shared.http import Refusal, path_id

OPENAPI = json.loads(resources.files("monitord.edge").joinpath("openapi.json").read_text(encoding="utf-8"))
"""The API's OpenAPI 3 document: the one description of its routes and answers."""
MAX_WINDOW = 90 * 86400.0
"""The longest maintenance window the API adds (a typo such as 3000h must not silence a host for months)."""


class Live(Protocol):
    """What only the running daemon knows."""

    def explain(self, host: str) -> dict: ...

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
        config, now, states = self.api.config(), self.api.clock.time(), views.host_states(self.api.store)
        due = self.live.due()
        return web.json_response([views.host(config, self.api.store, name, now, due, states) for name in config.hosts])

    async def host(self, request: web.Request) -> web.Response:
        name = self._host(request)
        return web.json_response(views.host(self.api.config(), self.api.store, name, self.api.clock.time(),
                                            self.live.due()))

    async def explain(self, request: web.Request) -> web.Response:
        name = self._host(request)
        view = views.host(self.api.config(), self.api.store, name, self.api.clock.time(), self.live.due())
        return web.json_response({**self.live.explain(name), "checks": view["checks"],
                                  "maintenance": view["maintenance"], "quarantined": view["quarantined"]})

    async def incidents(self, request: web.Request) -> web.Response:
        self._reader(request)
        unknown = set(request.query) - {"state", "host"}
        if unknown:
            raise Refusal(400, f"unknown query parameter {sorted(unknown)[0]!r}: use state, host")
        state = request.query.get("state", "all")
        if state not in ("all", "open", "closed"):
            raise Refusal(400, "state must be all, open or closed")
        return web.json_response(views.incidents(self.api.store, state=state, host_name=request.query.get("host")))

    async def incident(self, request: web.Request) -> web.Response:
        self._reader(request)
        incident_id = path_id(request, "incident")
        found = next((i for i in self.api.store.incidents() if i.id == incident_id), None)
        if found is None:
            raise Refusal(404, f"no incident #{incident_id}")
        return web.json_response(views.incident(self.api.store, found, views.host_states(self.api.store),
                                                journal=True))

    async def maintenance(self, request: web.Request) -> web.Response:
        self._reader(request)
        now = self.api.clock.time()
        return web.json_response([views.window_json(w, now)
                                  for w in views.maintenance(self.api.config(), self.api.store)])

    async def add_maintenance(self, request: web.Request) -> web.Response:
        """Add a window from now for ``duration`` (it expires by itself)."""
        self.api.authenticate(request)
        body = await body_of(request, "target", "duration", "reason", "by")
        config, store = self.api.config(), self.api.store
        kind, _, name = body.get("target", "").partition(":")
        known = {"host": config.hosts, "group": config.groups,
                 "tag": {t for h in config.hosts.values() for t in h.tags}}.get(kind)
        if known is None or name not in known:
            raise Refusal(400, "target must be host:NAME, group:NAME or tag:NAME naming one in the running config")
        try:
            length = parse_duration(body.get("duration", ""))
        except ValueError as exc:
            raise Refusal(400, f"duration: {exc}") from None
        if not 0 < length <= MAX_WINDOW:
            raise Refusal(400, f"duration must be more than 0 and at most {MAX_WINDOW / 86400:g} days")
        reason = body.get("reason", "").strip()
        if not reason:
            raise Refusal(400, "reason is required")
        now, by = self.api.clock.time(), body.get("by") or "api"
        with store.transaction(durable=True):
            window_id = store.add_maintenance(f"{kind}:{name}", now, now + length, reason, by)
            store.append(JournalEntry(ts=now, event="maintenance", decision="added", host=name if kind == "host" else None,
                                      reason=reason, detail={"id": window_id, "target": f"{kind}:{name}", "start": now,
                                                             "end": now + length, "by": by}))
        window = next(w for w in views.maintenance(config, store) if w["id"] == str(window_id))
        return web.json_response(views.window_json(window, now), status=201)

    async def remove_maintenance(self, request: web.Request) -> web.Response:
        self.api.authenticate(request)
        window_id = path_id(request, "window")
        store = self.api.store
        with store.transaction(durable=True):
            if not store.remove_maintenance(window_id):
                raise Refusal(404, f"no maintenance window #{window_id} (config windows are removed in the config)")
            store.append(JournalEntry(ts=self.api.clock.time(), event="maintenance", decision="removed",
                                      detail={"id": window_id}))
        return web.json_response({"id": str(window_id), "removed": True})
