"""Helpers for tests that start real peer processes: ports, processes, binaries."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

SBIN_PATHS = ("/usr/sbin", "/sbin", "/usr/lib/postgresql/15/bin")


def need_binary(name: str) -> str:
    """Return the path of ``name``, or skip the test (a failure under CI=true) if missing."""
    path = shutil.which(name) or next(
        (str(Path(d) / name) for d in SBIN_PATHS if (Path(d) / name).exists()), None
    )
    if path is None:
        pytest.skip(f"peer binary {name!r} is not installed")
    return path


def need_root() -> None:
    """Skip unless root (namespaces, users and privileged ports need it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A currently free port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


def wait_unix_socket(path: Path, timeout: float = 10.0) -> None:
    """Wait until a server accepts connections on the Unix socket ``path``."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(path))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nothing listening on {path} after {timeout}s") from None
        time.sleep(0.02)


def bound(port: int, host: str = "127.0.0.1", table: str = "tcp") -> bool:
    """True when ``host:port`` is bound in /proc/net/``table`` (``udp``; ``tcp``: listening).

    Reads the kernel's table instead of connecting: a connection is a side effect some peers
    mind (ipmi_sim's console dies of SIGPIPE when a client closes before its greeting).
    """
    wanted = f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}:{port:04X}"
    with open(f"/proc/net/{table}") as rows:
        next(rows)
        return any(fields[1] == wanted and (table != "tcp" or fields[3] == "0A")
                   for fields in (row.split() for row in rows))


def wait_unbound(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Wait until nothing listens on ``host:port`` any more, so that connections are refused.

    A stopped server's port can outlive its process for a moment: a child it forked for a
    connection holds a copy of the listening socket until it closes it, and connections
    queue there meanwhile instead of being refused.
    """
    deadline = time.monotonic() + timeout
    while bound(port, host):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} still listens {timeout}s after its server stopped")
        time.sleep(0.02)


class Proc:
    """A peer process in its own session, stopped (with its children) by PID."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
        self.argv = argv
        self.log = log
        self._logf = open(log, "ab")
        self.popen = subprocess.Popen(
            argv, stdout=self._logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the process group and wait; SIGKILL if it lingers."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        self._logf.close()

    def output(self) -> str:
        """What the process wrote so far."""
        return self.log.read_text(errors="replace")


async def unit_engine(store, config, scheduler, drivers, clock=None, metrics=None):
    """An Engine for unit tests: on a fake clock, over ``store``, with a real notifier and outbox;
    ``scheduler`` and ``drivers`` are the test's stand-ins (or a real scheduler on ``clock`` with
    ``metrics``: :class:`Scripted`)."""
    from monitord.edge.metrics import Metrics
    from monitord.escalation.engine import Engine
    from monitord.paging.notify import Notifier
    from monitord.paging.outbox import Outbox
    from monitord.shared.probe import ProbeContext
    from tests.fakeclock import FakeClock

    clock, metrics = clock or FakeClock(), metrics or Metrics()
    notifier = Notifier(config=config, store=store, outbox=Outbox(store, clock), clock=clock, metrics=metrics)
    engine = Engine(config=config, store=store, metrics=metrics, clock=clock, ctx=ProbeContext(), scheduler=scheduler,
                    notifier=notifier, drivers=drivers)
    await engine.restore()
    return engine


class Served:
    """The daemon's hardened HTTP listener on a free loopback port, with the routes a test adds
    to :attr:`app`, and an HTTP client for it (``async with``)."""

    def __init__(self) -> None:
        from monitord.edge.listener import Listener
        from monitord.edge.metrics import Metrics

        self.listener = Listener(Metrics())
        self.app = self.listener.app

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.listener.port}{path}"

    async def __aenter__(self):
        import aiohttp

        await self.listener.start("127.0.0.1", 0)
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.close()
        await self.listener.stop()


class Scripted:
    """Answers for a real :class:`~monitord.run.scheduler.Scheduler` on a fake clock, no peers:
    every check of a config runs this script instead of its kind's probe (keeping the kind's
    traits: host-down, bounded). A host in ``down`` fails with ``unreachable``; ``calls`` lists
    each probe run, by check id."""

    def __init__(self, clock) -> None:
        self.clock, self.down, self.calls = clock, set(), []

    async def run(self, ctx, call, params):
        from monitord.shared.results import Outcome, ProbeError, Reason, Status

        self.calls.append(f"{call.host}/{call.check}")
        if call.host in self.down:
            raise ProbeError(Reason.UNREACHABLE, "no reply")
        return Outcome(Status.OK, "answers")

    async def scheduler(self, config, store, metrics):
        """A scheduler with ``config``'s checks loaded, each running this script."""
        import dataclasses

        from monitord.run.scheduler import Scheduler
        from monitord.shared.probe import ProbeContext

        scheduler = Scheduler(clock=self.clock, store=store, metrics=metrics, ctx=ProbeContext(), max_concurrency=10)
        await scheduler.load([dataclasses.replace(s, kind=dataclasses.replace(s.kind, run=self.run)) for s in config.checks()],
                             await store.checks.states())
        return scheduler
