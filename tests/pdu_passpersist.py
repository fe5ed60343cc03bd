"""A simulated APC switched PDU: a net-snmp ``pass_persist`` backend (stdlib only).

snmpd runs this script for the subtree ``.1.3.6.1.4.1.318.1.1`` and talks to it over
stdin/stdout (see snmpd.conf(5), "pass_persist"). It keeps one power state per outlet and
serves it through the APC PowerNet tables chosen in its config:

``spdu``
    sPDUOutletControlTable ``.1.3.6.1.4.1.318.1.1.4.4.2.1``: .1 index, .2 pending (1 pending,
    2 none), .3 sPDUOutletCtl (rw: read 1 on / 2 off; write 1 on, 2 off, 3 reboot), .4 name (rw).
``rpdu``
    rPDUOutletControlTable ``.1.3.6.1.4.1.318.1.1.12.3.3.1.1``: .1 index, .2 name,
    .4 command (rw: write 1 immediateOn, 2 immediateOff, 3 immediateReboot; reads 1 or 2);
    rPDUOutletStatusTable ``.1.3.6.1.4.1.318.1.1.12.3.5.1.1``: .1 index, .2 name,
    .4 state (1 on, 2 off), .5 pending (1 pending, 2 none).

A reboot turns the outlet off at once and back on ``reboot_seconds`` later (it reads as off,
with pending = 1, meanwhile). A SET of a value the column does not take answers wrong-value,
a non-integer wrong-type, a read-only column not-writable, a missing row no-creation.

Every accepted command and every power change is appended to the JSON-lines log
(``{"event": "command", "outlet": 1, "command": "reboot", "table": "spdu"}`` and
``{"event": "power", "outlet": 1, "state": "off"}``). Optional shell hooks run one at a time
in the order of the events, without delaying the SNMP answers, with ``OUTLET``, ``STATE``
and ``HOOK`` in the environment: ``on_reboot`` when a reboot
command is accepted, ``on_off`` when an outlet's power goes off (an OFF command or the start
of a reboot), ``on_on`` when it comes on (an ON command or the end of a reboot).

Usage: ``pdu_passpersist.py CONFIG.json``; the config holds ``outlets`` (count),
``initial`` (``{"2": "off"}``; others start on), ``tables`` (``["spdu", "rpdu"]``),
``reboot_seconds``, ``log`` (path), ``stderr`` (path) and ``hooks`` (``{"on_off": "sh snippet"}``).
snmpd may hand the backend the same pipe for stdout and stderr, so stderr (and the hooks'
output) is redirected to the ``stderr`` file before anything else happens; ``pid`` (path)
receives the backend's PID, so a test can check it is gone after snmpd stops.
"""

from __future__ import annotations

import collections
import json
import os
import select
import subprocess
import sys
import time

ROOT = (1, 3, 6, 1, 4, 1, 318, 1, 1)
SPDU_CTL_ENTRY = ROOT + (4, 4, 2, 1)
RPDU_CTL_ENTRY = ROOT + (12, 3, 3, 1, 1)
RPDU_STATUS_ENTRY = ROOT + (12, 3, 5, 1, 1)

ON, OFF = 1, 2  # how every table here reads an outlet's state
PENDING, NOT_PENDING = 1, 2
COMMANDS = {1: "on", 2: "off", 3: "reboot"}  # sPDUOutletCtl and rPDUOutletControlOutletCommand
HOOK_POLL = 0.02  # seconds between checks of a running hook


class Outlet:
    """One outlet: its power, its name and the end of a reboot in progress."""

    def __init__(self, number: int, on: bool) -> None:
        self.number = number
        self.on = on
        self.name = f"Outlet {number}"
        self.reboot_until: float | None = None


