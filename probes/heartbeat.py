"""``heartbeat``: a passive check. Hosts or agents POST heartbeats; silence is a failure.

An agent posts to the daemon's HTTP listener (``daemon.metrics_listen``)::

    POST /api/v1/heartbeat/{host}
    Authorization: Bearer TOKEN
    {"status": "ok", "message": "backup finished"}      (optional body)

The token is the ``token`` secret of one of the host's enabled heartbeat checks, compared in
constant time. Answers: 204 recorded; 401 missing or wrong token (``WWW-Authenticate: Bearer``),
and the same 401 for a host that is unknown or has no heartbeat check, so that clients without a
token cannot tell which hosts exist; 400 a body that is not a JSON object with only ``status``
(``ok``/``warning``/``critical``/``unknown`` or 0-3) and ``message``. Error answers are JSON:
``{"error": "why"}`` (see :mod:`monitord.edge.listener` for the limits every route shares). Heartbeats are per host: every heartbeat check of the host sees
the same heartbeats, each judging them with its own ``expect_every`` and ``missed``.

A check that takes one job's results rather than a host's liveness (a ``backup`` check with
``transport: heartbeat``) has a route of its own, ``POST /api/v1/heartbeat/{host}/{check}``,
authenticated with that check's token (a check that takes no posted results is answered like a
wrong token) and kept apart from the host's heartbeats (as ``host/check``), so an agent's
liveness heartbeats never pass for a backup job's result.

The probe is OK while the last heartbeat is younger than ``expect_every * missed``, else
CRITICAL with reason timeout. A fresh heartbeat that reports a problem gives that status, as
a plugin's exit code would (:data:`probes.plugin.VERDICTS`).

The receive time (the daemon's clock, not the agent's) of each host's last heartbeat is kept
in the state store, so a restart keeps it and summaries say how long a host has really been
silent. Silence is counted from the later of the last heartbeat and the moment this daemon
began judging the host (its first probe run): hosts cannot report while the daemon is down or
before a check exists, so a restart or a newly added check gives every host the full
``expect_every * missed`` again, rather than alarming on the daemon's own downtime. That first
run comes up to one check interval after start-up, which can lengthen this first grace a little.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Literal, Mapping, Protocol

from aiohttp import web
from pydantic import Field

from monitord.shared.clock import Clock
from monitord.shared.fields import Duration, SecretRef, format_duration
from monitord.shared.http import Refusal, bearer_token, loads, read_body, read_token, token_matches, unauthorised
from monitord.shared.results import Heartbeat, Outcome, Reason, Status
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind, Runtime
from probes.plugin import VERDICTS

log = logging.getLogger(__name__)

ROUTE = "/api/v1/heartbeat/{host}"
CHECK_ROUTE = "/api/v1/heartbeat/{host}/{check}"
MAX_BODY = 4096
MAX_MESSAGE = 200
_RESOURCE = "heartbeat.receiver"


class HeartbeatParams(CheckParams):
    """Expect a heartbeat from the host every ``expect_every``; ``missed`` in a row is a failure."""

    kind: Literal["heartbeat"] = "heartbeat"
    token: SecretRef = Field(description="the bearer token the host's agent sends")
    expect_every: Duration = Field(description="how often the host posts a heartbeat")
    missed: int = Field(default=3, ge=1, le=1000, description="heartbeats missed in a row that make a failure")

    def heartbeat_token(self) -> SecretRef | None:
        """The token heartbeats are posted with."""
        return self.token

    @property
    def limit(self) -> float:
        """The longest silence that is still OK."""
        return self.expect_every * self.missed


def _ago(seconds: float) -> str:
    return format_duration(round(seconds)) if seconds >= 1 else "under 1s"


def parse_body(raw: bytes, now: float) -> Heartbeat:
    """The heartbeat a request body describes (an empty body is a plain OK heartbeat).

    Raises :class:`ValueError` saying what is wrong with the body.
    """
    if not raw.strip():
        return Heartbeat(now)
    try:
        data = loads(raw)
    except ValueError as exc:  # also bad UTF-8
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError('body must be a JSON object like {"status": "ok", "message": "..."}')
    unknown = sorted(set(data) - {"status", "message"})
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}: only status and message are known")
    status = data.get("status", "ok")
    if isinstance(status, str) and status.upper() in Status.__members__:
        status = Status[status.upper()]
    elif isinstance(status, int) and not isinstance(status, bool) and 0 <= status <= 3:
        status = Status(status)
    else:
        raise ValueError("status must be one of ok, warning, critical, unknown (or 0-3)")
    message = data.get("message", "")
    if not isinstance(message, str):
        raise ValueError("message must be a string")
    return Heartbeat(now, status, " ".join(message.split())[:MAX_MESSAGE])


class HeartbeatRepository(Protocol):
    """The part of the state store that keeps heartbeats (its check repository)."""

    async def heartbeats(self) -> Mapping[str, Heartbeat]: ...

    async def put_heartbeat(self, host: str, beat: Heartbeat) -> None: ...


class HeartbeatStore(Protocol):
    """Where the receiver keeps each host's last heartbeat: the daemon's state store."""

    fault: str | None
    """Why the store cannot be written now (it has said so once), or None."""

    checks: HeartbeatRepository


class Receiver:
    """Takes heartbeats over HTTP, remembers each host's last one, and judges them for the probes."""

    def __init__(self, store: HeartbeatStore, clock: Clock, config: Callable[[], Any],
                 beats: Mapping[str, Heartbeat]):
        """``config()`` is the running config (its ``hosts`` and their ``checks``); ``beats`` the
        stored heartbeats (:meth:`open` reads them)."""
        self.store = store
        self.clock = clock
        self._config = config
        self.started = clock.time()
        self._beats: dict[str, Heartbeat] = dict(beats)
        self._judged_since: dict[str, float] = {}

    def checks(self, host: str, check: str | None = None) -> list[CheckParams]:
        """The host's enabled heartbeat checks in the running config; with ``check``, that check
        if it takes posted results of its own (e.g. a passive backup check)."""
        host_config = self._config().hosts.get(host)
        if host_config is None:
            return []
        if check is not None:
            params = host_config.checks.get(check)
            return [params] if params is not None and params.enabled and params.heartbeat_token() else []
        return [p for p in host_config.checks.values() if isinstance(p, HeartbeatParams) and p.enabled]

    def last(self, host: str) -> Heartbeat | None:
        """The host's last heartbeat, if it ever posted one."""
        return self._beats.get(host)

    @classmethod
    async def open(cls, store: HeartbeatStore, clock: Clock, config: Callable[[], Any]) -> "Receiver":
        """A receiver that starts from the heartbeats kept in ``store``."""
        return cls(store, clock, config, await store.checks.heartbeats())

    async def record(self, host: str, beat: Heartbeat) -> None:
        """Remember ``beat`` as the host's last heartbeat (in memory even if the store fails)."""
        self._beats[host] = beat
        try:
            await self.store.checks.put_heartbeat(host, beat)
        except Exception:  # noqa: BLE001 - a broken store must not refuse heartbeats
            if self.store.fault is None:  # else it reported its fault once; the beat is judged from memory
                log.exception("%s: could not store the heartbeat", host)

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /api/v1/heartbeat/{host}[/{check}]``: authenticate, parse and record a heartbeat."""
        host, check = request.match_info["host"], request.match_info.get("check")
        key = f"{host}/{check}" if check else host
        checks = self.checks(host, check)
        tokens = [read_token(p.heartbeat_token(), f"{key}: heartbeat token") for p in checks]
        if not token_matches(bearer_token(request), tokens):
            if checks:
                log.warning("%s: heartbeat from %s refused: missing or wrong token", key, request.remote)
            raise unauthorised()
        raw = await read_body(request)
        if len(raw) > MAX_BODY:
            raise Refusal(400, f"body larger than {MAX_BODY} bytes")
        try:
            beat = parse_body(raw, self.clock.time())
        except ValueError as exc:
            raise Refusal(400, str(exc)) from None
        await self.record(key, beat)
        log.debug("%s: heartbeat (%s) %s", key, beat.status, beat.message)
        return web.Response(status=204)

    def judging_since(self, key: str) -> float:
        """When this daemon began judging ``key``'s heartbeats (a host, or ``host/check``): now, the first time."""
        return self._judged_since.setdefault(key, self.clock.time())

    def judge(self, host: str, params: HeartbeatParams) -> Outcome:
        """The verdict of one heartbeat check on the host's heartbeats, now."""
        now = self.clock.time()
        since = self.judging_since(host)
        every = format_duration(params.expect_every)
        beat = self._beats.get(host)
        if beat is None:
            if now - since < params.limit:
                return Outcome(Status.OK, f"no heartbeat yet; waiting up to {format_duration(params.limit)} "
                                          f"(expected every {every})")
            return Outcome(Status.CRITICAL, f"no heartbeat since monitoring began {_ago(now - since)} ago "
                                            f"(expected every {every})", Reason.TIMEOUT)
        age = now - beat.at
        values = {"seconds_since_heartbeat": age}
        if now - max(beat.at, since) >= params.limit:
            return Outcome(Status.CRITICAL, f"no heartbeat for {_ago(age)} (expected every {every})",
                           Reason.TIMEOUT, values)
        if beat.at < self.started:
            return Outcome(Status.OK, f"last heartbeat {_ago(age)} ago, before this daemon started; waiting up to "
                                      f"{format_duration(params.limit)}", values=values)
        status, reason = VERDICTS[int(beat.status)]
        said = f": {beat.message}" if beat.message else ""
        reports = "" if status is Status.OK else f" reports {beat.status}"
        return Outcome(status, f"heartbeat {_ago(age)} ago{reports}{said}", reason, values)


