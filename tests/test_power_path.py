"""The one power path: a quarantined host is never powered on by the daemon, whichever way the
power change was going when the quarantine came, and the operator's quarantine and release run
in the engine under the host's lock.

Unit tests on the fake clock with a real store and an in-memory power switch (the drivers
themselves are tested against real peers in test_ipmi.py, test_pdu.py, test_vm.py; the CLI
through a running daemon's API in test_scenarios.py).
"""

from __future__ import annotations

import asyncio

from monitord.config import parse_config
from monitord.records.state import SQLiteStore
from monitord.run.checkstate import CheckState, Event
from monitord.shared.power import PowerAction, PowerState
from monitord.shared.results import Reason, Result, Status
from tests.support import unit_engine

CONFIG = """
defaults:
  remediation: {power_method: onoff, power_wait: 1ms, power_timeout: 1s, power_retries: 0}
hosts:
  web1:
    address: 127.0.0.1
    bmc: {address: 127.0.0.1, username: admin, password: {env: NOPE}}
    checks:
      ping: {}
"""
DOWN = Result(Status.CRITICAL, Reason.UNREACHABLE, "no reply", 0.01, 1_800_000_000.0)


class Checks:
    """The scheduler as the engine sees it: the host stays down."""

    def __init__(self, spec):
        self.spec = spec

    def state_of(self, check_id):
        return CheckState(status=Status.CRITICAL, hard=True, attempt=3, last_result=DOWN)

    def incident_of(self, check_id):
        return 7

    def run_soon(self, check_id):
        pass

    async def run_now(self, check_id):
        return DOWN


class Health:
    def summary(self) -> str:
        return "power on, no SEL records"


class Switch:
    """The host's BMC: obeys at once; ``during_off`` runs when it is told to power off."""

    name = "ipmi"

    def __init__(self, during_off=None):
        self.state, self.sent, self.during_off = PowerState.ON, [], during_off or (lambda: asyncio.sleep(0))

    async def status(self) -> PowerState:
        return self.state

    async def command(self, action: PowerAction) -> None:
        self.sent.append(str(action))
        self.state = PowerState.OFF if action is PowerAction.OFF else PowerState.ON
        if action is PowerAction.OFF:
            await self.during_off()


class Drivers:
    def __init__(self, switch: Switch):
        self.switch = switch

    async def bmc_health(self, bmc):
        return Health()

    def power(self, name, block):
        switch = self.switch

        class Use:
            async def __aenter__(self):
                return switch

            async def __aexit__(self, *exc):
                return False

        return Use()


async def make(tmp_path, switch: Switch):
    store = SQLiteStore(tmp_path / "state.db")
    config = parse_config(CONFIG)
    [spec] = config.checks()
    return await unit_engine(store, config, Checks(spec), Drivers(switch)), store, spec


async def journal(store: SQLiteStore) -> list[str]:
    return [" ".join(x for x in (e.event, e.decision, e.outcome) if x) for e in await store.incidents.journal()]


async def test_a_quarantine_during_a_power_cycle_leaves_the_host_off(tmp_path):
    holder: list[SQLiteStore] = []
    switch = Switch(during_off=lambda: holder[0].control.quarantine("web1", 0.0, "intrusion", "operator"))
    engine, store, spec = await make(tmp_path, switch)
    holder.append(store)
    await engine.notify(spec, Event.CONFIRMED, DOWN, 7)
    await asyncio.sleep(0)
    await engine.idle()
    assert switch.sent == ["off"] and switch.state is PowerState.OFF  # never powered back on
    events = await journal(store)
    assert "outcome power_reset failed" in events and "blocked quarantined" in events
    assert not any(e.startswith("page dispatch") or e.startswith("decided wait_boot") for e in events)
    assert "not sending on: the host is quarantined" in [e for e in await store.incidents.journal() if e.outcome == "failed"][0].detail["error"]
    await store.close()


async def test_a_host_quarantined_before_the_ladder_is_not_touched(tmp_path):
    switch = Switch()
    engine, store, spec = await make(tmp_path, switch)
    await store.control.quarantine("web1", 0.0, "intrusion", "operator")
    await engine.notify(spec, Event.CONFIRMED, DOWN, 7)
    await asyncio.sleep(0)
    await engine.idle()
    assert switch.sent == [] and "blocked quarantined" in await journal(store)
    await store.close()


