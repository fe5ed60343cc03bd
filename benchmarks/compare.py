"""The issue #12 comparison table in one command: monitord next to fping and blackbox_exporter.

    .venv/bin/python -m benchmarks.compare                 # every figure, 3 alternating rounds
    .venv/bin/python -m benchmarks.compare --only mixed sweep --rounds 5
    .venv/bin/python -m benchmarks.compare --repo /path/to/older/checkout   # monitord from there

Same loopback targets for both sides in each round, the two sides alternating (A B, B A, ...);
ratios are medians over the rounds. Throughput is per CPU-second of the prober's process only
(the targets and load generator run elsewhere), so a busy machine changes wall times but
hardly the ratios; /proc/loadavg is recorded with every figure. Figures:

- ``mixed``: tcp+http probes per CPU-second, each prober driven past its highest sustained rate:
  monitord's scheduler (a child process: checks due faster than it can run them, results
  recorded in its store) against prometheus-blackbox-exporter's ``/probe`` (driven by this
  process with 32 requests in flight; the exporter's CPU only); both against one nginx.
- ``sweep``: CPU of one ICMP sweep of N loopback addresses: monitord's shared pinger
  (``benchmarks/ping_sweep.py``'s child) against ``fping -c1 -q -i0``.
- ``scale``: N hosts x 5 checks (ping, tcp, http, https, ssh) at 60 s intervals through the
  scheduler for ``--scale-seconds``, scraped every 15 s (rendered in a thread, as the daemon
  does): lateness p99 and max, peak RSS, the CPU, size and series count of one scrape; with
  ``--tracemalloc`` the top allocation sites too.
- ``decision``: the blast-radius guard's decision at N hosts (``benchmarks/blast_radius.py``).

Writes ``--out``.json and ``--out``.md (default benchmarks/results/compare). Needs fping,
nginx and prometheus-blackbox-exporter (``apt-get install fping nginx
prometheus-blackbox-exporter``; checked at start) and root or unprivileged ICMP. A benchmark,
not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.environ.get("BENCH_REPO") or str(REPO))  # a child measures the monitord of --repo


def addresses(n: int) -> list[str]:
    """``n`` distinct loopback addresses, 127.0.0.1 upwards."""
    return [f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(1, n + 1)]


NEEDS = {"fping": "fping", "nginx": "nginx", "prometheus-blackbox-exporter": "prometheus-blackbox-exporter"}
KINDS = ("ping", "tcp", "http", "https", "ssh")
INFLIGHT = 32
"""Probes in flight for either prober in ``mixed``."""


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def process_cpu(pid: int) -> float:
    """User+system CPU seconds of a running process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_env(repo: Path) -> dict[str, str]:
    """A child Python importing monitord (and its benchmarks and test peers) from ``repo``."""
    return {**os.environ, "PYTHONPATH": str(repo), "BENCH_REPO": str(repo)}


