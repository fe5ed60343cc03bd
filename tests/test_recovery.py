"""Recovery on the fake clock, with a real scheduler (no root, no peers): an action in flight
when the daemon stopped is reconciled by reading state through the scheduler's path, never
issued again; and a verification's probe moves the check's state without closing the incident
the ladder owns (only the ladder's own verification does)."""

from __future__ import annotations

import asyncio

import pytest

from monitord.config import parse_config
from monitord.edge.metrics import Metrics
from monitord.escalation import ladder as esc
from monitord.escalation.engine import state_to_dict
from monitord.escalation.recovery import catch_up
from monitord.records.state import SQLiteStore
from monitord.shared.power import ActionError, PowerState
from monitord.shared.results import Reason, Status
from tests.fakeclock import FakeClock
from tests.support import Scripted, unit_engine

NOW = 1_800_000_000.0
CONFIG = """
defaults:
  remediation: {power_method: onoff, power_wait: 1ms, power_timeout: 1s, power_retries: 0, boot_timeout: 2m,
                verify_interval: 30s}
hosts:
  web1:
    address: 127.0.0.1
    bmc: {address: 127.0.0.1, username: admin, password: {env: NOPE}}
    ssh: {username: monitord, key: {env: NOPE}, known_hosts: /dev/null}
    checks:
      ping: {}
      nginx: {kind: tcp, port: 80, restart: {unit: nginx, grace: 1s}}
"""


class Client:
    """SSH to the host: logins fail or succeed as the test says; every call is recorded."""

    def __init__(self, calls: list, login: bool):
        self.calls, self.login = calls, login

    async def login_check(self):
        self.calls.append("login")
        if not self.login:
            raise ActionError(Reason.AUTH, "permission denied (publickey)")

    async def boot_errors(self):
        return []

    async def restart(self, method):
        self.calls.append("restart")


class Drivers:
    """The host's BMC and SSH, recording every command."""

    def __init__(self, login: bool = True):
        self.calls: list[str] = []
        self.login = login

    def ssh(self, address, ssh):
        return Client(self.calls, self.login)

    def power(self, name, block):
        calls = self.calls

        class Switch:
            async def status(self):
                calls.append("status")
                return PowerState.ON

            async def command(self, action):
                calls.append(str(action))

        class Use:
            async def __aenter__(self):
                return Switch()

            async def __aexit__(self, *exc):
                return False

        return Use()


@pytest.fixture
async def world(tmp_path):
    store = SQLiteStore(tmp_path / "state.db")
    clock, metrics, config = FakeClock(NOW), Metrics(), parse_config(CONFIG)
    script = Scripted(clock)
    yield store, config, script, clock, metrics
    await store.close()


async def interrupted(store, check: str, step: esc.Step, ladder: esc.Ladder, level: int = 1) -> int:
    """The store as a daemon killed during ``step`` left it: the check confirmed down, its
    incident open, the ladder acting."""
    incident = await store.incidents.open("web1", check, "tcp", NOW - 300, NOW - 400, "down")
    state = esc.HostState(phase=esc.Phase.ACTING, ladder=ladder, level=level, step=step, check=check,
                          incident_id=incident, started_at=NOW - 300, acted_at=NOW - 60, power_actions=(NOW - 200,))
    await store.checks.put_escalation("web1", state_to_dict(state))
    return incident


async def run_engine(engine, clock, seconds: float) -> None:
    task = asyncio.create_task(engine.run())
    await clock.advance(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_catch_up_after_a_store_fault():
    acting = esc.HostState(phase=esc.Phase.ACTING, ladder=esc.Ladder.HOST, step=esc.Step.POWER_RESET, check="ping")
    assert catch_up(acting, check_ok=True) == "resume"  # the outcome was lost: reconcile, never redo
    waiting = esc.HostState(phase=esc.Phase.DISPATCHED, ladder=esc.Ladder.SERVICE, check="nginx")
    assert catch_up(waiting, check_ok=True) == esc.Recovered("nginx", False)  # verify it
    assert catch_up(waiting, check_ok=False) is None  # still failing: the re-evaluation takes it up
    assert catch_up(esc.HostState(), check_ok=True) is None


async def test_a_restart_in_flight_is_re_probed_through_the_scheduler_not_repeated(world):
    store, config, script, clock, metrics = world
    incident = await interrupted(store, "nginx", esc.Step.SERVICE_RESTART, esc.Ladder.SERVICE)
    drivers = Drivers()
    scheduler = await script.scheduler(config, store, metrics)
    engine = await unit_engine(store, config, scheduler, drivers, clock, metrics)
    scheduler.listener = engine
    await run_engine(engine, clock, 1)
    assert "restart" not in drivers.calls  # read, never redone
    [reconciled] = [e for e in await store.incidents.journal() if e.event == "reconciled"]
    assert (reconciled.decision, reconciled.outcome) == ("service_restart", "ok")
    assert "re-probing instead of restarting again" in reconciled.reason
    assert script.calls[0] == "web1/nginx"  # the re-probe was a run of the check: recorded
    assert scheduler.state_of("web1/nginx").last_result.status is Status.OK
    assert engine.state("web1") == esc.HostState(power_actions=(NOW - 200,))  # the ladder ended, verified
    assert [i.closed_at for i in await store.incidents.list() if i.id == incident] == [NOW]


async def test_a_verification_probe_moves_the_check_but_only_the_ladder_closes_the_incident(world):
    """Killed while waiting for the boot after a level-2 power cycle: the resumed boot check finds
    ping answering (the check recovers, recorded like a scheduled run), but an SSH login fails, so
    the ladder goes to level 3 and the incident stays open: a check answering is not the
    contract's "recovered"."""
    store, config, script, clock, metrics = world
    incident = await interrupted(store, "ping", esc.Step.WAIT_BOOT, esc.Ladder.HOST, level=2)
    scheduler = await script.scheduler(config, store, metrics)
    drivers = Drivers(login=False)
    engine = await unit_engine(store, config, scheduler, drivers, clock, metrics)
    scheduler.listener = engine
    script.down = {"web1"}
    for _ in range(3):  # the check is failing when the daemon comes back: confirmed, in the ladder's incident
        await scheduler.run_now("web1/ping")
    assert scheduler.incident_of("web1/ping") == incident and scheduler.state_of("web1/ping").level == 2
    script.down = set()
    await run_engine(engine, clock, 10 * 60)
    assert scheduler.state_of("web1/ping").status is Status.OK  # the boot checks' pings were recorded
    assert engine.state("web1").phase is esc.Phase.DISPATCHED and engine.state("web1").level == 3
    assert [i.closed_at for i in await store.incidents.list() if i.id == incident] == [None]  # still open
    events = [(e.event, e.decision) for e in await store.incidents.journal() if e.incident_id == incident]
    assert ("reconciled", "wait_boot") in events and ("page", "dispatch") in events
    assert not [e for e in await store.incidents.journal() if e.event == "resolved"]
    assert "restart" not in drivers.calls and "cycle" not in drivers.calls  # nothing re-issued
