"""Builds the remediation drivers for a host from its config: one place, one factory."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from monitord.config import HostConfig
from monitord.results import Reason
from remediation.base import ActionError, PowerDriver


class Drivers:
    """Creates drivers on demand; secrets are read when a driver is built, never stored."""

    def bmc_health(self, host: HostConfig):
        """Read the BMC's power state, SEL and sensors (a coroutine)."""
        from remediation.ipmi import IpmiDriver

        return IpmiDriver.from_config(host.bmc).health()

    @asynccontextmanager
    async def power(self, name: str, host: HostConfig) -> AsyncIterator[PowerDriver]:
        """The power driver ``name`` ("ipmi", "vm" or "pdu") for ``host``, closed afterwards."""
        if name == "ipmi" and host.bmc is not None:
            from remediation.ipmi import IpmiDriver

            yield IpmiDriver.from_config(host.bmc)
        elif name == "vm" and host.vm is not None:
            from remediation.vm import VmDriver

            async with VmDriver.from_config(host.vm) as driver:
                yield driver
        elif name == "pdu" and host.pdu is not None:
            from remediation.pdu import PduDriver

            async with PduDriver.from_config(host.pdu) as driver:
                yield driver
        else:
            raise ActionError(Reason.ERROR, f"no {name or 'power'} driver configured for this host")

    def ssh(self, host: HostConfig):
        """An SSH client for ``host``."""
        from remediation.ssh import SshClient

        if host.ssh is None:
            raise ActionError(Reason.ERROR, "no SSH access configured for this host")
        return SshClient.from_config(host.address, host.ssh)
