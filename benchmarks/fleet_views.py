"""The fleet views at scale: the body of ``GET /api/v1/hosts`` and of the status page ``/``.

    .venv/bin/python benchmarks/fleet_views.py --hosts 10000
    .venv/bin/python benchmarks/fleet_views.py --hosts 1000 --repo /path/to/other/checkout   # before

Builds a config of N hosts (two checks each, in ten groups, one config maintenance window over
a group), loads it as the daemon does, stores a check state for every check (one transaction)
and then times, ``--runs`` times, what each handler does: the hosts' views rendered as JSON,
and the page's snapshot rendered through its template. Prints wall and process-CPU seconds
(medians) per figure. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


def fleet_config(hosts: int, state: Path) -> str:
    lines = [f"daemon: {{state_path: {state}}}", "groups: {" + ", ".join(f"g{g}: {{}}" for g in range(10)) + "}",
             "maintenance: {rack: {groups: [g3], start: '2026-01-01T00:00:00Z', end: '2099-01-01T00:00:00Z', "
             "reason: benchmark}}", "hosts:"]
    for i in range(hosts):
        lines.append(f"  h{i}: {{address: 10.0.{i // 250}.{i % 250 + 1}, groups: [g{i % 10}], "
                     "checks: {tcp: {kind: tcp, port: 22}, web: {kind: http, port: 80}}}")
    return "\n".join(lines) + "\n"


STATUS = {"version": "bench", "dry_run": False, "started_at": 0.0, "uptime": 60.0, "scheduler_lateness": 0.0,
          "last_reload": {"at": 0.0, "ok": True, "error": None}, "store": {"ok": True, "fault": None},
          "blast_radius": {"active": False, "reason": None}}
"""What the daemon's status says (the page shows it; its content costs nothing here)."""


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(hosts: int, runs: int) -> dict:
    from monitord.config import load_config
    from monitord.edge import statuspage, views
    from monitord.records.state import SQLiteStore
    from monitord.run.checkstate import CheckState
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "monitord.yaml").write_text(fleet_config(hosts, Path(tmp) / "state.db"))
        config = load_config(Path(tmp) / "monitord.yaml")
        store = SQLiteStore(Path(tmp) / "state.db")
        now = time.time()
        specs = config.checks()
        for spec in specs:
            store.checks.stage(spec.id, CheckState(last_run=now - 30, last_change=now - 3600), None)
        await store.checks.flush()
        due = {spec.id: now + 30 for spec in specs}

        async def api_hosts() -> int:
            if hasattr(views, "hosts"):
                body = await views.hosts(config, store, now, due)
            else:  # a checkout before the fleet-wide view: the handler's loop over views.host
                states = await views.host_states(store)
                body = [await views.host(config, store, name, now, due, states) for name in config.hosts]
            return len(json.dumps(body))

        async def page() -> int:
            data = await statuspage.snapshot(config, store, now, due, STATUS)
            return len(statuspage.render("page.html.j2", "en", config, now, refresh=60, acked=None,
                                         ack_route="/ack", **data))

        figures = {}
        for name, work in (("/api/v1/hosts", api_hosts), ("/", page)):
            walls, cpus, size = [], [], 0
            for _ in range(runs):
                wall0, cpu0 = time.monotonic(), cpu()
                size = await work()
                walls.append(time.monotonic() - wall0)
                cpus.append(cpu() - cpu0)
            figures[name] = {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "bytes": size}
        await store.close() if asyncio.iscoroutinefunction(store.close) else store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the monitord checkout to measure (default: this one)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    figures = asyncio.run(measure(args.hosts, args.runs))
    load = Path("/proc/loadavg").read_text().split()[:3]
    for name, f in figures.items():
        print(f"{args.hosts:,} hosts {name}: {f['wall_s']:.3f} s wall, {f['cpu_s']:.3f} s CPU, "
              f"{f['bytes'] / 1e6:.1f} MB (median of {args.runs}; load {' '.join(load)}; {args.repo})")


if __name__ == "__main__":
    main()
