"""Decision latency of the blast-radius guard before a power action, at fleet sizes.

The guard decides from the check states plus a fresh ping of the canaries and of the hosts
whose failure began within the window; the old guard pinged every host-down check of the
fleet. Both are timed here with real pings of loopback hosts (which answer at once, so the
numbers are the cost of the sweep itself, not of waiting for a dead host's reply timeout).

    .venv/bin/python benchmarks/blast_radius.py --hosts 3 10000 --recent 1

Needs root (raw ICMP) or unprivileged ICMP. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.compare import addresses  # noqa: E402
from monitord.escalation.blastradius import BlastGuard  # noqa: E402
from monitord.shared.clock import SystemClock  # noqa: E402
from monitord.config import parse_config  # noqa: E402
from monitord.edge.metrics import Metrics  # noqa: E402
from monitord.paging.notify import Notifier  # noqa: E402
from monitord.paging.outbox import Outbox  # noqa: E402
from monitord.run.runner import run_probe  # noqa: E402
from monitord.records.state import SQLiteStore  # noqa: E402
from probes import ping  # noqa: E402
from monitord.shared.probe import ProbeContext  # noqa: E402


async def measure(n: int, recent: int, rounds: int) -> tuple[float, float]:
    """Median seconds of one decision: (the guard now, a sweep of every host-down check)."""
    hosts = "\n".join(f"  h{i}: {{address: {a}, checks: {{ping: {{count: 1, reply_timeout: 1s}}}}}}"
                      for i, a in enumerate(addresses(n)))
    config = parse_config(f"hosts:\n{hosts}\n")
    specs = {s.host: s for s in config.checks()}
    clock = SystemClock()
    ctx = ProbeContext()
    await ping.configure(ctx, "auto")

    async def answers(host: str) -> bool:
        spec = specs[host]
        return (await run_probe(spec.kind, ctx, spec.call(), spec.params, clock.time())).ok

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "state.db")
        notifier = Notifier(config=config, store=store, outbox=Outbox(store, clock), clock=clock, metrics=Metrics())
        failing = {f"h{i}": clock.time() for i in range(recent)}
        guard = BlastGuard(config=lambda: (config.escalation.blast_radius, n), store=store, notifier=notifier,
                           metrics=Metrics(), clock=clock, failing=lambda: failing, probe=answers)
        now_times, sweep_times = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            await guard.evaluate()
            now_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            await asyncio.gather(*(answers(h) for h in specs))
            sweep_times.append(time.perf_counter() - start)
        await store.close()
    await ctx.aclose()
    return statistics.median(now_times), statistics.median(sweep_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[3, 10_000])
    parser.add_argument("--recent", type=int, default=1, help="hosts whose failure is recent (probed again)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for n in args.hosts:
        guard, sweep = asyncio.run(measure(n, min(args.recent, n), args.rounds))
        print(f"{n:>6} hosts, {args.recent} recent failure(s): guard {guard * 1000:8.1f} ms, "
              f"sweep of every host-down check {sweep * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
