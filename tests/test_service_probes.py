"""Service probes against real servers: OK, refused, timeout, protocol and certificate failures."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import aiohttp
import pytest
from pydantic import ValidationError

from monitord.shared.results import Reason, Result, Status
from monitord.run.runner import run_probe
from probes import ftp, http, imap, pop, smtp, ssh, tcp
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind

from tests.peers import CERT_DAYS, HTTP_BODY, Peer  # noqa: E402


SHORT_TIMEOUT = 0.5


async def probe(kind: ProbeKind, params: CheckParams, timeout: float = 5.0) -> Result:
    """Run ``kind`` against 127.0.0.1 through the runner, as the scheduler would."""
    ctx = ProbeContext()
    try:
        return await run_probe(kind, ctx, ProbeCall(host="h", address="127.0.0.1", timeout=timeout), params, now=time.time())
    finally:
        await ctx.aclose()


# kind name -> (probe kind, peer fixture, params for a port, what the OK summary contains)
SERVICES: dict[str, tuple[ProbeKind, str, Callable[[int], CheckParams], str]] = {
    "http": (http.HTTP, "http_peer", lambda port: http.HttpParams(port=port), "HTTP 200"),
    "https": (http.HTTPS, "https_peer", lambda port: http.HttpsParams(port=port, tls_verify=False), "HTTP 200"),
    "ftp": (ftp.KIND, "ftp_peer", lambda port: ftp.FtpParams(port=port), "monitord test FTP"),
    "smtp": (smtp.KIND, "smtp_peer", lambda port: smtp.SmtpParams(port=port, helo="probe.test"), "220"),
    "pop": (pop.KIND, "pop_peer", lambda port: pop.PopParams(port=port), "+OK"),
    "imap": (imap.KIND, "imap_peer", lambda port: imap.ImapParams(port=port), "* OK"),
    "ssh": (ssh.KIND, "ssh_peer", lambda port: ssh.SshParams(port=port), "SSH-2.0-OpenSSH"),
    # tcp waits for a line here so that the silent listener times it out instead of passing
    "tcp": (tcp.KIND, "ssh_peer", lambda port: tcp.TcpParams(port=port, expect="^SSH-"), "open"),
}

integration = pytest.mark.integration
each_service = pytest.mark.parametrize("name", list(SERVICES))


def peer_for(request: pytest.FixtureRequest, name: str) -> Peer:
    """Start the real server the ``name`` probe talks to."""
    return request.getfixturevalue(SERVICES[name][1])


def params_for(name: str, port: int) -> CheckParams:
    """The ``name`` probe's params aimed at ``port``."""
    return SERVICES[name][2](port)


def assert_no_leftover_tasks() -> None:
    """Only the test's own task is left: the probe cleaned up after itself."""
    assert asyncio.all_tasks() == {asyncio.current_task()}


@integration
@each_service
async def test_ok_against_real_server(request: pytest.FixtureRequest, name: str) -> None:
    """Each probe passes against its real server and reports its timing."""
    kind, _, _, summary_part = SERVICES[name]
    peer = peer_for(request, name)
    result = await probe(kind, params_for(name, peer.port))
    assert (result.status, result.reason) == (Status.OK, Reason.NONE), result.summary
    assert summary_part in result.summary
    assert 0 <= result.values["response_seconds"] < 5
    assert_no_leftover_tasks()


@integration
@each_service
async def test_stopped_server_is_refused(request: pytest.FixtureRequest, name: str) -> None:
    """A server stopped mid-test gives REFUSED, not a timeout."""
    kind = SERVICES[name][0]
    peer = peer_for(request, name)
    peer.stop()
    result = await probe(kind, params_for(name, peer.port))
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.REFUSED), result.summary


