"""The daemon's HTTP listener, its real aiohttp server on a loopback port with the daemon's routes:
JSON 4xx for every bad request, ids of plain digits, unreadable tokens, no host enumeration, no
versions, and the connection cap, idle and body timeouts (with short limits, never timed)."""

from __future__ import annotations

import asyncio
import gzip
import logging
from pathlib import Path

import pytest

from monitord.config import load_config
from monitord.edge.daemon import Daemon
from monitord.edge.listener import Listener
from monitord.shared.http import Limits
from tests.fakeclock import FakeClock
from tests.http_raw import Answer, closed_by_peer, exchange, read_answer

TOKEN = "hb-t0ken"
API_TOKEN = "api-t0ken"


def write_config(tmp: Path, listen: str = "127.0.0.1:0", web1_checks: str = "") -> Path:
    """web1 and db1 with heartbeat checks (tokens in files), plain with none, and the API on."""
    for name, token in (("web1", TOKEN), ("db1", "db1-token"), ("api", API_TOKEN)):
        (tmp / f"{name}.token").write_text(token + "\n")
    path = tmp / "monitord.yaml"
    path.write_text(f"""
daemon:
  state_path: {tmp / "state.db"}
  metrics_listen: "{listen}"
  api_token: {{file: {tmp / "api.token"}}}
defaults: {{retry_interval: 300ms, timeout: 300ms}}
hosts:
  web1:
    address: 127.0.0.1
    checks:
      heartbeat: {{token: {{file: {tmp / "web1.token"}}}, expect_every: 1h}}
{web1_checks}
  db1:
    address: 127.0.0.1
    checks:
      heartbeat: {{token: {{file: {tmp / "db1.token"}}}, expect_every: 1h}}
  plain:
    address: 127.0.0.1
    checks:
      tcp: {{port: 9, interval: 1h}}
""")
    return path


@pytest.fixture
async def serve(tmp_path):
    """Start the daemon's listener and routes (not its scheduler) with the given limits."""
    daemons: list[Daemon] = []

    async def start(**limits) -> Daemon:
        path = write_config(tmp_path)
        daemon = Daemon(path, load_config(path), clock=FakeClock())
        daemon.listener = Listener(daemon.metrics, Limits(**{"max_connections": 64, **limits}))
        await daemon._start_http()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        await daemon.listener.stop()
        await daemon.ctx.aclose()
        await daemon.store.close()


def request(method: str, path: str, body: bytes = b"", token: str | None = None, **headers: str) -> bytes:
    """A raw HTTP/1.1 request closing the connection after its answer."""
    lines = [f"{method} {path} HTTP/1.1", "Host: monitord", "Connection: close", f"Content-Length: {len(body)}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def heartbeat(body: bytes = b"", host: str = "web1", token: str | None = TOKEN, **headers: str) -> bytes:
    return request("POST", f"/api/v1/heartbeat/{host}", body, token, **headers)


def ack(incident: str = "1", body: bytes = b"", token: str | None = API_TOKEN, **headers: str) -> bytes:
    return request("POST", f"/api/v1/incidents/{incident}/ack", body, token, **headers)


def assert_refused(answer: Answer, status: int, why: str) -> None:
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["content-type"].startswith("application/json")
    assert why in answer.json()["error"], answer.json()


def tracebacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info]


NESTED = b"[" * 3000
DEEP_OBJECT = b'{"a":[' * 600  # 1,200 levels in 3,600 bytes


