"""The daemon's HTTP listener (metrics, heartbeats, the API): one aiohttp server, hardened once.

Every route gets the same protection, so routes added later inherit it:

- At most ``max_connections`` connections at once (by default a quarter of the process's
  file-descriptor limit), so a flood of connections cannot starve probes and pagers of
  descriptors. When full, the connection idle the longest is closed to make room; a new
  connection is refused only while every connection is busy with a request.
- A connection that sends no complete request within ``idle_timeout`` (after connecting or after
  its last answer) is closed: slow or missing headers, idle keep-alives and slow readers alike.
  A request body must arrive within ``body_timeout`` (408).
- Bodies larger than ``max_body`` are refused on every route (413), before they are read.
- Every error answer is JSON, ``{"error": "why"}``, with a 4xx status, malformed HTTP included;
  only a bug in the daemon answers 500 (logged with its traceback), and a state store that
  cannot be written 503 (the store reports its fault once). Handlers raise
  :class:`Refusal`; :func:`read_body` and :func:`path_id` raise it for them, :func:`unauthorised`
  is the one answer to a missing or wrong token (:func:`bearer_token`, :func:`token_matches`).
- The ``Server`` header names monitord without any version.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, PayloadEncodingError
from aiohttp.web_protocol import RequestHandler

from monitord.shared.http import LIMITS, Limits, Refusal, reason_of
from monitord.edge.metrics import Metrics
from monitord.records.store import StoreFault

log = logging.getLogger(__name__)

SERVER = "monitord"
LINGER = 1.0  # how long an unread request body is drained after the answer, before closing


def error(status: int, why: str, **headers: str) -> web.Response:
    """An error answer: JSON ``{"error": why}``."""
    return web.json_response({"error": why}, status=status, headers={"Server": SERVER, **headers})


class _Connection(RequestHandler):
    """aiohttp's handler of one connection, which knows whether it is busy and closes itself when idle."""

    def __init__(self, manager: "_Server", **kwargs):
        super().__init__(manager, **kwargs)
        self.server = manager
        self.busy = False
        self.closing = False
        self.idle_since = kwargs["loop"].time()
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._watch(self.idle_since + self.server.limits.idle_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        super().connection_lost(exc)

    def _watch(self, when: float) -> None:
        self._idle_timer = asyncio.get_running_loop().call_at(when, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if self.transport is None or self.closing:
            return
        timeout = self.server.limits.idle_timeout
        now = asyncio.get_running_loop().time()
        if self.busy:
            self._watch(now + timeout)
        elif now < self.idle_since + timeout:
            self._watch(self.idle_since + timeout)
        else:
            self.server.shed(self, "idle")

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Malformed HTTP, answered like every other error: JSON, and a debug line without a traceback."""
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already under way")
        if status >= 500:
            log.error("HTTP %d for %s", status, request.remote, exc_info=exc)
            why = "internal error (see the daemon's log)"
        else:
            why = reason_of(exc, message)
            if isinstance(exc, PayloadEncodingError):  # found while parsing, before any handler ran
                why = f"the body cannot be read: {why}"
            log.debug("bad request from %s: %s", request.remote, why)
        response = error(status, why)
        response.force_close()
        return response

    def log_exception(self, *args, **kwargs) -> None:
        """A body the client broke (bad encoding, broken chunks) is its fault: one debug line, no traceback."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, (HttpProcessingError, web.RequestPayloadError)):
            log.debug("bad request body: %s", reason_of(exc))
            return
        super().log_exception(*args, **kwargs)


class _Server(web.Server):
    """aiohttp's low-level server, making :class:`_Connection` handlers and keeping their number capped."""

    def __init__(self, plain: web.Server, limits: Limits, metrics: Metrics):
        super().__init__(plain.request_handler, request_factory=plain.request_factory,
                         handler_cancellation=plain.handler_cancellation, loop=asyncio.get_running_loop(),
                         **plain._kwargs)  # noqa: SLF001 - the handler arguments AppRunner chose
        self.limits, self.metrics = limits, metrics
        metrics.http_connections.set_function(lambda: len(self._connections))

    def __call__(self) -> _Connection:
        return _Connection(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: _Connection, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        live = [c for c in self._connections if not c.closing]
        if len(live) <= self.limits.max_connections:
            return
        idle = [c for c in live if not c.busy and c is not handler]
        if idle:
            self.shed(min(idle, key=lambda c: c.idle_since), "evicted")
        else:
            self.shed(handler, "refused")
        log.warning("HTTP listener full (%d connections): closing the connection idle the longest, "
                    "or refusing a new one while all are busy", self.limits.max_connections)

    def shed(self, connection: _Connection, reason: str) -> None:
        """Close ``connection`` now, to protect the listener (``reason``: idle, evicted or refused)."""
        connection.closing = True
        self.metrics.http_closed.labels(reason).inc()
        transport = self._connections.get(connection)
        if transport is not None:
            transport.abort()


class _Runner(web.AppRunner):
    """An AppRunner whose server is :class:`_Server`."""

    def __init__(self, app: web.Application, limits: Limits, metrics: Metrics):
        super().__init__(app, access_log=None, handle_signals=False, lingering_time=LINGER)
        self.limits, self.metrics = limits, metrics

    async def _make_server(self) -> web.Server:
        return _Server(await super()._make_server(), self.limits, self.metrics)


class Listener:
    """The hardened aiohttp application and its TCP listener; add routes to :attr:`app`, then start."""

    def __init__(self, metrics: Metrics, limits: Limits | None = None):
        self.metrics = metrics
        self.limits = limits or Limits()
        self.app = web.Application(client_max_size=self.limits.max_body, middlewares=[self._guard])
        self.app[LIMITS] = self.limits
        self.app.on_response_prepare.append(_finish)
        self._runner: _Runner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (port 0: any free port, then in :attr:`port`)."""
        self._runner = _Runner(self.app, self.limits, self.metrics)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True, backlog=self.limits.backlog)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise OSError(exc.errno, f"cannot listen on {host}:{port} for metrics and the API: {exc.strerror}") \
                from None
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the listener and every connection."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        connection = request.protocol
        tracked = isinstance(connection, _Connection)
        if tracked:
            connection.busy = True
        try:
            if (request.content_length or 0) > self.limits.max_body:
                raise Refusal(413, f"the body is larger than {self.limits.max_body} bytes")
            return await handler(request)
        except web.HTTPException:
            raise
        except StoreFault:  # the store reported it once; the client may try again
            return error(503, "the state store cannot be written now; try again later")
        except Exception:
            log.exception("%s %r failed", request.method, request.path)
            return error(500, "internal error (see the daemon's log)")
        finally:
            if tracked:
                connection.busy = False
                connection.idle_since = asyncio.get_running_loop().time()


async def _finish(request: web.Request, response: web.StreamResponse) -> None:
    """Last touches on every answer: no versions in ``Server``; aiohttp's own errors (no route,
    wrong method, body too large, bad ``Expect``...; plain text) told in JSON like ours. The
    status page's own refusals stay HTML."""
    response.headers["Server"] = SERVER
    if response.status >= 400 and isinstance(response, web.Response) and response.content_type == "text/plain":
        text = response.text or ""
        prefix = f"{response.status}: "
        why = text[len(prefix):] if text.startswith(prefix) else text or response.reason
        response.content_type = "application/json"
        response.text = json.dumps({"error": " ".join(why.split())})
        response.headers["Content-Length"] = str(len(response.body))  # the head is ready but not yet sent