class Pdu:
    """The outlets, the log and the hooks; answers the pass_persist requests."""

    def __init__(self, config: dict) -> None:
        initial = {int(k): v for k, v in config.get("initial", {}).items()}
        self.outlets = {n: Outlet(n, initial.get(n, "on") == "on") for n in range(1, config["outlets"] + 1)}
        self.tables = set(config.get("tables", ["spdu", "rpdu"]))
        self.reboot_seconds = float(config.get("reboot_seconds", 3.0))
        self.log_path = config["log"]
        self.hooks = config.get("hooks", {})
        self.queued_hooks: collections.deque[tuple[str, dict]] = collections.deque()
        self.running_hook: subprocess.Popen | None = None
        self.columns = self._columns()

    # -- the MIB view: (oid tuple) -> (getter, setter or None)

    def _columns(self) -> dict[tuple[int, ...], tuple]:
        """Every instance this PDU serves, mapped to (type, getter, setter or None)."""
        cols: dict[tuple[int, ...], tuple] = {}
        for n, outlet in self.outlets.items():
            index = ("integer", lambda o=outlet: o.number, None)
            name_ro = ("string", lambda o=outlet: o.name, None)
            state = ("integer", lambda o=outlet: ON if o.on else OFF)
            pending = ("integer", lambda o=outlet: PENDING if o.reboot_until else NOT_PENDING, None)
            if "spdu" in self.tables:
                cols[SPDU_CTL_ENTRY + (1, n)] = index
                cols[SPDU_CTL_ENTRY + (2, n)] = pending
                cols[SPDU_CTL_ENTRY + (3, n)] = state + (lambda v, o=outlet: self.command(o, v, "spdu"),)
                cols[SPDU_CTL_ENTRY + (4, n)] = ("string", lambda o=outlet: o.name, lambda v, o=outlet: setattr(o, "name", v))
            if "rpdu" in self.tables:
                cols[RPDU_CTL_ENTRY + (1, n)] = index
                cols[RPDU_CTL_ENTRY + (2, n)] = name_ro
                cols[RPDU_CTL_ENTRY + (4, n)] = state + (lambda v, o=outlet: self.command(o, v, "rpdu"),)
                cols[RPDU_STATUS_ENTRY + (1, n)] = index
                cols[RPDU_STATUS_ENTRY + (2, n)] = name_ro
                cols[RPDU_STATUS_ENTRY + (4, n)] = state + (None,)
                cols[RPDU_STATUS_ENTRY + (5, n)] = pending
        return dict(sorted(cols.items()))

    def get(self, oid: tuple[int, ...]) -> list[str] | None:
        """The three answer lines for ``oid``, or None."""
        entry = self.columns.get(oid)
        if entry is None:
            return None
        kind, getter, _ = entry
        return [_dotted(oid), kind, str(getter())]

    def getnext(self, oid: tuple[int, ...]) -> list[str] | None:
        """The answer lines for the first instance after ``oid``, or None."""
        following = next((o for o in self.columns if o > oid), None)
        return None if following is None else self.get(following)

    def set(self, oid: tuple[int, ...], kind: str, value: str) -> str:
        """Apply a SET; return DONE or the pass_persist error word."""
        entry = self.columns.get(oid)
        if entry is None:
            return "no-creation" if _row_prefix(oid) in {_row_prefix(o) for o in self.columns} else "not-writable"
        col_kind, _, setter = entry
        if setter is None:
            return "not-writable"
        if kind != col_kind:
            return "wrong-type"
        if col_kind == "string":
            setter(value.strip('"'))
            return "DONE"
        try:
            number = int(value)
        except ValueError:
            return "wrong-value"
        return setter(number)

    # -- power behaviour

    def command(self, outlet: Outlet, value: int, table: str) -> str:
        """Act on a command written to an outlet's control column."""
        command = COMMANDS.get(value)
        if command is None:
            return "wrong-value"
        self.record(event="command", outlet=outlet.number, command=command, table=table)
        if command == "reboot":
            self.hook("on_reboot", outlet)
            self.power(outlet, False)
            outlet.reboot_until = time.monotonic() + self.reboot_seconds
        else:
            outlet.reboot_until = None
            self.power(outlet, command == "on")
        return "DONE"

    def power(self, outlet: Outlet, on: bool) -> None:
        """Switch the outlet; a change is logged and runs its hook."""
        if outlet.on != on:
            outlet.on = on
            state = "on" if on else "off"
            self.record(event="power", outlet=outlet.number, state=state)
            self.hook(f"on_{state}", outlet)

    def tick(self) -> float | None:
        """Finish due reboots; return the seconds until the next one is due (None: none)."""
        now = time.monotonic()
        for outlet in self.outlets.values():
            if outlet.reboot_until is not None and outlet.reboot_until <= now:
                outlet.reboot_until = None
                self.power(outlet, True)
        self.run_hooks()
        due = [o.reboot_until - now for o in self.outlets.values() if o.reboot_until is not None]
        if self.running_hook is not None:
            due.append(HOOK_POLL)
        return max(0.0, min(due)) if due else None

    def record(self, **event) -> None:
        """Append one event to the log."""
        event["time"] = time.time()
        with open(self.log_path, "a") as log:
            log.write(json.dumps(event) + "\n")

    def hook(self, name: str, outlet: Outlet) -> None:
        """Queue the hook ``name``, if configured; hooks run one at a time, in order."""
        snippet = self.hooks.get(name)
        if snippet:
            env = dict(os.environ, OUTLET=str(outlet.number), STATE="on" if outlet.on else "off", HOOK=name)
            self.queued_hooks.append((snippet, env))
            self.run_hooks()

    def run_hooks(self) -> None:
        """Start the next queued hook once the previous one has finished (never waits)."""
        if self.running_hook is not None and self.running_hook.poll() is None:
            return
        self.running_hook = None
        if self.queued_hooks:
            snippet, env = self.queued_hooks.popleft()
            self.running_hook = subprocess.Popen(["/bin/sh", "-c", snippet], env=env, stdin=subprocess.DEVNULL,
                                                 stdout=sys.stderr, stderr=sys.stderr)


