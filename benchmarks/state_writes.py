"""Check-state writes through the real scheduler: one commit per result (as before issue #12)
against one transaction per scheduler tick (``Scheduler.flush``, what the daemon does now).

    .venv/bin/python benchmarks/state_writes.py --checks 10000 --results 50000 --per-tick 170

Every result goes through ``Scheduler.run_now`` (the runner, the state machine, metrics and
the store) with a probe kind that answers at once, so the figures are the recording path's
own cost. ``--per-tick`` results share a transaction in the batched mode: 170 is a fleet of
10,000 checks at 60 s intervals (167 results a second, one tick a second). Reports results
per second and process CPU microseconds per result for each mode, alternating the modes over
``--runs`` runs and giving the median. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitord.config import CheckSpec  # noqa: E402
from monitord.edge.metrics import Metrics  # noqa: E402
from monitord.records.state import SQLiteStore  # noqa: E402
from monitord.run.scheduler import Scheduler  # noqa: E402
from monitord.shared.clock import SystemClock  # noqa: E402
from monitord.shared.probe import CheckParams, ProbeContext, ProbeKind  # noqa: E402
from monitord.shared.results import Outcome, Status  # noqa: E402


class Params(CheckParams):
    kind: Literal["instant"] = "instant"


async def answer(ctx, call, params) -> Outcome:
    return Outcome(Status.OK, "fine", values={"rtt": 0.1})


KIND = ProbeKind("instant", Params, answer, 60.0, "answers at once")


async def run(path: Path, checks: int, results: int, per_tick: int | None) -> tuple[float, float]:
    """(results per second, CPU microseconds per result); ``per_tick`` None: a commit per result."""
    store = SQLiteStore(path)
    scheduler = Scheduler(clock=SystemClock(), store=store, metrics=Metrics(), ctx=ProbeContext(), max_concurrency=10)
    specs = [CheckSpec(id=f"h{i}/instant", host=f"h{i}", name="instant", address="127.0.0.1", kind=KIND,
                       params=Params(), interval=60.0, retry_interval=60.0, max_attempts=3, timeout=5.0)
             for i in range(checks)]
    await scheduler.load(specs)
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(results):
        await scheduler.run_now(specs[n % checks].id)
        if per_tick is None or (n + 1) % per_tick == 0:
            await scheduler.flush()
    await scheduler.flush()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await store.close()
    return results / wall, cpu / results * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=10000)
    parser.add_argument("--results", type=int, default=50000)
    parser.add_argument("--per-tick", type=int, default=170)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, list[tuple[float, float]]] = {"per result": [], "per tick": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for mode, per_tick in (("per result", None), ("per tick", args.per_tick)):
                path = Path(tmp) / f"{i}-{per_tick}.db"
                figures[mode].append(asyncio.run(run(path, args.checks, args.results, per_tick)))
    print(f"{args.checks} checks, {args.results} results, median of {args.runs} alternating runs")
    print(f"{'commit':<11} {'results/s':>10} {'CPU us/result':>14}")
    for mode, runs in figures.items():
        print(f"{mode:<11} {statistics.median(r for r, _ in runs):>10.0f} "
              f"{statistics.median(c for _, c in runs):>14.1f}")


if __name__ == "__main__":
    main()
