"""The last good backup of a host, as its latest backup check saw it.

A ``backup`` check (:mod:`probes.backup`) keeps, after every run, the good generations it found
in ``<state_dir>/backup/<host>/<check>/last_backup.json`` (the check's kept-state directory,
:meth:`monitord.shared.probe.ProbeContext.check_dir`). The level-3 dispatch page and the incident report
read it from there: they name the newest good generation (time, generation, location, size),
or say that none is known or that the newest is stale.

*Stale* means older than the plan allows at the moment that matters (now for a page, the start
of the incident for a report): the check keeps with each generation the deadline from which it
no longer counts as fresh (a daily backup taken at 02:00 is fresh until 06:00 + grace the next
day).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from monitord.shared import kept

RECORD = "last_backup.json"
KIND = "backup"


@dataclass(frozen=True, slots=True)
class LastBackup:
    """One backup check's newest good generation at a moment (``at`` None: none known)."""

    check: str
    location: str
    at: float | None = None
    generation: str = ""
    size: int | None = None
    stale: bool = False
    checked_at: float | None = None  # when the check last ran; None: it never did

    def describe(self, zone: dt.tzinfo) -> str:
        """One line for a page: what to restore, or plainly that nothing is known."""
        where = f" at {self.location}" if self.location else ""
        if self.checked_at is None:
            return f"{self.check}: last good backup unknown (the backup check has not run yet){where}"
        if self.at is None:
            return f"{self.check}: no good backup known{where}"
        text = (f"{self.check}: last good backup {format_time(self.at, zone)}, generation {self.generation}{where}"
                + (f", {format_size(self.size)}" if self.size is not None else ""))
        return text + (" - STALE: older than its schedule allows" if self.stale else "")

    def as_dict(self) -> dict[str, Any]:
        """JSON form (for page details)."""
        return {"check": self.check, "location": self.location, "at": self.at, "generation": self.generation,
                "size": self.size, "stale": self.stale}


def format_time(ts: float, zone: dt.tzinfo) -> str:
    """``ts`` as a local time with its zone, e.g. ``2026-11-25 02:00 JST``."""
    return dt.datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M %Z")


def format_size(size: int) -> str:
    """Bytes in binary units, e.g. ``1.5 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def record_path(state_dir: Path, host: str, check: str) -> Path:
    """Where the check ``host/check`` keeps its record."""
    return state_dir / KIND / host / check / RECORD


def write_record(directory: Path, location: str, checked_at: float, generations: list[dict[str, Any]]) -> None:
    """Keep what a run found: the good ``generations`` (``name``, ``at``, ``size``, ``stale_from``), newest last."""
    kept.write_json(directory / RECORD, {"location": location, "checked_at": checked_at, "generations": generations})


def last_good(check: str, record: dict[str, Any], before: float | None = None) -> LastBackup:
    """The newest good generation in ``record`` taken at or before ``before`` (default: the run)."""
    location = str(record.get("location", ""))
    checked_at = record.get("checked_at")
    if not isinstance(checked_at, (int, float)):
        return LastBackup(check, location)
    moment = checked_at if before is None else before
    good = [g for g in record.get("generations", []) if isinstance(g, dict) and isinstance(g.get("at"), (int, float))
            and g["at"] <= moment]
    if not good:
        return LastBackup(check, location, checked_at=checked_at)
    newest = max(good, key=lambda g: g["at"])
    size = newest.get("size")
    return LastBackup(check, location, newest["at"], str(newest.get("name", "")),
                      size if isinstance(size, int) else None,
                      moment >= float(newest.get("stale_from", 0)), checked_at)


def for_host(specs: Iterable[Any], state_dir: Path, host: str, before: float | None = None) -> list[LastBackup]:
    """The last good backup of each of ``host``'s backup checks among ``specs`` (the config's
    enabled checks, :meth:`monitord.config.Config.checks`), in config order."""
    found = []
    for spec in specs:
        if spec.host == host and spec.kind.name == KIND:
            found.append(last_good(spec.name, kept.read_json(record_path(state_dir, host, spec.name)), before))
    return found