async def test_the_operators_quarantine_and_release_run_in_the_engine(tmp_path):
    switch = Switch()
    engine, store, spec = await make(tmp_path, switch)
    powered_off, summary = await engine.quarantine("web1", "intrusion", "operator")
    assert powered_off and "quarantined and powered off (through ipmi)" in summary
    assert switch.sent == ["off"] and "web1" in await store.control.quarantined()
    events = await journal(store)
    assert events.index("decided quarantine_power_off") < events.index("outcome quarantine_power_off ok")
    assert await engine.release("web1", "operator") is True
    assert await engine.release("web1", "operator") is False  # not quarantined any more
    assert "web1" not in await store.control.quarantined() and "quarantine released" in await journal(store)
    assert switch.sent == ["off"]  # release does not power it on
    await store.close()


async def test_the_operators_quarantine_waits_for_a_power_command_under_way_but_blocks_it_at_once(tmp_path):
    switch = Switch()
    engine, store, spec = await make(tmp_path, switch)
    lock = engine._power_locks["web1"]
    await lock.acquire()  # a power command of the ladder is under way
    task = asyncio.create_task(engine.quarantine("web1", "intrusion", "operator"))
    await asyncio.sleep(0)
    assert "web1" in await store.control.quarantined() and switch.sent == []  # recorded at once, powered off after the command
    lock.release()
    powered_off, _ = await task
    assert powered_off and switch.sent == ["off"]
    await store.close()


async def test_the_operators_quarantine_does_not_wait_for_the_ladders_boot_wait(tmp_path):
    """A compromised server is stopped at once: a ladder waiting for a boot (it holds the host's
    lock for up to boot_timeout) sends no power command, so the power-off goes ahead."""
    switch = Switch()
    engine, store, spec = await make(tmp_path, switch)
    async with engine._locks["web1"]:  # the ladder is waiting for the boot
        async with asyncio.timeout(30):  # (waiting for that lock would never end here)
            powered_off, _ = await engine.quarantine("web1", "intrusion", "operator")
        assert powered_off and switch.sent == ["off"] and "web1" in await store.control.quarantined()
    await store.close()


async def test_the_api_quarantines_and_releases_through_the_engine(tmp_path):
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from monitord.edge.api import Api

    switch = Switch()
    engine, store, spec = await make(tmp_path, switch)
    (tmp_path / "token").write_text("s3cret-token\n")
    config = parse_config(CONFIG + f"daemon: {{api_token: {{file: {tmp_path / 'token'}}}}}\n")
    app = web.Application()
    Api(store, engine.clock, lambda: config, engine).install(app)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        async def post(path, data=b"", token="s3cret-token"):
            async with http.post(server.make_url(path), data=data, headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status, await r.json()

        assert (await post("/api/v1/hosts/web1/quarantine", token="wrong"))[0] == 401
        assert await post("/api/v1/hosts/db9/quarantine") == (404, {"error": "no such host in the running config"})
        assert (await post("/api/v1/hosts/web1/quarantine", data=b'{"reason": 1}'))[0] == 400
        assert (await post("/api/v1/hosts/web1/release"))[0] == 409  # not quarantined
        assert switch.sent == [] and await store.control.quarantined() == {}  # nothing refused did anything
        status, answer = await post("/api/v1/hosts/web1/quarantine", data=b'{"reason": "intrusion", "by": "aoki"}')
        assert status == 200 and answer["powered_off"] and "through ipmi" in answer["summary"]
        assert (await store.control.quarantined())["web1"][1] == "intrusion" and switch.sent == ["off"]
        assert await post("/api/v1/hosts/web1/release", data=b'{"by": "aoki"}') == (200, {"host": "web1", "released": True})
    assert await store.control.quarantined() == {} and switch.sent == ["off"]
    await store.close()


def test_the_cli_sees_whether_a_daemon_holds_the_store_without_taking_its_lock(tmp_path):
    from monitord.records.state import StoreLock

    daemon = StoreLock(tmp_path / "state.db")
    assert not daemon.held()  # no lock file yet
    daemon.acquire()
    assert StoreLock(tmp_path / "state.db").held()
    daemon.release()
    assert not StoreLock(tmp_path / "state.db").held()
    daemon.acquire()  # looking never took it
    daemon.release()
