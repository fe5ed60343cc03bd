"""Builds the remediation drivers from a host's access blocks: one place, one factory.

Each driver takes its own block (the BMC's, the hypervisor's, the PDU's, SSH's), never the
whole host config.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from monitord.shared.access import BmcConfig, PduConfig, SshConfig, VmConfig
from monitord.shared.power import ActionError, PowerDriver
from monitord.shared.results import Reason

PowerBlock = BmcConfig | VmConfig | PduConfig
"""The access block of a power driver: ``ipmi`` takes a :class:`BmcConfig`, ``vm`` a
:class:`VmConfig`, ``pdu`` a :class:`PduConfig`."""


class Drivers:
    """Creates drivers on demand; secrets are read when a driver is built, never stored."""

    def bmc_health(self, bmc: BmcConfig):
        """Read the BMC's power state, SEL and sensors (a coroutine)."""
        from remediation.ipmi import IpmiDriver

        return IpmiDriver.from_config(bmc).health()

    @asynccontextmanager
    async def power(self, name: str, block: PowerBlock | None) -> AsyncIterator[PowerDriver]:
        """The power driver ``name`` ("ipmi", "vm" or "pdu") reached through ``block``, closed afterwards."""
        if name == "ipmi" and isinstance(block, BmcConfig):
            from remediation.ipmi import IpmiDriver

            yield IpmiDriver.from_config(block)
        elif name == "vm" and isinstance(block, VmConfig):
            from remediation.vm import VmDriver

            async with VmDriver.from_config(block) as driver:
                yield driver
        elif name == "pdu" and isinstance(block, PduConfig):
            from remediation.pdu import PduDriver

            async with PduDriver.from_config(block) as driver:
                yield driver
        else:
            raise ActionError(Reason.ERROR, f"no {name or 'power'} driver configured for this host")

    def ssh(self, address: str, ssh: SshConfig | None):
        """An SSH client for the host at ``address``."""
        from remediation.ssh import SshClient

        if ssh is None:
            raise ActionError(Reason.ERROR, "no SSH access configured for this host")
        return SshClient.from_config(address, ssh)