def _dotted(oid: tuple[int, ...]) -> str:
    return "." + ".".join(map(str, oid))


def _parse(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip().strip(".").split("."))


def _row_prefix(oid: tuple[int, ...]) -> tuple[int, ...]:
    """The table entry of an instance (its column dropped): same prefix = same table."""
    return oid[:-2]


class Lines:
    """Non-blocking line reader over stdin, so reboots finish on time between requests."""

    def __init__(self) -> None:
        self.buffer = b""

    def read(self, timeout: float | None) -> str | None:
        """The next line (without newline); None when the timeout passes first; raises EOFError."""
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([sys.stdin.fileno()], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(sys.stdin.fileno(), 4096)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def next_request_line(self, pdu: Pdu) -> str:
        """Wait for a non-blank line, finishing reboots as they fall due."""
        while True:
            line = self.read(pdu.tick())
            if line is not None and line.strip():
                return line.strip()


def serve(pdu: Pdu) -> None:
    """Answer pass_persist requests until snmpd closes our stdin."""
    lines = Lines()
    out = sys.stdout
    while True:
        try:
            command = lines.next_request_line(pdu)
        except EOFError:
            return
        if command == "PING":
            answer = ["PONG"]
        elif command in ("get", "getnext", "set"):
            oid = _parse(lines.next_request_line(pdu))
            pdu.tick()  # a reboot that is due is finished before it is read
            if command == "set":
                kind, _, value = lines.next_request_line(pdu).partition(" ")
                answer = [pdu.set(oid, kind, value)]
            else:
                answer = (pdu.get if command == "get" else pdu.getnext)(oid) or ["NONE"]
        else:
            print(f"pdu_passpersist: unknown command {command!r}", file=sys.stderr, flush=True)
            continue
        out.write("\n".join(answer) + "\n")
        out.flush()


def main() -> None:
    """Read the config named on the command line and serve."""
    with open(sys.argv[1]) as f:
        config = json.load(f)
    err = os.open(config["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(err, 2)
    os.close(err)
    if config.get("pid"):
        with open(config["pid"], "w") as f:
            f.write(f"{os.getpid()}\n")
    serve(Pdu(config))


if __name__ == "__main__":
    main()
