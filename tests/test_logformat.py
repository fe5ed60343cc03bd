"""Log lines: ``--log-format json`` (one object a line) and journald priority prefixes under
systemd, both through secret redaction and the repeat limit."""

from __future__ import annotations

import io
import json
import logging
import re
import signal

import pytest

from monitord.edge import logsetup
from monitord.shared import redact
from monitord.edge.lograte import RepeatFilter
from tests.daemon_proc import Daemon, wait_for
from tests.support import free_port
from tests.test_daemon import write_config

SECRET = "hunter2-log-format-secret"


def emit(fmt: str, journald: bool, *records: tuple[int, str], exc: BaseException | None = None) -> str:
    """What a handler set up like the daemon's writes for ``records``."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logsetup.formatter(fmt, journald))
    handler.addFilter(RepeatFilter(burst=2, period=60, clock=lambda: 0.0))
    log = logging.getLogger(f"monitord.test.{fmt}.{journald}")
    log.propagate, log.handlers, log.level = False, [handler], logging.DEBUG
    for level, message in records:
        if exc is not None:
            try:
                raise exc
            except type(exc):
                log.log(level, message, exc_info=True)
        else:
            log.log(level, message)
    return stream.getvalue()


def test_json_lines_carry_time_level_logger_message_and_the_exception_redacted():
    redact.remember(SECRET)
    text = emit("json", False, (logging.ERROR, f"login to 監視 failed with {SECRET}"),
                exc=RuntimeError(f"denied: {SECRET}"))
    [line] = text.splitlines()
    doc = json.loads(line)
    assert set(doc) == {"ts", "level", "logger", "message", "exception"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", doc["ts"])
    assert (doc["level"], doc["logger"]) == ("error", "monitord.test.json.False")
    assert doc["message"] == "login to 監視 failed with [REDACTED]"
    assert doc["exception"].startswith("Traceback") and doc["exception"].endswith("RuntimeError: denied: [REDACTED]")
    assert SECRET not in text


def test_json_lines_are_rate_limited_like_text_lines():
    text = emit("json", False, *[(logging.WARNING, "same thing again")] * 5)
    assert [json.loads(line)["message"] for line in text.splitlines()] == ["same thing again"] * 2


@pytest.mark.parametrize("fmt", logsetup.FORMATS)
def test_journald_prefixes_every_line_with_the_records_priority(fmt):
    text = emit(fmt, True, (logging.DEBUG, "d"), (logging.INFO, "i"), (logging.WARNING, "w"), (logging.ERROR, "e"),
                (logging.CRITICAL, "c"))
    assert [line[:3] for line in text.splitlines()] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    redact.remember(SECRET)
    traceback = emit(fmt, True, (logging.ERROR, f"broke\nsecond line {SECRET}"), exc=ValueError("bad"))
    lines = traceback.splitlines()
    assert all(line.startswith("<3>") for line in lines)  # none falls to journald's default priority
    assert SECRET not in traceback
    if fmt == "json":  # one line, whatever the message holds
        [line] = lines
        assert json.loads(line[3:])["message"] == "broke\nsecond line [REDACTED]"
    else:
        assert len(lines) > 3 and lines[1] == "<3>second line [REDACTED]"


def test_journald_is_only_the_stream_systemd_named(tmp_path, monkeypatch):
    with open(tmp_path / "log", "w") as stream, open(tmp_path / "other", "w") as other:
        st = (tmp_path / "log").stat()
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logsetup.under_journald(stream)
        assert not logsetup.under_journald(other)  # e.g. stderr redirected to a file by hand
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not logsetup.under_journald(stream)
    assert not logsetup.under_journald(io.StringIO())


# -- the daemon ------------------------------------------------------------------------------


@pytest.fixture
def closed_port_daemon(tmp_path):
    port = free_port()
    config = tmp_path / "monitord.yaml"
    write_config(config, tmp_path / "state.db", port, f"      closed: {{kind: tcp, port: {free_port()}}}\n")
    daemon = Daemon(tmp_path, config, port)
    yield daemon
    if daemon.proc:
        daemon.proc.stop(signal.SIGKILL)


def run_until_confirmed(daemon: Daemon, *args: str, env: dict | None = None) -> list[str]:
    daemon.start(*args, env=env)
    wait_for(lambda: daemon.value("monitord_check_state", check="closed") == 2, 30, "the closed port confirmed")
    daemon.proc.stop(signal.SIGTERM)
    return daemon.proc.output().splitlines()


@pytest.mark.integration
def test_daemon_with_log_format_json_writes_one_object_a_line(closed_port_daemon):
    lines = run_until_confirmed(closed_port_daemon, "--log-format", "json")
    docs = [json.loads(line) for line in lines]  # every line, start-up to shutdown
    assert docs and all({"ts", "level", "logger", "message"} <= set(doc) for doc in docs)
    assert any(doc["level"] == "warning" and "closed" in doc["message"] for doc in docs)
    assert any(doc["level"] == "info" for doc in docs)


@pytest.mark.integration
@pytest.mark.parametrize("fmt", logsetup.FORMATS)
def test_daemon_under_systemd_prefixes_lines_so_journalctl_p_warning_filters(closed_port_daemon, fmt):
    log = closed_port_daemon.tmp / "daemon.log"
    log.touch()
    st = log.stat()  # systemd names the journal stream it connected to standard error
    lines = run_until_confirmed(closed_port_daemon, "--log-format", fmt,
                                env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    levels = {"<2>": "critical", "<3>": "error", "<4>": "warning", "<6>": "info", "<7>": "debug"}
    seen = set()
    for line in lines:
        prefix, rest = line[:3], line[3:]
        assert prefix in levels, line
        level = json.loads(rest)["level"] if fmt == "json" else rest.split()[0].lower()
        assert level == levels[prefix], line
        seen.add(prefix)
    assert {"<4>", "<6>"} <= seen  # `journalctl -p warning` keeps the <4> lines and drops the <6> ones
