"""Remote actions over SSH: log in, run a command, check and restart a service, force an fsck
on the next boot, read this boot's kernel log for filesystem errors.

paramiko blocks, so every call runs in a bounded thread pool (``loop.run_in_executor``) and the
event loop never waits on the network. Every blocking step has its own deadline inside the
worker thread (TCP connect, banner, key exchange and login share the connect timeout; each
command has its own), so a hung host or command frees its thread instead of starving the pool.
Cancelling the awaiting task does not stop the thread early; its deadlines still do.

Each public call opens one connection and closes it before returning. Remediation is rare, and
a fresh connection never inherits a half-dead session from an earlier attempt.

Host keys are always verified against the configured known_hosts file, which is only read,
never written: an unknown or changed key is an ``AUTH`` failure. Login is by key only (no
agent, no ``~/.ssh`` keys, no passwords). Key material is never logged or put into errors.
"""

from __future__ import annotations

import asyncio
import errno
import io
import re
import select
import socket
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import paramiko

from monitord.shared.fields import SecretRef
from monitord.shared.results import Reason
from monitord.shared.power import ActionError
from monitord.shared.access import SshConfig
from monitord.shared.probe import RestartMethod
from remediation.known_hosts import KnownHosts
from remediation.osprofile import PROFILES, Linux, ProcessRow


T = TypeVar("T")

SSH_WORKERS = 16
"""Threads in the shared pool; more concurrent calls queue (their timeouts start when they run)."""

_EXECUTOR = ThreadPoolExecutor(max_workers=SSH_WORKERS, thread_name_prefix="monitord-ssh")

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_COMMAND_TIMEOUT = 60.0
MAX_OUTPUT = 1 << 20
"""Bytes kept from each of stdout and stderr; the rest is read and dropped."""

FSCK_COMMAND = "touch /forcefsck && systemctl reboot"
"""Default for :meth:`SshClient.force_fsck`: systemd-fsck checks every filesystem on the next boot."""

FS_ERROR_PATTERNS: tuple[str, ...] = (
    r"EXT4-fs error",
    r"XFS.*(corrupt|metadata I/O error)",
    r"Buffer I/O error",
    r"I/O error",
    r"fsck needed",
    r"UNEXPECTED INCONSISTENCY",
)
"""Kernel log lines that mean a filesystem or its disk is in trouble (matched case-insensitively)."""

KERNEL_LOG_COMMANDS = ("journalctl -k -b --no-pager -q", "dmesg")
"""Where :meth:`SshClient.boot_errors` reads the kernel log: the first that succeeds with output."""

_KEY_CLASSES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)
_READ_SIZE = 32768


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A finished remote command. ``exit_status`` is -1 if it was killed by a signal."""

    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_status == 0

    def describe(self) -> str:
        """``exit N`` plus the first line of stderr (or stdout), for summaries."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return f"exit {self.exit_status}" + (f": {text[0][:200]}" if text else "")


class CommandInterrupted(ActionError):
    """The command was sent but its result never came: it outlived its timeout
    (``Reason.TIMEOUT``) or the connection dropped under it (``Reason.UNREACHABLE``)."""


@dataclass(frozen=True, slots=True)
class SshTarget:
    """Where and as whom to log in, and how to verify the host."""

    address: str
    port: int
    username: str
    key: SecretRef
    known_hosts: Path
    os: str = "linux"

    @classmethod
    def from_config(cls, address: str, config: SshConfig) -> "SshTarget":
        """The target for a host's ``address`` and its ``ssh:`` config."""
        return cls(address, config.port, config.username, config.key, config.known_hosts, config.os)

    @property
    def host_label(self) -> str:
        """``[address]:port``, as known_hosts spells a host on a non-default port."""
        return f"[{self.address}]:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts names this host: the bare address on port 22, else ``[address]:port``."""
        return self.address if self.port == 22 else self.host_label


class _UnknownHostKey(Exception):
    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("unknown host key")
        self.key = key


class _RevokedHostKey(_UnknownHostKey):
    pass


