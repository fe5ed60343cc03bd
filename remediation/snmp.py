"""SNMP access shared by the PDU driver and the SNMP probes: credentials, GET, SET and table
walks over pysnmp 7's asyncio API, with every failure a typed :class:`ActionError`.

Failures and their reasons:

* no answer: ``TIMEOUT``. A v2c agent silently drops requests with a wrong community, so a
  wrong community is a ``TIMEOUT`` too (indistinguishable on the wire from a dead agent).
* v3 security failures the agent reports (wrongDigest, unknownUserName, decryptionError, ...)
  and error-status noAccess, notWritable, readOnly, authorizationError: ``AUTH``.
* error-status wrongValue, wrongType, noSuchName, noCreation, ..., and a noSuchObject or
  noSuchInstance value for a GET: ``PROTOCOL``.
* genErr, commitFailed and anything else: ``ERROR``.

A SET is sent exactly once, never retransmitted (a retransmitted command could act twice);
it gets the whole time budget of a read (``timeout * (retries + 1)``) instead. Reads are
retried ``retries`` times.

Each :class:`SnmpSession` owns one ``SnmpEngine``: USM users and engine-ID discovery are kept
per engine, so two agents with the same v3 user name but different keys never share state.
Close it with :meth:`SnmpSession.aclose` or ``async with``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_walk_cmd,
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
from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject

from monitord.shared.results import Reason
from monitord.shared.power import ActionError
from monitord.shared.access import SnmpConfig, SnmpV3


Oid = tuple[int, ...]
Auth = CommunityData | UsmUserData

DEFAULT_TIMEOUT = 2.0
DEFAULT_RETRIES = 1
MAX_WALK_ROWS = 10_000
"""A walk stops with a PROTOCOL error after this many rows (an agent looping on GETBULK)."""

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


def snmp_auth(agent: SnmpConfig, address: str) -> Auth:
    """The pysnmp credentials for ``agent`` (at ``address``), read from its secret references now.

    Raises :class:`ActionError` (``ERROR``) when a secret cannot be read or the v3 block is
    inconsistent. Secret values never appear in messages.
    """
    try:
        if agent.snmp_version == "2c":
            return CommunityData(agent.community.read(), mpModel=1)
        return _usm_user(agent.v3)
    except LookupError as exc:
        raise ActionError(Reason.ERROR, f"SNMP agent {address}: {exc}") from None


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


def indication_reason(indication: Any) -> Reason:
    """The reason for a pysnmp errorIndication."""
    for kind, reason in _INDICATION_REASONS:
        if isinstance(indication, kind):
            return reason
    return Reason.ERROR


def indication_text(indication: Any) -> str:
    """A pysnmp errorIndication as text, with the likely causes of a timeout."""
    text = str(indication)
    if isinstance(indication, errind.RequestTimedOut):
        text += " (no answer: agent down or unreachable, or a wrong v2c community, which agents silently drop)"
    return text


class SnmpSession:
    """Requests to one SNMP agent. ``timeout`` is per request in seconds; reads are retried
    ``retries`` times, SETs are sent once (see the module docstring). ``label`` names the agent
    in error summaries (default ``SNMP agent ADDRESS:PORT``)."""

    def __init__(
        self,
        address: str,
        port: int,
        auth: Auth,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        label: str | None = None,
    ) -> None:
        self.address, self.port = address, port
        self.label = label or f"SNMP agent {address}:{port}"
        self._auth = auth
        self._timeout, self._retries = timeout, retries
        self._engine = SnmpEngine()
        self._targets: dict[str, UdpTransportTarget] = {}
        self._closed = False

    @classmethod
    def from_config(cls, agent: SnmpConfig, address: str, **options: Any) -> "SnmpSession":
        """A session with ``agent`` (its own address, else ``address``); secrets are read now."""
        where = agent.address or address
        return cls(where, agent.port, snmp_auth(agent, where), **options)

    def __repr__(self) -> str:
        return f"SnmpSession({self.address}:{self.port})"

    async def __aenter__(self) -> "SnmpSession":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the engine's transports and timer; the session is unusable afterwards."""
        if not self._closed:
            self._closed = True
            self._engine.close_dispatcher()
            await asyncio.sleep(0)  # let the datagram transports run their close callbacks

    async def _target(self, kind: str) -> UdpTransportTarget:
        """The transport target for reads (retried) or writes (sent once, longer timeout)."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if kind not in self._targets:
            if kind == "set":
                timeout, retries = self._timeout * (self._retries + 1), 0
            else:
                timeout, retries = self._timeout, self._retries
            try:
                self._targets[kind] = await UdpTransportTarget.create(
                    (self.address, self.port), timeout=timeout, retries=retries
                )
            except PySnmpError as exc:
                raise ActionError(Reason.ERROR, f"{self.label}: {exc}") from None
        return self._targets[kind]

    def _check(self, what: str, indication: Any, status: Any, set_request: bool = False) -> None:
        """Raise the typed error for a failed exchange, if it failed."""
        if indication:
            text = indication_text(indication)
            if set_request and isinstance(indication, errind.RequestTimedOut):
                text += "; the command may or may not have been carried out"
            raise ActionError(indication_reason(indication), f"{what}: {text}")
        if int(status):
            name, reason = _ERROR_STATUS.get(int(status), (f"error-status {int(status)}", Reason.ERROR))
            raise ActionError(reason, f"{what}: agent answered {name}")

    async def get(self, *oids: Oid) -> list[Any]:
        """GET ``oids`` in one request; the values in order. A missing one is a PROTOCOL error."""
        target = await self._target("get")
        what = f"{self.label}: get {', '.join(map(dotted, oids))}"
        try:
            indication, status, _index, var_binds = await get_cmd(
                self._engine, self._auth, target, ContextData(), *(ObjectType(ObjectIdentity(o)) for o in oids),
                lookupMib=False,
            )
        except PySnmpError as exc:
            raise ActionError(Reason.ERROR, f"{what}: {exc}") from None
        self._check(what, indication, status)
        return [self._answer(what, oid, var_binds, i) for i, oid in enumerate(oids)]

    async def set(self, oid: Oid, value: Any) -> Any:
        """SET ``oid`` to ``value``, sent once; the value the agent answered with."""
        target = await self._target("set")
        what = f"{self.label}: set {dotted(oid)}"
        try:
            indication, status, _index, var_binds = await set_cmd(
                self._engine, self._auth, target, ContextData(), ObjectType(ObjectIdentity(oid), value),
                lookupMib=False,
            )
        except PySnmpError as exc:
            raise ActionError(Reason.ERROR, f"{what}: {exc}") from None
        self._check(what, indication, status, set_request=True)
        return self._answer(what, oid, var_binds, 0)

    @staticmethod
    def _answer(what: str, oid: Oid, var_binds: Any, i: int) -> Any:
        if len(var_binds) <= i or tuple(var_binds[i][0]) != oid:
            raise ActionError(Reason.PROTOCOL, f"{what}: answer names {[str(vb[0]) for vb in var_binds]}")
        answer = var_binds[i][1]
        for exception_type, name in _EXCEPTION_VALUES.items():
            if isinstance(answer, exception_type):
                raise ActionError(Reason.PROTOCOL, f"{what}: agent answered {name} for {dotted(oid)}")
        return answer

    async def walk(self, column: Oid) -> dict[Oid, Any]:
        """Every row under ``column`` (GETBULK), keyed by the index after the column's OID.

        An empty dict when the agent has no such rows.
        """
        target = await self._target("get")
        what = f"{self.label}: walk {dotted(column)}"
        rows: dict[Oid, Any] = {}
        try:
            async for indication, status, _index, var_binds in bulk_walk_cmd(
                self._engine, self._auth, target, ContextData(), 0, 25, ObjectType(ObjectIdentity(column)),
                lexicographicMode=False, lookupMib=False,
            ):
                self._check(what, indication, status)
                for name, value in var_binds:
                    oid = tuple(name)
                    if oid[: len(column)] != column or isinstance(value, tuple(_EXCEPTION_VALUES)):
                        continue
                    rows[oid[len(column):]] = value
                if len(rows) > MAX_WALK_ROWS:
                    raise ActionError(Reason.PROTOCOL, f"{what}: more than {MAX_WALK_ROWS} rows")
        except PySnmpError as exc:
            raise ActionError(Reason.ERROR, f"{what}: {exc}") from None
        return rows