def run_child(repo: Path, *args: str) -> dict:
    """This script with ``--child ...`` on the monitord of ``repo``: its last line of output, as JSON."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *args], env=child_env(repo),
                          cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- targets -----------------------------------------------------------------------------


class Targets:
    """nginx (http, https), a TCP banner server (ssh) in a child process, on loopback."""

    def __init__(self, tmp: Path) -> None:
        from tests.peers import PeerStarter, start_nginx
        self.peers = PeerStarter(tmp)
        self.http = start_nginx(self.peers, connections=4096).port
        self.https = start_nginx(self.peers, tls_days=90, connections=4096).port
        self.ssh = self._banner(tmp)

    def _banner(self, tmp: Path) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        code = ("import asyncio\n"
                "async def serve(r, w):\n"
                "    w.write(b'SSH-2.0-OpenSSH_9.2p1 bench\\r\\n'); await w.drain(); w.close()\n"
                "async def main():\n"
                f"    s = await asyncio.start_server(serve, '127.0.0.1', {port}, backlog=4096)\n"
                "    await s.serve_forever()\n"
                "asyncio.run(main())\n")
        from tests.support import Proc, wait_port
        self.banner = Proc([sys.executable, "-c", code], tmp / "banner.out")
        wait_port(port, timeout=10.0)
        return port

    def close(self) -> None:
        self.banner.stop()
        self.peers.stop_all()


# -- mixed: monitord -------------------------------------------------------------------------


def mixed_config(checks: int, port: int, state: Path) -> str:
    lines = [f"daemon: {{state_path: {state}, max_concurrency: {INFLIGHT}}}",
             "defaults: {intervals: {tcp: 1s, http: 1s}, timeout: 900ms, retry_interval: 1s}", "hosts:"]
    for i in range(checks):
        kind = "tcp" if i % 2 else "http"
        lines.append(f"  h{i}: {{address: 127.0.0.1, checks: {{c: {{kind: {kind}, port: {port}}}}}}}")
    return "\n".join(lines) + "\n"


async def child_mixed(checks: int, port: int, seconds: float) -> dict:
    """In a child: the scheduler on ``checks`` tcp/http checks due every second; probes per CPU-s."""
    from monitord.config import parse_config
    from monitord.edge.metrics import Metrics
    from monitord.records.state import SQLiteStore
    from monitord.run.scheduler import Scheduler
    from monitord.shared.clock import SystemClock
    from monitord.shared.probe import ProbeContext
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(mixed_config(checks, port, Path(tmp) / "state.db"))
        store, metrics, ctx = SQLiteStore(Path(tmp) / "state.db"), Metrics(), ProbeContext()
        scheduler = Scheduler(clock=SystemClock(), store=store, metrics=metrics, ctx=ctx, max_concurrency=INFLIGHT)
        settle = await start_up(scheduler, config)
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(3)  # warm up: past the first spread-out slots
        done0, cpu0 = results(metrics), cpu_self()
        await asyncio.sleep(seconds)
        done1, cpu1 = results(metrics), cpu_self()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ctx.aclose()
        await awaited(store.close())
    return {"probes": done1 - done0, "cpu": cpu1 - cpu0, "ok": ok_share(metrics), "gc_tuned": settle}


async def awaited(value):
    """``value``, awaited when this monitord's store and scheduler are awaitable (since the store
    interface of issue #10), so the harness measures older checkouts too."""
    return await value if inspect.isawaitable(value) else value


async def start_up(scheduler, config) -> bool:
    """Load the checks, then the daemon's post-start-up GC settling if this monitord has it."""
    await awaited(scheduler.load(config.checks()))
    try:
        from monitord.edge.daemon import settle_memory
    except ImportError:
        return False
    settle_memory()
    return True


def results(metrics) -> float:
    return sum(s.value for m in metrics.probe_results.collect() for s in m.samples if s.name.endswith("_total"))


def ok_share(metrics) -> float:
    samples = [s for m in metrics.probe_results.collect() for s in m.samples if s.name.endswith("_total")]
    total = sum(s.value for s in samples)
    return sum(s.value for s in samples if s.labels["status"] == "ok") / total if total else 0.0


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- mixed: blackbox_exporter --------------------------------------------------------------


def blackbox_mixed(tmp: Path, port: int, seconds: float) -> dict:
    """prometheus-blackbox-exporter probing the same nginx, driven at its max; its CPU only."""
    from tests.support import Proc, free_port, wait_port
    (tmp / "blackbox.yml").write_text(
        "modules:\n"
        "  http_2xx: {prober: http, timeout: 5s, http: {preferred_ip_protocol: ip4}}\n"
        "  tcp_connect: {prober: tcp, timeout: 5s, tcp: {preferred_ip_protocol: ip4}}\n")
    listen = free_port()
    proc = Proc([shutil.which("prometheus-blackbox-exporter"), f"--config.file={tmp / 'blackbox.yml'}",
                 f"--web.listen-address=127.0.0.1:{listen}"], tmp / "blackbox.out")
    try:
        wait_port(listen, timeout=10.0)
        urls = [f"http://127.0.0.1:{listen}/probe?module=http_2xx&target=http://127.0.0.1:{port}/",
                f"http://127.0.0.1:{listen}/probe?module=tcp_connect&target=127.0.0.1:{port}"]
        return asyncio.run(drive(urls, proc.popen.pid, seconds))
    finally:
        proc.stop()