class _KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Verify the server's key against known_hosts (paramiko's own table is left empty, so every
    key comes here): revoked → reject, any listed key of the host → accept, else reject."""

    def __init__(self, known: KnownHosts) -> None:
        self.known = known

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if self.known.is_revoked(key):
            raise _RevokedHostKey(key)
        expected = self.known.keys_for(hostname)
        if any(known.asbytes() == key.asbytes() for known in expected):
            return
        if expected:
            raise paramiko.BadHostKeyException(hostname, key, expected[0])
        raise _UnknownHostKey(key)


def _key_text_to_pkey(text: str) -> paramiko.PKey:
    """Parse an unencrypted private key (OpenSSH or PEM format) given as text."""
    for key_class in _KEY_CLASSES:
        try:
            return key_class.from_private_key(io.StringIO(text + "\n"))
        except (paramiko.SSHException, ValueError):
            continue
    raise ActionError(Reason.ERROR, "ssh key is not an unencrypted Ed25519, ECDSA or RSA private key")


def _credentials(key: SecretRef) -> dict:
    """paramiko ``connect`` arguments for ``key``: a file is passed by name, other secrets parsed."""
    if key.file is not None:
        try:
            with open(key.file, "rb"):
                pass
        except OSError as exc:
            raise ActionError(Reason.ERROR, f"cannot read ssh key file {key.file}: {exc.strerror}") from None
        return {"key_filename": str(key.file)}
    try:
        text = key.read()
    except LookupError as exc:
        raise ActionError(Reason.ERROR, f"ssh key: {exc}") from None
    return {"pkey": _key_text_to_pkey(text)}


def _is_timeout(exc: BaseException) -> bool:
    """True if ``exc`` (or what it was raised from) is a timeout, as paramiko reports several."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError) or re.search(r"time(d)? ?out", str(seen), re.IGNORECASE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _socket_reason(exc: OSError) -> Reason:
    """The reason for a socket error while connecting."""
    errors = getattr(exc, "errors", None)  # paramiko's NoValidConnectionsError: one error per address
    codes = {e.errno for e in errors.values()} if errors else {exc.errno}
    if errno.ECONNREFUSED in codes:
        return Reason.REFUSED
    if isinstance(exc, socket.gaierror) or codes & {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}:
        return Reason.UNREACHABLE
    return Reason.PROTOCOL  # reset or aborted during the handshake


def _connect_error(exc: Exception, target: SshTarget, timeout: float) -> ActionError:
    """Translate what ``SSHClient.connect`` raised into a typed :class:`ActionError`."""
    where = target.host_label
    if isinstance(exc, ActionError):
        return exc
    if isinstance(exc, _RevokedHostKey):
        return ActionError(
            Reason.AUTH, f"host key for {where} is REVOKED in {target.known_hosts} "
            f"(offered {exc.key.get_name()} {exc.key.fingerprint})",
        )
    if isinstance(exc, _UnknownHostKey):
        return ActionError(
            Reason.AUTH,
            f"host key for {where} is not in {target.known_hosts} "
            f"(offered {exc.key.get_name()} {exc.key.fingerprint})",
        )
    if isinstance(exc, paramiko.BadHostKeyException):
        return ActionError(
            Reason.AUTH,
            f"host key for {where} CHANGED: offered {exc.key.get_name()} {exc.key.fingerprint}, "
            f"{target.known_hosts} has {exc.expected_key.get_name()} {exc.expected_key.fingerprint}",
        )
    if _is_timeout(exc):
        return ActionError(Reason.TIMEOUT, f"ssh {where}: no login within {timeout:g}s")
    if isinstance(exc, paramiko.AuthenticationException):
        return ActionError(Reason.AUTH, f"ssh {where}: login as {target.username} refused: {exc}")
    if isinstance(exc, OSError):
        return ActionError(_socket_reason(exc), f"ssh {where}: {exc.strerror or exc}")
    if isinstance(exc, (paramiko.SSHException, EOFError)):
        return ActionError(Reason.PROTOCOL, f"ssh {where}: {exc or type(exc).__name__}")
    return ActionError(Reason.ERROR, f"ssh {where}: {type(exc).__name__}: {exc}")


