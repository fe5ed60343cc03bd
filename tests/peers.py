"""Real peer servers for integration tests, one set per test.

Each server runs from its own directory under the test's ``tmp_path``, listens on a free port on
127.0.0.1 and is stopped by PID when the test ends. Every fixture returns a :class:`Peer`, whose
:meth:`Peer.stop` lets a test take the server down mid-test. Missing binaries skip the test
(a failure under ``CI=true``, see ``conftest.py``). Recipes: ``/work/shared/peers.md``.

Use from a test module with ``pytest_plugins = ["tests.peers"]``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from tests.support import Proc, free_port, need_binary, wait_port, wait_unbound

HTTP_BODY = "monitord test page"
"""What the nginx peers answer on ``/``."""

CERT_DAYS = 90
"""Validity of the https peer's certificate, counted from now."""


@dataclass
class Peer:
    """A running peer: where it listens, and how to stop it (idempotent)."""

    name: str
    port: int
    directory: Path | None
    _stop: Callable[[], None] = field(repr=False)
    stopped: bool = False

    def stop(self) -> None:
        """Stop the server; afterwards its port refuses connections."""
        if not self.stopped:
            self.stopped = True
            self._stop()


class PeerStarter:
    """Starts peer processes under one directory and stops all of them at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._peers: list[Peer] = []
        self._short: list[Path] = []

    def directory(self, name: str) -> Path:
        """A fresh working directory for peer ``name`` (``name-2``... for a second one of the kind)."""
        path, count = self.root / name, 1
        while path.exists():
            count += 1
            path = self.root / f"{name}-{count}"
        path.mkdir(mode=0o755)
        return path

    def short_directory(self, name: str) -> Path:
        """A fresh directory directly under /tmp for peer ``name``'s UNIX sockets, removed at
        teardown: a socket's path holds at most 107 bytes, which the test's own directory (under
        an xdist worker's) can leave too few of."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self._short.append(path)
        return path

    def add(self, peer: Peer) -> Peer:
        """Track ``peer`` so it is stopped at teardown."""
        self._peers.append(peer)
        return peer

    def process(
        self, name: str, directory: Path, argv: list[str], port: int, stop_signal: int = signal.SIGTERM,
        host: str = "127.0.0.1",
    ) -> Peer:
        """Run ``argv`` in ``directory`` and wait until it accepts connections on ``port``.

        :meth:`Peer.stop` sends ``stop_signal`` to the process group, waits for the process and
        then until the port refuses connections.
        """
        proc = Proc(argv, directory / f"{name}.out", cwd=directory)

        def stop() -> None:
            proc.stop(stop_signal)
            wait_unbound(port, host)

        peer = self.add(Peer(name, port, directory, stop))
        try:
            wait_port(port, timeout=10.0, host=host)
        except TimeoutError:
            exit_code = proc.popen.poll()
            raise RuntimeError(
                f"{name} did not listen on {port} (exit code {exit_code}); output:\n{proc.output()}"
            ) from None
        return peer

    def stop_all(self) -> None:
        """Stop every peer, newest first; remove the short directories."""
        for peer in reversed(self._peers):
            peer.stop()
        for path in self._short:
            shutil.rmtree(path, ignore_errors=True)


def write_file(path: Path, text: str, mode: int = 0o644) -> Path:
    """Write ``text`` to ``path`` with ``mode``; return the path."""
    path.write_text(text)
    path.chmod(mode)
    return path


def self_signed_cert(directory: Path, days: float, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and 127.0.0.1, valid from a day ago until now + ``days``.

    Returns the paths of the PEM certificate and key.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = write_file(directory / "cert.pem", cert.public_bytes(serialization.Encoding.PEM).decode())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path = write_file(directory / "key.pem", key_pem.decode(), 0o600)
    return cert_path, key_path


def start_nginx(peers: PeerStarter, tls_days: float | None = None, connections: int = 64) -> Peer:
    """nginx on one port: plain HTTP, or HTTPS with a self-signed cert valid ``tls_days`` more days.

    Locations: ``/`` answers 200 with :data:`HTTP_BODY`, ``/fail`` 503, ``/moved`` 301 to ``/``.
    """
    binary = need_binary("nginx")
    name = "nginx" if tls_days is None else "nginx-tls"
    directory, port = peers.directory(name), free_port()
    listen = f"127.0.0.1:{port}"
    if tls_days is not None:
        cert, key = self_signed_cert(directory, tls_days)
        listen += f" ssl;\n        ssl_certificate {cert};\n        ssl_certificate_key {key}"
    temp_paths = "\n".join(
        f"    {kind}_temp_path {directory}/{kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    write_file(directory / "nginx.conf", f"""\
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    default_type text/plain;
    absolute_redirect off;
{temp_paths}
    server {{
        listen {listen};
        location = / {{ return 200 "{HTTP_BODY}\\n"; }}
        location = /fail {{ return 503; }}
        location = /moved {{ return 301 /; }}
    }}
}}
""")
    return peers.process(name, directory, [binary, "-p", str(directory), "-e", "error.log", "-c", "nginx.conf"], port)


def start_dovecot(peers: PeerStarter, protocol: str) -> Peer:
    """dovecot serving only ``protocol`` (``pop3`` or ``imap``) in plain text, no TLS port.

    Stopped with SIGKILL: a SIGTERM that lands while dovecot is still spawning its auth and
    login processes (right after the first connection) makes the master wait ~6 s for them.
    """
    binary = need_binary("dovecot")
    directory, port = peers.directory(f"dovecot-{protocol}"), free_port()
    write_file(directory / "dovecot.conf", f"""\
protocols = {protocol}
listen = 127.0.0.1
base_dir = {peers.short_directory(f"dovecot-{protocol}")}
state_dir = {directory}/state
log_path = {directory}/dovecot.log
ssl = no
disable_plaintext_auth = no
mail_location = maildir:{directory}/mail/%u
passdb {{
  driver = static
  args = password=probepw
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={directory}/home/%u
}}
service {protocol}-login {{
  inet_listener {protocol} {{
    port = {port}
  }}
  inet_listener {protocol}s {{
    port = 0
  }}
}}
""")
    argv = [binary, "-F", "-c", str(directory / "dovecot.conf")]
    return peers.process(f"dovecot-{protocol}", directory, argv, port, stop_signal=signal.SIGKILL)


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[PeerStarter]:
    """The test's peer starter; every peer it started is stopped when the test ends."""
    starter = PeerStarter(tmp_path)
    try:
        yield starter
    finally:
        starter.stop_all()


@pytest.fixture
def http_peer(peers: PeerStarter) -> Peer:
    """nginx serving plain HTTP."""
    return start_nginx(peers)


@pytest.fixture
def https_peer(peers: PeerStarter) -> Peer:
    """nginx serving HTTPS with a self-signed certificate valid :data:`CERT_DAYS` more days."""
    return start_nginx(peers, tls_days=CERT_DAYS)


@pytest.fixture
def make_https_peer(peers: PeerStarter) -> Callable[[float], Peer]:
    """A factory: ``make_https_peer(days)`` starts nginx with a cert valid ``days`` more days."""
    return lambda days: start_nginx(peers, tls_days=days)


@pytest.fixture
def ftp_peer(peers: PeerStarter) -> Peer:
    """vsftpd with anonymous read-only access."""
    binary = need_binary("vsftpd")
    directory, port = peers.directory("vsftpd"), free_port()
    for sub in ("root", "empty"):
        (directory / sub).mkdir(mode=0o755)
    config = write_file(directory / "vsftpd.conf", f"""\
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=YES
local_enable=NO
write_enable=NO
anon_root={directory}/root
secure_chroot_dir={directory}/empty
xferlog_enable=NO
vsftpd_log_file={directory}/vsftpd.log
seccomp_sandbox=NO
ftpd_banner=monitord test FTP
""", 0o600)
    return peers.process("vsftpd", directory, [binary, str(config)], port)


@pytest.fixture
def smtp_peer(peers: PeerStarter) -> Peer:
    """aiosmtpd, run by this interpreter."""
    directory, port = peers.directory("aiosmtpd"), free_port()
    argv = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}"]
    return peers.process("aiosmtpd", directory, argv, port)


@pytest.fixture
def pop_peer(peers: PeerStarter) -> Peer:
    """dovecot serving POP3."""
    return start_dovecot(peers, "pop3")


@pytest.fixture
def imap_peer(peers: PeerStarter) -> Peer:
    """dovecot serving IMAP."""
    return start_dovecot(peers, "imap")


@pytest.fixture
def ssh_peer(peers: PeerStarter) -> Peer:
    """OpenSSH sshd with a fresh host key; no user is needed to read its banner."""
    binary = need_binary("sshd")
    directory, port = peers.directory("sshd"), free_port()
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    host_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    write_file(directory / "host_key", host_key.decode(), 0o600)
    config = write_file(directory / "sshd_config", f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {directory}/host_key
PidFile {directory}/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
""")
    return peers.process("sshd", directory, [binary, "-D", "-e", "-f", str(config)], port)


@pytest.fixture
def silent_peer() -> Iterator[Peer]:
    """A port that accepts connections (into the kernel's backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        peer = Peer("silent", sock.getsockname()[1], None, sock.close)
        yield peer
    finally:
        sock.close()
