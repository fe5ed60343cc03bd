"""Benchmark: one sweep of N hosts (D of them dead) through the shared pinger, next to fping.

Builds a fresh namespace pair (``tests/netns.py``): N addresses of 10.201.0.0/16 answer from
the host namespace, D of them drop echo requests (nft). In the monitor namespace it runs

- monitord: one ``run_probe`` per host, all at once, through one ProbeContext (as the
  scheduler does when N checks fall due together), in a child Python;
- fping on the same address list with the same count, timeout and packet period;

and prints wall time, CPU seconds, peak RSS, how many hosts answered and the median RTT.
Needs root, iproute2, nft and fping. Run from the repository root:

    python benchmarks/ping_sweep.py --hosts 10000 --dead 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.netns import NetnsPair, repo_env  # noqa: E402

NETWORK = "10.201.0.0/16"
MAX_HOSTS = 60_000
RUN_TIMEOUT = 300.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000, help="addresses to sweep (default 10000)")
    parser.add_argument("--dead", type=int, default=300, help="how many of them drop pings (default 300)")
    parser.add_argument("--count", type=int, default=1, help="echo requests per host (default 1)")
    parser.add_argument("--packet-interval", type=float, default=0.2, help="seconds between a host's packets")
    parser.add_argument("--reply-timeout", type=float, default=1.0, help="seconds to wait for each reply")
    parser.add_argument("--mode", choices=["raw", "datagram"], default="raw", help="ICMP socket kind")
    parser.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.hosts <= MAX_HOSTS or not 0 <= args.dead <= args.hosts:
        parser.error(f"need 1 <= --hosts <= {MAX_HOSTS} and 0 <= --dead <= --hosts")
    return args


def child(spec_path: str) -> None:
    """In the monitor namespace: sweep every address through the shared pinger, print JSON."""
    from monitord.shared.results import Status
    from monitord.run.runner import run_probe
    from probes import ping
    from monitord.shared.probe import ProbeCall, ProbeContext

    spec = json.loads(Path(spec_path).read_text())
    params = ping.PingParams(count=spec["count"], packet_interval=spec["packet_interval"],
                             reply_timeout=spec["reply_timeout"])
    timeout = params.duration() + 5

    async def sweep() -> list:
        ctx = ProbeContext()
        try:
            await ping.configure(ctx, spec["mode"])
            await ping.pingers(ctx)
            return await asyncio.gather(*(
                run_probe(ping.KIND, ctx, ProbeCall(address, address, timeout), params, time.time())
                for address in spec["addresses"]
            ))
        finally:
            await ctx.aclose()

    from monitord.edge.cli import event_loop_runner  # the daemon's event loop, unless compare.py --loop says
    run = {"asyncio": asyncio.run}.get(os.environ.get("BENCH_LOOP", ""), event_loop_runner())
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    results = run(sweep())
    wall, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_SELF)
    alive = [r for r in results if r.status is Status.OK]
    print(json.dumps({
        "wall": wall,
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "alive": len(alive),
        "rtt_median_ms": statistics.median(r.values["rtt_avg_ms"] for r in alive) if alive else None,
    }))


def measured(argv: list[str], out: Path) -> tuple[float, float, int]:
    """Run ``argv`` with stdout+stderr to ``out``: its wall seconds, CPU seconds and peak RSS (KiB)."""
    with open(out, "wb") as sink:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=repo_env())
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode not in (0, 1):  # fping exits 1 when some hosts are unreachable
        raise RuntimeError(f"{argv[4]} exited {proc.returncode}: {out.read_text()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def fping_summary(text: str) -> tuple[int, float | None]:
    """Hosts that answered and their median average RTT, from ``fping -c N -q`` output."""
    avgs = []
    for line in text.splitlines():
        # "10.201.0.1 : xmt/rcv/%loss = 1/1/0%, min/avg/max = 0.05/0.05/0.05"
        if "min/avg/max" in line:
            avgs.append(float(line.rsplit("=", 1)[1].split("/")[1]))
    return len(avgs), (statistics.median(avgs) if avgs else None)


def main() -> None:
    """Build the namespaces, run both sweeps, print the table, clean up."""
    args = parse_args()
    if args.child:
        child(args.child)
        return
    rng = random.Random(1)
    with NetnsPair("mdb") as pair, tempfile.TemporaryDirectory(prefix="ping-sweep-") as tmp:
        work = Path(tmp)
        addresses = pair.add_hosts(NETWORK, args.hosts)
        dead = rng.sample(addresses, args.dead)
        if dead:
            pair.drop_echo(dead)
        if args.mode == "datagram":
            pair.sysctl(pair.mon, "net.ipv4.ping_group_range", "0 2147483647")
        (work / "hosts.txt").write_text("\n".join(addresses) + "\n")
        spec = {"addresses": addresses, "mode": args.mode, "count": args.count,
                "packet_interval": args.packet_interval, "reply_timeout": args.reply_timeout}
        (work / "spec.json").write_text(json.dumps(spec))

        ours = pair.exec_argv(pair.mon, [sys.executable, __file__, "--child", str(work / "spec.json")])
        wall, cpu, rss = measured(ours, work / "monitord.out")
        report = json.loads((work / "monitord.out").read_text().splitlines()[-1])
        rows = [("monitord (shared pinger)", report["wall"], report["cpu"], wall, cpu, rss,
                 report["alive"], report["rtt_median_ms"])]

        fping = pair.exec_argv(pair.mon, [
            "fping", "-q", "-c", str(args.count), "-p", str(int(args.packet_interval * 1000)), "-i", "0",
            "-t", str(int(args.reply_timeout * 1000)), "-f", str(work / "hosts.txt"),
        ])
        wall, cpu, rss = measured(fping, work / "fping.out")
        alive, rtt = fping_summary((work / "fping.out").read_text())
        rows.append(("fping -i 0", wall, cpu, wall, cpu, rss, alive, rtt))

    print(f"{args.hosts} hosts, {args.dead} dead, count {args.count}, reply timeout {args.reply_timeout:g} s, "
          f"{args.mode} socket; expected alive: {args.hosts - args.dead}")
    print(f"{'':26} {'sweep wall':>10} {'sweep CPU':>10} {'proc wall':>10} {'proc CPU':>10} "
          f"{'peak RSS':>10} {'alive':>7} {'RTT med':>9}")
    for name, sweep_wall, sweep_cpu, proc_wall, proc_cpu, rss, alive, rtt in rows:
        rtt_text = f"{rtt:.3f}ms" if rtt is not None else "-"
        print(f"{name:26} {sweep_wall:9.2f}s {sweep_cpu:9.2f}s {proc_wall:9.2f}s {proc_cpu:9.2f}s "
              f"{rss / 1024:7.1f}MiB {alive:7d} {rtt_text:>9}")


if __name__ == "__main__":
    main()
