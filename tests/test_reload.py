"""SIGHUP reloads in process: whatever a reload raises, the running config stays whole in every
part of the daemon, the failure is a metric, a log line and a journal entry, and systemd hears
READY=1 again. The file is parsed on a worker thread, and reloads run one at a time."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import pytest

from monitord.edge import daemon as daemon_module
from monitord.config import load_config
from monitord.edge.daemon import Daemon
from tests.fakeclock import FakeClock
from tests.support import free_port

CONFIG = """
daemon: {{state_path: {state}, metrics_listen: "127.0.0.1:{port}"}}
paging:
  integrations:
{integrations}
  policies: {{ops: {{tiers: [{{targets: [slack]}}]}}}}
  routes: [{{policy: ops}}]
hosts:
{hosts}
"""
SLACK = "    slack: {type: slack, webhook_url: {env: SLACK_URL}}\n"
NIGHT = "    slack-night: {type: slack, webhook_url: {env: SLACK_NIGHT_URL}}\n"
WEB1 = "  web1: {address: 127.0.0.1, checks: {ssh: {}}}\n"
WEB2 = "  web2: {address: 127.0.0.2, checks: {ssh: {}}}\n"


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; yields a reader of the first
    field of each message received (RELOADING=1 carries MONOTONIC_USEC too)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))

    def received() -> list[str]:
        out = []
        while True:
            try:
                out.append(sock.recv(4096).decode().split("\n")[0])
            except BlockingIOError:
                return out

    yield received
    sock.close()


@pytest.fixture
async def running(tmp_path):
    """A daemon's parts wired as ``run`` wires them, without serving; and a writer of its config file."""
    path = tmp_path / "monitord.yaml"
    port = free_port()

    def write(integrations: str = SLACK, hosts: str = WEB1) -> None:
        path.write_text(CONFIG.format(state=tmp_path / "state.db", port=port, integrations=integrations, hosts=hosts))

    write()
    daemon = Daemon(path, load_config(path), clock=FakeClock())
    await daemon.scheduler.load(daemon.config.checks())
    yield daemon, write
    await daemon.dispatcher.aclose()
    await daemon.store.close()


def reload_metric(daemon: Daemon) -> float:
    for line in daemon.metrics.exposition().decode().splitlines():
        if line.startswith("monitord_config_last_reload_successful "):
            return float(line.split()[1])
    raise AssertionError("no reload metric")


def fail_first_call(monkeypatch, part: object, method: str, error: Exception) -> None:
    """Make ``part.method`` raise ``error`` on its first call (the new config), work after (the rollback)."""
    real, calls = getattr(part, method), []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(part, method, failing)


@pytest.mark.parametrize("part,method,error,reason", [
    ("module", "load_config", MemoryError(), "MemoryError"),  # parsing itself
    ("engine", "apply_config", KeyError("web2"), "KeyError: 'web2'"),
    ("dispatcher", "configure", ValueError("bad pager"), "ValueError: bad pager"),
    ("scheduler", "load", RuntimeError("disk on fire"), "RuntimeError: disk on fire"),  # the last part
])
async def test_a_reload_that_raises_anywhere_keeps_the_running_config_whole(
        running, notify_socket, monkeypatch, caplog, part, method, error, reason):
    daemon, write = running
    before = daemon.config
    write(integrations=SLACK + NIGHT, hosts=WEB1 + WEB2)
    fail_first_call(monkeypatch, daemon_module if part == "module" else getattr(daemon, part), method, error)
    with caplog.at_level(logging.ERROR, logger="monitord.edge.daemon"):
        assert await daemon.reload() is False
    assert daemon.config is before
    assert daemon.engine.config is before and daemon.notifier.config is before
    assert set(daemon.dispatcher.pagers) == {"slack"}
    assert set(daemon.scheduler.due_times()) == {"web1/ssh"}
    assert reload_metric(daemon) == 0
    assert f"reload failed, keeping the running config: {reason}" in caplog.messages
    assert [(e.decision, e.reason) for e in await daemon.store.incidents.journal()][-1] == ("reload_failed", reason)
    assert notify_socket() == ["RELOADING=1", "READY=1"]
    monkeypatch.undo()
    assert await daemon.reload() is True  # the next reload, with nothing failing, applies it all
    assert set(daemon.dispatcher.pagers) == {"slack", "slack-night"}
    assert set(daemon.scheduler.due_times()) == {"web1/ssh", "web2/ssh"}
    assert daemon.engine.config is daemon.config and "web2" in daemon.config.hosts
    assert reload_metric(daemon) == 1


async def test_the_file_is_parsed_off_the_event_loop_thread(running, monkeypatch):
    daemon, write = running
    threads = []

    def recording_load(path):
        threads.append(threading.get_ident())
        return load_config(path)

    monkeypatch.setattr(daemon_module, "load_config", recording_load)
    write(hosts=WEB1 + WEB2)
    assert await daemon.reload() is True
    assert threads and threads[0] != threading.get_ident()


async def test_an_alias_bomb_on_reload_is_refused_and_the_daemon_keeps_its_config(
        running, notify_socket, tmp_path, caplog):
    daemon, _ = running
    before = daemon.config
    bomb = "".join(f"l{d}: &l{d} [{', '.join([f'*l{d - 1}'] * 9)}]\n" for d in range(1, 10))
    daemon.config_path.write_text("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + bomb)
    with caplog.at_level(logging.ERROR, logger="monitord.edge.daemon"):
        assert await daemon.reload() is False
    assert daemon.config is before and reload_metric(daemon) == 0
    assert ("reload failed, keeping the running config: l5[0]: aliases repeat more than 100000 values "
            "(a YAML alias bomb?) (line 6)") in caplog.messages
    assert notify_socket() == ["RELOADING=1", "READY=1"]


async def test_reloads_run_one_at_a_time(running, notify_socket):
    daemon, write = running
    write(hosts=WEB1 + WEB2)
    first, second = daemon.reload(), daemon.reload()
    assert await asyncio.gather(first, second) == [True, True]
    assert notify_socket() == ["RELOADING=1", "READY=1", "RELOADING=1", "READY=1"]
