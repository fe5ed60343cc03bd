"""A real OpenSSH sshd to log in to, with a test user, keys and fake system tools.

The ``ssh_host`` fixture starts sshd on a free port of 127.0.0.1 with a fresh host key and lets
the user ``peertest`` (created if missing, password disabled) log in with a fresh client key.
Sessions get ``PATH=<dir>/fakebin:...`` (sshd ``SetEnv``), where fake tools stand in for the
system's (recipe: ``/work/shared/peers.md`` §4):

* ``systemctl``: manages fake units ``<dir>/services/NAME.cmd`` (shell snippets, run as
  ``sh NAME.cmd`` in their own session with a pidfile) with start/stop/restart/is-active/
  status; exit 3 when inactive, 4 for an unknown unit; ``systemctl reboot`` only logs.
* ``journalctl`` and ``dmesg``: print a file the test controls, or fail if it is absent.
* ``reboot``: only logs.

Commands that may outlive their connection (hung on purpose) can be wrapped with
:meth:`SshHost.tracked` so that teardown kills them by PID.

Every fake tool appends its argv to one call log, so a test can count what was restarted.
Everything lives in a fresh directory under /tmp (pytest's own tmp_path is not readable by
``peertest``). sshd, every fake unit and every tracked command are stopped by PID when the test ends.

Use from a test module with ``from tests.ssh_peer import ssh_host  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from monitord.shared.access import SshConfig
from monitord.shared.fields import SecretRef
from remediation.ssh import SshClient
from tests.peers import Peer, PeerStarter, write_file
from tests.support import free_port, need_binary, need_root

SSH_USER = "peertest"

SYSTEMCTL_SHIM = r'''#!/usr/bin/python3
"""systemctl stand-in for tests: fake units are shell snippets in SERVICES/NAME.cmd."""
import os, signal, subprocess, sys, time

SERVICES, CALLS = {services!r}, {calls!r}


def log(argv):
    with open(CALLS, "a") as f:
        f.write(" ".join(["systemctl", *argv]) + "\n")


def pid_of(unit):
    """The unit's PID if its process is alive (zombies are dead), else None."""
    try:
        pid = int(open(f"{{SERVICES}}/{{unit}}.pid").read())
        state = open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    return None if state in ("Z", "X") else pid


def start(unit):
    if pid_of(unit):
        return 0
    with open(f"{{SERVICES}}/{{unit}}.out", "ab") as out:
        proc = subprocess.Popen(["sh", f"{{SERVICES}}/{{unit}}.cmd"], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=SERVICES)
    open(f"{{SERVICES}}/{{unit}}.pid", "w").write(str(proc.pid))
    time.sleep(0.2)
    if proc.poll() is not None:
        print(f"Job for {{unit}}.service failed.", file=sys.stderr)
        return 1
    return 0


def stop(unit):
    pid = pid_of(unit)
    if pid:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while pid_of(unit) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid_of(unit):
            os.killpg(pid, signal.SIGKILL)
    return 0


def status(unit, quiet):
    pid = pid_of(unit)
    if not quiet:
        state = "active (running)" if pid else "inactive (dead)"
        print(f"* {{unit}}.service - fake unit\n     Active: {{state}}" + (f"\n   Main PID: {{pid}}" if pid else ""))
    return 0 if pid else 3


def is_active(unit, quiet):
    if not quiet:
        print("active" if pid_of(unit) else "inactive")
    return 0 if pid_of(unit) else 3


def main(argv):
    log(argv)
    quiet = "--quiet" in argv or "-q" in argv
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        return 1
    verb, units = words[0], [u.removesuffix(".service") for u in words[1:]]
    if verb in ("reboot", "poweroff", "daemon-reload"):
        return 0
    actions = {{
        "start": lambda u: start(u),
        "stop": lambda u: stop(u),
        "restart": lambda u: stop(u) or start(u),
        "is-active": lambda u: is_active(u, quiet),
        "status": lambda u: status(u, quiet),
    }}
    if verb not in actions or not units:
        print(f"Unknown command verb {{verb}}.", file=sys.stderr)
        return 1
    for unit in units:
        if not os.path.exists(f"{{SERVICES}}/{{unit}}.cmd"):
            print(f"Unit {{unit}}.service could not be found.", file=sys.stderr)
            return 4
        code = actions[verb](unit)
        if code:
            return code
    return 0


