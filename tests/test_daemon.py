"""The daemon as a process: metrics (checked by promtool), SIGHUP reloads, SIGTERM, kill -9."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.daemon_proc import REPO, Daemon, wait_for
from tests.test_metrics_manifest import series_per_check
from tests.support import free_port, need_binary

pytestmark = pytest.mark.integration


def write_config(path: Path, state: Path, metrics_port: int, checks: str, interval: str = "1s") -> None:
    path.write_text(f"""
daemon:
  state_path: {state}
  metrics_listen: 127.0.0.1:{metrics_port}
defaults:
  intervals: {{tcp: {interval}, ping: {interval}}}
  retry_interval: 500ms
  max_attempts: 2
  timeout: 800ms
hosts:
  local:
    address: 127.0.0.1
    checks:
{checks}
""")


@pytest.fixture
def listener():
    """An open TCP port on 127.0.0.1 (the kernel completes handshakes from the backlog)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def daemon_env(tmp_path, listener):
    port = free_port()
    closed = free_port()
    config = tmp_path / "monitord.yaml"
    checks = (f"      open: {{kind: tcp, port: {listener}}}\n"
              f"      closed: {{kind: tcp, port: {closed}}}\n"
              f"      ping: {{count: 1, reply_timeout: 500ms}}\n")
    write_config(config, tmp_path / "state.db", port, checks)
    daemon = Daemon(tmp_path, config, port)
    yield daemon, checks
    if daemon.proc:
        daemon.proc.stop(signal.SIGKILL)


def test_metrics_pass_promtool_and_reflect_probes(daemon_env):
    promtool = need_binary("promtool")
    daemon, _ = daemon_env
    daemon.start()
    wait_for(lambda: daemon.value("monitord_check_state", check="closed") == 2, 20, "closed port confirmed")
    wait_for(lambda: daemon.value("monitord_probe_success", check="ping") == 1, 20, "ping of 127.0.0.1")
    wait_for(lambda: daemon.value("monitord_probe_success", check="open") is not None, 20, "the open port's first run")
    assert daemon.value("monitord_probe_success", host="local", check="open", kind="tcp") == 1
    assert daemon.value("monitord_probe_success", host="local", check="closed", kind="tcp") == 0
    assert daemon.value("monitord_check_state", check="open") == 0
    assert daemon.value("monitord_config_last_reload_successful") == 1
    assert daemon.value("monitord_build_info") == 1
    assert daemon.value("monitord_incidents_open") == 1
    assert daemon.value("monitord_probe_results_total", kind="tcp", status="critical", reason="refused") >= 2
    text, detail = daemon.scrape(), daemon.scrape(host="local")
    for name in ("monitord_probe_duration_seconds", "monitord_probe_oldest_run_timestamp_seconds",
                 "monitord_scheduler_lateness_seconds_bucket"):
        assert name in text
    assert "monitord_probe_last_run_timestamp_seconds" not in text  # a check's detail: per-host scrape only
    for name in ("monitord_probe_last_run_timestamp_seconds", "monitord_probe_status", "monitord_probe_value"):
        assert f'{name}{{check="ping",host="local",kind="ping"' in detail
    for exposition in (text, detail):
        check = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    assert series_per_check(text) <= 3
    for query, status, error in (("hots=local", 400, "unknown query parameter 'hots' (only host)"),
                                 ("host=local&host=nope", 404, "no host 'nope' in the configuration")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics?{query}", timeout=5)
        assert (refused.value.code, json.loads(refused.value.read())) == (status, {"error": error})


def test_sighup_reload_keeps_old_config_when_new_is_bad(daemon_env, listener):
    daemon, checks = daemon_env
    daemon.start()
    good = daemon.config.read_text()
    daemon.config.write_text(good.replace("max_attempts: 2", "max_atempts: 2"))
    daemon.proc.popen.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.value("monitord_config_last_reload_successful") == 0, 10, "reload failure")
    assert "defaults.max_atempts: unknown key (did you mean 'max_attempts'?)" in daemon.proc.output()
    assert daemon.value("monitord_checks_configured") == 3
    daemon.config.write_text(good.replace("      ping: {count: 1, reply_timeout: 500ms}\n", f"      extra: {{kind: tcp, port: {listener}}}\n"))
    daemon.proc.popen.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.value("monitord_config_last_reload_successful") == 1, 10, "reload success")
    wait_for(lambda: daemon.value("monitord_probe_success", check="extra") == 1, 10, "the new check")
    assert daemon.value("monitord_probe_success", check="ping") is None  # removed check's series are gone
    assert daemon.proc.popen.poll() is None


def test_sigterm_stops_cleanly_within_ten_seconds(daemon_env):
    daemon, _ = daemon_env
    daemon.start()
    daemon.proc.popen.send_signal(signal.SIGTERM)
    assert daemon.proc.popen.wait(timeout=10) == 0
    db = sqlite3.connect(daemon.tmp / "state.db")
    decisions = [row[0] for row in db.execute("SELECT decision FROM journal WHERE event='daemon' ORDER BY id")]
    assert decisions == ["started", "stopped"]


