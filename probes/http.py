"""``http`` and ``https``: a URL answers with an expected status (and body); https also checks
how long the server's certificate stays valid.

Every run of the daemon goes through one :class:`aiohttp.ClientSession` (a connector, no
cookie jar), and the two TLS client contexts (verifying or not) are made once per process: a
session and the system CA bundle per run cost more CPU than the request. The connector closes
every connection after its response (``force_close``), so a run never reuses a connection made
minutes earlier: each run tests that the server still accepts connections, and sees the
certificate it presents now. Which TLS connections a run made is recorded per run (a context
variable), since the contexts are shared.

Timeouts and connection errors are not caught here: :func:`monitord.run.runner.classify` maps them.
"""

from __future__ import annotations

import functools
import re
import ssl
import time
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Literal

import aiohttp
from cryptography import x509
from pydantic import Field, field_validator, model_validator
from yarl import URL

from monitord.shared.fields import Port
from monitord.shared.results import Outcome, ProbeError, Reason, Status
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind

MAX_BODY = 1024 * 1024
"""At most this many bytes of a body are read for ``body_match``."""

USER_AGENT = "monitord-probe"

_TLS_MADE: ContextVar[list[ssl.SSLObject]] = ContextVar("tls_made")
"""The TLS objects the current run's connections were made with (set by :func:`run_https`)."""


class _HttpCommon(CheckParams):
    """Fields both kinds share.

    ``expect_status`` defaults to ``[200]``: a redirect or any other answer is a failure unless
    listed (or followed with ``follow_redirects``), so a check notices when its URL moved.
    """

    path: str = Field(default="/", description="path and optional query, e.g. /health?full=1")
    method: Literal["GET", "HEAD"] = "GET"
    host_header: str | None = Field(
        default=None, description="Host header (and, for https, the TLS server name); default: the address"
    )
    expect_status: list[int] = Field(default_factory=lambda: [200], min_length=1)
    body_match: str | None = Field(default=None, description="regular expression searched in the body (GET only)")
    follow_redirects: bool = False

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path must start with /")
        return value

    @field_validator("expect_status")
    @classmethod
    def _status_codes(cls, value: list[int]) -> list[int]:
        bad = [code for code in value if not 100 <= code <= 599]
        if bad:
            raise ValueError(f"not HTTP status codes: {bad}")
        return value

    @field_validator("body_match")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _body_needs_get(self) -> "_HttpCommon":
        if self.body_match is not None and self.method == "HEAD":
            raise ValueError("body_match needs method GET (HEAD has no body)")
        return self


class HttpParams(_HttpCommon):
    """A plain HTTP request to ``port``."""

    kind: Literal["http"] = "http"
    port: Port = 80


class HttpsParams(_HttpCommon):
    """An HTTPS request to ``port``; the certificate's remaining days are checked too.

    With ``tls_verify`` false the chain and name are not verified, but expiry still is.
    """

    kind: Literal["https"] = "https"
    port: Port = 443
    tls_verify: bool = True
    cert_warning_days: float = Field(default=21, ge=0)
    cert_critical_days: float = Field(default=7, ge=0)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> "HttpsParams":
        if self.cert_critical_days > self.cert_warning_days:
            raise ValueError("cert_critical_days must not be more than cert_warning_days")
        return self


class _RecordingContext(ssl.SSLContext):
    """An SSL context that hands the TLS objects it creates to the run that made them
    (:data:`_TLS_MADE`), to read the peer certificate.

    aiohttp may release a connection before returning the response (when the whole body came
    with the headers), so the response cannot be relied on to reach the socket; the context
    that made the TLS connection can. The TLS object is made in a callback the connecting task
    scheduled, so it runs in that task's context.
    """

    def __repr__(self) -> str:
        # aiohttp puts the context in its error messages, which become check summaries
        return "verified" if self.verify_mode != ssl.CERT_NONE else "unverified"

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        """Create the TLS object as usual and remember it."""
        obj = super().wrap_bio(*args, **kwargs)
        if (made := _TLS_MADE.get(None)) is not None:
            made.append(obj)
        return obj


@functools.cache
def tls_context(verify: bool) -> _RecordingContext:
    """The client context, made once per process; ``verify`` false checks neither the chain nor the name."""
    context = _RecordingContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def session(ctx: ProbeContext) -> aiohttp.ClientSession:
    """The daemon's one session for http and https runs, closed with ``ctx``."""
    return await ctx.resource("http-session", _open_session)


async def _open_session(ctx: ProbeContext) -> aiohttp.ClientSession:
    # No aiohttp timeout: the runner's deadline covers the whole run.
    return await ctx.enter(aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None), cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=0, force_close=True)))