class _Output:
    """Bytes read from one stream, capped at :data:`MAX_OUTPUT`."""

    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        room = MAX_OUTPUT - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class _Connection:
    """One logged-in connection, used only inside a worker thread."""

    def __init__(self, client: paramiko.SSHClient, target: SshTarget, open_timeout: float) -> None:
        self._client = client
        self._target = target
        self._open_timeout = open_timeout

    def exec(self, command: str, timeout: float) -> CommandResult:
        """Run ``command`` (stdin closed), reading its output until it exits or ``timeout`` passes.

        Raises :class:`CommandInterrupted` on timeout (the channel is closed) or when the
        connection drops before the exit status arrives.
        """
        transport = self._client.get_transport()
        where = self._target.host_label
        try:
            channel = transport.open_session(timeout=self._open_timeout)
        except Exception as exc:
            raise _connect_error(exc, self._target, self._open_timeout) from None
        out, err = _Output(), _Output()
        deadline = time.monotonic() + timeout
        lost = False  # the connection failed under us
        with channel:
            try:
                channel.exec_command(command)
                channel.shutdown_write()
                while True:
                    self._drain(channel, out, err)
                    remaining = deadline - time.monotonic()
                    if channel.eof_received or channel.closed:  # all output is in; the status follows
                        if not channel.status_event.wait(max(remaining, 0)):
                            break
                        self._drain(channel, out, err)
                        break
                    if remaining <= 0:
                        break
                    select.select([channel], [], [], remaining)
            except (OSError, EOFError, paramiko.SSHException):
                lost = True
            # A closed channel sets status_event too; exit_status stays -1 without an exit-status
            # message (the command was killed by a signal, or the connection dropped).
            if not lost and not channel.status_event.is_set():
                raise CommandInterrupted(Reason.TIMEOUT, f"ssh {where}: command timed out after {timeout:g}s")
            if channel.exit_status == -1 and (lost or not transport.is_active()):
                raise CommandInterrupted(Reason.UNREACHABLE, f"ssh {where}: connection dropped during the command")
            return CommandResult(channel.exit_status, out.text(), err.text())

    @staticmethod
    def _drain(channel: paramiko.Channel, out: _Output, err: _Output) -> None:
        while channel.recv_ready():
            out.add(channel.recv(_READ_SIZE))
        while channel.recv_stderr_ready():
            err.add(channel.recv_stderr(_READ_SIZE))