@integration
@each_service
async def test_silent_server_times_out(silent_peer: Peer, name: str) -> None:
    """A port that accepts but never answers gives TIMEOUT, and the probe leaves no tasks behind."""
    kind = SERVICES[name][0]
    result = await probe(kind, params_for(name, silent_peer.port), timeout=SHORT_TIMEOUT)
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.TIMEOUT), result.summary
    assert_no_leftover_tasks()


@integration
async def test_http_values(http_peer: Peer) -> None:
    """The body matches and the status code is reported."""
    result = await probe(http.HTTP, http.HttpParams(port=http_peer.port, body_match=HTTP_BODY))
    assert result.status is Status.OK, result.summary
    assert result.values["status_code"] == 200


@integration
async def test_https_cert_days_left(https_peer: Peer) -> None:
    """cert_days_left is the generated certificate's remaining validity."""
    result = await probe(http.HTTPS, http.HttpsParams(port=https_peer.port, tls_verify=False))
    assert result.status is Status.OK, result.summary
    assert result.values["cert_days_left"] == pytest.approx(CERT_DAYS, abs=0.01)
    assert result.values["status_code"] == 200


@integration
@pytest.mark.parametrize(
    ("changes", "expected_in_summary"),
    [
        ({"path": "/fail"}, "503"),
        ({"path": "/moved"}, "301"),
        ({"body_match": "no such text"}, "body does not match"),
        ({"path": "/", "expect_status": [204]}, "expected 204"),
    ],
    ids=["error-status", "redirect-not-followed", "body-mismatch", "unexpected-200"],
)
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_http_protocol_failures(
    request: pytest.FixtureRequest, scheme: str, changes: dict, expected_in_summary: str
) -> None:
    """A wrong status or body is a PROTOCOL failure naming what was seen."""
    peer = peer_for(request, scheme)
    params = params_for(scheme, peer.port).model_copy(update=changes)
    result = await probe(SERVICES[scheme][0], params)
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.PROTOCOL), result.summary
    assert expected_in_summary in result.summary
    assert "\n" not in result.summary
    assert result.values["status_code"] in (200, 301, 503)  # what was seen is kept as a value


@integration
async def test_http_follows_redirect_when_asked(http_peer: Peer) -> None:
    """follow_redirects checks where a redirect leads."""
    params = http.HttpParams(port=http_peer.port, path="/moved", follow_redirects=True, body_match=HTTP_BODY)
    result = await probe(http.HTTP, params)
    assert result.status is Status.OK, result.summary


@integration
async def test_http_head(http_peer: Peer) -> None:
    """HEAD works (no body is read)."""
    result = await probe(http.HTTP, http.HttpParams(port=http_peer.port, method="HEAD"))
    assert result.status is Status.OK, result.summary


@integration
@pytest.mark.parametrize(
    ("days", "status"), [(3, Status.CRITICAL), (14, Status.WARNING)], ids=["critical", "warning"]
)
async def test_https_expiring_cert(make_https_peer: Callable[[float], Peer], days: float, status: Status) -> None:
    """A certificate close to expiry is graded by the warning and critical days."""
    peer = make_https_peer(days)
    result = await probe(http.HTTPS, http.HttpsParams(port=peer.port, tls_verify=False))
    assert (result.status, result.reason) == (status, Reason.THRESHOLD), result.summary
    assert result.values["cert_days_left"] == pytest.approx(days, abs=0.01)
    assert "certificate expires in" in result.summary


@integration
async def test_https_expired_cert(make_https_peer: Callable[[float], Peer]) -> None:
    """An expired certificate (not verified) is CRITICAL/THRESHOLD."""
    peer = make_https_peer(-0.5)
    result = await probe(http.HTTPS, http.HttpsParams(port=peer.port, tls_verify=False))
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.THRESHOLD), result.summary
    assert "expired" in result.summary


