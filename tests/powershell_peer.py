"""A Windows host for tests: real sshd (tests/ssh_peer.py) with a PowerShell stand-in.

There is no Windows and no PowerShell on the test machine. What is real: the SSH server,
the login, the transport of the command line, exit statuses and output. What is a stand-in:
``powershell`` in the host's fakebin, a small Python program that accepts exactly the
invocation monitord sends (``powershell -NoProfile -NonInteractive -EncodedCommand B64``,
the script base64-encoded UTF-16LE), decodes the script, and answers the few statements
monitord uses from state files (like the systemctl shim does for units):

* ``Get-Service -Name 'N'`` status check: exit 0 Running, 3 otherwise, 4 unknown service;
* ``Restart-Service -Name 'N' -Force``: the service becomes Running and its process (if it
  has one) appears in the process list; an unknown service fails like PowerShell does;
* ``Get-Process``: ``processes.tsv`` (name, tab, path);
* ``Get-CimInstance Win32_LogicalDisk``: ``disks.tsv`` (drive, filesystem, size, free);
* ``Get-WinEvent``: ``events/<log>.jsonl`` — the first run the newest ``-MaxEvents``
  events, then those with a record id above ``$after``, oldest first, at most ``-MaxEvents``.

Anything else exits 1 with "stand-in does not understand". Every call is logged
(``calls.log``: ``Restart-Service VVAULT``, ``Get-WinEvent System after=12``...), so tests
count what monitord did on the "Windows" host.
"""

from __future__ import annotations

import json

import pytest

from tests.peers import write_file
from tests.ssh_peer import SshHost

POWERSHELL_STANDIN = r'''#!/usr/bin/python3
"""PowerShell stand-in for monitord's tests (see tests/powershell_peer.py)."""
import base64, json, os, re, sys

STATE = {state!r}


def path(name):
    return os.path.join(STATE, name)


def log(text):
    with open(path("calls.log"), "a") as f:
        f.write(text + "\n")


def literal(pattern, script):
    m = re.search(pattern.replace("LIT", r"'((?:[^']|'')*)'"), script)
    return m.group(1).replace("''", "'") if m else None


def services():
    with open(path("services.json")) as f:
        return json.load(f)


def main(argv):
    if len(argv) != 4 or argv[:3] != ["-NoProfile", "-NonInteractive", "-EncodedCommand"]:
        print("stand-in expects -NoProfile -NonInteractive -EncodedCommand B64", file=sys.stderr)
        return 64
    script = base64.b64decode(argv[3]).decode("utf-16-le")
    name = literal(r"\$s = Get-Service -Name LIT -ErrorAction SilentlyContinue", script)
    if name is not None:
        log(f"Get-Service {{name}}")
        known = services()
        if name not in known:
            return 4
        return 0 if known[name]["status"] == "Running" else 3
    name = literal(r"^Restart-Service -Name LIT -Force -ErrorAction Stop$", script)
    if name is not None:
        log(f"Restart-Service {{name}}")
        known = services()
        if name not in known:
            print(f"Restart-Service : Cannot find any service with service name '{{name}}'.", file=sys.stderr)
            return 1
        known[name]["status"] = "Running"
        with open(path("services.json"), "w") as f:
            json.dump(known, f)
        if known[name].get("process"):
            with open(path("processes.tsv"), "a") as f:
                f.write(f"{{known[name]['process']}}\tC:\\Program Files\\{{name}}\\{{known[name]['process']}}.exe\n")
        return 0
    if script.startswith("Get-Process | ForEach-Object"):
        log("Get-Process")
        sys.stdout.write(open(path("processes.tsv")).read())
        return 0
    if script.startswith("Get-CimInstance -ClassName Win32_LogicalDisk -Filter 'DriveType=3'"):
        log("Get-CimInstance Win32_LogicalDisk")
        sys.stdout.write(open(path("disks.tsv")).read())
        return 0
    channel = literal(r"\$log = LIT; \$after = -?\d+", script)
    if channel is not None and "Get-WinEvent" in script:
        after = int(re.search(r"\$after = (-?\d+)", script).group(1))
        first = int(re.search(r"-MaxEvents (\d+) \| Sort-Object RecordId", script).group(1))
        chunk = int(re.search(r"-MaxEvents (\d+) -Oldest", script).group(1))
        log(f"Get-WinEvent {{channel}} after={{after}}")
        try:
            with open(path(f"events/{{channel}}.jsonl")) as f:
                events = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            print(f'There is not an event log on the localhost computer that matches "{{channel}}".', file=sys.stderr)
            return 2
        events.sort(key=lambda e: e["id"])
        chosen = events[-first:] if after < 0 else [e for e in events if e["id"] > after][:chunk]
        for event in chosen:
            print(json.dumps(event, separators=(",", ":")))
        print(re.search(r"'(@@[^']*)'\s*$", script).group(1))
        return 0
    print(f"stand-in does not understand: {{script[:80]!r}}", file=sys.stderr)
    return 1


sys.exit(main(sys.argv[1:]))
'''


