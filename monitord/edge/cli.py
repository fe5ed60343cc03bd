"""The ``monitord`` command line.

Exit codes: 0 success; 1 a probe is not OK (``probe-once``) or the daemon failed at run
time; 2 bad usage or an invalid configuration; 3 the state store is unusable (damaged, not
monitord's, newer than this monitord, disk full, no permission); 4 another daemon already
runs on the state store (``run``).

Only ``run`` takes the store's daemon lock (with ``--dry-run`` too: its incidents and
journal would double as well). The other verbs read, or write small records (maintenance
windows, quarantine, approvals, acks, SLA stops, report texts) in short transactions that
SQLite's locking serialises with the running daemon; the daemon picks them up on its next
look. ``quarantine`` also powers the host off: the operator's explicit act, recorded first,
which the daemon's guards then respect. While a daemon runs on the store (and has
``daemon.api_token``), ``quarantine``, ``release``, ``ack``, ``approve``, ``deny`` and
``maintenance add|remove`` ask it through its API instead, so it acts at once under the host's
lock (quarantine through the same power path as its ladders; an approval wakes the ladder
waiting for it). Either way an act is written the same way (:mod:`monitord.edge.acts`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import faulthandler
import json
import logging
import os
import sqlite3
import sys
import time
import urllib.parse
import zoneinfo
from collections import Counter
from typing import TYPE_CHECKING, Awaitable, Callable, Coroutine, Sequence, TypeVar

from monitord import __version__
from monitord.edge import acts, logsetup, views
from monitord.edge.caps import keep_capabilities_to_ourselves
from monitord.config import Config, ConfigError, json_schema, load_config
from monitord.shared.fields import format_duration, parse_duration, parse_id
from monitord.paging.notify import acknowledge
from monitord.run.runner import run_probe, set_up_kinds
from monitord.records.state import StoreLock
from monitord.records.stores import open_store
from monitord.records.store import (JournalEntry, ReportRecord, StateError, Store, StoreLocked,
                                   incident_of_host)
from monitord.shared.probe import ProbeContext

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_STORE, EXIT_LOCKED = 0, 1, 2, 3, 4
T = TypeVar("T")
API_TIMEOUT = 600.0
"""How long the CLI waits for the daemon to act (a quarantine's power-off waits for the action under way)."""
DEFAULT_CONFIG = "/etc/monitord/monitord.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monitord`` console script."""
    keep_capabilities_to_ourselves()
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
    except StateError as exc:
        print(f"monitord: {exc}", file=sys.stderr)
        return EXIT_LOCKED if isinstance(exc, StoreLocked) else EXIT_STORE
    except sqlite3.Error as exc:  # a read that failed after the store was opened and checked
        print(f"monitord: the state database failed: {exc}", file=sys.stderr)
        return EXIT_STORE
    except Refused as exc:
        print(f"monitord: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `monitord journal | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monitord", description="Monitoring and auto-remediation daemon.")
    parser.add_argument("--version", action="version", version=f"monitord {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    run.add_argument("--dry-run", action="store_true", help="decide and journal, never act")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override daemon.log_level")
    run.add_argument("--log-format", choices=logsetup.FORMATS, default="text",
                     help="text (LEVEL logger: message) or json (one object a line); under systemd either gets "
                          "journald priority prefixes")
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

    maint = sub.add_parser("maintenance", help="maintenance windows: no automatic action on what they cover")
    maint_sub = maint.add_subparsers(metavar="ACTION")
    add = maint_sub.add_parser("add", help="add a window starting now (or at --start)")
    add.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--host")
    target.add_argument("--group")
    target.add_argument("--tag")
    add.add_argument("--duration", required=True, help="e.g. 2h, 90m")
    add.add_argument("--start", help="ISO time with offset, e.g. 2026-12-01T02:00+09:00 (default: now)")
    add.add_argument("--reason", required=True)
    add.add_argument("--by", default=os.environ.get("SUDO_USER") or os.environ.get("USER"))
    add.set_defaults(func=_cmd_maintenance_add)
    lst = maint_sub.add_parser("list", help="list windows (config and CLI)")
    lst.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    lst.set_defaults(func=_cmd_maintenance_list)
    rm = maint_sub.add_parser("remove", help="remove a CLI window by id")
    rm.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    rm.add_argument("id", type=_id)
    rm.set_defaults(func=_cmd_maintenance_remove)

    quarantine = sub.add_parser("quarantine", help="power a compromised host off now and keep it off")
    quarantine.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    quarantine.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    quarantine.add_argument("--reason", default="compromised: stopped to prevent secondary damage")
    quarantine.add_argument("--by", default=os.environ.get("SUDO_USER") or os.environ.get("USER"))
    quarantine.add_argument("host")
    quarantine.set_defaults(func=_cmd_quarantine)
    release = sub.add_parser("release", help="lift a quarantine (does not power the host on)")
    release.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    release.add_argument("--by", default=os.environ.get("SUDO_USER") or os.environ.get("USER"))
    release.add_argument("host")
    release.set_defaults(func=_cmd_release)

    for verb, answer in (("approve", "granted"), ("deny", "denied")):
        cmd = sub.add_parser(verb, help=f"record the emergency contact's answer ({answer}) for a host's pending action")
        cmd.add_argument("--config", "-c", default=DEFAULT_CONFIG)
        cmd.add_argument("--by", default=os.environ.get("SUDO_USER") or os.environ.get("USER"))
        cmd.add_argument("host")
        cmd.set_defaults(func=_cmd_answer, answer=answer)

    for verb, text in (("ack", "acknowledge an incident's pages: stop escalating them"),
                       ("arrived", "the engineer is on site: stop the engineer_on_site SLA timer"),
                       ("swap-decided", "a machine swap was decided: start the replacement_on_network SLA timer"),
                       ("swapped", "the replacement answers on the network: stop its SLA timer")):
        cmd = sub.add_parser(verb, help=text)
        cmd.add_argument("--config", "-c", default=DEFAULT_CONFIG)
        cmd.add_argument("--by", default=os.environ.get("SUDO_USER") or os.environ.get("USER"))
        cmd.add_argument("incident", type=_id)
        cmd.set_defaults(func=_cmd_incident_event, verb=verb)

    journal = _reader(sub, "journal", "print the action journal", _cmd_journal)
    journal.add_argument("--incident", type=_id)
    journal.add_argument("--host")
    _reader(sub, "status", "fleet summary: what is down, open incidents with level and age", _cmd_status)
    incidents = _reader(sub, "incidents", "list incidents, newest first", _cmd_incidents)
    incidents.add_argument("--open", action="store_true", help="only open incidents")
    incidents.add_argument("--host")
    _reader(sub, "explain", "why the daemon is or is not acting on a host right now", _cmd_explain).add_argument("host")

    report = sub.add_parser("report", help="incident reports (障害報告), due 2 business days after recovery")
    report_sub = report.add_subparsers(metavar="ACTION")
    rlist = report_sub.add_parser("list", help="incidents with their report's due date and state")
    rlist.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    rlist.add_argument("--pending", action="store_true", help="only reports not yet submitted (due or overdue)")
    rlist.set_defaults(func=_cmd_report_list)
    show = report_sub.add_parser("show", help="print an incident's report as Markdown")
    show.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    show.add_argument("--lang", choices=("ja", "en"), default="ja")
    show.add_argument("incident", type=_id)
    show.set_defaults(func=_cmd_report_render, format="md", output=None)
    rrender = report_sub.add_parser("render", help="write an incident's report as Markdown or HTML")
    rrender.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    rrender.add_argument("--format", "-f", choices=("md", "html"), default="md")
    rrender.add_argument("--lang", choices=("ja", "en"), default="ja")
    rrender.add_argument("--output", "-o", help="write to this file (default: standard output)")
    rrender.add_argument("incident", type=_id)
    rrender.set_defaults(func=_cmd_report_render)
    edit = report_sub.add_parser("edit", help="record the engineer's root cause and prevention text")
    edit.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    edit.add_argument("--cause", help="root cause text ('-' reads standard input)")
    edit.add_argument("--prevention", help="prevention text ('-' reads standard input)")
    edit.add_argument("incident", type=_id)
    edit.set_defaults(func=_cmd_report_edit)
    submit = report_sub.add_parser("submit", help="mark reports as sent to the customer (no longer due)")
    submit.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    submit.add_argument("--by", default=os.environ.get("SUDO_USER") or os.environ.get("USER"))
    submit.add_argument("incident", type=_id, nargs="+")
    submit.set_defaults(func=_cmd_report_submit)
    return parser


def _id(text: str) -> int:
    """An id on the command line: plain digits, as on the HTTP API."""
    try:
        return parse_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} {exc}") from None


