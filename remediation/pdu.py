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

Failures are :class:`~remediation.base.ActionError` with a typed reason:

* no answer: ``TIMEOUT``. A v2c agent silently drops requests with a wrong community, so a
  wrong community is a ``TIMEOUT`` too (indistinguishable on the wire from a dead agent).
* v3 security failures the agent reports (wrongDigest, unknownUserName, decryptionError, ...)
  and error-status noAccess, notWritable, readOnly, authorizationError: ``AUTH``.
* error-status wrongValue, wrongType, noSuchName, noCreation, ..., a noSuchObject or
  noSuchInstance value, a non-INTEGER value, a value that is neither the table's on nor off,
  an unknown ``sysObjectID``: ``PROTOCOL``.
* genErr, commitFailed and anything else: ``ERROR``.

A command (SET) is sent exactly once, never retransmitted: if its answer is lost, a
retransmission could reboot the machine twice. It gets the whole time budget of a read
(``timeout * (retries + 1)``) instead. Reads are retried ``retries`` times. (SNMPv3 engine
discovery may resend a first request after the agent's unknownEngineID report; the agent
never executed the first copy.) A command that times out may or may not have been carried
out: read the status before deciding anything (``power_change`` does).

Each driver owns one ``SnmpEngine`` (USM users and engine-ID discovery are kept per engine,
so two PDUs with the same v3 user name but different keys never share state). Close it with
:meth:`PduDriver.aclose` or ``async with``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pyasn1.type import univ
from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    get_cmd,
    set_cmd,
    usmAesCfb128Protocol,
    usmAesCfb256Protocol,
    usmDESPrivProtocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMACMD5AuthProtocol,
    usmHMACSHAAuthProtocol,
)
from pysnmp.proto import errind
from pysnmp.proto.rfc1902 import Integer32
from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject

from monitord.config import PduConfig, PduOidTable, SnmpV3
from monitord.results import Reason
from remediation.base import ActionError, PowerAction, PowerState

Oid = tuple[int, ...]

SYS_OBJECT_ID: Oid = (1, 3, 6, 1, 2, 1, 1, 2, 0)
DEFAULT_TIMEOUT = 2.0
DEFAULT_RETRIES = 1


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

_AUTH_PROTOCOLS = {"sha": usmHMACSHAAuthProtocol, "sha256": usmHMAC192SHA256AuthProtocol, "md5": usmHMACMD5AuthProtocol}
_PRIV_PROTOCOLS = {"aes": usmAesCfb128Protocol, "aes256": usmAesCfb256Protocol, "des": usmDESPrivProtocol}

# SNMP error-status values (RFC 3416) and what they mean for us.
_ERROR_STATUS: dict[int, tuple[str, Reason]] = {
    1: ("tooBig", Reason.PROTOCOL),
    2: ("noSuchName", Reason.PROTOCOL),
    3: ("badValue", Reason.PROTOCOL),
    4: ("readOnly", Reason.AUTH),
    5: ("genErr", Reason.ERROR),
    6: ("noAccess", Reason.AUTH),
    7: ("wrongType", Reason.PROTOCOL),
    8: ("wrongLength", Reason.PROTOCOL),
    9: ("wrongEncoding", Reason.PROTOCOL),
    10: ("wrongValue", Reason.PROTOCOL),
    11: ("noCreation", Reason.PROTOCOL),
    12: ("inconsistentValue", Reason.PROTOCOL),
    13: ("resourceUnavailable", Reason.ERROR),
    14: ("commitFailed", Reason.ERROR),
    15: ("undoFailed", Reason.ERROR),
    16: ("authorizationError", Reason.AUTH),
    17: ("notWritable", Reason.AUTH),
    18: ("inconsistentName", Reason.PROTOCOL),
}

# SNMPv2 exception values in a response varbind.
_EXCEPTION_VALUES = {NoSuchObject: "noSuchObject", NoSuchInstance: "noSuchInstance", EndOfMibView: "endOfMibView"}

# pysnmp errorIndication classes; anything not listed is an ERROR.
_INDICATION_REASONS: tuple[tuple[type[errind.ErrorIndication], Reason], ...] = (
    (errind.RequestTimedOut, Reason.TIMEOUT),
    (errind.WrongDigest, Reason.AUTH),
    (errind.UnknownUserName, Reason.AUTH),
    (errind.UnknownSecurityName, Reason.AUTH),
    (errind.DecryptionError, Reason.AUTH),
    (errind.AuthenticationError, Reason.AUTH),
    (errind.AuthenticationFailure, Reason.AUTH),
    (errind.UnsupportedSecurityLevel, Reason.AUTH),
    (errind.NotInTimeWindow, Reason.AUTH),
    (errind.UnknownCommunityName, Reason.AUTH),
    (errind.UnknownEngineID, Reason.PROTOCOL),
    (errind.EngineIDMismatch, Reason.PROTOCOL),
    (errind.DeserializationError, Reason.PROTOCOL),
    (errind.EmptyResponse, Reason.PROTOCOL),
    (errind.DataMismatch, Reason.PROTOCOL),
)


def parse_oid(text: str) -> Oid:
    """``.1.3.6.1`` or ``1.3.6.1`` as a tuple of arcs."""
    return tuple(int(arc) for arc in text.strip().lstrip(".").split("."))


def dotted(oid: Oid) -> str:
    """An OID tuple in the usual leading-dot notation."""
    return "." + ".".join(map(str, oid))


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