class WindowsHost:
    """The state behind the stand-in: services, processes, disks and event logs."""

    def __init__(self, ssh: SshHost) -> None:
        self.ssh = ssh
        self.state = ssh.state / "windows"
        (self.state / "events").mkdir(parents=True)
        for directory in (self.state, self.state / "events"):
            directory.chmod(0o777)  # written by the ssh user
        write_file(ssh.directory / "fakebin" / "powershell", POWERSHELL_STANDIN.format(state=str(self.state)), 0o755)
        self._write("services.json", "{}")
        self._write("processes.tsv", "System\t\nsvchost\tC:\\Windows\\System32\\svchost.exe\n")
        self._write("disks.tsv", "")
        self._write("calls.log", "")
        self._records: dict[str, int] = {}

    def _write(self, name: str, text: str) -> None:
        path = self.state / name
        path.write_text(text)
        path.chmod(0o666)

    def add_service(self, name: str, status: str = "Running", process: str | None = None) -> None:
        """A Windows service, and the process it runs (present while Running)."""
        known = json.loads((self.state / "services.json").read_text())
        known[name] = {"status": status, "process": process}
        self._write("services.json", json.dumps(known))
        if process and status == "Running":
            self.start_process(process, f"C:\\Program Files\\{name}\\{process}.exe")

    def service_status(self, name: str) -> str:
        return json.loads((self.state / "services.json").read_text())[name]["status"]

    def crash(self, service: str) -> None:
        """The service's process died: the service is Stopped and its process gone."""
        known = json.loads((self.state / "services.json").read_text())
        known[service]["status"] = "Stopped"
        self._write("services.json", json.dumps(known))
        process = known[service].get("process")
        if process:
            rows = (self.state / "processes.tsv").read_text().splitlines()
            self._write("processes.tsv", "".join(f"{r}\n" for r in rows if r.split("\t")[0] != process))

    def start_process(self, name: str, path: str) -> None:
        with open(self.state / "processes.tsv", "a") as f:
            f.write(f"{name}\t{path}\n")

    def set_disks(self, *rows: tuple[str, str, int, int]) -> None:
        """(drive, filesystem, size bytes, free bytes) rows."""
        self._write("disks.tsv", "".join(f"{d}\t{fs}\t{size}\t{free}\r\n" for d, fs, size, free in rows))

    def add_event(self, log: str, provider: str, event_id: int, message: str, level: str = "Error") -> int:
        """Append an event to ``log``; return its record id (numbered per log, as Windows does)."""
        record = self._records[log] = self._records.get(log, 0) + 1
        path = self.state / "events" / f"{log}.jsonl"
        with open(path, "a") as f:
            f.write(json.dumps({"id": record, "time": "2026-11-26T01:02:03Z", "provider": provider, "event": event_id,
                                "level": level, "message": message}) + "\n")
        path.chmod(0o666)
        return record

    def calls(self) -> list[str]:
        """What the stand-in was asked, in order."""
        return (self.state / "calls.log").read_text().splitlines()


@pytest.fixture
def windows_host(ssh_host: SshHost) -> WindowsHost:
    """sshd on 127.0.0.1 answering as a Windows host through the PowerShell stand-in."""
    return WindowsHost(ssh_host)