@integration
async def test_one_session_per_daemon_and_each_concurrent_run_reads_its_own_certificate(
    make_https_peer: Callable[[float], Peer], http_peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """http and https runs of one ProbeContext share one session (none is made per run) and the
    process's TLS contexts; https runs at the same time through them each grade the certificate
    of their own server."""
    made = []
    opened = aiohttp.ClientSession.__init__
    monkeypatch.setattr(aiohttp.ClientSession, "__init__", lambda self, *a, **k: made.append(self) or opened(self, *a, **k))
    peers = {days: make_https_peer(days) for days in (3, 14, 400)}
    ctx = ProbeContext()
    try:
        async def run(kind: ProbeKind, params: CheckParams) -> Result:
            return await run_probe(kind, ctx, ProbeCall(host="h", address="127.0.0.1", timeout=5), params, time.time())

        for _ in range(2):
            results = await asyncio.gather(
                run(http.HTTP, http.HttpParams(port=http_peer.port)),
                *(run(http.HTTPS, http.HttpsParams(port=peer.port, tls_verify=False)) for peer in peers.values()))
            assert results[0].status is Status.OK, results[0].summary
            assert [r.values["cert_days_left"] for r in results[1:]] == pytest.approx(list(peers), abs=0.01)
        assert len(made) == 1 and made[0] is await http.session(ctx)
        assert http.tls_context(False) is http.tls_context(False) and http.tls_context(True) is not http.tls_context(False)
    finally:
        await ctx.aclose()
    assert made[0].closed


@integration
async def test_https_verify_rejects_self_signed(https_peer: Peer) -> None:
    """With tls_verify, a self-signed certificate is a PROTOCOL failure."""
    result = await probe(http.HTTPS, http.HttpsParams(port=https_peer.port, tls_verify=True))
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.PROTOCOL), result.summary
    assert "certificate" in result.summary.lower()


@integration
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_http_host_header(request: pytest.FixtureRequest, scheme: str) -> None:
    """A Host header (and TLS server name) can be set."""
    peer = peer_for(request, scheme)
    params = params_for(scheme, peer.port).model_copy(update={"host_header": "localhost"})
    result = await probe(SERVICES[scheme][0], params)
    assert result.status is Status.OK, result.summary


@integration
@pytest.mark.parametrize(
    ("name", "server"),
    [
        ("pop", "ftp"),
        ("imap", "pop"),
        ("ssh", "smtp"),
        ("ftp", "imap"),
        ("smtp", "pop"),
        ("tcp", "ftp"),
        ("http", "ssh"),
        ("https", "http"),
        ("http", "https"),
        ("ftp", "ssh"),  # "SSH-" must not pass for a continued "220-" reply
        ("smtp", "ssh"),
    ],
)
async def test_wrong_service_is_protocol(request: pytest.FixtureRequest, name: str, server: str) -> None:
    """A probe pointed at another kind of server fails with PROTOCOL, promptly."""
    peer = peer_for(request, server)
    result = await probe(SERVICES[name][0], params_for(name, peer.port), timeout=2.0)
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.PROTOCOL), result.summary


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (http.HttpParams, {"method": "HEAD", "body_match": "x"}),
        (http.HttpParams, {"body_match": "("}),
        (http.HttpParams, {"path": "health"}),
        (http.HttpParams, {"expect_status": [99]}),
        (http.HttpParams, {"expect_status": []}),
        (http.HttpParams, {"tls_verify": False}),
        (http.HttpsParams, {"cert_warning_days": 5, "cert_critical_days": 7}),
    ],
)
def test_http_params_rejected(model: type[CheckParams], fields: dict) -> None:
    """Inconsistent http/https params are rejected when the config loads."""
    with pytest.raises(ValidationError):
        model(**fields)


def test_http_params_defaults() -> None:
    """The documented defaults."""
    plain, tls = http.HttpParams(), http.HttpsParams()
    assert (plain.port, plain.path, plain.method, plain.expect_status) == (80, "/", "GET", [200])
    assert (tls.port, tls.tls_verify, tls.cert_warning_days, tls.cert_critical_days) == (443, True, 21, 7)
