"""Where the SQLite store should do its work behind the awaitable interface: inline (the
statement runs inside the ``async def``, on the event loop) or on one dedicated thread (each
call handed over with ``run_in_executor``). And what batching check-state writes into one
transaction per tick buys over one commit per result.

    .venv/bin/python benchmarks/store_modes.py --results 20000 --tick 500 --durable 300

For each mode and workload it reports operations per second, process CPU microseconds per
operation, and the longest stall of the event loop (a 1 ms ticker's worst lateness) while the
writes run, so the cost to the scheduler's punctuality shows next to the throughput:

- ``per-result``: one ``INSERT OR REPLACE INTO check_state`` and commit per result (the old
  ``Scheduler._record``), ``synchronous=NORMAL``;
- ``per-tick``: the same rows, ``--tick`` of them per transaction (``CheckRepository.flush``);
- ``durable``: a journal append committed with ``synchronous=FULL`` (what precedes an action).

A benchmark, not a test. The choice it informed and its numbers are in docs/design.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitord.records.state import SQLiteStore  # noqa: E402

ROW = json.dumps({"status": 0, "summary": "rtt 0.1 ms", "started_at": 1.0, "duration": 0.001, "values": {}})


def statements(db, workload: str, n: int, tick: int) -> list[Callable[[], None]]:
    """The work of ``workload`` as ``n`` units (a unit is one commit)."""
    def state(i: int) -> tuple:
        return (f"h{i}/ping", 0, 1, 0, float(i), 0.0, None, ROW, None)

    def per_result(i: int) -> Callable[[], None]:
        def run() -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO check_state VALUES (?,?,?,?,?,?,?,?,?)", state(i))
            db.execute("COMMIT")
        return run

    def per_tick(i: int) -> Callable[[], None]:
        def run() -> None:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO check_state VALUES (?,?,?,?,?,?,?,?,?)",
                           [state(i * tick + j) for j in range(tick)])
            db.execute("COMMIT")
        return run

    def durable(i: int) -> Callable[[], None]:
        def run() -> None:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO journal (ts, event, host, decision, reason) VALUES (?,?,?,?,?)",
                       (float(i), "decided", f"h{i}", "power_reset", "ping down"))
            db.execute("COMMIT")
            db.execute("PRAGMA synchronous=NORMAL")
        return run

    make = {"per-result": per_result, "per-tick": per_tick, "durable": durable}[workload]
    return [make(i) for i in range(n)]


async def measure(units: list[Callable[[], None]], threaded: bool) -> tuple[float, float, float]:
    """(seconds, CPU seconds, longest loop stall) running ``units`` one after another."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1, thread_name_prefix="store") if threaded else None
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            before = loop.time()
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - before - 0.001)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    wall, cpu = time.perf_counter(), time.process_time()
    for unit in units:
        if pool is not None:
            await loop.run_in_executor(pool, unit)
        else:
            unit()
            await asyncio.sleep(0)  # the scheduler's other tasks get their turn between results
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done = True
    await tick
    if pool is not None:
        pool.shutdown()
    return wall, cpu, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=20000, help="check results written")
    parser.add_argument("--tick", type=int, default=500, help="results per tick transaction")
    parser.add_argument("--durable", type=int, default=300, help="durable journal appends")
    args = parser.parse_args()
    work = {"per-result": (args.results, 1), "per-tick": (args.results // args.tick, args.tick),
            "durable": (args.durable, 1)}
    print(f"{'workload':<11} {'mode':<7} {'ops/s':>10} {'CPU us/op':>10} {'max stall ms':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for workload, (units, per_unit) in work.items():
            for threaded in (False, True):
                store = SQLiteStore(Path(tmp) / f"{workload}-{threaded}.db")
                db = store._db
                wall, cpu, stall = asyncio.run(measure(statements(db, workload, units, args.tick), threaded))
                ops = units * per_unit
                print(f"{workload:<11} {'thread' if threaded else 'inline':<7} {ops / wall:>10.0f} "
                      f"{cpu / ops * 1e6:>10.1f} {stall * 1000:>13.1f}")
                asyncio.run(store.close())


if __name__ == "__main__":
    main()
