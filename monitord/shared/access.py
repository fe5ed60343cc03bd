"""The access blocks of a host's config: how to reach its BMC, PDU, hypervisor, SSH and SNMP.

They are part of the config tree (:class:`monitord.config.HostConfig` holds them) and are what
the drivers and probes are handed: a driver takes its block, never the whole host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from monitord.shared.fields import ConfigPath, Duration, Port, SecretRef, StrictModel


class BmcConfig(StrictModel):
    """How to reach the host's BMC (IPMI 2.0 lanplus)."""

    driver: Literal["ipmi"] = "ipmi"
    address: str
    port: Port = 623
    username: str
    password: SecretRef
    cipher_suite: int = Field(default=3, ge=0, le=17)
    privilege: Literal["administrator", "operator"] = "administrator"


class SnmpV3(StrictModel):
    """SNMPv3 user-based security."""

    user: str
    auth_protocol: Literal["sha", "sha256", "md5"] = "sha"
    auth_key: SecretRef
    priv_protocol: Literal["aes", "aes256", "des"] | None = "aes"
    priv_key: SecretRef | None = None


OID_PATTERN = r"^\.?[0-9]+(\.[0-9]+)+$"
Oid = Annotated[str, Field(pattern=OID_PATTERN, description="numeric OID, e.g. .1.3.6.1.4.1.318.1.1.4.4.2.1.3")]


class PduOidTable(StrictModel):
    """A PDU's outlet OIDs and values, for PDUs without a built-in model (``model: generic``).

    The outlet number is appended to both OIDs. Every value is given explicitly: a wrong guess
    here switches the wrong way, so there are no defaults.
    """

    status_oid: Oid = Field(description="read: the outlet's power state (outlet number appended)")
    control_oid: Oid = Field(description="write: the outlet's command (outlet number appended)")
    control_on: int = Field(description="value written to control_oid to switch on")
    control_off: int = Field(description="value written to control_oid to switch off")
    control_reboot: int | None = Field(default=None, description="value for an outlet reboot; null: no reboot command")
    status_on: int = Field(description="value status_oid reads when the outlet is on")
    status_off: int = Field(description="value status_oid reads when the outlet is off")

    @model_validator(mode="after")
    def _distinct(self) -> "PduOidTable":
        if self.status_on == self.status_off:
            raise ValueError("status_on and status_off must differ")
        commands = [v for v in (self.control_on, self.control_off, self.control_reboot) if v is not None]
        if len(set(commands)) != len(commands):
            raise ValueError("control_on, control_off and control_reboot must differ")
        return self


class SnmpConfig(StrictModel):
    """An SNMP agent (v2c or v3 USM): the host's own, for SNMP-based probes, or a PDU's."""

    address: str | None = Field(default=None, description="the agent's address; default: the host's address")
    port: Port = 161
    snmp_version: Literal["2c", "3"] = "2c"
    community: SecretRef | None = None
    v3: SnmpV3 | None = None

    @model_validator(mode="after")
    def _credentials(self) -> "SnmpConfig":
        if self.snmp_version == "2c" and self.community is None:
            raise ValueError("snmp_version 2c needs community (a file, env or credential reference)")
        if self.snmp_version == "3" and self.v3 is None:
            raise ValueError("snmp_version 3 needs a v3 block")
        return self


class PduConfig(SnmpConfig):
    """A switched PDU outlet that powers the host."""

    address: str
    outlet: int = Field(ge=1)
    model: Literal["auto", "apc-spdu", "apc-rpdu", "generic"] = Field(
        default="auto", description="OID table: auto (by sysObjectID), apc-spdu, apc-rpdu, or generic (give table)"
    )
    table: PduOidTable | None = Field(default=None, description="the OID table of model generic")

    @model_validator(mode="after")
    def _table(self) -> "PduConfig":
        if (self.model == "generic") != (self.table is not None):
            raise ValueError("model generic needs a table, and a table needs model generic")
        return self


OsName = Literal["linux", "windows"]


class SshConfig(StrictModel):
    """SSH access for remediation and SSH-based probes. Host keys are always verified."""

    port: Port = 22
    username: str = "root"
    key: SecretRef = Field(description="private key (file, env or credential)")
    known_hosts: ConfigPath = Path("/etc/monitord/known_hosts")
    os: OsName = Field(default="linux", description="taken from the host's os: (what to run over SSH)")


class VmConfig(StrictModel):
    """A virtual machine's power, through its hypervisor (libvirt): the VM's "BMC"."""

    uri: str = Field(min_length=1, description="libvirt connection URI, e.g. qemu+ssh://root@hv1/system, qemu+tls://hv1/system")
    domain: str = Field(min_length=1, description="the domain's name or UUID on that hypervisor")
    username: str | None = Field(default=None, description="for hypervisors that ask for a user name (SASL, ESX)")
    password: SecretRef | None = Field(default=None, description="answered when the hypervisor asks for one; never in the URI")
    key_file: ConfigPath | None = Field(default=None, description="SSH private key for qemu+ssh:// (passed as keyfile=)")
    timeout: Duration = Field(default=30.0, description="bound on connecting and on each hypervisor call")
    shutdown_timeout: Duration | None = Field(
        default=None, description="power off gracefully (ACPI shutdown) and wait this long before forcing it off")

    @field_validator("uri")
    @classmethod
    def _no_secret_in_uri(cls, value: str) -> str:
        authority = value.partition("://")[2].partition("/")[0]
        if ":" in authority.rpartition("@")[0]:
            raise ValueError("no password in the URI: give password as {file: ...}, {env: ...} or {credential: ...}")
        if "://" not in value:
            raise ValueError(f"not a libvirt URI: {value!r} (e.g. qemu+ssh://root@hv1/system)")
        return value
