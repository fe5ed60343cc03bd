"""The ``monitord`` command line.

Exit codes: 0 success; 1 a probe is not OK (``probe-once``) or the daemon failed at run
time; 2 bad usage or an invalid configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import Counter
from typing import Sequence

from monitord import __version__
from monitord.config import ConfigError, load_config, json_schema
from monitord.fields import format_duration
from monitord.runner import run_probe
from monitord.state import StateError
from probes.base import ProbeCall, ProbeContext

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
DEFAULT_CONFIG = "/etc/monitord/monitord.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monitord`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monitord", description="Monitoring and auto-remediation daemon.")
    parser.add_argument("--version", action="version", version=f"monitord {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    run.add_argument("--dry-run", action="store_true", help="decide and journal, never act")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override daemon.log_level")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a config file and summarise it")
    check.add_argument("path")
    check.set_defaults(func=_cmd_check_config)

    once = sub.add_parser("probe-once", help="run a host's checks now and print the results")
    once.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    once.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    once.add_argument("host")
    once.add_argument("check", nargs="?", help="only this check (default: all of the host's checks)")
    once.set_defaults(func=_cmd_probe_once)

    schema = sub.add_parser("schema", help="print the config file's JSON Schema")
    schema.set_defaults(func=_cmd_schema)
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def _cmd_run(args: argparse.Namespace) -> int:
    from monitord.daemon import Daemon  # the daemon's imports are not needed by the other commands

    config = load_config(args.config)
    _setup_logging(args.log_level or config.daemon.log_level)

    async def serve() -> None:
        await Daemon(args.config, config, dry_run=args.dry_run).run()

    try:
        asyncio.run(serve())
    except (StateError, PermissionError, OSError) as exc:
        logging.getLogger("monitord").error("%s", exc)
        return EXIT_FAIL
    return EXIT_OK


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.path)
    checks = config.checks()
    print(f"{args.path}: OK")
    groups = Counter(g for host in config.hosts.values() for g in host.groups)
    tags = Counter(t for host in config.hosts.values() for t in host.tags)
    print(f"  hosts: {len(config.hosts)}" + (f" (groups: {_counts(groups)})" if groups else ""))
    if tags:
        print(f"  tags: {_counts(tags)}")
    disabled = len(config.disabled_checks())
    print(f"  checks: {len(checks)} enabled" + (f", {disabled} disabled" if disabled else "")
          + (f" ({_counts(Counter(s.kind.name for s in checks))})" if checks else ""))
    print(f"  state: {config.daemon.state_path}   metrics: http://{config.daemon.metrics_listen}/metrics")
    schedules = Counter(
        (s.kind.name, s.interval, s.retry_interval, s.max_attempts, s.timeout) for s in checks
    )
    if schedules:
        print("  effective schedules:")
        rows = [("KIND", "CHECKS", "INTERVAL", "RETRY", "ATTEMPTS", "TIMEOUT")]
        for (kind, interval, retry, attempts, timeout), n in sorted(schedules.items()):
            rows.append((kind, str(n), format_duration(interval), format_duration(retry), str(attempts),
                         format_duration(timeout)))
        _print_table(rows, indent="    ")
    return EXIT_OK


def _counts(counter: Counter) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items()))


def _cmd_probe_once(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    _setup_logging("warning")
    if args.host not in config.hosts:
        print(f"monitord: no host {args.host!r} in {args.config}", file=sys.stderr)
        return EXIT_USAGE
    specs = [s for s in config.checks() + config.disabled_checks() if s.host == args.host]
    if args.check:
        specs = [s for s in specs if s.name == args.check]
        if not specs:
            print(f"monitord: host {args.host!r} has no check {args.check!r}", file=sys.stderr)
            return EXIT_USAGE
    from probes import ping

    async def probe_all() -> list:
        ctx = ProbeContext()
        try:
            await ping.configure(ctx, config.daemon.ping.privileged, needed=any(s.kind is ping.KIND for s in specs))
            return await asyncio.gather(*(
                run_probe(s.kind, ctx, ProbeCall(s.host, s.address, s.timeout), s.params, time.time()) for s in specs
            ))
        finally:
            await ctx.aclose()

    try:
        results = asyncio.run(probe_all())
    except PermissionError as exc:
        print(f"monitord: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        for spec, result in zip(specs, results):
            print(json.dumps({"host": spec.host, "check": spec.name, "kind": spec.kind.name, **result.to_dict()},
                             ensure_ascii=False))
    else:
        rows = [("CHECK", "KIND", "STATUS", "REASON", "TIME", "SUMMARY")]
        for spec, result in zip(specs, results):
            rows.append((spec.name, spec.kind.name, str(result.status), str(result.reason) or "-",
                         f"{result.duration * 1000:.0f}ms", result.summary))
        _print_table(rows)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAIL


def _cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def _print_table(rows: list[tuple[str, ...]], indent: str = "") -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        print(indent + "  ".join(cells).rstrip())
