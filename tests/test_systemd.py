"""monitord under systemd's notify protocol, with a real NOTIFY_SOCKET bound by the test.

systemd is not PID 1 on the test machines, so what systemd does with the messages (killing a
daemon whose watchdog pings stop, restarting it) cannot run here; what the daemon sends can.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon_proc import REPO, Daemon, wait_for
from tests.support import free_port, need_binary, need_root
from tests.test_daemon import listener, write_config  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

WATCHDOG_USEC = 1_000_000  # WatchdogSec=1s: a ping every 0.5 s


class NotifySocket:
    """What systemd listens on: a unix datagram socket; keeps every message with its arrival time."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def poll(self) -> list[dict[str, str]]:
        """Read what arrived so far; return all messages."""
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                self.messages.append((time.monotonic(), dict(line.split("=", 1) for line in data.splitlines())))
        except BlockingIOError:
            pass
        return [fields for _, fields in self.messages]

    def wait(self, key: str, value: str = "1", after: int = 0, timeout: float = 20) -> int:
        """Wait for a message with ``key=value`` at index ``after`` or later; return its index."""
        def found():
            return next((i for i, m in enumerate(self.poll()) if i >= after and m.get(key) == value), None)
        return wait_for(lambda: found() is not None, timeout, f"{key}={value}") and found()

    def silent_for(self, seconds: float) -> bool:
        """Whether no WATCHDOG=1 arrived in the last ``seconds`` (there was one before)."""
        self.poll()
        last = max(t for t, m in self.messages if m.get("WATCHDOG") == "1")
        return time.monotonic() - last > seconds