def snmp_auth(pdu: PduConfig) -> CommunityData | UsmUserData:
    """The pysnmp credentials for ``pdu``, read from its secret references now.

    Raises :class:`ActionError` (``ERROR``) when a secret cannot be read or the v3 block is
    inconsistent. Secret values never appear in messages.
    """
    try:
        if pdu.snmp_version == "2c":
            return CommunityData(pdu.community.read(), mpModel=1)
        return _usm_user(pdu.v3)
    except LookupError as exc:
        raise ActionError(Reason.ERROR, f"PDU {pdu.address}: {exc}") from None


def _usm_user(v3: SnmpV3) -> UsmUserData:
    """USM user data: authPriv when a priv key is given, else authNoPriv."""
    if v3.priv_key is not None and v3.priv_protocol is None:
        raise ActionError(Reason.ERROR, f"SNMPv3 user {v3.user}: priv_key is given but priv_protocol is null")
    private = v3.priv_key is not None
    return UsmUserData(
        v3.user,
        authKey=v3.auth_key.read(),
        privKey=v3.priv_key.read() if private else None,
        authProtocol=_AUTH_PROTOCOLS[v3.auth_protocol],
        privProtocol=_PRIV_PROTOCOLS[v3.priv_protocol] if private else None,
    )


class PduDriver:
    """A :class:`~remediation.base.PowerDriver` for one PDU outlet over SNMP.

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
        auth: CommunityData | UsmUserData,
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
        self._auth = auth
        self._timeout, self._retries = timeout, retries
        self._engine = SnmpEngine()
        self._targets: dict[str, UdpTransportTarget] = {}
        self._closed = False

    @classmethod
    def from_config(
        cls, pdu: PduConfig, *, timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES
    ) -> "PduDriver":
        """A driver for the outlet ``pdu`` describes; its secrets are read now."""
        model: str | PduOidTable = pdu.table if pdu.model == "generic" else pdu.model
        auth = snmp_auth(pdu)
        return cls(pdu.address, pdu.outlet, auth, port=pdu.port, model=model, timeout=timeout, retries=retries)

    def __repr__(self) -> str:
        return f"PduDriver({self.address}:{self.port} outlet {self.outlet}, model {self._model_name or 'auto'})"

    async def __aenter__(self) -> "PduDriver":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the SNMP engine's transports and timer; the driver is unusable afterwards."""
        if not self._closed:
            self._closed = True
            self._engine.close_dispatcher()
            await asyncio.sleep(0)  # let the datagram transports run their close callbacks

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

    async def _target(self, kind: str) -> UdpTransportTarget:
        """The transport target for reads (retried) or writes (sent once, longer timeout)."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if kind not in self._targets:
            if kind == "get":
                timeout, retries = self._timeout, self._retries
            else:
                timeout, retries = self._timeout * (self._retries + 1), 0
            try:
                self._targets[kind] = await UdpTransportTarget.create(
                    (self.address, self.port), timeout=timeout, retries=retries
                )
            except PySnmpError as exc:
                raise ActionError(Reason.ERROR, f"{self._where()}: {exc}") from None
        return self._targets[kind]

    async def _request(self, oid: Oid, value: Integer32 | None = None) -> Any:
        """GET ``oid``, or SET it to ``value``; return the value the agent answered with."""
        kind = "get" if value is None else "set"
        target = await self._target(kind)
        var = ObjectType(ObjectIdentity(oid)) if value is None else ObjectType(ObjectIdentity(oid), value)
        send = get_cmd if value is None else set_cmd
        what = f"{self._where()}: {kind} {dotted(oid)}"
        try:
            indication, status, _index, var_binds = await send(
                self._engine, self._auth, target, ContextData(), var, lookupMib=False
            )
        except PySnmpError as exc:
            raise ActionError(Reason.ERROR, f"{what}: {exc}") from None
        if indication:
            text = _indication_text(indication)
            if kind == "set" and isinstance(indication, errind.RequestTimedOut):
                text += "; the command may or may not have been carried out"
            raise ActionError(_indication_reason(indication), f"{what}: {text}")
        if int(status):
            name, reason = _ERROR_STATUS.get(int(status), (f"error-status {int(status)}", Reason.ERROR))
            raise ActionError(reason, f"{what}: agent answered {name}")
        if len(var_binds) != 1 or tuple(var_binds[0][0]) != oid:
            raise ActionError(Reason.PROTOCOL, f"{what}: answer names {[str(vb[0]) for vb in var_binds]}")
        answer = var_binds[0][1]
        for exception_type, name in _EXCEPTION_VALUES.items():
            if isinstance(answer, exception_type):
                raise ActionError(Reason.PROTOCOL, f"{what}: agent answered {name}")
        return answer

    def _integer(self, value: Any) -> int:
        """An INTEGER value as int; anything else is a PROTOCOL failure."""
        if not isinstance(value, Integer32):
            kind = type(value).__name__
            raise ActionError(Reason.PROTOCOL, f"{self._where()}: outlet {self.outlet} state is a {kind}, not an INTEGER")
        return int(value)


def _indication_reason(indication: Any) -> Reason:
    for kind, reason in _INDICATION_REASONS:
        if isinstance(indication, kind):
            return reason
    return Reason.ERROR


def _indication_text(indication: Any) -> str:
    text = str(indication)
    if isinstance(indication, errind.RequestTimedOut):
        text += " (no answer: agent down or unreachable, or a wrong v2c community, which agents silently drop)"
    return text
