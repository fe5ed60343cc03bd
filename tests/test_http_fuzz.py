"""Hostile HTTP against the daemon as a process: a seeded fuzzer (raw sockets and an HTTP client;
bad methods, paths, headers, encodings, bodies, nesting, sizes, tokens), then a connection flood
past the process's file-descriptor limit. No 5xx, no traceback, and the daemon still answers."""

from __future__ import annotations

import asyncio
import gzip
import random
import signal
import socket
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aiohttp
import pytest
from yarl import URL

from tests.daemon_proc import Daemon, wait_for
from tests.http_raw import exchange
from tests.support import free_port, need_binary
from tests.test_daemon import listener  # noqa: F401 - a fixture: an open port
from tests.test_heartbeat import post
from tests.test_listener import API_TOKEN, TOKEN, write_config

pytestmark = pytest.mark.integration

SEED = 20261126
RAW_CASES = 520
CLIENT_CASES = 130
TIMEOUT = 20.0


@pytest.fixture
def fuzz_daemon(tmp_path):
    """A daemon with heartbeat hosts, a host without one, and the ack API on."""
    port = free_port()
    daemon = Daemon(tmp_path, write_config(tmp_path, f"127.0.0.1:{port}"), port)
    yield daemon
    if daemon.proc:
        daemon.proc.stop(signal.SIGKILL)


# ---------------------------------------------------------------------------------------
# What a hostile client sends

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "FOO",
           "get", "G\x00T", "GET GET", "", "X" * 300, "ПОСТ", "POST\t"]
VERSIONS = ["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.10", "HTTP/x", "", "HTTP/1.1 ", "http/1.1"]
HOSTS = ["web1", "plain", "nohost", "WEB1", "web1%00", "web1%0Aforged: line", "%F0%9F%92%A5", "..", "a" * 5000,
         "web1?x=1", "web1#frag", "%ZZ", "web1%2F..", "%C0%AE", "web1;x", "web1/extra"]
IDS = ["1", "0", "007", "-1", "+1", "%201", "%D9%A1", "%EF%BC%91", "%C2%B9", "1_0", "1.0", "0x1", "9" * 19,
       "9" * 400, "1e3", "abc", "%00", "NaN", "Infinity", "1%0A"]
QUERIES = ["", "", "", "?a=1", "?%%%", "?" + "x" * 10000, "?a=%00&a=%FF", "?" + "&".join(["a=1"] * 2000)]
AUTH = [None, f"Bearer {TOKEN}", f"Bearer {API_TOKEN}", "Bearer wrong", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz",
        f"bearer {TOKEN}", f"Bearer {TOKEN} extra", "Bearer \xff\xfe", "Bearer " + "A" * 9000, f"Bearer  {TOKEN}"]
ENCODINGS = ["gzip", "deflate", "br", "zstd", "identity", "gzip, deflate", "x-gzip", "compress", "GZIP", "gzip, gzip",
             "gzip" * 500, "\x00"]
CONTENT_TYPES = ["application/json", "text/plain", "multipart/form-data; boundary=x",
                 "application/x-www-form-urlencoded", "application/json; charset=utf-16", "\x7f"]
JUNK_HEADERS = ["X-Junk: \x01\x02", "nocolon", "Foo : bar", "X-Fold: a\r\n b", "Х-Имя: значение",
                "X-Long: " + "v" * 9000, "Connection: upgrade\r\nUpgrade: websocket", "Upgrade: h2c",
                "Expect: 100-continue", "Expect: 200-ok", "Transfer-Encoding: xchunked",
                "Transfer-Encoding: chunked, gzip", "Transfer-Encoding: gzip, chunked",
                "Content-Length: -1", "Content-Length: abc", "Content-Length: 0x10", "Content-Length: 1e3",
                "Content-Length: 99999999999999999999", "Host: second", "\x00: nul"]


def nested(rng: random.Random) -> bytes:
    depth = rng.choice([10, 100, 900, 1100, 3000, 20000, 100000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}"), (b'{"status":[', b"]}")])
    return opener * depth + (closer * depth if rng.random() < 0.5 else b"")


def body(rng: random.Random) -> bytes:
    choice = rng.randrange(16)
    if choice == 0:
        return b""
    if choice == 1:
        return rng.choice([b"{}", b'{"status": "ok"}', b'{"by": "fuzz"}', b'{"status": "critical", "message": "x"}'])
    if choice in (2, 3):
        return nested(rng)
    if choice == 4:
        return rng.randbytes(rng.randrange(1, 3000))
    if choice == 5:
        return rng.choice([b"\xff\xfe\xfd", b"\xef\xbb\xbf{}", b"\xfe\xff\x00{\x00}", b"{\"message\": \"\xc3\x28\"}"])
    if choice == 6:
        return rng.choice([b'{"status": NaN}', b'{"status": 1e999}', b'{"status": -0}', b"1" * 5000,
                           b'{"status": "ok", "status": "critical"}', b'{"message": "\\u0000\\ud800"}',
                           b'{"by": null}', b'{"by": ' + b"9" * 5000 + b"}"])
    if choice == 7:
        return b'{"message": "' + b"x" * rng.choice([4000, 70000, 200000]) + b'"}'
    if choice == 8:
        return gzip.compress(rng.choice([b'{"status": "ok"}', nested(rng), b"\0" * 5_000_000]))
    if choice == 9:
        return gzip.compress(b'{"status": "ok"}')[:rng.randrange(1, 20)]  # truncated gzip
    if choice == 10:
        return zlib.compress(b'{"by": "fuzz"}')[::-1]
    return rng.choice([b'{"status": "warning"}', b'[1, 2]', b'"text"', b"null", b'{"unknown": 1}'])


