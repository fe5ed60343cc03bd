"""Repeated identical log lines are rate-limited (fake clock): a flood of one line must not bury the log."""

from __future__ import annotations

import logging

from monitord.edge.lograte import RepeatFilter
from tests.fakeclock import FakeClock


class Lines(logging.Handler):
    """Collects what a handler would write."""

    def __init__(self, clock: FakeClock):
        super().__init__()
        self.lines: list[str] = []
        self.addFilter(RepeatFilter(burst=3, period=60.0, clock=clock.time))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def logger_with(handler: logging.Handler, name: str = "lograte.test") -> logging.Logger:
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log


async def test_a_flood_of_one_line_is_cut_to_the_burst_and_counted():
    clock = FakeClock()
    lines = Lines(clock)
    log = logger_with(lines)
    for i in range(45_000):
        log.error("accept failed: %s", "Too many open files")
        if i % 1000 == 0:
            await clock.advance(0.3)  # 45,000 lines in 14 s
    assert lines.lines == ["ERROR accept failed: Too many open files"] * 3
    await clock.advance(60)
    log.error("accept failed: %s", "Too many open files")
    assert lines.lines[-1] == ("ERROR accept failed: Too many open files "
                               "[44997 more identical lines left out in 60s]")
    log.error("accept failed: %s", "Too many open files")
    assert lines.lines[-1] == "ERROR accept failed: Too many open files"  # the count is said once


async def test_different_lines_levels_and_loggers_do_not_suppress_each_other():
    clock = FakeClock()
    lines = Lines(clock)
    log, other = logger_with(lines), logger_with(lines, "lograte.other")
    for _ in range(10):
        log.error("host %s down", "web1")
    for host in ("web2", "web3", "web4", "web5"):
        log.error("host %s down", host)  # 200 hosts going down at once are all told
    log.warning("host %s down", "web1")
    other.error("host %s down", "web1")
    try:
        raise OSError("boom")
    except OSError:
        log.exception("host %s down", "web1")  # same text, but with an exception
    assert lines.lines == ["ERROR host web1 down"] * 3 + [f"ERROR host {h} down" for h in ("web2", "web3", "web4", "web5")] \
        + ["WARNING host web1 down", "ERROR host web1 down", "ERROR host web1 down"]
