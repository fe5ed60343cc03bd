"""The NOC status page at ``/``: one server-rendered HTML page (Jinja2, inline CSS, no script)
that reloads itself every ``daemon.api.page_refresh``.

It shows what the read API shows, built from the same views (:mod:`monitord.edge.views`) and
the daemon's own health (``GET /api/v1/status``): hosts by group coloured by state, open
incidents with their level, what the ladder did (the journal), SLA timers with deadline and
time left at render time, maintenance windows, quarantined hosts.

Access follows ``daemon.api.reads``: open; token (the browser's own login prompt, HTTP Basic
with the API token as password, or a bearer header); off (403). Each open incident with pages
not yet acknowledged has an acknowledge form: the operator types the API token into it, the
form is posted to ``/incidents/{id}/ack`` (refused from another origin), acknowledged through
the API's own path (:meth:`Api.acknowledge`), and answered with a redirect back to ``/`` that
says what was done (post, redirect, get). Refusals are HTML pages with the reason.

Labels are Japanese or English: ``?lang=ja|en``, else the browser's Accept-Language, else
``daemon.api.page_lang``. Every value is escaped (autoescape).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import urllib.parse
import zoneinfo
from typing import Mapping

import jinja2
from aiohttp import web

from monitord.config import Config
from monitord.edge import views
from monitord.edge.api import Api
from monitord.edge.readapi import Live
from monitord.records.store import Store
from monitord.shared.fields import format_duration
from monitord.shared.http import Refusal, bearer_token, path_id, read_body

LANGS = ("ja", "en")
STATES = ("critical", "warning", "unknown", "maintenance", "quarantined", "ok")
"""A host's state on the page, worst first (the order of the legend)."""
ACK_ROUTE = "/incidents/{incident}/ack"
UNGROUPED = ""
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
           "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                      "frame-ancestors 'none'; base-uri 'none'"}


def language(query: str | None, accept: str, default: str) -> str:
    """The page's language: ``?lang=``, else the best of ja/en the Accept-Language header
    names (by q-value, then order), else ``default``. An unknown ``?lang=`` is refused (400)."""
    if query is not None:
        if query not in LANGS:
            raise Refusal(400, f"lang must be {' or '.join(LANGS)}")
        return query
    ranked = []
    for order, item in enumerate(accept.split(",")):
        tag, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.split("-")[0].lower()
        if primary in LANGS and q > 0:
            ranked.append((-q, order, primary))
    return min(ranked)[2] if ranked else default


def host_state(view: dict) -> str:
    """A host's state on the page from its view (:func:`views.host`)."""
    states = {c["state"] for c in view["checks"]}
    if view["quarantined"]:
        return "quarantined"
    if view["maintenance"]:
        return "maintenance"
    if "hard" in states:
        return "critical"
    if "soft" in states:
        return "warning"
    return "unknown" if not states or "unknown" in states else "ok"


async def snapshot(config: Config, store: Store, now: float, due: Mapping[str, float], status: dict) -> dict:
    """Everything the page shows, read at ``now`` from the same views as the read API."""
    hosts = [{**h, "state": host_state(h)} for h in await views.hosts(config, store, now, due)]
    groups: dict[str, list[dict]] = {g: [] for g in config.groups}
    for h in hosts:
        for g in h["groups"] or [UNGROUPED]:
            groups.setdefault(g, []).append(h)
    incidents = await views.incidents(store, state="open")
    for i in incidents:
        i["unacked"] = sum(1 for p in i["pages"] if p["acked_at"] is None and p["closed_at"] is None)
        for t in i["sla"]:
            t["left"] = None if t["stopped_at"] is not None else t["due"] - now
    windows = [views.window_json(w, now) for w in await views.maintenance(config, store)]
    return {
        "now": now, "status": status, "hosts": hosts,
        "groups": {g: members for g, members in groups.items() if members},
        "counts": {s: sum(1 for h in hosts if h["state"] == s) for s in STATES},
        "incidents": incidents,
        "maintenance": [w for w in windows if w["ends"] > now],
        "quarantined": [h for h in hosts if h["quarantined"]],
    }


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("monitord", "templates"), autoescape=True,
                              trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


@functools.cache
def words(lang: str) -> dict[str, str]:
    """The page's labels in one language (``templates/status/words.LANG.json``)."""
    env = _environment()
    return json.loads(env.loader.get_source(env, f"status/words.{lang}.json")[0])  # type: ignore[union-attr]


class _Format:
    """Times and durations for the templates, in the business-hours time zone."""

    def __init__(self, zone: dt.tzinfo, now: float, w: dict[str, str]):
        self.zone, self.now, self.w = zone, now, w

    def when(self, ts: float | None) -> str:
        return "—" if ts is None else dt.datetime.fromtimestamp(ts, self.zone).strftime("%Y-%m-%d %H:%M:%S %Z")

    def duration(self, seconds: float) -> str:
        return format_duration(max(0, round(seconds)))

    def ago(self, ts: float) -> str:
        return self.w["ago"].format(self.duration(self.now - ts))

    def word(self, key: str | None) -> str:
        """A label for ``key`` (a state, an SLA timer's name...), or the key itself."""
        return "—" if key is None else self.w.get(key, key)