def _setup_logging(level: str, fmt: str = "text") -> None:
    logsetup.configure(level, fmt)


def event_loop_runner() -> Callable[[Coroutine], object]:
    """How the daemon's loop runs: uvloop when installed (about a third more probes per
    CPU-second in benchmarks/compare.py), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _cmd_run(args: argparse.Namespace) -> int:
    from monitord.edge.daemon import Daemon  # the daemon's imports are not needed by the other commands

    config = load_config(args.config)
    _setup_logging(args.log_level or config.daemon.log_level, args.log_format)
    faulthandler.enable()  # systemd's watchdog kills a hung daemon with SIGABRT: say where each thread was

    async def serve() -> None:
        await (await Daemon.open(args.config, config, dry_run=args.dry_run)).run()

    try:
        event_loop_runner()(serve())
    except (PermissionError, OSError) as exc:
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
    async def probe_all() -> list:
        ctx = ProbeContext()
        try:
            await set_up_kinds(ctx, config, specs)
            return await asyncio.gather(*(
                run_probe(s.kind, ctx, s.call(), s.params, time.time()) for s in specs
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


async def _note(store: Store, **entry: object) -> None:
    """Journal what a CLI command did, durably; an act on a host carries the incident it belongs to."""
    if entry.get("host") and "incident_id" not in entry:
        entry["incident_id"] = await incident_of_host(store, str(entry["host"]))
    async with store.transaction(durable=True):
        await store.incidents.append(JournalEntry(**entry))


def _on_store(config: Config, work: Callable[[Store], Awaitable[T]]) -> T:
    """Do ``work`` on the state store of ``config`` and return what it returns: the CLI is
    synchronous, the store's interface is not; the store is closed when the work is done."""
    async def run() -> T:
        store = await open_store(config.daemon)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _known_host(config: Config, host: str, source: str) -> None:
    if host not in config.hosts:
        raise ConfigError(source, [f"no host {host!r} in the config"])


