"""Database probes against throwaway PostgreSQL and MariaDB servers: login, query, size quota,
and each typed failure (auth, refused, timeout, protocol, rejected query)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable

import pytest
from pydantic import ValidationError

from monitord.shared.fields import SecretRef
from monitord.shared.results import Reason, Result, Status
from probes import REGISTRY, mysql, postgres
from monitord.shared.probe import ProbeKind
from probes.database import DatabaseParams, format_bytes

from tests.db_peers import FILL_ROW_BYTES, FILL_ROWS, DbPeer, FakeServer
from tests.test_service_probes import SHORT_TIMEOUT, assert_no_leftover_tasks, probe

integration = pytest.mark.integration

# kind name -> (probe kind, params model, server fixture)
DATABASES: dict[str, tuple[ProbeKind, type[DatabaseParams], str]] = {
    "postgres": (postgres.KIND, postgres.PostgresParams, "postgres_peer"),
    "mysql": (mysql.KIND, mysql.MysqlParams, "mariadb_peer"),
}
each_database = pytest.mark.parametrize("name", list(DATABASES))

HTTP_ANSWER = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

RIGHT_PASSWORD = "<the server's password>"
"""Stands for the fixture's password in parametrized cases."""

MakeFake = Callable[..., Awaitable[FakeServer]]


def server(request: pytest.FixtureRequest, name: str) -> DbPeer:
    """Start the database server the ``name`` probe talks to."""
    return request.getfixturevalue(DATABASES[name][2])


def secret_file(tmp_path: Path, password: str) -> SecretRef:
    """A file secret holding ``password`` (with the trailing newline editors add)."""
    path = tmp_path / "db-password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return SecretRef(file=path)


def params(name: str, port: int, tmp_path: Path, password: str | None = None, **changes) -> DatabaseParams:
    """The ``name`` probe's params for the fixture's user and database, password from a file."""
    secret = None if password is None else secret_file(tmp_path, password)
    fields = {"port": port, "user": "probe", "password": secret, "database": "probedb", **changes}
    return DATABASES[name][1](**fields)


async def run(name: str, peer_port: int, tmp_path: Path, password: str | None, timeout: float = 5.0, **changes) -> Result:
    """Run the ``name`` probe against 127.0.0.1 through the runner."""
    return await probe(DATABASES[name][0], params(name, peer_port, tmp_path, password, **changes), timeout=timeout)


def assert_failed(result: Result, status: Status, reason: Reason, password: str | None = None) -> None:
    """``result`` failed as expected, on one line, without showing the password."""
    assert (result.status, result.reason) == (status, reason), result.summary
    assert "\n" not in result.summary
    if password:
        assert password not in result.summary


@integration
@each_database
@pytest.mark.parametrize("tls", ["off", "prefer"])
async def test_ok_with_timings(request: pytest.FixtureRequest, tmp_path: Path, name: str, tls: str) -> None:
    """Login (password from a file secret) and ``SELECT 1`` pass; both times are values, no size without a quota."""
    peer = server(request, name)
    result = await run(name, peer.port, tmp_path, peer.password, tls=tls)
    assert (result.status, result.reason) == (Status.OK, Reason.NONE), result.summary
    assert set(result.values) == {"connect_seconds", "query_seconds"}
    assert 0 < result.values["connect_seconds"] < 5 and 0 < result.values["query_seconds"] < 5
    assert "login" in result.summary and peer.password not in result.summary
    assert_no_leftover_tasks()


