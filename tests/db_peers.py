"""Throwaway database servers for integration tests: PostgreSQL and MariaDB, one per test.

Each server gets a fresh data directory under ``/tmp`` (owned by the server's system user:
pytest's ``tmp_path`` is private to root), listens on a free port on 127.0.0.1 and is stopped
by PID when the test ends. Both have a user :data:`USER` with password :data:`PASSWORD` that
owns the database :data:`DATABASE`, which holds one table of :data:`FILL_ROWS` rows of
:data:`FILL_ROW_BYTES` bytes. Missing binaries skip the test. Recipes: ``/work/shared/peers.md`` §6.

Also here: fake servers for failure tests (one that accepts and never answers, one that
answers like an HTTP server).

Registered in ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import asyncio
import itertools
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import pytest

from tests.peers import Peer, PeerStarter, write_file
from tests.support import free_port, need_binary, need_root, wait_unix_socket

USER = "probe"
PASSWORD = "s3cret-probe-pw"
DATABASE = "probedb"
FILL_ROWS = 2000
FILL_ROW_BYTES = 500
"""The fill table holds at least FILL_ROWS * FILL_ROW_BYTES bytes of data (~1 MB)."""


@dataclass
class DbPeer(Peer):
    """A running database server with a probe user, its password and database."""

    user: str = USER
    password: str = PASSWORD
    database: str = DATABASE


def _server_directory(owner: str, prefix: str) -> Path:
    """A fresh directory under /tmp owned by the system user ``owner`` (skip if there is none:
    the server's package is not installed)."""
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        pytest.skip(f"system user {owner!r} does not exist: the database server is not installed")
    path = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o755)
    return path


def _run(argv: list[str], what: str, stdin: str | None = None) -> None:
    """Run a set-up command; fail with its output if it fails."""
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _wait_ready(argv: list[str], timeout: float = 10.0) -> None:
    """Wait until the readiness command ``argv`` succeeds."""
    deadline = time.monotonic() + timeout
    while subprocess.run(argv, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{argv[0]} did not succeed within {timeout}s")
        time.sleep(0.02)


def _as_user(user: str, argv: list[str]) -> list[str]:
    """``argv`` run as ``user`` (setpriv execs, so the PID stays the server's own)."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]


def start_postgres(peers: PeerStarter, directory: Path) -> DbPeer:
    """PostgreSQL in ``directory`` (owned by postgres), scram-sha-256 over TCP."""
    initdb, postgres, psql = need_binary("initdb"), need_binary("postgres"), need_binary("psql")
    pg_isready = need_binary("pg_isready")
    port = free_port()
    data = directory / "data"
    pwfile = write_file(directory / "pwfile", "superuser-pw\n", 0o644)
    _run(_as_user("postgres", [
        initdb, "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}", "--auth-local=trust",
        "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
    ]), "initdb")
    argv = _as_user("postgres", [
        postgres, "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
        "-c", f"unix_socket_directories={directory}", "-c", "fsync=off", "-c", "autovacuum=off",
    ])
    # SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for clients to disconnect)
    started = peers.process("postgres", directory, argv, port, stop_signal=signal.SIGINT)
    peer = DbPeer("postgres", port, directory, started.stop)
    _wait_ready([pg_isready, "-q", "-h", str(directory), "-p", str(port)])  # also past "starting up"
    _run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(directory), "-p", str(port), "-U", "postgres",
          "-d", "postgres"], "postgres set-up", stdin=f"""
CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}';
CREATE DATABASE {DATABASE} OWNER {USER};
\\connect {DATABASE}
SET ROLE {USER};
CREATE TABLE fill (id integer PRIMARY KEY, pad text);
INSERT INTO fill SELECT i, repeat('x', {FILL_ROW_BYTES}) FROM generate_series(1, {FILL_ROWS}) AS i;
""")
    return peer


def start_mariadb(peers: PeerStarter, directory: Path) -> DbPeer:
    """MariaDB in ``directory`` (owned by mysql); ``--no-defaults``: nothing from /etc/mysql."""
    install, mariadbd, client = need_binary("mariadb-install-db"), need_binary("mariadbd"), need_binary("mariadb")
    port = free_port()
    data, sock, tmp = directory / "data", directory / "mysqld.sock", directory / "tmp"
    tmp.mkdir()
    shutil.chown(tmp, "mysql", "mysql")
    install_argv = [install, "--no-defaults", "--user=mysql", f"--datadir={data}", f"--tmpdir={tmp}",
                    "--auth-root-authentication-method=socket", "--skip-test-db"]
    try:
        _run(install_argv, "mariadb-install-db")
    except RuntimeError:  # its bootstrap server once crashed (signal 11 creating a temporary table): retry once
        shutil.rmtree(data, ignore_errors=True)
        _run(install_argv, "mariadb-install-db (second attempt)")
    argv = [
        mariadbd, "--no-defaults", "--user=mysql", f"--datadir={data}", f"--tmpdir={tmp}", f"--socket={sock}", f"--port={port}",
        "--bind-address=127.0.0.1", f"--pid-file={directory}/mysqld.pid", f"--log-error={directory}/maria.err",
        "--innodb-buffer-pool-size=64M", "--skip-name-resolve", "--innodb-flush-log-at-trx-commit=0",
    ]
    started = peers.process("mariadb", directory, argv, port)
    peer = DbPeer("mariadb", port, directory, started.stop)
    wait_unix_socket(sock)  # mariadbd listens on TCP a moment before its socket
    grants = "\n".join(
        f"CREATE USER '{USER}'@'{host}' IDENTIFIED BY '{PASSWORD}';\n"
        f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'{host}';"
        for host in ("127.0.0.1", "localhost")
    )
    _run([client, "--no-defaults", "-S", str(sock), "-u", "root"], "mariadb set-up", stdin=f"""