class SshClient:
    """Async SSH actions on one host. Every call opens its own connection and closes it.

    ``connect_timeout`` bounds TCP connect, banner, key exchange, login and channel opening
    (each step); ``command_timeout`` is the default for each command. ``executor`` defaults to
    the module's shared pool of :data:`SSH_WORKERS` threads.
    """

    def __init__(
        self,
        target: SshTarget,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        executor: Executor | None = None,
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._executor = executor or _EXECUTOR

    @classmethod
    def from_config(cls, address: str, config: SshConfig, **options) -> "SshClient":
        """A client for ``address`` with the host's ``ssh:`` config; ``options`` as for the constructor."""
        return cls(SshTarget.from_config(address, config), **options)

    def __repr__(self) -> str:
        return f"SshClient({self.target.username}@{self.target.host_label})"

    async def login_check(self) -> None:
        """Log in and run ``true``; raise :class:`ActionError` if that fails."""
        await self._run_checked("true", "'true'")

    async def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command`` through the login shell and return its exit status and output.

        A non-zero exit is a result, not an error. Raises :class:`ActionError` if the login
        fails and :class:`CommandInterrupted` if the command times out or the connection drops.
        """
        limit = self.command_timeout if timeout is None else timeout
        return await self._session(lambda conn: conn.exec(command, limit))

    @property
    def profile(self) -> Linux:
        """What to run on this host, by its ``os``."""
        return PROFILES[self.target.os]

    async def service_active(self, unit: str, status_command: str | None = None) -> bool:
        """True if ``unit`` is running: ``systemctl is-active --quiet UNIT`` (on Windows
        ``Get-Service``), or ``status_command`` when given, exits 0."""
        result = await self.run(status_command or self.profile.service_status(unit))
        return result.ok

    async def restart_service(self, unit: str, restart_command: str | None = None) -> CommandResult:
        """Restart ``unit`` with ``systemctl restart UNIT`` (on Windows ``Restart-Service``), or
        ``restart_command`` when given.

        Raises :class:`ActionError` (``ERROR``) if the command exits non-zero.
        """
        return await self._run_checked(restart_command or self.profile.service_restart(unit), f"restart of {unit}")

    async def restart(self, method: RestartMethod) -> CommandResult:
        """Carry out a check's ``restart:`` method: ``kill_command`` (its exit status ignored:
        the process may be gone already) then ``start_command``; or restart the unit."""
        if method.start_command is not None:
            if method.kill_command is not None:
                await self.run(method.kill_command)
            return await self._run_checked(method.start_command, "start command")
        return await self.restart_service(method.unit or "", restart_command=method.restart_command)

    async def processes(self) -> list[ProcessRow]:
        """The host's running processes (``ps``; on Windows ``Get-Process``)."""
        result = await self._run_checked(self.profile.process_list(), "process list")
        return self.profile.parse_processes(result.stdout)

    async def force_fsck(self, command: str = FSCK_COMMAND, timeout: float | None = None) -> str:
        """Run ``command`` to have every filesystem checked on the next boot, and reboot.

        The connection dropping, or the command hanging, once it has been sent is what a
        rebooting host does, so both count as success. Raises :class:`ActionError` if the login
        fails or the command exits non-zero. Returns a summary for the journal.
        """
        try:
            await self._run_checked(command, repr(command), timeout)
        except CommandInterrupted as exc:
            what = "connection dropped" if exc.reason is Reason.UNREACHABLE else "no answer"
            return f"sent {command!r}; {what} (host rebooting)"
        return f"sent {command!r}; exit 0"

    async def boot_errors(self, patterns: Iterable[str | re.Pattern] | None = None) -> list[str]:
        """Kernel log lines of the current boot that match ``patterns`` (default
        :data:`FS_ERROR_PATTERNS`, case-insensitive).

        Reads ``journalctl -k -b``, or ``dmesg`` if journalctl fails or prints nothing. Raises
        :class:`ActionError` if neither can be read.
        """
        compiled = [
            re.compile(p, re.IGNORECASE) if isinstance(p, str) else p for p in (patterns or FS_ERROR_PATTERNS)
        ]
        log = await self._session(self._read_kernel_log)
        return [line for line in log.splitlines() if any(p.search(line) for p in compiled)]

    def _read_kernel_log(self, conn: _Connection) -> str:
        failures = []
        for command in KERNEL_LOG_COMMANDS:
            result = conn.exec(command, self.command_timeout)
            if result.ok and result.stdout.strip():
                return result.stdout
            failures.append(f"{command.split()[0]}: {result.describe()}")
        raise ActionError(Reason.ERROR, f"{self._where}: cannot read the kernel log ({'; '.join(failures)})")

    @property
    def _where(self) -> str:
        return f"ssh {self.target.host_label}"

    async def _run_checked(self, command: str, what: str, timeout: float | None = None) -> CommandResult:
        """:meth:`run`, but a non-zero exit raises :class:`ActionError` (``ERROR``) naming ``what``."""
        result = await self.run(command, timeout)
        if not result.ok:
            raise ActionError(Reason.ERROR, f"{self._where}: {what} failed ({result.describe()})")
        return result

    async def _session(self, work: Callable[[_Connection], T]) -> T:
        """Connect, log in, do ``work`` and close, all in a pool thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._blocking_session, work)

    def _blocking_session(self, work: Callable[[_Connection], T]) -> T:
        client = paramiko.SSHClient()
        try:
            try:
                self._login(client)
            except Exception as exc:
                raise _connect_error(exc, self.target, self.connect_timeout) from None
            return work(_Connection(client, self.target, self.connect_timeout))
        finally:
            client.close()

    def _login(self, client: paramiko.SSHClient) -> None:
        target, timeout = self.target, self.connect_timeout
        try:
            known = KnownHosts.load(target.known_hosts)
        except OSError as exc:
            raise ActionError(Reason.ERROR, f"cannot read known_hosts {target.known_hosts}: {exc.strerror}") from None
        client.set_missing_host_key_policy(_KnownHostsPolicy(known))
        # Ask only for the key types known_hosts has for this host, as ssh does; paramiko would
        # otherwise take the server's favourite and the known key would never be offered.
        allowed = known.algorithms_for(target.known_hosts_name)
        disabled = {"keys": [alg for alg in paramiko.Transport._preferred_keys if alg not in allowed]} if allowed else None
        try:
            client.connect(
                target.address,
                port=target.port,
                username=target.username,
                **_credentials(target.key),
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                disabled_algorithms=disabled,
            )
        except paramiko.SSHException as exc:
            transport = client.get_transport()
            if str(exc) != "No existing session" or transport is None:
                raise
            # Transport.start_client() stops waiting at its timeout without raising; connect()
            # then fails like this. The transport thread's own error, if any, says more.
            raise transport.get_exception() or TimeoutError("SSH handshake timed out") from None
