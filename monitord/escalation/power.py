"""The one power path. Every power command monitord sends — a ladder's reset or cycle, the
power read that reconciles an action after a restart, a quarantine's power-off — builds its
driver from the host's access block here and goes through
:func:`~monitord.shared.power.power_change`, which asks :func:`may_power_on` right before any
command that powers a machine on: a quarantined host is never powered on, not even by the second
half of a power cycle that was under way when the quarantine came.
"""

from __future__ import annotations

from typing import Callable

from monitord.config import Config, HostConfig
from monitord.records.store import Store
from monitord.shared.power import PowerAction, PowerOutcome, PowerState, PowerTimings, power_change
from remediation.drivers import Drivers


def timings(config: Config, host: str) -> PowerTimings:
    """The host's power timings (its cascaded ``remediation`` settings)."""
    r = config.remediation(host)
    return PowerTimings(power_wait=r.power_wait, power_timeout=r.power_timeout, retries=r.power_retries)


def may_power_on(store: Store, host: str) -> Callable[[], Awaitable[str | None]]:
    """What :func:`power_change` asks before powering ``host`` on: a quarantine forbids it."""
    async def objection() -> str | None:
        return "the host is quarantined" if host in await store.control.quarantined() else None
    return objection


async def change(drivers: Drivers, store: Store, h: HostConfig, host: str, name: str, action: PowerAction,
                 timings: PowerTimings) -> PowerOutcome:
    """``action`` on ``host`` (whose config is ``h``) through its power driver ``name``."""
    async with drivers.power(name, h.power_blocks().get(name)) as driver:
        return await power_change(driver, action, timings, may_power_on(store, host))


async def status(drivers: Drivers, h: HostConfig, name: str) -> PowerState:
    """The power state of the host whose config is ``h``, read through its driver ``name``."""
    async with drivers.power(name, h.power_blocks().get(name)) as driver:
        return await driver.status()