def _cmd_maintenance_add(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    kind, name = next((k, v) for k, v in (("host", args.host), ("group", args.group), ("tag", args.tag)) if v)
    known = {"host": config.hosts, "group": config.groups,
             "tag": {t for h in config.hosts.values() for t in h.tags}}[kind]
    if name not in known:
        print(f"monitord: no {kind} {name!r} in {args.config}", file=sys.stderr)
        return EXIT_USAGE
    try:
        length = parse_duration(args.duration)
        start = dt.datetime.fromisoformat(args.start).astimezone() if args.start else None
    except ValueError as exc:
        print(f"monitord: {exc}", file=sys.stderr)
        return EXIT_USAGE
    body = {"target": f"{kind}:{name}", "duration": args.duration, "reason": args.reason, "by": args.by,
            "start": start and start.isoformat()}
    answer = _ask_daemon(config, "/api/v1/maintenance", body)
    if answer is not None:
        window_id, ends = answer["id"], answer["ends"]
    else:
        begins = start.timestamp() if start else time.time()
        try:
            window_id = _on_store(config, lambda store: acts.add_window(
                config, store, body["target"], begins, length, args.reason, args.by, time.time()))
        except ValueError as exc:
            print(f"monitord: {exc}", file=sys.stderr)
            return EXIT_USAGE
        ends = begins + length
    print(f"maintenance #{window_id}: {kind} {name} until {_when(ends)}"
          + (" (added by the running daemon)" if answer else ""))
    return EXIT_OK


def _cmd_maintenance_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    now = time.time()
    rows = [("ID", "TARGET", "START", "END", "STATE", "REASON")]
    for name, w in config.maintenance.items():
        targets = ",".join([f"host:{h}" for h in w.hosts] + [f"group:{g}" for g in w.groups] + [f"tag:{t}" for t in w.tags])
        rows.append((f"config:{name}", targets, _when(w.start.timestamp()), _when(w.end.timestamp()),
                     _window_state(w.start.timestamp(), w.end.timestamp(), now), w.reason))
    for w in _on_store(config, lambda store: store.control.maintenance()):
        rows.append((str(w.id), w.target, _when(w.starts), _when(w.ends), _window_state(w.starts, w.ends, now),
                     w.reason + (f" ({w.created_by})" if w.created_by else "")))
    _print_table(rows)
    return EXIT_OK


def _cmd_maintenance_remove(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        answer = _ask_daemon(config, f"/api/v1/maintenance/{args.id}", {}, method="DELETE")
    except Refused as exc:
        if exc.status != 404:
            raise
        answer = {"removed": False}
    if answer is None:
        answer = {"removed": _on_store(config, lambda store: acts.remove_window(store, args.id, time.time()))}
    if not answer["removed"]:
        print(f"monitord: no maintenance window #{args.id}", file=sys.stderr)
        return EXIT_USAGE
    print(f"maintenance #{args.id} removed")
    return EXIT_OK


def _cmd_quarantine(args: argparse.Namespace) -> int:
    from monitord.escalation.quarantine import quarantine

    config = load_config(args.config)
    _known_host(config, args.host, args.config)
    if not args.yes:
        if not sys.stdin.isatty():
            print("monitord: refusing to power off without confirmation; use --yes", file=sys.stderr)
            return EXIT_USAGE
        answer = input(f"Power {args.host} OFF now and keep it off until `monitord release {args.host}`? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not done")
            return EXIT_FAIL
    _setup_logging("warning")
    answer = _ask_daemon(config, f"/api/v1/hosts/{args.host}/quarantine", {"reason": args.reason, "by": args.by})
    if answer is not None:
        ok, summary = answer["powered_off"], answer["summary"] + " (done by the running daemon)"
    else:
        ok, summary = asyncio.run(quarantine(config, args.host, args.reason, args.by))
    print(summary)
    return EXIT_OK if ok else EXIT_FAIL


def _cmd_release(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    _known_host(config, args.host, args.config)
    try:
        answer = _ask_daemon(config, f"/api/v1/hosts/{args.host}/release", {"by": args.by})
    except Refused as exc:
        if exc.status != 409:
            raise
        answer = {"released": False}
    by_daemon = " (done by the running daemon)" if answer is not None else ""
    if answer is None:
        from monitord.escalation.quarantine import release

        answer = {"released": _on_store(config, lambda store: release(store, args.host, args.by))}
    if not answer["released"]:
        print(f"monitord: {args.host} is not quarantined", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.host} released: automatic actions allowed again (it was not powered on){by_daemon}")
    return EXIT_OK


class Refused(Exception):
    """The running daemon refused what the CLI asked (an HTTP 4xx with its reason)."""

    def __init__(self, status: int, why: str):
        super().__init__(f"the daemon refused: {why} (HTTP {status})")
        self.status = status


def _ask_daemon(config: Config, path: str, body: dict | None = None, method: str | None = None) -> dict | list | None:
    """Ask the running daemon (its API) to act, so it acts at once under its own lock; None
    when no daemon runs on this store, or it cannot be asked (no ``daemon.api_token``, not
    answering): then the caller acts on the store directly, which the daemon's guards read.
    Raises :class:`Refused` with the daemon's reason for a 4xx answer. Without ``body`` it
    reads (GET): reads may be open, so the token goes along only when there is one; with it, it
    writes (POST, or ``method``)."""
    import urllib.error
    import urllib.request

    if config.daemon.store.kind == "sqlite" and not StoreLock(config.daemon.state_path).held():
        return None  # (on PostgreSQL the daemon is asked; one not answering means none runs)
    try:
        token = config.daemon.api_token.read() if config.daemon.api_token is not None else None
    except (LookupError, UnicodeError) as exc:
        print(f"monitord: the API token (daemon.api_token) cannot be read: {exc}", file=sys.stderr)
        token = None
    instead = "acting on the store directly" if body is not None else "reading the store"
    if not token and body is not None:
        print(f"monitord: the daemon runs without daemon.api_token: {instead} "
              "(the daemon reads it at its next look)", file=sys.stderr)
        return None
    host, port = config.daemon.metrics_address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}{path}"
    data = None if body is None else json.dumps({k: v for k, v in body.items() if v is not None}).encode()
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=API_TIMEOUT) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as exc:
        try:
            why = json.load(exc).get("error", exc.reason)
        except ValueError:
            why = exc.reason
        if 400 <= exc.code < 500:
            raise Refused(exc.code, why) from None
        print(f"monitord: the daemon could not do it ({why}, HTTP {exc.code}): {instead}", file=sys.stderr)
    except TimeoutError:  # it took the request: it goes on with it, and must not be done twice
        print(f"monitord: the daemon has not finished within {API_TIMEOUT:g}s; it carries on: see "
              "`monitord journal`", file=sys.stderr)
        raise SystemExit(EXIT_FAIL) from None
    except (OSError, ValueError) as exc:  # not listening (connection refused), or no JSON answer
        print(f"monitord: the daemon does not answer at {url} ({exc}): {instead}", file=sys.stderr)
    return None


def _read(config: Config, path: str, offline: Callable[[Store], Awaitable[object]]) -> tuple[object, bool]:
    """What the running daemon's API answers at ``path`` (True), or ``offline`` of the store
    when no daemon answers (False)."""
    answer = _ask_daemon(config, path)
    if answer is not None:
        return answer, True
    return _on_store(config, offline), False


def _console() -> "Console":
    """rich's console on stdout: colour only on a terminal, and wide lines when piped."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _table(*columns: str) -> "Table":
    from rich.table import Table

    return Table(*columns, box=None, pad_edge=False, header_style="bold")


def _age(since: float, now: float) -> str:
    return format_duration(max(0, round(now - since)))


def _reader(sub: argparse._SubParsersAction, verb: str, text: str, func: Callable) -> argparse.ArgumentParser:
    """A verb that reads and lists: ``--config`` and ``--json``."""
    cmd = sub.add_parser(verb, help=text)
    cmd.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cmd.set_defaults(func=func)
    return cmd


def _cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    daemon = _ask_daemon(config, "/api/v1/status")
    now = time.time()

    hosts, _ = _read(config, "/api/v1/hosts", lambda store: views.hosts(config, store, now))
    incidents, _ = _read(config, "/api/v1/incidents?state=open", lambda store: views.incidents(store, state="open"))
    if args.json:
        print(json.dumps({"daemon": daemon, "hosts": hosts, "open_incidents": incidents}, indent=2))
        return EXIT_OK
    out = _console()
    down = [(h, c) for h in hosts for c in h["checks"] if c["state"] in ("soft", "hard")]
    out.print(f"daemon: monitord {daemon['version']}, up {_age(daemon['started_at'], now)}"
              + (", [yellow]dry run[/]" if daemon["dry_run"] else "")
              + ("" if daemon["store"]["ok"] else f", [red]store: {daemon['store']['fault']}[/]")
              if daemon else "daemon: [red]not running[/] (read from the state store)")
    down_hosts = {h["name"] for h, _ in down}
    out.print(f"hosts: {len(hosts)}, {len(hosts) - len(down_hosts)} ok, "
              + (f"[red]{len(down_hosts)} with failing checks[/]" if down_hosts else "none failing")
              + f"; open incidents: {len(incidents)}")
    if down:
        table = _table("HOST", "CHECK", "STATE", "LEVEL", "PHASE", "SUMMARY")
        for h, c in down:
            table.add_row(h["name"], c["name"], f"[red]{c['state']}[/]" if c["state"] == "hard" else c["state"],
                          str(h["escalation"]["level"]), h["escalation"]["phase"]
                          + (f" (blocked: {h['escalation']['blocked']})" if h["escalation"]["blocked"] else ""),
                          c["summary"] or "")
        out.print(table)
    if incidents:
        _print_incidents(out, incidents, now)
    return EXIT_OK


def _print_incidents(out: "Console", incidents: list[dict], now: float) -> None:
    table = _table("ID", "HOST", "CHECK", "LEVEL", "AGE", "STATE", "SUMMARY")
    for i in incidents:
        acked = any(p["acked_at"] for p in i["pages"])
        table.add_row(str(i["id"]), i["host"], i["check"], str(i["level"]), _age(i["opened_at"], now),
                      ("[red]open[/]" if not acked else "open, acked") if i["open"] else "closed", i["summary"])
    out.print(table)


def _cmd_incidents(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    state = "open" if args.open else "all"
    query = f"?state={state}" + (f"&host={urllib.parse.quote(args.host)}" if args.host else "")
    incidents, _ = _read(config, "/api/v1/incidents" + query,
                         lambda store: views.incidents(store, state=state, host_name=args.host))
    if args.json:
        print(json.dumps(incidents, indent=2))
    elif incidents:
        _print_incidents(_console(), incidents, time.time())
    else:
        print("no incidents")
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    _known_host(config, args.host, args.config)
    answer = _ask_daemon(config, f"/api/v1/hosts/{args.host}/explain")
    if answer is None:
        print(f"monitord: no daemon answers on {config.daemon.state_path}: nothing acts on {args.host} now "
              f"(see `monitord status` for what the store says)", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps(answer, indent=2))
        return EXIT_OK
    out, ladder, now = _console(), answer["ladder"], time.time()
    out.print(f"[bold]{args.host}[/]: level {ladder['level']}, {ladder['phase']}"
              + (f" ({ladder['ladder']}, incident #{ladder['incident']})" if ladder["ladder"] else "")
              + (f", blocked by {ladder['blocked']}" if ladder["blocked"] else ""))
    if ladder["tried"]:
        out.print("tried: " + ", ".join(ladder["tried"]))
    checks = _table("CHECK", "STATE", "NEXT RUN", "SUMMARY")
    for c in answer["checks"]:
        colour = {"hard": "red", "soft": "yellow"}.get(c["state"])
        checks.add_row(c["name"], f"[{colour}]{c['state']}[/]" if colour else c["state"],
                       f"in {_age(now, c['next_run'])}" if c["next_run"] else "-", c["summary"] or "")
    out.print(checks)
    nxt = answer["next"]
    out.print("next: " + nxt["what"] + (f" (at {_when(nxt['at'])})" if nxt["at"] else ""))
    guards = _table("GUARD", f"FOR {answer['guards_for'].upper()}", "REASON")
    for g in answer["guards"]:
        guards.add_row(g["guard"], "[red]BLOCK[/]" if g["verdict"] == "block" else "[green]pass[/]", g["reason"])
    out.print(guards)
    return EXIT_OK


def _cmd_answer(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    _known_host(config, args.host, args.config)
    verb = "approve" if args.answer == "granted" else "deny"
    answer = _ask_daemon(config, f"/api/v1/hosts/{args.host}/{verb}", {"by": args.by})
    if answer is None:
        _on_store(config, lambda store: acts.answer_approval(store, args.host, args.answer, args.by, time.time()))
    elif not answer["awaiting"]:
        print(f"monitord: no action on {args.host} is waiting for an answer now; this one counts only for "
              "a request already made", file=sys.stderr)
    print(f"{args.host}: {args.answer}" + (" (the running daemon goes on at once)" if answer else ""))
    return EXIT_OK


def _cmd_incident_event(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    now = time.time()
    async def act(store: Store) -> tuple[int, str]:
        incident = await store.incidents.get(args.incident)
        if incident is None:
            return EXIT_USAGE, f"monitord: no incident #{args.incident}"
        if args.verb == "ack":
            answer = _ask_daemon(config, f"/api/v1/incidents/{args.incident}/ack", {"by": args.by})
            count = answer["acknowledged"] if answer else await acknowledge(store, args.incident, args.by, now)
            return EXIT_OK, (f"incident #{args.incident}: {count} page(s) acknowledged"
                             + (" (by the running daemon)" if answer else ""))
        elif args.verb == "swap-decided":
            due = now + config.paging.sla.replacement_on_network
            if not await store.incidents.start_sla(args.incident, "replacement_on_network", incident.host, now, due):
                return EXIT_USAGE, f"monitord: the swap of incident #{args.incident} was already decided"
            message = f"incident #{args.incident}: replacement must answer on the network by {_when(due)}"
        else:
            name = "engineer_on_site" if args.verb == "arrived" else "replacement_on_network"
            timer = next((t for t in await store.incidents.sla_timers(args.incident) if t.name == name), None)
            if timer is None or timer.stopped_at is not None:
                return EXIT_USAGE, f"monitord: incident #{args.incident} has no running {name} timer"
            await store.incidents.update_sla(args.incident, name, stopped_at=now)
            met = "met" if now <= timer.due else f"MISSED by {format_duration(now - timer.due)}"
            message = f"incident #{args.incident}: {name} after {format_duration(max(now - timer.started_at, 1))}: {met}"
        await _note(store, ts=now, event="sla_started" if args.verb == "swap-decided" else "sla_stopped",
                    host=incident.host, incident_id=args.incident,
                    decision="engineer_on_site" if args.verb == "arrived" else "replacement_on_network",
                    reason=message, detail={"by": args.by})
        return EXIT_OK, message

    code, message = _on_store(config, act)
    print(message, file=sys.stdout if code == EXIT_OK else sys.stderr)
    return code


def _cmd_journal(args: argparse.Namespace) -> int:
    entries = [e for e in _on_store(load_config(args.config),
                                    lambda store: store.incidents.journal(incident_id=args.incident, limit=100_000))
               if args.host is None or e.host == args.host]
    if args.json:
        for e in entries:
            print(json.dumps({k: getattr(e, k) for k in e.__slots__}, ensure_ascii=False, default=dict))
        return EXIT_OK
    rows = [("ID", "TIME", "HOST", "EVENT", "DECISION", "OUTCOME", "REASON")]
    for e in entries:
        rows.append((str(e.id), _when(e.ts), e.host or "-", e.event, e.decision or "-", e.outcome or "-", e.reason or ""))
    _print_table(rows)
    return EXIT_OK


def _report_context(config: Config):
    from monitord.paging.business_calendar import Calendars

    return Calendars(config), zoneinfo.ZoneInfo(config.business_hours.timezone)


def _cmd_report_list(args: argparse.Namespace) -> int:
    from monitord.records.report import report_statuses

    config = load_config(args.config)
    calendar, zone = _report_context(config)
    statuses = _on_store(config, lambda store: report_statuses(store, calendar, time.time(),
                                                               config.paging.sla.report_due))

    def local(ts: float | None) -> str:
        return "-" if ts is None else dt.datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M %Z")

    rows = [("INCIDENT", "HOST", "CHECK", "RECOVERED", "DUE", "OVERDUE", "STATE")]
    for s in statuses:
        if args.pending and s.state not in ("due", "overdue"):
            continue
        rows.append((str(s.incident.id), s.incident.host, s.incident.check, local(s.incident.closed_at),
                     local(s.due.timestamp() if s.due else None), "yes" if s.state == "overdue" else "no",
                     s.state + (f" {local(s.record.submitted_at)}" if s.state == "submitted" else "")))
    _print_table(rows)
    return EXIT_OK


def _cmd_report_render(args: argparse.Namespace) -> int:
    from monitord.records.report import load_report, render

    config = load_config(args.config)
    calendar, zone = _report_context(config)
    try:
        report = _on_store(config, lambda store: load_report(store, args.incident, calendar, zone,
                                                             due_days=config.paging.sla.report_due,
                                                             backups=lambda i: _backups_before(config, i)))
    except KeyError:
        print(f"monitord: no incident #{args.incident}", file=sys.stderr)
        return EXIT_USAGE
    text = render(report, args.format, args.lang)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _backups_before(config: Config, incident) -> list | None:
    """The last good backups of the incident's host before it began; None without a backup contract."""
    from monitord.shared import lastbackup

    host = config.hosts.get(incident.host)
    if host is None or not host.instructions.backup_contract:
        return None
    return lastbackup.for_host(config.checks(), config.daemon.state_path.parent, incident.host, before=incident.detected_at)


async def _report_record(store: Store, incident: int) -> ReportRecord | None:
    if await store.incidents.get(incident) is None:
        print(f"monitord: no incident #{incident}", file=sys.stderr)
        return None
    return (await store.incidents.report_records()).get(incident) or ReportRecord(incident)


def _cmd_report_edit(args: argparse.Namespace) -> int:
    if args.cause is None and args.prevention is None:
        print("monitord: nothing to record: give --cause and/or --prevention", file=sys.stderr)
        return EXIT_USAGE
    cause = sys.stdin.read() if args.cause == "-" else args.cause
    prevention = sys.stdin.read() if args.prevention == "-" and args.cause != "-" else args.prevention
    async def edit(store: Store) -> bool:
        record = await _report_record(store, args.incident)
        if record is None:
            return False
        await store.incidents.put_report_record(dataclasses.replace(
            record, root_cause=record.root_cause if cause is None else cause,
            prevention=record.prevention if prevention is None else prevention))
        return True

    if not _on_store(load_config(args.config), edit):
        return EXIT_USAGE
    print(f"report #{args.incident}: recorded")
    return EXIT_OK


def _cmd_report_submit(args: argparse.Namespace) -> int:
    async def submit(store: Store) -> bool:
        records = [await _report_record(store, incident) for incident in args.incident]
        if any(r is None for r in records):
            return False
        now = time.time()
        hosts = {i.id: i.host for i in await store.incidents.list()}
        async with store.transaction(durable=True):
            for record in records:
                await store.incidents.put_report_record(
                    dataclasses.replace(record, submitted_at=now, submitted_by=args.by))
                await store.incidents.append(JournalEntry(
                    ts=now, event="report", host=hosts[record.incident_id], incident_id=record.incident_id,
                    decision="submitted", detail={"by": args.by}))
        return True

    if not _on_store(load_config(args.config), submit):
        return EXIT_USAGE
    for incident in args.incident:
        print(f"report #{incident}: submitted")
    return EXIT_OK


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _window_state(start: float, end: float, now: float) -> str:
    return "active" if start <= now < end else ("ended" if now >= end else "planned")


def _print_table(rows: list[tuple[str, ...]], indent: str = "") -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        print(indent + "  ".join(cells).rstrip())