def path(rng: random.Random) -> str:
    template = rng.choice(["/metrics", "/-/healthy", "/api/v1/heartbeat/{host}", "/api/v1/heartbeat/{host}",
                           "/api/v1/incidents/{id}/ack", "/api/v1/incidents/{id}/ack", "/", "*",
                           "http://127.0.0.1/metrics", "/api/v1/heartbeat/", "/api/v1/incidents//ack", "//metrics",
                           "/metrics/../api/v1/heartbeat/web1", "/%2e%2e/%2e%2e/etc/passwd", "/" + "x" * 20000])
    return template.format(host=rng.choice(HOSTS), id=rng.choice(IDS)) + rng.choice(QUERIES)


ROUTES = [("POST", "/api/v1/heartbeat/web1", f"Bearer {TOKEN}"), ("POST", "/api/v1/incidents/1/ack", f"Bearer {API_TOKEN}"),
          ("GET", "/metrics", None)]


def aim(rng: random.Random, methods: list[str], auths: list[str | None]) -> tuple[str, str, str | None]:
    """Method, path and Authorization: each as a real client sends it (so that the hostile rest reaches
    the handler) or, 40 % of the time each, hostile."""
    method, target, auth = rng.choice(ROUTES)
    if rng.random() < 0.4:
        method = rng.choice(methods)
    if rng.random() < 0.4:
        target = path(rng)
    if rng.random() < 0.4:
        auth = rng.choice(auths)
    return method, target, auth


