"""Benchmark: a flood of idle connections against the daemon's HTTP listener, past its fd limit.

Starts ``monitord run`` (from ``--repo``, default this checkout) under ``prlimit --nofile=N``
with a heartbeat check and a TCP check every 500 ms, opens ``--connections`` idle connections
to its listener and holds them, posts heartbeats, and after ``--seconds`` prints: connects that
failed, heartbeats answered, whether /metrics answers, log lines written during the flood,
"Too many open files" and tracebacks in the log, and TCP probe results. Compare two checkouts:

    .venv/bin/python benchmarks/http_flood.py                       # 1,036 connections, 1,024 fds
    .venv/bin/python benchmarks/http_flood.py --repo /path/to/older/checkout

A benchmark, not a test (tests/test_http_fuzz.py asserts the behaviour).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

TOKEN = "bench-token"


def request(url: str, data: bytes | None = None, token: str | None = None) -> tuple[int | None, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=3) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return None, b""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--connections", type=int, default=1036)
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=14.0)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="http-flood-"))
    (tmp / "token").write_text(TOKEN + "\n")
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(1024)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp / "monitord.yaml").write_text(f"""
daemon: {{state_path: {tmp / "state.db"}, metrics_listen: "127.0.0.1:{port}"}}
defaults: {{retry_interval: 300ms, timeout: 300ms}}
hosts:
  web1:
    address: 127.0.0.1
    checks:
      heartbeat: {{token: {{file: {tmp / "token"}}}, expect_every: 1h}}
      port: {{kind: tcp, port: {target.getsockname()[1]}, interval: 500ms}}
""")
    log_path = tmp / "daemon.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            ["prlimit", f"--nofile={args.nofile}:{args.nofile}", "--", sys.executable, "-m", "monitord", "run",
             "--config", str(tmp / "monitord.yaml")],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(args.repo)}, cwd=args.repo,
            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    flood: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while request(f"{base}/metrics")[0] != 200:
            if time.monotonic() > deadline:
                sys.exit(f"the daemon did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        time.sleep(2)
        lines_before = len(log_path.read_bytes().splitlines())
        started = time.monotonic()
        failed = 0
        for _ in range(args.connections):
            try:
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
            except OSError:
                failed += 1
        answered = sum(request(f"{base}/api/v1/heartbeat/web1", b"", TOKEN)[0] == 204 for _ in range(10))
        time.sleep(max(0.0, args.seconds - (time.monotonic() - started)))
        status, metrics = request(f"{base}/metrics")
    finally:
        for sock in flood:
            sock.close()
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
        target.close()
    text = log_path.read_text(errors="replace")
    tcp = [line for line in metrics.decode().splitlines() if line.startswith('monitord_probe_results_total{kind="tcp"')]
    print(f"repo {args.repo}: {args.connections} connections at {args.nofile} fds for {args.seconds:g} s")
    print(f"  connects failed: {failed}   heartbeats answered: {answered}/10   /metrics afterwards: {status}")
    print(f"  log lines during the flood: {len(text.splitlines()) - lines_before}   "
          f"'Too many open files': {text.count('Too many open files')}   tracebacks: {text.count('Traceback')}")
    print(f"  tcp probe results: {', '.join(tcp) or 'none exported'}")


if __name__ == "__main__":
    main()
