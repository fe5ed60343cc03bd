"""How long opening the state store takes as the journal grows: ``PRAGMA quick_check`` and
the schema checks run at every open (the daemon's start and every CLI verb).

    .venv/bin/python benchmarks/store_open.py --rows 100000 300000 1000000

Journal rows carry a ~200-byte reason and a small JSON detail, like real decisions. A
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitord.records.state import SQLiteStore  # noqa: E402


async def fill(store: SQLiteStore, rows: int, start: int) -> None:
    """Append journal rows until the journal has ``rows`` (bulk insert, one transaction)."""
    async with store.transaction():
        store._db.executemany(
            "INSERT INTO journal (ts, event, host, decision, reason, detail) VALUES (?,?,?,?,?,?)",
            ((float(i), "decided", f"host{i % 5000}", "power_reset", "x" * 200, '{"level": 1, "driver": "ipmi"}')
             for i in range(start, rows)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.db"
        done = 0
        print(f"{'ROWS':>10} {'SIZE MB':>8} {'OPEN s':>7}")
        for rows in sorted(args.rows):
            store = SQLiteStore(path)
            asyncio.run(fill(store, rows, done))
            asyncio.run(store.close())
            done = rows
            began = time.perf_counter()
            asyncio.run(SQLiteStore(path).close())
            print(f"{rows:>10} {path.stat().st_size / 1e6:>8.1f} {time.perf_counter() - began:>7.2f}")


if __name__ == "__main__":
    main()
