"""``monitord run`` as a subprocess, for tests: start, scrape metrics, read the journal."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tests.support import Proc

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float, what: str):
    """Poll ``predicate`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Daemon:
    """``monitord run`` in a subprocess, with helpers to read its metrics and journal."""

    def __init__(self, tmp: Path, config: Path, metrics_port: int, state: Path | None = None,
                 prefix: tuple[str, ...] = ()):
        self.tmp, self.config, self.port = tmp, config, metrics_port
        self.prefix = prefix  # e.g. ("prlimit", "--nofile=256", "--")
        self.state = state or tmp / "state.db"
        self.dsn: str | None = None
        """Where the store is when it is on PostgreSQL (then :meth:`journal` and :meth:`incidents` read it there)."""
        self.proc: Proc | None = None

    def start(self, *extra: str, env: dict[str, str] | None = None) -> "Daemon":
        env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc = Proc([*self.prefix, sys.executable, "-m", "monitord", "run", "--config", str(self.config), *extra],
                         self.tmp / "daemon.log", env=env)
        wait_for(self.scrape, 20, "the metrics listener")
        return self

    def cli(self, *args: str) -> str:
        """Run another ``monitord`` command against the same config; return its output."""
        import subprocess

        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-m", "monitord", *args, "--config", str(self.config)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def alive(self) -> bool:
        return self.proc is not None and self.proc.popen.poll() is None

    def scrape(self, host: str | None = None) -> str | None:
        """The daemon's /metrics, or with ``host`` its per-host scrape (with the checks' detail)."""
        query = f"?host={urllib.parse.quote(host)}" if host else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics{query}", timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            if self.proc and self.proc.popen.poll() is not None:
                raise AssertionError(f"daemon exited:\n{self.proc.output()}")
            return None

    def value(self, name: str, **labels: str) -> float | None:
        """The value of one sample, or None if it is absent (a check's detail, such as
        ``monitord_probe_status``, from the per-host scrape of its ``host``)."""
        text = self.scrape() or ""
        if "host" in labels and f"# TYPE {name} " not in text:
            text = self.scrape(labels["host"]) or ""
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            sample, _, number = line.rpartition(" ")
            if sample.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in sample for k, v in labels.items()):
                return float(number)
        return None

    def _select(self, sql: str) -> list[tuple]:
        """The rows of ``sql`` from the store (SQLite or PostgreSQL); none before the schema exists."""
        if self.dsn is not None:
            import asyncio

            import asyncpg

            async def fetch() -> list[tuple]:
                conn = await asyncpg.connect(self.dsn)
                try:
                    return [tuple(r) for r in await conn.fetch(sql)]
                except asyncpg.UndefinedTableError:
                    return []
                finally:
                    await conn.close()

            return asyncio.run(fetch())
        if not self.state.exists():
            return []
        db = sqlite3.connect(f"file:{self.state}?mode=ro", uri=True)
        try:
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

    def journal(self, host: str | None = None) -> list[tuple]:
        """(event, decision, outcome, reason) rows of the journal, oldest first."""
        rows = self._select("SELECT event, decision, outcome, reason, host FROM journal ORDER BY id")
        return [r[:4] for r in rows if host is None or r[4] == host]

    def incident_journal(self, incident_id: int) -> list[tuple]:
        """(event, check, decision, reason) rows journaled against ``incident_id``, oldest first."""
        db = sqlite3.connect(f"file:{self.state}?mode=ro", uri=True)
        try:
            return db.execute("SELECT event, check_name, decision, reason FROM journal WHERE incident_id = ? ORDER BY id",
                              (incident_id,)).fetchall()
        finally:
            db.close()

    def details(self, event: str, decision: str) -> list[dict]:
        """The detail of every ``event decision`` row of the journal (e.g. outcome bmc_read), oldest first."""
        db = sqlite3.connect(f"file:{self.state}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT detail FROM journal WHERE event = ? AND decision = ? ORDER BY id",
                              (event, decision)).fetchall()
        finally:
            db.close()
        return [json.loads(detail) if detail else {} for (detail,) in rows]

    def incidents(self) -> list[tuple[int, str, str, float | None]]:
        """(id, host, check, closed_at) of every incident, oldest first."""
        return self._select("SELECT id, host, check_name, closed_at FROM incidents ORDER BY id")

    def events(self, host: str | None = None) -> list[str]:
        """Journal entries of ``host`` as compact strings: ``event decision/outcome``."""
        out = []
        for event, decision, outcome, _ in self.journal(host):
            if event in ("daemon",):
                continue
            out.append(" ".join(x for x in (event, decision, outcome) if x))
        return out
