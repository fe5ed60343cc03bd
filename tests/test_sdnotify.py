"""The systemd notify protocol against a real unix datagram socket bound by the test."""

from __future__ import annotations

import os
import socket
import time

import pytest

from monitord import sdnotify


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