def render(template: str, lang: str, config: Config, at: float, **context: object) -> str:
    """``status/TEMPLATE`` in ``lang`` (labels ``w``, formats ``f`` at time ``at``)."""
    w = words(lang)
    f = _Format(zoneinfo.ZoneInfo(config.business_hours.timezone), at, w)
    return _environment().get_template(f"status/{template}").render(lang=lang, w=w, f=f, **context)


class StatusPage:
    """The page's handlers over an :class:`Api` (store, clock, config, token check) and the daemon."""

    def __init__(self, api: Api, live: Live):
        self.api, self.live = api, live

    def install(self, app: web.Application) -> None:
        app.router.add_get("/", self.page, allow_head=False)
        app.router.add_post(ACK_ROUTE, self.ack)

    def _html(self, template: str, lang: str, code: int = 200, headers: Mapping[str, str] | None = None,
              **context: object) -> web.Response:
        config = self.api.config()
        text = render(template, lang, config, self.api.clock.time(), **context)
        return web.Response(text=text, status=code, content_type="text/html", charset="utf-8",
                            headers={**HEADERS, **(headers or {})})

    def _refused(self, refusal: Refusal, lang: str, status: int | None = None) -> web.Response:
        headers = {"WWW-Authenticate": 'Basic realm="monitord", charset="UTF-8"'} if refusal.status == 401 else {}
        return self._html("refused.html.j2", lang, status or refusal.status, headers, why=refusal.why)

    def _lang(self, request: web.Request) -> str:
        return language(request.query.get("lang"), request.headers.get("Accept-Language", ""),
                        self.api.config().daemon.api.page_lang)

    def _reader(self, request: web.Request) -> None:
        """Refuse unless reads are open, or the request carries the token (bearer or the browser's login)."""
        reads = self.api.config().daemon.api.reads
        if reads == "off":
            raise Refusal(403, "the status page is off, as the read API (daemon.api.reads)")
        if reads == "token":
            self.api.check_token(bearer_token(request) or _basic_password(request))

    async def page(self, request: web.Request) -> web.Response:
        try:
            lang = self._lang(request)
        except Refusal as refusal:
            return self._refused(refusal, self.api.config().daemon.api.page_lang)
        try:
            self._reader(request)
        except Refusal as refusal:
            return self._refused(refusal, lang)
        config, now = self.api.config(), self.api.clock.time()
        data = await snapshot(config, self.api.store, now, self.live.due(), self.live.status())
        return self._html("page.html.j2", lang, refresh=round(config.daemon.api.page_refresh),
                          acked=_acked(request.query), ack_route=ACK_ROUTE, **data)

    async def ack(self, request: web.Request) -> web.Response:
        """Acknowledge an incident from its form: the API's path, then back to the page (303)."""
        lang = self.api.config().daemon.api.page_lang
        try:
            form = await _form(request)
            lang = language(form.get("lang") or None, "", lang)
            _same_origin(request)
            incident_id = path_id(request, "incident")
            self.api.check_token(form.get("token", "").encode("utf-8", "surrogateescape"))
            count = await self.api.acknowledge(incident_id, form.get("by", "").strip()[:100] or "status page")
        except Refusal as refusal:
            return self._refused(refusal, lang, 403 if refusal.status == 401 else None)
        query = urllib.parse.urlencode({"lang": lang, "acked": incident_id, "count": count})
        raise web.HTTPSeeOther(f"/?{query}", headers=HEADERS)


def _acked(query: Mapping[str, str]) -> tuple[int, int] | None:
    """The confirmation the redirect after an ack carries: (incident, pages), if well-formed."""
    try:
        return int(query["acked"]), int(query["count"])
    except (KeyError, ValueError):
        return None


def _basic_password(request: web.Request) -> bytes:
    """The password of an HTTP Basic login (any user name), empty if none."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return b""
    try:
        return base64.b64decode(given.strip(), validate=True).partition(b":")[2]
    except (binascii.Error, ValueError):
        return b""


async def _form(request: web.Request) -> dict[str, str]:
    """A posted HTML form (application/x-www-form-urlencoded) as a dict; anything else is refused."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise Refusal(415, "post the page's form (application/x-www-form-urlencoded)")
    raw = await read_body(request)
    try:
        return dict(urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=10))
    except (UnicodeDecodeError, ValueError):
        raise Refusal(400, "the form cannot be read") from None


def _same_origin(request: web.Request) -> None:
    """Refuse a form posted from another site (the browser names the page it came from)."""
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise Refusal(403, "the form was posted from another site")
    if site is not None and site not in ("same-origin", "none"):
        raise Refusal(403, "the form was posted from another site")
