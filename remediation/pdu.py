"""Switch one PDU outlet over SNMP (v2c or v3 USM), with pysnmp 7's asyncio API.

Device variants are data, not code (the fence-agents way): :data:`MODELS` maps a model name
to the outlet's status and control OIDs, the values written to switch on, off and reboot, the
values read for on and off, and the ``sysObjectID`` prefixes that select the model when the
config says ``model: auto``. ``model: generic`` takes the same table from the config
(:class:`~monitord.config.PduOidTable`). The outlet number is appended to both OIDs.

Which model ``auto`` picks (PowerNet-MIB product OIDs under ``.1.3.6.1.4.1.318.1.3.4``,
``masterSwitch``):

* ``.1`` masterSwitchV1, ``.2`` masterSwitchV2 (the original MasterSwitch, AP921x):
  ``apc-spdu`` (sPDUOutletCtl).
* ``.5`` masterSwitchrPDU (Switched Rack PDUs AP78xx/AP79xx, including the AP7920/AP7921):
  ``apc-rpdu``, as fence_apc_snmp does. These also serve the older sPDUOutletCtl table, so
  ``apc-spdu`` works on them too when chosen explicitly.
* Not chosen automatically, because their tables differ or were not verified: ``.3``
  masterSwitchVM, ``.4`` masterSwitchMSP (MasterSwitch Plus, per-switch tables), ``.6``
  masterSwitchrPDU2 (AP86xx/AP88xx/AP89xx). An unknown ``sysObjectID`` is a ``PROTOCOL``
  failure that asks for an explicit model; the driver never guesses a table.

Failures are :class:`~monitord.shared.power.ActionError` with a typed reason, as
:mod:`remediation.snmp` (the SNMP layer this driver shares with the SNMP probes) assigns
them; in addition a non-INTEGER outlet state, a value that is neither the table's on nor off,
and an unknown ``sysObjectID`` are ``PROTOCOL``.

A command (SET) is sent exactly once, never retransmitted: if its answer is lost, a
retransmission could reboot the machine twice. It gets the whole time budget of a read
(``timeout * (retries + 1)``) instead. Reads are retried ``retries`` times. (SNMPv3 engine
discovery may resend a first request after the agent's unknownEngineID report; the agent
never executed the first copy.) A command that times out may or may not have been carried
out: read the status before deciding anything (``power_change`` does).

Each driver owns one :class:`~remediation.snmp.SnmpSession` (one ``SnmpEngine``: USM users
and engine-ID discovery are kept per engine, so two PDUs with the same v3 user name but
different keys never share state). Close it with :meth:`PduDriver.aclose` or ``async with``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyasn1.type import univ
from pysnmp.proto.rfc1902 import Integer32

from monitord.shared.access import PduConfig, PduOidTable
from monitord.shared.results import Reason
from monitord.shared.power import ActionError, PowerAction, PowerState
from remediation.snmp import DEFAULT_RETRIES, DEFAULT_TIMEOUT, Auth, Oid, SnmpSession, dotted, parse_oid, snmp_auth


SYS_OBJECT_ID: Oid = (1, 3, 6, 1, 2, 1, 1, 2, 0)


@dataclass(frozen=True, slots=True)
class PduModel:
    """A built-in PDU model: its outlet OID table and the sysObjectIDs that select it."""

    table: PduOidTable
    sys_object_ids: tuple[str, ...]
    description: str


MODELS: dict[str, PduModel] = {
    "apc-spdu": PduModel(
        PduOidTable(
            status_oid=".1.3.6.1.4.1.318.1.1.4.4.2.1.3",  # PowerNet sPDUOutletCtl
            control_oid=".1.3.6.1.4.1.318.1.1.4.4.2.1.3",
            control_on=1,  # outletOn
            control_off=2,  # outletOff
            control_reboot=3,  # outletReboot
            status_on=1,
            status_off=2,
        ),
        sys_object_ids=(".1.3.6.1.4.1.318.1.3.4.1", ".1.3.6.1.4.1.318.1.3.4.2"),
        description="APC MasterSwitch (PowerNet sPDUOutletControlTable)",
    ),
    "apc-rpdu": PduModel(
        PduOidTable(
            status_oid=".1.3.6.1.4.1.318.1.1.12.3.5.1.1.4",  # rPDUOutletStatusOutletState
            control_oid=".1.3.6.1.4.1.318.1.1.12.3.3.1.1.4",  # rPDUOutletControlOutletCommand
            control_on=1,  # immediateOn
            control_off=2,  # immediateOff
            control_reboot=3,  # immediateReboot
            status_on=1,  # outletStatusOn
            status_off=2,  # outletStatusOff
        ),
        sys_object_ids=(".1.3.6.1.4.1.318.1.3.4.5",),
        description="APC Switched Rack PDU AP78xx/AP79xx (PowerNet rPDUOutlet tables)",
    ),
}
"""The built-in models; ``auto`` picks the one whose sysObjectID prefix matches longest."""

def model_for_sys_object_id(sys_object_id: Oid) -> str | None:
    """The name of the built-in model whose sysObjectID prefix matches longest, or None.

    Prefixes match whole arcs: ``.1.3.6.1.4.1.318.1.3.4.5`` selects ``...4.5`` and ``...4.5.1``,
    never ``...4.50``.
    """
    best, best_len = None, -1
    for name, model in MODELS.items():
        for prefix in map(parse_oid, model.sys_object_ids):
            if sys_object_id[: len(prefix)] == prefix and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    return best


class PduDriver:
    """A :class:`~monitord.shared.power.PowerDriver` for one PDU outlet over SNMP.

    ``model`` is a built-in model name, ``"auto"`` (chosen by the agent's sysObjectID on first
    use, then kept) or a :class:`~monitord.config.PduOidTable`. ``timeout`` is per request
    in seconds; reads are retried ``retries`` times, commands are sent once (see the module
    docstring).
    """

    name = "pdu"

    def __init__(
        self,
        address: str,
        outlet: int,
        auth: Auth,
        *,
        port: int = 161,
        model: str | PduOidTable = "auto",
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        self._model_name: str | None
        self._table: PduOidTable | None
        if isinstance(model, PduOidTable):
            self._model_name, self._table = "generic", model
        elif model == "auto":
            self._model_name, self._table = None, None
        elif model in MODELS:
            self._model_name, self._table = model, MODELS[model].table
        else:
            raise ValueError(f"unknown PDU model {model!r}: use auto, {', '.join(MODELS)} or an OID table")
        self.address, self.port, self.outlet = address, port, outlet
        self._snmp = SnmpSession(address, port, auth, timeout=timeout, retries=retries, label=f"PDU {address}:{port}")

    @classmethod
    def from_config(
        cls, pdu: PduConfig, *, timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES
    ) -> "PduDriver":
        """A driver for the outlet ``pdu`` describes; its secrets are read now."""
        model: str | PduOidTable = pdu.table if pdu.model == "generic" else pdu.model
        auth = snmp_auth(pdu, pdu.address)
        return cls(pdu.address, pdu.outlet, auth, port=pdu.port, model=model, timeout=timeout, retries=retries)

    def __repr__(self) -> str:
        return f"PduDriver({self.address}:{self.port} outlet {self.outlet}, model {self._model_name or 'auto'})"

    async def __aenter__(self) -> "PduDriver":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the SNMP engine's transports and timer; the driver is unusable afterwards."""
        await self._snmp.aclose()

    # -- PowerDriver

    async def status(self) -> PowerState:
        """Read the outlet's power state."""
        table = await self._resolve_table()
        value = self._integer(await self._request(self._instance(table.status_oid)))
        if value == table.status_on:
            return PowerState.ON
        if value == table.status_off:
            return PowerState.OFF
        raise ActionError(
            Reason.PROTOCOL,
            f"{self._where()}: outlet {self.outlet} reads {value}, neither on ({table.status_on}) "
            f"nor off ({table.status_off}) for model {self._model_name}",
        )

    async def command(self, action: PowerAction) -> None:
        """Send one ON, OFF or RESET (the model's reboot value) to the outlet, once."""
        table = await self._resolve_table()
        values = {
            PowerAction.ON: table.control_on,
            PowerAction.OFF: table.control_off,
            PowerAction.RESET: table.control_reboot,
        }
        if action not in values:
            raise ActionError(Reason.ERROR, f"{self.name}: {action} is not a single command (use power_change)")
        value = values[action]
        if value is None:
            raise ActionError(Reason.ERROR, f"{self._where()}: model {self._model_name} has no reboot command")
        await self._request(self._instance(table.control_oid), Integer32(value))

    # -- model selection

    async def model(self) -> str:
        """The model in use (``generic`` for a configured table); ``auto`` is resolved now."""
        await self._resolve_table()
        return self._model_name

    async def _resolve_table(self) -> PduOidTable:
        if self._table is None:
            value = await self._request(SYS_OBJECT_ID)
            if not isinstance(value, univ.ObjectIdentifier):
                kind = type(value).__name__
                raise ActionError(Reason.PROTOCOL, f"{self._where()}: sysObjectID is a {kind}, not an OID")
            sys_object_id = tuple(value)
            name = model_for_sys_object_id(sys_object_id)
            if name is None:
                raise ActionError(
                    Reason.PROTOCOL,
                    f"{self._where()}: sysObjectID {dotted(sys_object_id)} is no known PDU model; "
                    f"set model to one of {', '.join(MODELS)} or generic with a table",
                )
            self._model_name, self._table = name, MODELS[name].table
        return self._table

    # -- SNMP

    def _instance(self, column: str) -> Oid:
        return parse_oid(column) + (self.outlet,)

    def _where(self) -> str:
        return f"PDU {self.address}:{self.port}"

    async def _request(self, oid: Oid, value: Integer32 | None = None) -> Any:
        """GET ``oid``, or SET it to ``value`` (sent once); return the value the agent answered with."""
        if value is None:
            return (await self._snmp.get(oid))[0]
        return await self._snmp.set(oid, value)

    def _integer(self, value: Any) -> int:
        """An INTEGER value as int; anything else is a PROTOCOL failure."""
        if not isinstance(value, Integer32):
            kind = type(value).__name__
            raise ActionError(Reason.PROTOCOL, f"{self._where()}: outlet {self.outlet} state is a {kind}, not an INTEGER")
        return int(value)