@pytest.fixture
def notified(tmp_path):
    """A daemon with one check every second, started with NOTIFY_SOCKET and WATCHDOG_USEC."""
    port = free_port()
    config = tmp_path / "monitord.yaml"
    write_config(config, tmp_path / "state.db", port, f"      web: {{kind: tcp, port: {free_port()}}}\n")
    sock = NotifySocket(tmp_path / "notify")
    daemon = Daemon(tmp_path, config, port)
    daemon.start(env={"NOTIFY_SOCKET": sock.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    yield daemon, sock
    daemon.proc.stop(signal.SIGKILL)
    sock.sock.close()


def test_ready_status_watchdog_reloading_stopping(notified):
    daemon, sock = notified
    ready = sock.wait("READY")
    assert sock.poll()[ready]["STATUS"] == "monitoring"
    first = sock.wait("WATCHDOG", after=ready)
    sock.wait("WATCHDOG", after=first + 1)  # and again: a ping every period, not once

    daemon.proc.popen.send_signal(signal.SIGHUP)
    reloading = sock.wait("RELOADING")
    assert int(sock.poll()[reloading]["MONOTONIC_USEC"]) > 0
    sock.wait("READY", after=reloading)
    sock.wait("WATCHDOG", after=reloading)  # the watchdog survives a reload

    daemon.proc.popen.send_signal(signal.SIGTERM)
    assert daemon.proc.popen.wait(timeout=20) == 0
    stopping = sock.wait("STOPPING")
    assert not [m for m in sock.poll()[stopping:] if "READY" in m]
    order = [next(iter(m)) for m in sock.poll() if "WATCHDOG" not in m]
    assert order == ["READY", "RELOADING", "READY", "STOPPING"]


def test_watchdog_pings_stop_while_the_event_loop_is_blocked(notified):
    """The pings come from the event loop itself: a loop blocked in a store write (another
    process holds the database's write lock; each write waits out the 5 s busy timeout) sends
    none, so systemd would kill and restart the daemon."""
    daemon, sock = notified
    sock.wait("WATCHDOG", after=sock.wait("READY"))
    db = sqlite3.connect(daemon.state, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    try:
        wait_for(lambda: sock.silent_for(4.0), 30, "a 4 s pause in the pings (a ping every 0.5 s otherwise)")
    finally:
        db.execute("ROLLBACK")
        db.close()
    sock.wait("WATCHDOG", after=len(sock.poll()))  # pinging again once the loop runs
    assert daemon.alive()


def test_a_daemon_killed_by_the_watchdog_says_where_it_hung(notified):
    """systemd kills a daemon whose pings stopped with SIGABRT: the log shows the stack it hung in."""
    daemon, sock = notified
    sock.wait("WATCHDOG", after=sock.wait("READY"))
    db = sqlite3.connect(daemon.state, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    try:
        wait_for(lambda: sock.silent_for(2.0), 30, "the pings to stop")
        daemon.proc.popen.send_signal(signal.SIGABRT)
        assert daemon.proc.popen.wait(timeout=20) == -signal.SIGABRT
    finally:
        db.execute("ROLLBACK")
        db.close()
    log = daemon.proc.output()
    assert "Fatal Python error: Aborted" in log
    assert "monitord/records/state.py" in log.split("Fatal Python error: Aborted", 1)[1], log[-3000:]


def test_plugins_do_not_inherit_cap_net_raw(tmp_path):
    """Run as the unit runs it — only CAP_NET_RAW, ambient, root without root's automatic
    capabilities (securebits noroot) — monitord keeps CAP_NET_RAW for its raw ICMP socket,
    the plugin it starts has none."""
    need_root()
    setpriv = need_binary("setpriv")
    plugin = tmp_path / "show_caps"
    plugin.write_text("#!/bin/sh\n"
                      "while read -r k v; do case $k in CapPrm:|CapEff:|CapAmb:) printf '%s%s ' $k $v;; esac;"
                      " done < /proc/$$/status\necho\n")
    plugin.chmod(0o755)
    config = tmp_path / "monitord.yaml"
    config.write_text(f"""
daemon:
  state_path: {tmp_path / 'state.db'}
  ping: {{privileged: raw}}
hosts:
  local:
    address: 127.0.0.1
    checks:
      caps: {{kind: plugin, command: {plugin}}}
      ping: {{count: 1}}
""")
    argv = [setpriv, "--securebits", "+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked",
            "--bounding-set", "-all,+net_raw", "--inh-caps", "-all,+net_raw", "--ambient-caps", "-all,+net_raw",
            sys.executable, "-m", "monitord", "probe-once", "--json", "--config", str(config), "local"]
    out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                         timeout=60)
    results = {r["check"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert results["ping"]["status"] == "ok", out.stdout + out.stderr  # monitord itself: raw ICMP works
    caps = dict(field.split(":") for field in results["caps"]["summary"].split())
    assert caps == {"CapPrm": "0000000000000000", "CapEff": "0000000000000000", "CapAmb": "0000000000000000"}


MDWE_THEN_EXEC = """\
import ctypes, mmap, os, sys
assert ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("MemoryDenyWriteExecute is not in force")
except PermissionError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_the_units_sandbox_leaves_ipmitool_and_plugins_working(tmp_path, ipmi_sim, listener):
    """ProcSubset=pid, ProtectProc=invisible and MemoryDenyWriteExecute=yes as the kernel does them
    (a private /proc mounted subset=pid,hidepid=invisible; PR_SET_MDWE, inherited by children):
    the BMC check (ipmitool) and a Nagios plugin still work; check_load, which reads
    /proc/loadavg, does not (the documented limit)."""
    need_root()
    unshare = need_binary("unshare")
    need_binary("ipmitool")
    plugins = Path("/usr/lib/nagios/plugins")
    if not (plugins / "check_tcp").exists():
        pytest.skip("monitoring-plugins-basic is not installed")
    config = tmp_path / "monitord.yaml"
    config.write_text(f"""
daemon:
  state_path: {tmp_path / 'state.db'}
hosts:
  local:
    address: 127.0.0.1
    bmc: {{address: 127.0.0.1, port: {ipmi_sim.port}, username: {ipmi_sim.username}, password: {{env: BMC_PASSWORD}}}}
    checks:
      bmc: {{timeout: 20s}}
      port: {{kind: plugin, command: {plugins / 'check_tcp'}, args: [-H, $ADDRESS$, -p, "{listener}"]}}
      load: {{kind: plugin, command: {plugins / 'check_load'}, args: [-w, "99,99,99", -c, "99,99,99"]}}
""")
    argv = [unshare, "--mount", "--pid", "--fork", "--propagation", "private", "sh", "-c",
            'mount -t proc -o hidepid=invisible,subset=pid proc /proc && exec "$@"', "sandbox",
            sys.executable, "-c", MDWE_THEN_EXEC, sys.executable, "-m", "monitord", "probe-once", "--json",
            "--config", str(config), "local"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO), "BMC_PASSWORD": ipmi_sim.password})
    results = {r["check"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert results.keys() == {"bmc", "port", "load"}, out.stdout + out.stderr
    assert results["bmc"]["status"] == "ok", results["bmc"]
    assert results["port"]["status"] == "ok", results["port"]
    # check_load works outside the sandbox, not inside it: the sandbox was in force
    assert subprocess.run([plugins / "check_load", "-w", "99,99,99", "-c", "99,99,99"], capture_output=True).returncode == 0
    assert results["load"]["status"] == "unknown" and "uptime" in results["load"]["summary"], results["load"]