async def _constant(value: Receiver | None) -> Receiver | None:
    """A resource factory for a plain value."""
    return value


async def install(ctx: ProbeContext, receiver: Receiver) -> None:
    """Make ``receiver`` the one the heartbeat checks run with ``ctx`` ask."""
    await ctx.resource(_RESOURCE, lambda _ctx: _constant(receiver))


async def receiver_of(ctx: ProbeContext) -> Receiver | None:
    """The receiver installed in ``ctx``; None outside the running daemon."""
    return await ctx.resource(_RESOURCE, lambda _ctx: _constant(None))


async def setup(ctx: ProbeContext, runtime: Runtime) -> None:
    """At the daemon's start: receive heartbeats on the listener's routes, for the checks to judge."""
    if runtime.add_route is None:
        return  # a reload (the receiver reads the running config) or a one-off run (nothing is received)
    receiver = await Receiver.open(runtime.store, runtime.clock, runtime.running)
    runtime.add_route(ROUTE, receiver.handle)
    runtime.add_route(CHECK_ROUTE, receiver.handle)
    await install(ctx, receiver)


async def run(ctx: ProbeContext, call: ProbeCall, params: HeartbeatParams) -> Outcome:
    """Judge the host's heartbeats; only a daemon that receives them can."""
    receiver = await receiver_of(ctx)
    if receiver is None:
        return Outcome(Status.UNKNOWN, "heartbeats are received only by the running daemon", Reason.ERROR)
    return receiver.judge(call.host, params)


KIND = ProbeKind(
    "heartbeat", HeartbeatParams, run, default_interval=60.0, bounded=False, setup=setup,
    summary="passive: the host posts heartbeats to the daemon; none for `missed` intervals is a failure",
)