def chunked(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        return rng.choice([b"zz\r\nab\r\n0\r\n\r\n", b"-1\r\n\r\n0\r\n\r\n", b"ffffffffffffffffff\r\nx\r\n0\r\n\r\n",
                           b"3;ext=\x00\r\nabc\r\n0\r\n\r\n", b"3\r\nabcde\r\n0\r\n\r\n"])
    pieces = [data[i:i + 700] for i in range(0, len(data), 700)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@dataclass
class Case:
    data: bytes
    head_only: bool


def raw_case(rng: random.Random) -> Case:
    """One hostile request, as bytes; always complete (a server that waits for more is a slow-client test)."""
    if rng.random() < 0.06:
        return Case(rng.choice([rng.randbytes(rng.randrange(1, 500)) + b"\r\n\r\n",
                                bytes.fromhex("16030100a5010000a10303") + rng.randbytes(40) + b"\r\n\r\n",
                                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"GET " + b"/x" * 60000 + b" HTTP/1.1\r\n\r\n",
                                b"GET /metrics HTTP/1.1\nHost: x\n\n"]), False)
    method, target, auth = aim(rng, METHODS, AUTH)
    headers = [] if rng.random() < 0.05 else ["Host: fuzz"]
    if auth is not None:
        headers.append(f"Authorization: {auth}")
    if rng.random() < 0.3:
        headers.append(f"Content-Type: {rng.choice(CONTENT_TYPES)}")
    data = body(rng)
    if rng.random() < 0.3:
        headers.append(f"Content-Encoding: {rng.choice(ENCODINGS)}")
    headers += rng.sample(JUNK_HEADERS, rng.choice([0, 0, 0, 1, 2]))
    if rng.random() < 0.02:
        headers += [f"X-Many-{i}: {i}" for i in range(rng.choice([150, 5000]))]
    declared = [h for h in headers if h.lower().startswith(("content-length", "transfer-encoding"))]
    if rng.random() < 0.15 and not declared:
        headers.append("Transfer-Encoding: chunked")
        data = chunked(data, rng)
    elif not any(h.startswith("Transfer-Encoding: ") and h.endswith("chunked") for h in declared):
        headers.append(f"Content-Length: {len(data)}")
    if rng.random() < 0.5:
        headers.append("Connection: close")
    head = f"{method} {target} {rng.choice(VERSIONS)}".rstrip() + "\r\n" + "".join(h + "\r\n" for h in headers)
    return Case(head.encode("utf-8", "surrogateescape") + b"\r\n" + data, method == "HEAD")


def client_case(rng: random.Random) -> dict:
    """One hostile request an HTTP client library sends (well-formed HTTP, hostile content)."""
    headers = {}
    method, target, auth = aim(rng, ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"],
                               [a for a in AUTH if a is None or a.isascii()])
    if auth:
        headers["Authorization"] = auth
    if rng.random() < 0.4:
        headers["Content-Encoding"] = rng.choice(["gzip", "deflate", "identity", "br", "x"])
    if rng.random() < 0.3:
        headers["Content-Type"] = rng.choice(CONTENT_TYPES[:5])
    return {"method": method, "url": target.split("#")[0], "headers": headers, "data": body(rng),
            "compress": rng.choice([None, None, "deflate"])}


# ---------------------------------------------------------------------------------------
# Sending it


async def fuzz(port: int, seed: int) -> Counter:
    """Send every case; count answers by class."""
    rng = random.Random(seed)
    raw = [raw_case(rng) for _ in range(RAW_CASES)]
    client = [client_case(rng) for _ in range(CLIENT_CASES)]
    counts: Counter = Counter()
    gate = asyncio.Semaphore(12)

    def judge(status: int | None, content_type: str) -> None:
        counts["cases"] += 1
        if status is None:
            counts["no answer"] += 1
        elif status >= 500:
            counts["5xx"] += 1
        elif status >= 400 and not content_type.startswith("application/json"):
            counts["non-JSON errors"] += 1

    async def send_raw(case: Case) -> None:
        async with gate:
            try:
                answer = await exchange(port, case.data, TIMEOUT, case.head_only)
            except TimeoutError:
                counts["cases"] += 1
                counts["timeouts"] += 1
                return
            judge(answer.status, answer.headers.get("content-type", ""))

    async def send_client(http: aiohttp.ClientSession, case: dict) -> None:
        async with gate:
            url = URL(f"http://127.0.0.1:{port}{case.pop('url')}", encoded=True)
            try:
                async with http.request(url=url, timeout=aiohttp.ClientTimeout(total=TIMEOUT), **case) as resp:
                    await resp.read()
                    judge(resp.status, resp.headers.get("Content-Type", ""))
            except TimeoutError:
                counts["cases"] += 1
                counts["timeouts"] += 1
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                judge(None, "")
            except (ValueError, aiohttp.InvalidURL):
                counts["not sendable by the client"] += 1

    # one connection per request: a server may close a kept-alive connection at any time
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        await asyncio.gather(*(send_raw(c) for c in raw), *(send_client(http, c) for c in client))
    return counts


def test_hostile_requests_get_4xx_json_and_the_daemon_keeps_answering(fuzz_daemon):
    daemon = fuzz_daemon.start()
    counts = asyncio.run(fuzz(daemon.port, SEED))
    counts["tracebacks"] = daemon.proc.output().count("Traceback")
    print(f"\nHTTP fuzz (seed {SEED}): {dict(counts)}")
    assert counts["cases"] >= 500, counts
    assert {k: counts[k] for k in ("5xx", "no answer", "timeouts", "non-JSON errors", "tracebacks")} \
        == {"5xx": 0, "no answer": 0, "timeouts": 0, "non-JSON errors": 0, "tracebacks": 0}, counts
    assert daemon.alive()
    assert post(daemon.port, "web1", b'{"status": "ok", "message": "after the fuzz"}', TOKEN) == (204, {})
    assert daemon.value("monitord_http_connections") is not None  # /metrics still answers


# ---------------------------------------------------------------------------------------
# A connection flood past the file-descriptor limit


def test_a_connection_flood_past_the_fd_limit_starves_neither_probes_nor_heartbeats(tmp_path, listener):
    prlimit = need_binary("prlimit")
    port = free_port()
    config = write_config(tmp_path, f"127.0.0.1:{port}", f"      port: {{kind: tcp, port: {listener}, interval: 500ms}}")
    # 256 descriptors: the listener keeps at most 64 connections
    daemon = Daemon(tmp_path, config, port, prefix=(prlimit, "--nofile=256:256", "--")).start()
    flood: list[socket.socket] = []
    try:
        tcp_ok = lambda: daemon.value("monitord_probe_results_total", kind="tcp", status="ok") or 0  # noqa: E731
        wait_for(lambda: tcp_ok() >= 1, 20, "the first tcp probe")
        with ThreadPoolExecutor(8) as pool:  # more idle connections than the daemon has descriptors
            flood += pool.map(lambda _: socket.create_connection(("127.0.0.1", port), timeout=30), range(400))
        for i in range(5):
            assert post(port, "web1", b'{"message": "during the flood"}', TOKEN) == (204, {}), i
        before = tcp_ok()
        wait_for(lambda: tcp_ok() >= before + 3, 30, "tcp probes succeeding during the flood")
        closed = lambda: sum(daemon.value("monitord_http_connections_closed_total", reason=r) or 0  # noqa: E731
                             for r in ("evicted", "idle"))
        wait_for(lambda: closed() >= 400 - 64, 30, "every flood connection accepted, and all but 64 closed")
        assert daemon.value("monitord_http_connections") <= 64
    finally:
        for sock in flood:
            sock.close()
        daemon.proc.stop(signal.SIGTERM)
    log = daemon.proc.output()
    assert "Too many open files" not in log and "Traceback" not in log
    assert log.count("HTTP listener full") <= 6, log.count("HTTP listener full")  # rate-limited: 5, then a count