CREATE DATABASE {DATABASE};
{grants}
USE {DATABASE};
CREATE TABLE fill (id INT PRIMARY KEY, pad VARCHAR({FILL_ROW_BYTES})) ENGINE=InnoDB;
INSERT INTO fill SELECT seq, REPEAT('x', {FILL_ROW_BYTES}) FROM seq_1_to_{FILL_ROWS};
ANALYZE TABLE fill;
""")
    return peer


def _serve(peers: PeerStarter, owner: str, start: Callable[[PeerStarter, Path], DbPeer]) -> Iterator[DbPeer]:
    """Start a server in a fresh directory owned by ``owner``; stop it and remove the directory after."""
    need_root()
    directory = _server_directory(owner, f"monitord-{owner}-")
    try:
        yield start(peers, directory)
    finally:
        peers.stop_all()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_peer(peers: PeerStarter) -> Iterator[DbPeer]:
    """PostgreSQL 15 with the probe user and database."""
    yield from _serve(peers, "postgres", start_postgres)


@pytest.fixture
def mariadb_peer(peers: PeerStarter) -> Iterator[DbPeer]:
    """MariaDB with the probe user (for 127.0.0.1 and localhost) and database."""
    yield from _serve(peers, "mysql", start_mariadb)


class FakeServer:
    """An in-loop TCP server that sends ``greeting`` (if any) to each client, then hangs up
    (``hang_up``) or reads until the client closes; :attr:`closed` is set once every client it
    accepted has gone."""

    def __init__(self, greeting: bytes | None, hang_up: bool) -> None:
        self.greeting, self.hang_up = greeting, hang_up
        self.accepted = 0
        self.open = 0
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.closed.clear()
        try:
            if self.greeting is not None:
                writer.write(self.greeting)
                await writer.drain()
            while not self.hang_up and await reader.read(4096):
                pass
        except OSError:
            pass
        finally:
            writer.close()
            self.open -= 1
            if not self.open:
                self.closed.set()


@pytest.fixture
async def fake_server_factory() -> AsyncIterator:
    """``await make(greeting, hang_up)`` starts a :class:`FakeServer` on 127.0.0.1; all close at teardown."""
    servers: list[FakeServer] = []

    async def make(greeting: bytes | None = None, hang_up: bool = False) -> FakeServer:
        fake = FakeServer(greeting, hang_up)
        fake.server = await asyncio.start_server(fake._client, "127.0.0.1", 0)
        servers.append(fake)
        return fake

    yield make
    for fake in servers:
        fake.server.close()
        await fake.server.wait_closed()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbPeer]:
    """One PostgreSQL per test process for the state-store tests, which each take a fresh
    database of it (:func:`postgres_dsn`): an initdb per test would cost seconds each."""
    starter = PeerStarter(tmp_path_factory.mktemp("postgres-store"))
    yield from _serve(starter, "postgres", start_postgres)


@pytest.fixture
def postgres_dsn(postgres_server: DbPeer) -> str:
    """The DSN of a fresh, empty database owned by the probe user."""
    name = f"store_{next(_DATABASES)}"
    _run([need_binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(postgres_server.directory),
          "-p", str(postgres_server.port), "-U", "postgres", "-d", "postgres", "-c",
          f"CREATE DATABASE {name} OWNER {USER}"], "create database")
    return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{postgres_server.port}/{name}"


def postgres_sql(server: DbPeer, sql: str) -> str:
    """Run ``sql`` as PostgreSQL's superuser; return psql's output."""
    return subprocess.run([need_binary("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h",
                           str(server.directory), "-p", str(server.port), "-U", "postgres", "-d", "postgres",
                           "-c", sql], capture_output=True, text=True, check=True, timeout=30).stdout


_DATABASES = itertools.count(1)
