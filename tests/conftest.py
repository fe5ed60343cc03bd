"""Suite-wide rules: under CI=true a skipped test fails the run, so CI proves every peer ran; the
tests of a module that share a module-scoped fixture run in one pytest-xdist worker."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.peers", "tests.ipmi_peer", "tests.pdu_peer", "tests.ssh_peer", "tests.db_peers", "tests.snmp_peer", "tests.libvirt_peer", "tests.powershell_peer"]  # fixtures that start real peer servers


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"CI=true: {len(skipped)} test(s) skipped; a skip in CI is a failure:", red=True)
        for report in skipped:
            reporter.write_line(f"  {report.nodeid}: {report.longrepr[-1] if report.longrepr else ''}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


PEER_MODULES = frozenset(pytest_plugins)


SHARED_FIXTURE_MODULES = frozenset({"tests/test_noc_live.py", "tests/test_read_api.py"})
"""Test modules whose tests share a module-scoped fixture of the module (a daemon set up once
for many tests): under pytest-xdist each is one unit of work, run by one worker in its order."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist load``, except that each module of :data:`SHARED_FIXTURE_MODULES` goes to one
    worker whole (what an ``xdist_group`` mark would do, but ``--dist loadgroup`` of
    pytest-xdist 3.8 no longer groups under pytest 9.2: pytest-xdist issue #1386)."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in SHARED_FIXTURE_MODULES else nodeid

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that starts a real peer (through a fixture of the peer plugins) must be marked
    ``integration``, so that ``pytest -m "not integration"`` is the fast lane without root; a
    test using a module-scoped fixture of its own module must be in :data:`SHARED_FIXTURE_MODULES`."""
    unmarked, unshared = [], []
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        module = getattr(item, "module", None)
        if (module is not None and item.nodeid.split("::", 1)[0] not in SHARED_FIXTURE_MODULES
                and any(d.scope == "module" and getattr(d.func, "__module__", "") == module.__name__
                        for defs in info.name2fixturedefs.values() for d in defs)):
            unshared.append(item.nodeid)
        if item.get_closest_marker("integration") is not None:
            continue
        peers = sorted({name for name, defs in info.name2fixturedefs.items()
                        if any(getattr(d.func, "__module__", "") in PEER_MODULES for d in defs)})
        if peers:
            unmarked.append(f"{item.nodeid} (uses {', '.join(peers)})")
    if unmarked:
        raise pytest.UsageError("tests starting real peers must be marked integration:\n  " + "\n  ".join(unmarked))
    if unshared:
        raise pytest.UsageError("tests using a module-scoped fixture of their module must have it in "
                                "SHARED_FIXTURE_MODULES (tests/conftest.py):\n  " + "\n  ".join(unshared))
