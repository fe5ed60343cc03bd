"""The systemd notify protocol against a real unix datagram socket bound by the test; the
watchdog's view of a stuck scheduler or engine on the fake clock."""

from __future__ import annotations

import os
import socket
import time

import asyncio

import pytest

from monitord.edge import sdnotify
from monitord.escalation.engine import REEVALUATE_EVERY
from monitord.edge.metrics import Metrics
from monitord.run.scheduler import Scheduler
from monitord.records.state import SQLiteStore
from monitord.shared.probe import ProbeContext
from tests.fakeclock import FakeClock
from tests.test_engine_notices import CONFIG, make_engine
from tests.test_scheduler import Script, spec


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A datagram socket where systemd would listen; NOTIFY_SOCKET points at it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    yield sock
    sock.close()


def test_fields_arrive_as_one_datagram(notify_socket):
    assert sdnotify.notify("READY=1", "STATUS=monitoring 3 checks")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=monitoring 3 checks"


def test_reloading_carries_the_monotonic_time(notify_socket):
    before = time.monotonic_ns() // 1000
    assert sdnotify.reloading()
    after = time.monotonic_ns() // 1000
    fields = dict(line.split("=", 1) for line in notify_socket.recv(4096).decode().splitlines())
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_abstract_socket_address(monkeypatch):
    name = f"monitord-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STOPPING=1")
        assert sock.recv(4096) == b"STOPPING=1"


def test_without_systemd_nothing_is_sent_and_nothing_fails(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.notify("READY=1") is False


@pytest.mark.parametrize("usec, pid, expected", [
    ("4000000", None, 2.0),
    ("4000000", "self", 2.0),
    ("4000000", "other", None),  # meant for another process (e.g. our parent)
    ("0", None, None),
    ("", None, None),
    ("soon", None, None),
])
def test_watchdog_interval_is_half_of_watchdog_sec(monkeypatch, usec, pid, expected):
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() if pid == "self" else os.getpid() + 1))
    assert sdnotify.watchdog_interval() == expected


def received(sock) -> list[bytes]:
    """Every datagram waiting on ``sock``."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(5)


def test_watchdog_pings_only_while_healthy_and_says_why_once(notify_socket, caplog):
    problem: list[str | None] = [None]
    watchdog = sdnotify.Watchdog(lambda: problem[0], patience=60.0)
    assert watchdog.beat(0.0) and watchdog.beat(15.0)
    assert received(notify_socket) == [b"WATCHDOG=1", b"WATCHDOG=1"]

    # stuck: still pinging within the patience (a clock step looks the same for a while) ...
    problem[0] = "scheduler stuck: web/http is 75s overdue"
    assert watchdog.beat(30.0) and watchdog.beat(45.0) and watchdog.beat(89.0)
    assert received(notify_socket) == [b"WATCHDOG=1"] * 3
    # ... then no more pings, and the reason is said once, whatever the seconds in it say
    problem[0] = "scheduler stuck: web/http is 150s overdue"
    assert not watchdog.beat(90.0) and not watchdog.beat(105.0)
    problem[0] = "scheduler stuck: web/http is 180s overdue"
    assert not watchdog.beat(120.0)
    assert received(notify_socket) == [b"STATUS=scheduler stuck: web/http is 150s overdue"]
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [
        "watchdog: scheduler stuck: web/http is 150s overdue for 60s; not pinging systemd, which will restart monitord"]

    problem[0] = None
    assert watchdog.beat(135.0)
    assert received(notify_socket) == [b"STATUS=monitoring", b"WATCHDOG=1"]


def test_watchdog_forgives_a_short_stall(notify_socket, caplog):
    problem: list[str | None] = ["escalation stuck: no re-evaluation for 95s"]
    watchdog = sdnotify.Watchdog(lambda: problem[0], patience=60.0)
    assert watchdog.beat(0.0) and watchdog.beat(59.0)
    problem[0] = None
    assert watchdog.beat(60.0)
    problem[0] = "escalation stuck: no re-evaluation for 95s"
    assert watchdog.beat(61.0) and watchdog.beat(120.0)  # a new stall: patience starts again
    assert received(notify_socket) == [b"WATCHDOG=1"] * 5
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_scheduler_is_stalled_when_its_next_check_is_overdue(tmp_path):
    clock, script = FakeClock(), Script()
    script.clock = clock
    store = SQLiteStore(tmp_path / "state.db")
    scheduler = Scheduler(clock=clock, store=store, metrics=Metrics(), ctx=ProbeContext(), max_concurrency=10)
    await scheduler.load([spec(script, "web", interval=60.0)])
    assert scheduler.stalled(clock.time(), 30.0) is None
    # running, it keeps up however long time goes on
    task = asyncio.create_task(scheduler.run())
    await clock.advance(3600)
    assert scheduler.stalled(clock.time(), 30.0) is None and len(script.calls) >= 59
    # not running (stuck or dead): stalled once the next check is late by more than the allowance
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    due = scheduler.due_times()["web/fake"]
    await clock.advance(due + 30.0 - clock.time())
    assert scheduler.stalled(clock.time(), 30.0) is None
    await clock.advance(1.0)
    assert scheduler.stalled(clock.time(), 30.0) == "scheduler stuck: web/fake is 31s overdue"
    await store.close()


async def test_engine_is_stalled_when_it_misses_its_re_evaluation(tmp_path):
    engine, store, _ = make_engine(tmp_path, CONFIG)
    clock = engine.clock
    task = asyncio.create_task(engine.run())
    await clock.advance(3600)
    assert engine.stalled(clock.time(), 60.0) is None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await clock.advance(REEVALUATE_EVERY + 60.0)
    assert engine.stalled(clock.time(), 60.0) is None
    await clock.advance(1.0)
    assert engine.stalled(clock.time(), 60.0) == f"escalation stuck: no re-evaluation for {REEVALUATE_EVERY + 61:.0f}s"
    await store.close()
