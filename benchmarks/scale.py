"""Scale benchmark: N checks through the real scheduler on loopback targets.

Half the checks ping 127.0.x.y addresses, half connect to a TCP listener on 127.0.0.1. The
interval is shortened so the run sees many rounds. Reports probes/s, CPU seconds, p50/p99
scheduler lateness and RSS, then runs fping on the same address list for comparison.

    .venv/bin/python benchmarks/scale.py --checks 10000 --interval 20 --duration 60

Needs root (raw ICMP) or unprivileged ICMP; fping is optional. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitord.shared.clock import SystemClock  # noqa: E402
from monitord.config import parse_config  # noqa: E402
from monitord.edge.metrics import Metrics  # noqa: E402
from monitord.run.scheduler import Scheduler  # noqa: E402
from monitord.records.state import SQLiteStore  # noqa: E402
from probes import ping  # noqa: E402
from monitord.shared.probe import ProbeContext  # noqa: E402


def addresses(n: int) -> list[str]:
    """``n`` distinct loopback addresses, 127.0.0.1 upwards."""
    return [f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(1, n + 1)]


class Recorder:
    """Stands in for the lateness histogram to keep every observation."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)


def build_config(n: int, interval: float, tcp_port: int, state: Path) -> str:
    lines = [f"daemon: {{state_path: {state}, max_concurrency: 1000}}",
             f"defaults: {{intervals: {{ping: {interval}, tcp: {interval}}}, timeout: 2s, retry_interval: {interval}}}",
             "hosts:"]
    for i, address in enumerate(addresses(n // 2 + n % 2)):
        lines.append(f"  p{i}: {{address: {address}, checks: {{ping: {{count: 1, reply_timeout: 1s}}}}}}")
    for i in range(n // 2):
        lines.append(f"  t{i}: {{address: 127.0.0.1, checks: {{tcp: {{port: {tcp_port}}}}}}}")
    return "\n".join(lines) + "\n"


async def run(n: int, interval: float, duration: float) -> dict:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    server = await asyncio.start_server(lambda r, w: w.close(), sock=listener)
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(build_config(n, interval, listener.getsockname()[1], Path(tmp) / "state.db"))
        store = SQLiteStore(Path(tmp) / "state.db")
        metrics = Metrics()
        recorder = Recorder()
        metrics.lateness = recorder
        ctx = ProbeContext()
        await ping.configure(ctx, "auto")
        scheduler = Scheduler(clock=SystemClock(), store=store, metrics=metrics, ctx=ctx,
                              max_concurrency=config.daemon.max_concurrency)
        scheduler.load(config.checks())
        usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(duration)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        usage1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await ctx.aclose()
        store.close()
    server.close()
    lateness = sorted(recorder.values) or [0.0]
    return {
        "checks": n,
        "probes": len(recorder.values),
        "probes/s": len(recorder.values) / (wall1 - wall0),
        "cpu s": (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
        "lateness p50 ms": statistics.median(lateness) * 1000,
        "lateness p99 ms": lateness[int(len(lateness) * 0.99) - 1 if len(lateness) > 1 else 0] * 1000,
        "max RSS MiB": usage1.ru_maxrss / 1024,
    }


def fping(n: int) -> str:
    """fping -c1 -i0 over the same ping addresses, as a yardstick."""
    binary = shutil.which("fping")
    if not binary:
        return "fping not installed"
    targets = "\n".join(addresses(n // 2 + n % 2))
    start = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([binary, "-q", "-c1", "-i0", "-t1000"], input=targets, text=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return f"fping of {n // 2 + n % 2} addresses: {time.monotonic() - start:.2f} s wall, {cpu:.2f} s CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=20.0, help="seconds between runs of each check")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run")
    args = parser.parse_args()
    result = asyncio.run(run(args.checks, args.interval, args.duration))
    for key, value in result.items():
        print(f"{key:>16}: {value:,.2f}" if isinstance(value, float) else f"{key:>16}: {value:,}")
    print(fping(args.checks))


if __name__ == "__main__":
    main()
