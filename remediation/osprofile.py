"""What to run on a host over SSH, by operating system (the host's ``os:``).

``linux`` (the default): POSIX shell, ``systemctl``, ``ps``, ``df``, the journal.
``windows``: Windows Server 2019+ with its built-in OpenSSH server, whose default shell is
cmd.exe; every script is PowerShell, sent as ``powershell -NoProfile -NonInteractive
-EncodedCommand <base64 of UTF-16LE>`` so that no quoting survives two shells. Service state
and restart use ``Get-Service``/``Restart-Service``, processes ``Get-Process``, disks
``Get-CimInstance Win32_LogicalDisk``, event logs ``Get-WinEvent`` (see :mod:`probes.logs`).
Names put into a script are single-quoted PowerShell literals (``'`` doubled), never interpolated.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass

NAME_WIDTH = 64
"""Columns ps gives the process name (Linux truncates names to 15 characters anyway)."""


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """One running process: its short name, executable path and arguments."""

    name: str
    path: str = ""
    args: str = ""

    @property
    def command(self) -> str:
        """The command line as one string (path and arguments)."""
        return f"{self.path} {self.args}".strip()

    @property
    def executable(self) -> str:
        """The executable's file name (the last part of its path, either slash)."""
        return self.path.replace("\\", "/").rsplit("/", 1)[-1]


class Linux:
    """Commands for a Linux host (systemd)."""

    name = "linux"

    def wrap(self, script: str) -> str:
        """The command line that runs ``script`` in the host's scripting shell."""
        return script

    def same_name(self, wanted: str, actual: str) -> bool:
        """Whether process name ``actual`` is ``wanted`` (exact on Linux)."""
        return wanted == actual

    def service_status(self, unit: str) -> str:
        """Exits 0 when ``unit`` is running."""
        return f"systemctl is-active --quiet {shlex.quote(unit)}"

    def service_restart(self, unit: str) -> str:
        """Restarts ``unit``; exits non-zero on failure."""
        return f"systemctl restart {shlex.quote(unit)}"

    def process_list(self) -> str:
        """Prints one process a line: its name padded to :data:`NAME_WIDTH`, then its command line."""
        return f"LC_ALL=C ps -e ww -o comm:{NAME_WIDTH}= -o args="

    def parse_processes(self, text: str) -> list[ProcessRow]:
        """Rows of :meth:`process_list`'s output (a name may contain spaces, hence fixed width)."""
        rows = []
        for line in text.splitlines():
            name, command = line[:NAME_WIDTH].strip(), line[NAME_WIDTH + 1:].strip()
            if name:
                path, _, args = command.partition(" ")
                rows.append(ProcessRow(name, path, args))
        return rows


def ps_literal(value: str) -> str:
    """``value`` as a single-quoted PowerShell string literal."""
    return "'" + value.replace("'", "''") + "'"


class Windows(Linux):
    """Commands for a Windows host (OpenSSH server, PowerShell)."""

    name = "windows"

    def wrap(self, script: str) -> str:
        """``powershell ... -EncodedCommand``: base64 of the UTF-16LE script."""
        encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
        return f"powershell -NoProfile -NonInteractive -EncodedCommand {encoded}"

    def same_name(self, wanted: str, actual: str) -> bool:
        """Case-insensitive, with or without ``.exe`` (Get-Process drops it)."""
        def fold(name: str) -> str:
            name = name.lower()
            return name[:-4] if name.endswith(".exe") else name
        return fold(wanted) == fold(actual)

    def service_status(self, unit: str) -> str:
        """Exits 0 when the service's status is Running, 3 otherwise, 4 when it does not exist."""
        return self.wrap(
            f"$s = Get-Service -Name {ps_literal(unit)} -ErrorAction SilentlyContinue; "
            "if ($null -eq $s) { exit 4 }; if ($s.Status -eq 'Running') { exit 0 } else { exit 3 }")

    def service_restart(self, unit: str) -> str:
        """``Restart-Service -Force`` (stops dependants too, and starts a stopped service)."""
        return self.wrap(f"Restart-Service -Name {ps_literal(unit)} -Force -ErrorAction Stop")

    def process_list(self) -> str:
        """Get-Process: name, path, (no arguments: Windows PowerShell 5.1 has no CommandLine)."""
        return self.wrap("Get-Process | ForEach-Object { \"{0}`t{1}\" -f $_.ProcessName, $_.Path }")

    def parse_processes(self, text: str) -> list[ProcessRow]:
        """Rows of :meth:`process_list`'s output: name, tab, path."""
        rows = []
        for line in text.splitlines():
            name, _, path = line.partition("\t")
            if name.strip():
                rows.append(ProcessRow(name.strip(), path.strip()))
        return rows


PROFILES = {"linux": Linux(), "windows": Windows()}