sys.exit(main(sys.argv[1:]))
'''

LOGGING_TOOL = """#!/bin/sh
# {name} stand-in for tests: logs its argv{what}
{{ printf %s {name}; for arg in "$@"; do printf ' %s' "$arg"; done; echo; }} >> {calls}
{body}
"""


@dataclass
class SshHost:
    """A running sshd with a test user, its keys and fake system tools under ``directory``."""

    peer: Peer
    directory: Path
    user: str
    client_key: Path
    known_hosts: Path
    host_key_line: str
    ecdsa_host_key: str
    """The server's second host key (``ecdsa-sha2-nistp256 AAAA...``), not in ``known_hosts``."""
    address: str = "127.0.0.1"

    @property
    def port(self) -> int:
        """Where sshd listens on ``address``."""
        return self.peer.port

    @property
    def services(self) -> Path:
        return self.directory / "services"

    @property
    def state(self) -> Path:
        """A directory the test user can write to (call log, kernel log files, markers)."""
        return self.directory / "state"

    def config(self, **changes) -> SshConfig:
        """The ``ssh:`` config that logs in as the test user; ``changes`` override fields."""
        fields = dict(
            port=self.port, username=self.user, key=SecretRef(file=self.client_key), known_hosts=self.known_hosts
        )
        return SshConfig(**(fields | changes))

    def client(
        self,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        executor: Executor | None = None,
        **changes,
    ) -> SshClient:
        """An :class:`SshClient` for this host; ``changes`` override config fields."""
        return SshClient.from_config(
            self.address,
            self.config(**changes),
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            executor=executor,
        )

    def stop(self) -> None:
        """Stop sshd (fake units keep running); afterwards its port refuses connections."""
        self.peer.stop()

    def add_unit(self, name: str, command: str) -> None:
        """Define fake unit ``name``: ``command`` runs under ``sh`` (``exec`` it to keep the PID)."""
        write_file(self.services / f"{name}.cmd", command + "\n")

    def add_http_unit(self, name: str) -> int:
        """Define a unit serving HTTP on a free port (``python3 -m http.server``); return the port."""
        port = free_port()
        self.add_unit(name, f"exec python3 -m http.server {port} --bind 127.0.0.1")
        return port

    def systemctl(self, *args: str) -> int:
        """Run the shim here, as the test user (logged like a remote call); return its exit code."""
        argv = [str(self.directory / "fakebin" / "systemctl"), *args]
        return subprocess.run(argv, user=self.user, group=self.user, cwd=self.directory, check=False).returncode

    def start_unit(self, name: str) -> int:
        """Start fake unit ``name`` as the test user; return its PID."""
        if self.systemctl("start", name) != 0:
            raise RuntimeError(f"fake unit {name} did not start:\n{self.unit_output(name)}")
        return self.unit_pid(name)

    def unit_pid(self, name: str) -> int | None:
        """The PID of the unit's process if it is alive, else None."""
        try:
            pid = int((self.services / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def kill_unit(self, name: str) -> None:
        """Kill the unit's processes with SIGKILL ("the service died") and wait until they are gone."""
        pid = self.unit_pid(name)
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while _alive(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake unit {name} (pid {pid}) survived SIGKILL")
            time.sleep(0.01)

    def unit_output(self, name: str) -> str:
        """What the unit's process wrote."""
        path = self.services / f"{name}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def calls(self) -> list[str]:
        """Every fake tool call so far, one ``tool arg...`` line each."""
        path = self.state / "calls.log"
        return path.read_text().splitlines() if path.exists() else []

    def set_kernel_log(self, text: str | None, source: str = "journal") -> None:
        """What fake ``journalctl`` (``source="journal"``) or ``dmesg`` prints; None makes it fail."""
        path = self.state / source
        if text is None:
            path.unlink(missing_ok=True)
        else:
            write_file(path, text)

    def tracked(self, command: str) -> str:
        """``command`` prefixed so its shell's PID is recorded and killed at teardown; end it with
        ``exec`` (``tracked("exec sleep 30")``) so the process that lingers is that shell."""
        return f"echo $$ >> {self.state}/tracked.pids; {command}"

    def stop_processes(self) -> None:
        """Kill every fake unit's process group and every tracked command still running (teardown)."""
        for pidfile in self.services.glob("*.pid"):
            self.kill_unit(pidfile.stem)
        pids = self.state / "tracked.pids"
        for pid in map(int, pids.read_text().split() if pids.exists() else ()):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (nothing here reaps orphaned units)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _shadow_password(name: str) -> str | None:
    """The password field of ``name`` in /etc/shadow, or None if there is no such user."""
    for line in Path("/etc/shadow").read_text().splitlines():
        user, _, rest = line.partition(":")
        if user == name:
            return rest.split(":", 1)[0]
    return None


def ensure_user(name: str = SSH_USER) -> None:
    """Create ``name`` if missing, with a disabled (not locked) password: sshd with ``UsePAM no``
    refuses locked accounts even for key logins. Other test processes (xdist workers, other
    runs) may do the same at once, and useradd and usermod fail while one of them holds the
    lock on /etc/passwd: so change only what is missing, and retry until it is there."""
    deadline = time.monotonic() + 30
    while (password := _shadow_password(name)) != "*":
        argv = ([need_binary("useradd"), "-m", "-s", "/bin/bash", "-p", "*", name] if password is None
                else [need_binary("usermod"), "-p", "*", name])
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
            time.sleep(0.05)


def openssh_key(directory: Path, name: str, key=None) -> tuple[Path, str]:
    """``key`` (default: a fresh Ed25519 key) in OpenSSH format at ``directory/name`` (mode 600);
    return its path and its public ``ssh-ed25519 AAAA...`` line."""
    key = key or ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    path = write_file(directory / name, private.decode(), 0o600)
    write_file(directory / f"{name}.pub", public + "\n")
    return path, public


def _write_fake_tools(directory: Path) -> None:
    fakebin, services, state = directory / "fakebin", directory / "services", directory / "state"
    calls = state / "calls.log"
    write_file(fakebin / "systemctl", SYSTEMCTL_SHIM.format(services=str(services), calls=str(calls)), 0o755)
    printers = {"journalctl": state / "journal", "dmesg": state / "dmesg"}
    for name, source in printers.items():
        body = f'[ -f {source} ] || {{ echo "{name}: no kernel log here" >&2; exit 1; }}\nexec cat {source}'
        script = LOGGING_TOOL.format(name=name, what=f" and prints {source}", calls=calls, body=body)
        write_file(fakebin / name, script, 0o755)
    write_file(fakebin / "reboot", LOGGING_TOOL.format(name="reboot", what="", calls=calls, body="exit 0"), 0o755)


@pytest.fixture
def ssh_host(peers: PeerStarter) -> Iterator[SshHost]:
    """sshd on a free port of 127.0.0.1 with a fresh host key; ``peertest`` logs in with a fresh client key."""
    with start_ssh_host(peers) as host:
        yield host


@pytest.fixture
def make_ssh_host(peers: PeerStarter) -> Iterator[Callable[[str], SshHost]]:
    """A factory: sshd listening on a given loopback address (a fake host of its own)."""
    with contextlib.ExitStack() as stack:
        yield lambda address: stack.enter_context(start_ssh_host(peers, address))


@contextlib.contextmanager
def start_ssh_host(peers: PeerStarter, address: str = "127.0.0.1") -> Iterator[SshHost]:
    """Start sshd on ``address`` and stop it (and its fake units) on exit."""
    need_root()
    binary = need_binary("sshd")
    ensure_user()
    directory = Path(tempfile.mkdtemp(prefix="monitord-sshd-"))
    try:
        directory.chmod(0o755)
        for sub in ("fakebin", "services", "state", "authorized_keys"):
            (directory / sub).mkdir(mode=0o755)
        user = pwd.getpwnam(SSH_USER)
        for sub in ("services", "state"):
            os.chown(directory / sub, user.pw_uid, user.pw_gid)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        _write_fake_tools(directory)
        openssh_key(directory, "host_key")
        _, ecdsa_host_key = openssh_key(directory, "host_key_ecdsa", ec.generate_private_key(ec.SECP256R1()))
        client_key, client_public = openssh_key(directory, "client_key")
        write_file(directory / "authorized_keys" / SSH_USER, client_public + "\n")
        port = free_port()
        host_public = (directory / "host_key.pub").read_text().strip()
        host_key_line = f"[{address}]:{port} {host_public}"
        known_hosts = write_file(directory / "known_hosts", host_key_line + "\n")
        config = write_file(directory / "sshd_config", f"""\
Port {port}
ListenAddress {address}
HostKey {directory}/host_key
HostKey {directory}/host_key_ecdsa
PidFile {directory}/sshd.pid
AuthorizedKeysFile {directory}/authorized_keys/%u
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
MaxStartups 100
SetEnv PATH={directory}/fakebin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
""")
        subprocess.run([binary, "-t", "-f", str(config)], check=True)
        peer = peers.process("sshd", directory, [binary, "-D", "-e", "-f", str(config)], port, host=address)
        host = SshHost(peer, directory, SSH_USER, client_key, known_hosts, host_key_line, ecdsa_host_key, address)
        try:
            yield host
        finally:
            host.stop_processes()
            peer.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