@integration
@each_database
async def test_custom_query(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> None:
    """A configured query runs against the configured database (its rows are read and discarded)."""
    peer = server(request, name)
    result = await run(name, peer.port, tmp_path, peer.password, query="SELECT count(*) FROM fill")
    assert result.status is Status.OK, result.summary


@integration
@each_database
async def test_password_from_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Any SecretRef source works; here an environment variable."""
    peer = server(request, name)
    monkeypatch.setenv("MONITORD_TEST_DB_PASSWORD", peer.password)
    model = DATABASES[name][1]
    check = model(port=peer.port, user="probe", database="probedb", password={"env": "MONITORD_TEST_DB_PASSWORD"})
    result = await probe(DATABASES[name][0], check)
    assert result.status is Status.OK, result.summary


@integration
@each_database
@pytest.mark.parametrize(
    ("password", "changes"),
    [
        ("wrong-password-123", {}),
        (None, {}),
        (RIGHT_PASSWORD, {"user": "nobody"}),
        (RIGHT_PASSWORD, {"database": "no_such_db"}),
    ],
    ids=["wrong-password", "no-password", "unknown-user", "unknown-database"],
)
async def test_login_refused_is_auth(
    request: pytest.FixtureRequest, tmp_path: Path, name: str, password: str | None, changes: dict
) -> None:
    """Every refused login is CRITICAL/AUTH, and no password shows in the summary."""
    peer = server(request, name)
    password = peer.password if password == RIGHT_PASSWORD else password
    result = await run(name, peer.port, tmp_path, password, **changes)
    assert_failed(result, Status.CRITICAL, Reason.AUTH, password)
    assert peer.password not in result.summary
    assert "login refused" in result.summary


@integration
@each_database
async def test_stopped_server_is_refused(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> None:
    """A server stopped mid-test gives REFUSED."""
    peer = server(request, name)
    peer.stop()
    result = await run(name, peer.port, tmp_path, peer.password)
    assert_failed(result, Status.CRITICAL, Reason.REFUSED)


@integration
@each_database
@pytest.mark.parametrize("tls", ["off", "prefer"])
async def test_silent_server_times_out_and_is_hung_up_on(
    fake_server_factory: MakeFake, tmp_path: Path, name: str, tls: str
) -> None:
    """A port that accepts and never answers gives TIMEOUT; the probe closed its connection
    (the server sees the hang-up) and left no tasks behind."""
    fake = await fake_server_factory()
    result = await run(name, fake.port, tmp_path, "pw", timeout=SHORT_TIMEOUT, tls=tls)
    assert_failed(result, Status.CRITICAL, Reason.TIMEOUT)
    assert fake.accepted == 1
    await asyncio.wait_for(fake.closed.wait(), 2.0)
    assert_no_leftover_tasks()


@integration
@each_database
@pytest.mark.parametrize("tls", ["off", "prefer", "require"])
async def test_non_database_server_is_protocol(
    fake_server_factory: MakeFake, tmp_path: Path, name: str, tls: str
) -> None:
    """A server that answers like HTTP and hangs up is a PROTOCOL failure, promptly."""
    fake = await fake_server_factory(HTTP_ANSWER, hang_up=True)
    result = await run(name, fake.port, tmp_path, "pw", timeout=2.0, tls=tls)
    assert_failed(result, Status.CRITICAL, Reason.PROTOCOL)
    assert result.duration < 1.0


@integration
@each_database
async def test_tls_required_but_not_offered_is_protocol(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> None:
    """``tls: require`` against a server without TLS is a PROTOCOL failure."""
    peer = server(request, name)
    result = await run(name, peer.port, tmp_path, peer.password, tls="require")
    assert_failed(result, Status.CRITICAL, Reason.PROTOCOL, peer.password)
    assert "TLS" in result.summary or "SSL" in result.summary


@integration
@each_database
@pytest.mark.parametrize(
    "query", ["SELEC 1", "SELECT * FROM no_such_table", "SELECT no_such_column FROM fill"],
    ids=["syntax", "unknown-table", "unknown-column"],
)
async def test_rejected_query_is_unknown_error(request: pytest.FixtureRequest, tmp_path: Path, name: str, query: str) -> None:
    """A query the server rejects is UNKNOWN/ERROR (fix the check, do not restart the server);
    the login time is still reported."""
    peer = server(request, name)
    result = await run(name, peer.port, tmp_path, peer.password, query=query)
    assert_failed(result, Status.UNKNOWN, Reason.ERROR, peer.password)
    assert result.summary.startswith("query rejected: ")
    assert set(result.values) == {"connect_seconds"}


async def measured_size(name: str, peer: DbPeer, tmp_path: Path) -> int:
    """The database size the probe reports, with a quota far above it."""
    result = await run(name, peer.port, tmp_path, peer.password, size_quota="1TiB")
    assert (result.status, result.reason) == (Status.OK, Reason.NONE), result.summary
    return int(result.values["size_bytes"])


@integration
@each_database
async def test_size_within_quota(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> None:
    """With a quota, the size (at least the fill table's data) and its percentage are values."""
    peer = server(request, name)
    result = await run(name, peer.port, tmp_path, peer.password, size_quota="1GiB")
    assert result.status is Status.OK, result.summary
    size = result.values["size_bytes"]
    assert FILL_ROWS * FILL_ROW_BYTES <= size < 2**30 * 0.9
    assert result.values["size_percent"] == pytest.approx(100 * size / 2**30)
    assert f"of the {format_bytes(2**30)} quota" in result.summary


@integration
@each_database
@pytest.mark.parametrize(
    ("percent", "status", "word"),
    [(92.0, Status.WARNING, "warning at 90 %"), (97.0, Status.CRITICAL, "critical at 95 %")],
    ids=["warning", "critical"],
)
async def test_size_over_thresholds(
    request: pytest.FixtureRequest, tmp_path: Path, name: str, percent: float, status: Status, word: str
) -> None:
    """A size past the warning (90 %) or critical (95 %) share of the quota is a THRESHOLD notice."""
    peer = server(request, name)
    size = await measured_size(name, peer, tmp_path)
    quota = int(size * 100 / percent)
    result = await run(name, peer.port, tmp_path, peer.password, size_quota=quota)
    assert (result.status, result.reason) == (status, Reason.THRESHOLD), result.summary
    assert result.values["size_bytes"] == size
    assert result.values["size_percent"] == pytest.approx(percent, abs=0.01)
    assert word in result.summary and "query_seconds" in result.values


@integration
@each_database
async def test_size_over_tiny_quota(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> None:
    """A quota far below the size is CRITICAL/THRESHOLD, with the percentage over 100."""
    peer = server(request, name)
    result = await run(name, peer.port, tmp_path, peer.password, size_quota="1KiB")
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.THRESHOLD), result.summary
    assert result.values["size_percent"] > 100


@integration
@each_database
async def test_size_thresholds_configurable(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> None:
    """The warning and critical percentages are per check."""
    peer = server(request, name)
    quota = int(await measured_size(name, peer, tmp_path) * 100 / 60)  # the size is 60 % of it
    grades = []
    for warning, critical in [(50, 70), (40, 55), (61, 100)]:
        result = await run(name, peer.port, tmp_path, peer.password, size_quota=quota,
                           size_warning_percent=warning, size_critical_percent=critical)
        grades.append(result.status)
    assert grades == [Status.WARNING, Status.CRITICAL, Status.OK]


@each_database
def test_defaults(name: str) -> None:
    """The documented defaults: port, query, TLS, thresholds (Gold plan: 90 %), 10-minute interval."""
    kind, model, _ = DATABASES[name]
    check = model(user="probe")
    assert check.port == {"postgres": 5432, "mysql": 3306}[name]
    assert (check.query, check.tls, check.password, check.size_quota) == ("SELECT 1", "prefer", None, None)
    assert (check.size_warning_percent, check.size_critical_percent) == (90, 95)
    assert kind.default_interval == 600
    assert REGISTRY[name] is kind


@each_database
@pytest.mark.parametrize(
    ("value", "size"), [("10GiB", 10 * 2**30), ("500 MiB", 500 * 2**20), ("10GB", 10**10), (4096, 4096)]
)
def test_size_quota_parsing(name: str, value: object, size: int) -> None:
    """The quota is bytes or a size with a binary or decimal unit."""
    assert DATABASES[name][1](user="u", database="d", size_quota=value).size_quota == size


@each_database
@pytest.mark.parametrize(
    "fields",
    [
        {"password": "inline-secret"},
        {"user": ""},
        {"size_quota": 0},
        {"size_quota": "ten gigs"},
        {"size_warning_percent": 95, "size_critical_percent": 90},
        {"size_critical_percent": 101},
        {"tls": "verify-full"},
        {"query": ""},
    ],
)
def test_params_rejected(name: str, fields: dict) -> None:
    """Inconsistent params are rejected when the config loads."""
    with pytest.raises(ValidationError):
        DATABASES[name][1](**{"user": "u", "database": "d", **fields})


def test_mysql_quota_needs_database() -> None:
    """MySQL measures one database's tables, so a quota needs ``database``."""
    with pytest.raises(ValidationError, match="size_quota needs database"):
        mysql.MysqlParams(user="u", size_quota="1GiB")
    assert postgres.PostgresParams(user="u", size_quota="1GiB").database is None  # the user's database


@pytest.mark.parametrize(("size", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (10 * 2**30, "10.0 GiB")])
def test_format_bytes(size: int, text: str) -> None:
    """Sizes in summaries use binary units."""
    assert format_bytes(size) == text