async def drive(urls: list[str], pid: int, seconds: float) -> dict:
    import aiohttp
    counts = {"probes": 0, "ok": 0}
    measuring = asyncio.Event()

    async def worker(http: aiohttp.ClientSession, url: str) -> None:
        while True:
            async with http.get(url) as response:
                body = await response.text()
            if measuring.is_set():
                counts["probes"] += 1
                counts["ok"] += "\nprobe_success 1" in body
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=INFLIGHT)) as http:
        workers = [asyncio.create_task(worker(http, urls[i % 2])) for i in range(INFLIGHT)]
        await asyncio.sleep(3)
        measuring.set()
        cpu0 = process_cpu(pid)
        await asyncio.sleep(seconds)
        cpu1 = process_cpu(pid)
        measuring.clear()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return {"probes": counts["probes"], "cpu": cpu1 - cpu0, "ok": counts["ok"] / max(1, counts["probes"])}


# -- sweep ------------------------------------------------------------------------------------


def sweeps(repo: Path, tmp: Path, hosts: int) -> tuple[dict, dict]:
    """One sweep of ``hosts`` loopback addresses by monitord's pinger and by fping: CPU and alive."""
    targets = addresses(hosts)
    spec = tmp / "sweep.json"
    spec.write_text(json.dumps({"addresses": targets, "mode": "raw", "count": 1, "packet_interval": 0.2,
                                "reply_timeout": 1.0}))
    done = subprocess.run([sys.executable, str(repo / "benchmarks" / "ping_sweep.py"), "--child", str(spec)],
                          env=child_env(repo), capture_output=True, text=True, check=True)
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    fping = subprocess.run(["fping", "-c1", "-q", "-i0", "-t1000"], input="\n".join(targets), text=True,
                           capture_output=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    alive = sum("min/avg/max" in line for line in fping.stderr.splitlines())
    theirs = {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
              "alive": alive}
    return ours, theirs


# -- scale ------------------------------------------------------------------------------------


class Lateness:
    """Stands in for the lateness histogram (per kind or not) and keeps every observation."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.at: list[float] = []
        """When each was observed (monotonic): whether the worst are at start-up or at scrapes."""

    def labels(self, *_: str) -> "Lateness":
        return self

    def observe(self, value: float) -> None:
        self.values.append(value)
        self.at.append(time.monotonic())


def scale_config(hosts: int, t: dict, state: Path) -> str:
    """``hosts`` hosts with the five checks, all at 127.0.0.1 (where the targets listen)."""
    lines = [f"daemon: {{state_path: {state}, max_concurrency: 1000}}",
             "defaults: {intervals: {" + ", ".join(f"{k}: 60s" for k in KINDS) + "}, timeout: 5s, retry_interval: 60s}",
             "hosts:"]
    for i in range(hosts):
        lines.append(
            f"  h{i}: {{address: 127.0.0.1, checks: {{ping: {{count: 1, reply_timeout: 1s}}, "
            f"tcp: {{kind: tcp, port: {t['http']}}}, http: {{kind: http, port: {t['http']}}}, "
            f"https: {{kind: https, port: {t['https']}, tls_verify: false}}, ssh: {{kind: ssh, port: {t['ssh']}}}}}}}")
    return "\n".join(lines) + "\n"


async def child_scale(hosts: int, targets: dict, seconds: float, trace: bool) -> dict:
    """In a child: N hosts x 5 checks for ``seconds``, scraped every 15 s in a thread."""
    import tracemalloc
    from monitord.config import load_config
    from monitord.edge.metrics import Metrics
    from monitord.records.state import SQLiteStore
    from monitord.run.scheduler import Scheduler
    from monitord.shared.clock import SystemClock
    from monitord.shared.probe import ProbeContext
    from probes import ping
    if trace:
        tracemalloc.start(1)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "monitord.yaml").write_text(scale_config(hosts, targets, Path(tmp) / "state.db"))
        config = load_config(Path(tmp) / "monitord.yaml")  # as the daemon loads it
        store, metrics, ctx = SQLiteStore(Path(tmp) / "state.db"), Metrics(), ProbeContext()
        lateness = metrics.lateness = Lateness()
        await ping.configure(ctx, "auto")
        scheduler = Scheduler(clock=SystemClock(), store=store, metrics=metrics, ctx=ctx,
                              max_concurrency=config.daemon.max_concurrency)
        await start_up(scheduler, config)
        rss_loaded = rss_now()
        loaded = tracemalloc.take_snapshot() if trace else None
        pauses: list[tuple[float, float]] = []  # (ms, s into the run) of each full collection

        def collected(phase: str, info: dict, started: list[float] = [0.0]) -> None:
            if info["generation"] == 2:
                if phase == "start":
                    started[0] = time.monotonic()
                else:
                    pauses.append((round((time.monotonic() - started[0]) * 1000), started[0]))
        gc.callbacks.append(collected)
        task = asyncio.create_task(scheduler.run())
        scrapes = []
        cpu0, wall0 = cpu_self(), time.monotonic()
        while time.monotonic() - wall0 < seconds:
            await asyncio.sleep(15)
            scrapes.append({"at": time.monotonic(), **await asyncio.to_thread(scrape, metrics)})
        cpu1 = cpu_self()
        gc.callbacks.remove(collected)
        top = []
        if loaded is not None:  # where the memory held after loading went, and what running added
            snapshot = tracemalloc.take_snapshot()
            top = [f"{stat.traceback[0].filename.removeprefix(str(REPO) + '/')}:{stat.traceback[0].lineno} "
                   f"{stat.size / 2**20:.1f} MiB" for stat in loaded.statistics("lineno")[:12]]
            top += [f"running: {stat.traceback[0].filename.removeprefix(str(REPO) + '/')}:{stat.traceback[0].lineno} "
                    f"{stat.size_diff / 2**20:+.1f} MiB" for stat in snapshot.compare_to(loaded, "lineno")[:12]]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ctx.aclose()
        await awaited(store.close())
    worst = sorted(zip(lateness.values, lateness.at), reverse=True)[:10]
    values = sorted(lateness.values) or [0.0]
    last = scrapes[-1] if scrapes else {}
    return {"checks": hosts * 5, "probes": len(lateness.values), "cpu": cpu1 - cpu0,
            "lateness_p99_ms": values[max(0, int(len(values) * 0.99) - 1)] * 1000, "lateness_max_ms": values[-1] * 1000,
            "lateness_worst": [(round(v * 1000), round(at - wall0, 1)) for v, at in worst],  # (ms, s into the run)
            "scrapes_at": [round(s["at"] - wall0, 1) for s in scrapes], "full_collections": [(ms, round(at - wall0, 1)) for ms, at in pauses],
            "rss_loaded_mib": rss_loaded, "rss_mib": rss_now(), "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "scrape_cpu_ms": max(s["cpu_ms"] for s in scrapes) if scrapes else None,
            "scrape_mb": last.get("mb"), "scrape_series": last.get("series"), "tracemalloc_top": top,
            "results": {" ".join(s.labels.values()): s.value for m in metrics.probe_results.collect() for s in m.samples
                        if s.name.endswith("_total")}}


def scrape(metrics) -> dict:
    """One exposition, as the daemon renders it (in a thread): its CPU, size and series."""
    start = time.thread_time()
    text = metrics.exposition()
    cpu = time.thread_time() - start
    return {"cpu_ms": cpu * 1000, "mb": len(text) / 1e6, "series": sum(1 for line in text.splitlines()
                                                                        if line and not line.startswith(b"#"))}


def rss_now() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the table --------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_all(args: argparse.Namespace) -> dict:
    report: dict = {"machine": machine(), "repo": str(args.repo), "loop": args.loop, "rounds": args.rounds, "figures": {}}
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp_name:
        tmp = Path(tmp_name)
        targets = Targets(tmp)
        try:
            if "mixed" in args.only:
                report["figures"]["mixed"] = mixed(args, tmp, targets)
            if "sweep" in args.only:
                report["figures"]["sweep"] = sweep(args, tmp)
            if "scale" in args.only:
                t = {"http": targets.http, "https": targets.https, "ssh": targets.ssh}
                figure = run_child(args.repo, "scale", str(args.hosts), json.dumps(t), str(args.scale_seconds),
                                   "1" if args.tracemalloc else "0")
                report["figures"]["scale"] = {**figure, "loadavg": loadavg()}
            if "decision" in args.only:
                figure = run_child(args.repo, "decision", str(args.hosts))
                report["figures"]["decision"] = {**figure, "loadavg": loadavg()}
        finally:
            targets.close()
    return report


def mixed(args: argparse.Namespace, tmp: Path, targets: Targets) -> dict:
    rounds = []
    for i in range(args.rounds):
        order = ("monitord", "blackbox") if i % 2 == 0 else ("blackbox", "monitord")
        row: dict = {"order": order}
        for side in order:
            if side == "monitord":
                row[side] = run_child(args.repo, "mixed", str(args.mixed_checks), str(targets.http),
                                      str(args.mixed_seconds))
            else:
                row[side] = blackbox_mixed(tmp, targets.http, args.mixed_seconds)
            row[side]["per_cpu_s"] = row[side]["probes"] / row[side]["cpu"]
            row[side]["loadavg"] = loadavg()
        row["ratio"] = row["monitord"]["per_cpu_s"] / row["blackbox"]["per_cpu_s"]
        rounds.append(row)
        print(f"mixed round {i + 1}: monitord {row['monitord']['per_cpu_s']:,.0f}/CPU-s, blackbox "
              f"{row['blackbox']['per_cpu_s']:,.0f}/CPU-s, ratio {row['ratio']:.2f}", file=sys.stderr)
    return {"rounds": rounds, "monitord_per_cpu_s": median([r["monitord"]["per_cpu_s"] for r in rounds]),
            "blackbox_per_cpu_s": median([r["blackbox"]["per_cpu_s"] for r in rounds]),
            "ratio": median([r["ratio"] for r in rounds])}


def sweep(args: argparse.Namespace, tmp: Path) -> dict:
    rounds = []
    for i in range(args.rounds):
        ours, theirs = sweeps(args.repo, tmp, args.hosts)
        rounds.append({"monitord": ours, "fping": theirs, "ratio": ours["cpu"] / max(theirs["cpu"], 1e-3),
                       "loadavg": loadavg()})
        print(f"sweep round {i + 1}: monitord {ours['cpu']:.2f} s CPU ({ours['alive']} alive), fping "
              f"{theirs['cpu']:.2f} s ({theirs['alive']} alive)", file=sys.stderr)
    return {"rounds": rounds, "monitord_cpu_s": median([r["monitord"]["cpu"] for r in rounds]),
            "fping_cpu_s": median([r["fping"]["cpu"] for r in rounds]),
            "ratio": median([r["ratio"] for r in rounds])}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0], "kernel": os.uname().release,
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg_start": loadavg()}


def markdown(report: dict) -> str:
    f = report["figures"]
    rows = ["| figure | monitord | anchor | ratio / goal | loadavg |", "|---|---|---|---|---|"]
    if m := f.get("mixed"):
        rows.append(f"| mixed tcp+http probes per CPU-second (median of {len(m['rounds'])}) | "
                    f"{m['monitord_per_cpu_s']:,.0f} | blackbox_exporter {m['blackbox_per_cpu_s']:,.0f} | "
                    f"{m['ratio']:.2f}x (goal >= 3x) | {m['rounds'][-1]['monitord']['loadavg']} |")
    if s := f.get("sweep"):
        rows.append(f"| {report['hosts']:,}-host ICMP sweep, CPU (median of {len(s['rounds'])}) | "
                    f"{s['monitord_cpu_s']:.2f} s | fping -c1 -q -i0 {s['fping_cpu_s']:.2f} s | "
                    f"{s['ratio']:.1f}x (goal <= 2x) | {s['rounds'][-1]['loadavg']} |")
    if c := f.get("scale"):
        rows.append(f"| {c['checks']:,} checks at 60 s: lateness p99 / max | {c['lateness_p99_ms']:,.0f} ms / "
                    f"{c['lateness_max_ms']:,.0f} ms | — | goal < 100 ms / < 250 ms | {c['loadavg']} |")
        rows.append(f"| same: RSS after loading / at the end / peak (parsing) | {c['rss_loaded_mib']:,.0f} / "
                    f"{c['rss_mib']:,.0f} / {c['max_rss_mib']:,.0f} MiB | — | goal < 300 MiB | {c['loadavg']} |")
        rows.append(f"| one /metrics scrape | {c['scrape_cpu_ms']:,.0f} ms CPU, {c['scrape_mb']:.1f} MB, "
                    f"{c['scrape_series']:,} series | — | goal < 250 ms, <= 3 series per check | {c['loadavg']} |")
    if d := f.get("decision"):
        rows.append(f"| failure -> power decision, {report['hosts']:,} hosts | {d['guard_ms']:,.1f} ms | "
                    f"old path (sweep of every host-down check) {d['sweep_ms']:,.0f} ms | goal < 200 ms | "
                    f"{d['loadavg']} |")
    m = report["machine"]
    return (f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Python {m['python']}, kernel "
            f"{m['kernel']}; {m['at']}; monitord from {report['repo']}\n\n" + "\n".join(rows) + "\n")


def daemon_loop_is_uvloop() -> bool:
    """Whether the measured monitord runs its daemon on uvloop (older ones: asyncio's loop)."""
    try:
        from monitord.edge.cli import event_loop_runner
    except ImportError:
        return False
    return event_loop_runner().__module__.startswith("uvloop")


def child(argv: list[str]) -> None:
    what = argv[0]
    loop = os.environ.get("BENCH_LOOP", "daemon")
    if loop == "uvloop" or (loop == "daemon" and daemon_loop_is_uvloop()):
        import uvloop
        uvloop.install()
    if what == "mixed":
        result = asyncio.run(child_mixed(int(argv[1]), int(argv[2]), float(argv[3])))
    elif what == "scale":
        result = asyncio.run(child_scale(int(argv[1]), json.loads(argv[2]), float(argv[3]), argv[4] == "1"))
    elif what == "decision":
        from benchmarks.blast_radius import measure
        guard, sweep_time = asyncio.run(measure(int(argv[1]), 1, 3))
        result = {"guard_ms": guard * 1000, "sweep_ms": sweep_time * 1000}
    else:
        raise SystemExit(f"unknown child {what}")
    print(json.dumps(result))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--table":  # the markdown of a JSON result, again
        print(markdown(json.loads(Path(sys.argv[2]).read_text())), end="")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=["mixed", "sweep", "scale", "decision"],
                        default=["mixed", "sweep", "scale", "decision"])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds for the ratios (default 3)")
    parser.add_argument("--hosts", type=int, default=10_000, help="hosts for sweep, scale, decision")
    parser.add_argument("--mixed-checks", type=int, default=3000, help="checks due every second in 'mixed'")
    parser.add_argument("--mixed-seconds", type=float, default=15.0)
    parser.add_argument("--scale-seconds", type=float, default=150.0)
    parser.add_argument("--tracemalloc", action="store_true", help="top allocation sites in 'scale' (slower)")
    parser.add_argument("--loop", choices=["daemon", "asyncio", "uvloop"], default="daemon",
                        help="monitord's event loop in the children (default: the one its daemon runs on)")
    parser.add_argument("--repo", type=Path, default=REPO, help="the monitord checkout to measure")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "compare")
    args = parser.parse_args()
    missing = [package for binary, package in NEEDS.items() if not shutil.which(binary)]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} (apt-get install {' '.join(missing)})")
    os.environ["BENCH_LOOP"] = args.loop
    report = run_all(args)
    report["hosts"] = args.hosts
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