def test_kill_9_then_restart_keeps_state_and_journal_and_does_not_burst(tmp_path, listener):
    port, closed = free_port(), free_port()
    config = tmp_path / "monitord.yaml"
    state = tmp_path / "state.db"
    # 40 checks every 40 s: phase-locked, about one a second; a burst would run all 40 at once.
    many = "".join(f"      svc{i}: {{kind: tcp, port: {listener}}}\n" for i in range(40))
    fast = f"      closed: {{kind: tcp, port: {closed}, interval: 1s}}\n"
    write_config(config, state, port, many + fast, interval="40s")
    daemon = Daemon(tmp_path, config, port).start()
    try:
        wait_for(lambda: daemon.value("monitord_check_state", check="closed") == 2, 20, "closed port confirmed")
        daemon.proc.stop(signal.SIGKILL)
        db = sqlite3.connect(state)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        journal_before = db.execute("SELECT id, event FROM journal ORDER BY id").fetchall()
        incidents_before = db.execute("SELECT id, closed_at FROM incidents").fetchall()
        db.close()
        # no restart method configured for the port: the engine pages instead of acting
        assert [e for _, e in journal_before if e != "daemon"] == ["detected", "confirmed", "page", "page_unrouted"]
        assert len(incidents_before) == 1 and incidents_before[0][1] is None

        daemon.start()
        # the persisted hard state is exported at once, before the check runs again
        assert daemon.value("monitord_check_state", check="closed") == 2
        time.sleep(1.0)
        started = daemon.value("monitord_scheduler_lateness_seconds_count") or 0
        runs_of_closed = 2  # at most, in this second
        assert started <= runs_of_closed + 8, f"{started} checks started in the first second: a burst"
        daemon.proc.stop(signal.SIGTERM)
    finally:
        daemon.proc.stop(signal.SIGKILL)
    db = sqlite3.connect(state)
    journal_after = db.execute("SELECT id, event FROM journal ORDER BY id").fetchall()
    assert journal_after[: len(journal_before)] == journal_before  # nothing lost or rewritten
    assert [e for _, e in journal_after if e != "daemon"] == ["detected", "confirmed", "page", "page_unrouted"]  # nothing repeated
    assert db.execute("SELECT id, closed_at FROM incidents").fetchall() == incidents_before  # not re-opened
    assert not re.search(r"Traceback", (tmp_path / "daemon.log").read_text())


def test_run_with_a_bad_config_exits_2_without_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("hosts:\n  h: {adress: 127.0.0.1}\n")
    out = subprocess.run([sys.executable, "-m", "monitord", "run", "--config", str(config)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=30)
    assert out.returncode == 2
    assert "hosts.h.adress: unknown key (did you mean 'address'?) (line 2)" in out.stderr
    assert "Traceback" not in out.stderr


def test_probe_once_prints_a_table_and_json(daemon_env):
    daemon, _ = daemon_env
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "monitord", "probe-once", "--config", str(daemon.config)]
    out = subprocess.run(base + ["local"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 1  # the closed port is not OK
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "KIND", "STATUS", "REASON", "TIME", "SUMMARY"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["open"][2:4] == ["ok", "-"] and rows["closed"][2:4] == ["critical", "refused"]
    one = subprocess.run(base + ["--json", "local", "open"], capture_output=True, text=True, env=env, timeout=30)
    assert one.returncode == 0 and '"status": "ok"' in one.stdout and len(one.stdout.splitlines()) == 1
    missing = subprocess.run(base + ["nohost"], capture_output=True, text=True, env=env, timeout=30)
    assert missing.returncode == 2 and "no host 'nohost'" in missing.stderr


def test_systemd_unit_verifies(tmp_path):
    analyze = need_binary("systemd-analyze")
    unit = (REPO / "systemd" / "monitord.service").read_text()
    monitord_bin = Path(sys.executable).parent / "monitord"
    if not monitord_bin.exists():
        monitord_bin = Path(sys.executable)
    unit = unit.replace("/opt/monitord/venv/bin/monitord", str(monitord_bin))
    (tmp_path / "monitord.service").write_text(unit)
    out = subprocess.run([analyze, "verify", str(tmp_path / "monitord.service")], capture_output=True, text=True)
    problems = [line for line in out.stderr.splitlines() if "monitord.service" in line]
    assert out.returncode == 0 and problems == [], out.stderr
    security = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(tmp_path / "monitord.service")],
                              capture_output=True, text=True)
    exposure = re.search(r"Overall exposure level for monitord.service: ([0-9.]+)", security.stdout)
    assert exposure and float(exposure.group(1)) < 2.5, security.stdout + security.stderr
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["WatchdogSec"] and settings["LimitNOFILE"] and settings["StartLimitBurst"]
    from monitord.edge.cli import EXIT_LOCKED, EXIT_USAGE
    assert set(settings["RestartPreventExitStatus"].split()) == {str(EXIT_USAGE), str(EXIT_LOCKED)}
    example = (REPO / "config" / "monitord.example.yaml").read_text()
    loaded = set(re.findall(r"^LoadCredential=([^:]+):", unit, re.M))
    assert loaded == set(re.findall(r"\{credential: ([^}\s]+)\}", example))


def test_settling_memory_freezes_what_exists_and_raises_the_collector_thresholds():
    import gc
    import weakref

    from monitord.edge.daemon import GC_THRESHOLDS, settle_memory
    before = gc.get_threshold()
    try:
        settle_memory()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 1000  # this process's modules, at least

        class Node:
            pass

        cycle = Node()
        cycle.me = cycle  # garbage only the collector can free, like a replaced config's cycles
        ref = weakref.ref(cycle)
        gc.freeze()
        del cycle
        gc.collect()
        assert ref() is not None  # frozen: out of the collector's reach
        settle_memory()
        assert ref() is None  # the next settling (a reload) thawed it first
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
