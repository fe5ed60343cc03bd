"""Suite-wide rules: under CI=true a skipped test fails the run, so CI proves every peer ran; tests
that share a module-scoped fixture run in one pytest-xdist worker."""

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


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that starts a real peer (through a fixture of the peer plugins) must be marked
    ``integration``, so that ``pytest -m "not integration"`` is the fast lane without root.

    A test that uses a module-scoped fixture of its own module (a daemon set up once for many
    tests) joins its module's ``xdist_group``: with ``--dist loadgroup`` those tests run in one
    worker, which sets the fixture up once, in the order of the module.
    """
    unmarked = []
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        module = getattr(item, "module", None)
        if module is not None and any(d.scope == "module" and getattr(d.func, "__module__", "") == module.__name__
                                      for defs in info.name2fixturedefs.values() for d in defs):
            item.add_marker(pytest.mark.xdist_group(module.__name__))
        if item.get_closest_marker("integration") is not None:
            continue
        peers = sorted({name for name, defs in info.name2fixturedefs.items()
                        if any(getattr(d.func, "__module__", "") in PEER_MODULES for d in defs)})
        if peers:
            unmarked.append(f"{item.nodeid} (uses {', '.join(peers)})")
    if unmarked:
        raise pytest.UsageError("tests starting real peers must be marked integration:\n  " + "\n  ".join(unmarked))