@pytest.mark.parametrize("name,data,status,why", [
    ("nested array heartbeat", heartbeat(NESTED), 400, "body is not JSON: nested too deeply"),
    ("nested object heartbeat", heartbeat(DEEP_OBJECT), 400, "body is not JSON: nested too deeply"),
    ("nested array ack", ack(body=NESTED), 400, "the body must be JSON"),
    ("nested object ack", ack(body=DEEP_OBJECT), 400, "the body must be JSON"),
    ("gzip on a plain body", heartbeat(b'{"status": "ok"}', Content_Encoding="gzip"), 400,
     "the body cannot be read: Can not decode content-encoding: gzip"),
    ("deflate on a plain body", ack(body=b'{"by": "x"}', Content_Encoding="deflate"), 400, "the body cannot be read"),
    ("a gzip bomb", heartbeat(gzip.compress(b" " * 5_000_000), Content_Encoding="gzip"), 413,
     "Maximum request body size 65536 exceeded"),
    ("a large body on /metrics", request("GET", "/metrics", b"x" * 70_000), 413, "the body is larger than 65536 bytes"),
    ("a large declared body", request("GET", "/-/healthy").replace(b"Content-Length: 0", b"Content-Length: 99999999"),
     413, "the body is larger than 65536 bytes"),
    ("a bad request line", b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400, "Bad status line"),
    ("a NUL in the method", b"G\x00T /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Invalid method"),
    ("no Host", b"GET /metrics HTTP/1.1\r\n\r\n", 400, "Missing 'Host' header"),
    ("a header without a colon", b"GET /metrics HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n", 400, "Invalid header"),
    ("a bad Content-Length", b"POST /api/v1/heartbeat/web1 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
     400, "Content-Length"),
    ("an unknown route", request("GET", "/nope"), 404, "Not Found"),
    ("a wrong method", request("GET", "/api/v1/heartbeat/web1"), 405, "Method Not Allowed"),
    ("non-UTF-8 token bytes", heartbeat(token="t\xff\xfe"), 401, "missing or wrong bearer token"),
])
async def test_every_bad_request_gets_a_json_4xx_without_a_traceback(serve, caplog, name, data, status, why):
    caplog.set_level(logging.DEBUG)
    daemon = await serve()
    answer = await exchange(daemon.listener.port, data)
    assert_refused(answer, status, why)
    assert answer.headers["server"] == "monitord"
    assert tracebacks(caplog) == []
    assert not await daemon.store.checks.heartbeats()  # nothing refused was recorded


async def test_good_requests_still_work_and_name_no_versions(serve):
    daemon = await serve()
    port = daemon.listener.port
    incident = await daemon.store.incidents.open("web1", "ping", "ping", 1.0, 1.0, "down")
    answers = [await exchange(port, heartbeat(b'{"status": "ok"}')),
               await exchange(port, heartbeat(gzip.compress(b'{"status": "warning"}'), Content_Encoding="gzip")),
               await exchange(port, ack(str(incident), b'{"by": "aoki"}')),
               await exchange(port, request("GET", "/metrics")),
               await exchange(port, request("GET", "/nope"))]
    assert [a.status for a in answers] == [204, 204, 200, 200, 404]
    assert answers[2].json() == {"incident": incident, "acknowledged": 0}
    assert b"monitord_http_connections " in answers[3].body
    for answer in answers:
        assert answer.headers["server"] == "monitord"
        assert not any(word in value for value in answer.headers.values() for word in ("Python", "aiohttp"))
    assert dict(await daemon.store.checks.heartbeats())["web1"].status == 1  # the gzipped warning was decoded


@pytest.mark.parametrize("incident", [
    "%D9%A1",  # Arabic-Indic one
    "%EF%BC%91",  # fullwidth one
    "%C2%B9",  # superscript one
    "+1", "-1", "%201", "1%20", "1_0", "1.0", "0x1", "1e3", "", "9" * 19,
])
async def test_incident_ids_are_plain_ascii_digits(serve, incident):
    daemon = await serve()
    await daemon.store.incidents.open("web1", "ping", "ping", 1.0, 1.0, "down")
    answer = await exchange(daemon.listener.port, ack(incident))
    if incident == "":
        assert_refused(answer, 404, "Not Found")  # no route matches an empty id
    else:
        assert_refused(answer, 400, "the incident must be a number (digits 0-9, at most 18)")
    assert (await exchange(daemon.listener.port, ack("1"))).status == 200
    assert_refused(await exchange(daemon.listener.port, ack("999999999999999999")), 404, "no incident #")