def _url(scheme: str, call: ProbeCall, params: _HttpCommon) -> URL:
    """The URL for ``call.address`` (IPv6 literals bracketed) with the check's path and query."""
    path, _, query = params.path.partition("?")
    return URL.build(scheme=scheme, host=call.address, port=params.port, path=path, query_string=query)


async def _read_body(response: aiohttp.ClientResponse) -> str:
    """Up to :data:`MAX_BODY` bytes of the body, decoded with its charset (UTF-8 by default)."""
    data = bytearray()
    while len(data) < MAX_BODY:
        chunk = await response.content.read(MAX_BODY - len(data))
        if not chunk:
            break
        data += chunk
    try:
        return data.decode(response.charset or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def cert_days_left(der: bytes, now: float) -> float:
    """Days from ``now`` (epoch seconds) until the DER certificate's notAfter; negative if expired."""
    not_after = x509.load_der_x509_certificate(der).not_valid_after_utc
    return (not_after - datetime.fromtimestamp(now, timezone.utc)).total_seconds() / 86400


async def _request(ctx: ProbeContext, scheme: str, call: ProbeCall, params: _HttpCommon,
                   tls: _RecordingContext | None) -> Outcome:
    """Make the request, check status and body; the OK outcome carries status and timing."""
    headers = {"User-Agent": USER_AGENT}
    extra: dict[str, Any] = {}
    if params.host_header:
        headers["Host"] = params.host_header
        if tls is not None:
            extra["server_hostname"] = params.host_header
    http = await session(ctx)
    start = time.monotonic()
    async with http.request(
        params.method, _url(scheme, call, params), headers=headers,
        allow_redirects=params.follow_redirects, ssl=tls if tls is not None else False, **extra,
    ) as response:
        body = await _read_body(response) if params.body_match is not None else None
        elapsed = time.monotonic() - start
        status = f"HTTP {response.status} {response.reason or ''}".rstrip()
        values = {"status_code": float(response.status), "response_seconds": elapsed}
        if response.status not in params.expect_status:
            expected = ", ".join(map(str, params.expect_status))
            raise ProbeError(
                Reason.PROTOCOL, f"{params.method} {params.path} answered {status}, expected {expected}", values
            )
        if body is not None and not re.search(params.body_match, body):
            raise ProbeError(
                Reason.PROTOCOL, f"{params.method} {params.path}: body does not match /{params.body_match}/", values
            )
    return Outcome(Status.OK, f"{status} for {params.method} {params.path}", values=values)


async def run_http(ctx: ProbeContext, call: ProbeCall, params: HttpParams) -> Outcome:
    """Request the URL over plain HTTP."""
    return await _request(ctx, "http", call, params, None)


async def run_https(ctx: ProbeContext, call: ProbeCall, params: HttpsParams) -> Outcome:
    """Request the URL over HTTPS, then grade the certificate's remaining validity.

    The certificate read is the one of the last TLS connection (after redirects, the final one).
    """
    made: list[ssl.SSLObject] = []
    recording = _TLS_MADE.set(made)
    try:
        outcome = await _request(ctx, "https", call, params, tls_context(params.tls_verify))
        der = next((cert for obj in reversed(made) if (cert := obj.getpeercert(binary_form=True))), None)
    finally:  # the run's task (and its context) may outlive it: let its TLS objects go now
        _TLS_MADE.reset(recording)
        made.clear()
    if der is None:
        raise ProbeError(Reason.PROTOCOL, f"no server certificate seen on port {params.port}")
    days = cert_days_left(der, time.time())
    values = {**outcome.values, "cert_days_left": days}
    if days < 0:
        return Outcome(Status.CRITICAL, f"certificate expired {-days:.1f} days ago", Reason.THRESHOLD, values)
    if days <= params.cert_critical_days:
        return Outcome(Status.CRITICAL, f"certificate expires in {days:.1f} days", Reason.THRESHOLD, values)
    if days <= params.cert_warning_days:
        return Outcome(Status.WARNING, f"certificate expires in {days:.1f} days", Reason.THRESHOLD, values)
    return Outcome(Status.OK, f"{outcome.summary}, certificate valid {days:.0f} more days", values=values)


HTTP = ProbeKind("http", HttpParams, run_http, default_interval=600.0, summary="HTTP URL answers with the expected status")
HTTPS = ProbeKind(
    "https", HttpsParams, run_https, default_interval=600.0,
    summary="HTTPS URL answers with the expected status; certificate not about to expire",
)