async def test_unreadable_token_files_refuse_without_a_500_or_the_secret(serve, tmp_path, caplog):
    daemon = await serve()
    port = daemon.listener.port
    (tmp_path / "api.token").unlink()
    (tmp_path / "web1.token").write_bytes(b"\xff\xfe" + TOKEN.encode())  # not UTF-8
    assert_refused(await exchange(port, ack()), 403, "the API is off: its token cannot be read")
    assert_refused(await exchange(port, heartbeat()), 401, "missing or wrong bearer token")
    # another host's token is still read and accepted
    assert (await exchange(port, heartbeat(host="db1", token="db1-token"))).status == 204
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("the API token (daemon.api_token) unreadable: cannot read secret file" in e for e in errors), errors
    assert any("web1: heartbeat token unreadable" in e for e in errors), errors
    assert not any(TOKEN in e for e in errors)
    assert tracebacks(caplog) == []


async def test_clients_without_a_token_cannot_tell_which_hosts_exist(serve):
    daemon = await serve()
    port = daemon.listener.port
    answers = [await exchange(port, heartbeat(host=host, token=token))
               for host, token in [("nohost", None), ("nohost", "guess"), ("nohost", TOKEN), ("plain", TOKEN),
                                   ("web1", None), ("web1", "guess"), ("web1", "db1-token"), ("web1%0Aforged", TOKEN)]]
    for answer in answers:
        answer.headers.pop("date")
    assert all(a == answers[0] for a in answers), answers
    assert_refused(answers[0], 401, "missing or wrong bearer token")
    assert answers[0].headers["www-authenticate"] == 'Bearer realm="monitord"'
    assert not await daemon.store.checks.heartbeats()


async def test_silent_and_slow_connections_are_closed_when_idle(serve):
    daemon = await serve(idle_timeout=0.3)
    port = daemon.listener.port
    silent = await asyncio.open_connection("127.0.0.1", port)
    slow_head = await asyncio.open_connection("127.0.0.1", port)
    slow_head[1].write(b"POST /api/v1/heartbeat/web1 HTTP/1.1\r\nHost: x\r\n")
    keep_alive = await asyncio.open_connection("127.0.0.1", port)
    keep_alive[1].write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_answer(keep_alive[0])).status == 200  # answered, then idle
    for reader, writer in (silent, slow_head, keep_alive):
        assert await closed_by_peer(reader)
        writer.close()
    assert daemon.metrics.http_closed.labels("idle")._value.get() == 3


async def test_a_slow_body_is_refused_with_408(serve):
    daemon = await serve(body_timeout=0.3, idle_timeout=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.listener.port)
    writer.write(heartbeat(b'{"status": "ok"}')[:-5])  # the last bytes never come
    assert_refused(await read_answer(reader), 408, "the body did not arrive within 0.3s")
    writer.close()
    assert not await daemon.store.checks.heartbeats()


async def test_at_the_cap_the_longest_idle_connection_makes_room(serve):
    daemon = await serve(max_connections=4, idle_timeout=60)
    port = daemon.listener.port
    flood = [await asyncio.open_connection("127.0.0.1", port) for _ in range(10)]
    answer = await exchange(port, heartbeat())
    assert answer.status == 204  # a new client is served although 10 idle connections came first
    # the oldest were closed to make room; the newest flood connection is still served
    assert await closed_by_peer(flood[0][0])
    reader, writer = flood[-1]
    writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_answer(reader)).status == 200
    assert daemon.metrics.http_closed.labels("evicted")._value.get() == 7  # 11 connections, 4 kept
    assert len(daemon.listener._runner.server.connections) <= 4
    for _, w in flood:
        w.close()


async def test_at_the_cap_with_every_connection_busy_a_new_one_is_refused(serve):
    daemon = await serve(max_connections=2, idle_timeout=60, body_timeout=60)
    port = daemon.listener.port
    body = b'{"status": "warning", "message": "slow"}'
    busy = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    for _, writer in busy:
        writer.write(heartbeat(body)[:-3])  # the handler is waiting for the body's last bytes
        await writer.drain()
    for _ in range(50):  # let both requests reach their handlers
        if all(c.busy for c in daemon.listener._runner.server.connections):
            break
        await asyncio.sleep(0.05)
    refused_reader, refused_writer = await asyncio.open_connection("127.0.0.1", port)
    assert await closed_by_peer(refused_reader)
    refused_writer.close()
    assert daemon.metrics.http_closed.labels("refused")._value.get() == 1
    for reader, writer in busy:  # the busy ones were not harmed
        writer.write(body[-3:])
        assert (await read_answer(reader)).status == 204
        writer.close()
