"""``ping``: ICMP echo round trips and packet loss, through one shared socket per address family.

All ping checks of a daemon share a :class:`Pinger` per address family: one ICMP socket, one
reader registered with the event loop, and a table of outstanding echo requests keyed by
(destination, sequence number). A probe submits its packets and waits on futures; replies,
ICMP errors and reply timers settle them. Reply deadlines share a timer wheel: one event-loop
timer per :data:`TIMER_SLOT` of deadlines, not one per packet. So a sweep of thousands of hosts
costs one socket and a few timers, and dead hosts only wait out their own reply timeout
(rounded up to the slot) instead of holding a slot (what fping does, unlike icmplib's socket
per host). IP literals are parsed once per process, not per run.

Socket modes (daemon setting ``ping.privileged``):

- ``raw``: ``SOCK_RAW`` ICMP, needs root or CAP_NET_RAW. The socket sees every ICMP echo reply
  on the host (fping's too), so replies are filtered by this pinger's random identifier.
- ``datagram``: unprivileged ICMP (``SOCK_DGRAM``), allowed when the daemon's group is in
  ``net.ipv4.ping_group_range``. The kernel rewrites the identifier and delivers only this
  socket's replies, so they are matched on (source address, sequence).
- ``auto``: raw when permitted, else datagram.

ICMP errors (destination unreachable, time exceeded) are read from the socket's error queue
(``IP_RECVERR``), which works the same way in both modes.

Packets are built with :mod:`struct` here rather than with icmplib: icmplib's public API
sends and receives per request (one blocking ``getaddrinfo`` and two ``setsockopt`` calls per
packet, an async ``receive`` that owns the socket while it waits), and it does not read the
error queue, which is where datagram sockets report unreachable destinations.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import platform
import random
import socket
import struct
import time
from collections import deque
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Literal, Union

from pydantic import Field, model_validator

from monitord.shared.fields import Duration, StrictModel, format_duration
from monitord.shared.results import Outcome, ProbeError, Reason, Status
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind, Runtime

PingMode = Literal["auto", "raw", "datagram"]


class PingSettings(StrictModel):
    """How ICMP is sent: raw socket (root/CAP_NET_RAW), datagram (ping_group_range) or auto."""

    privileged: PingMode = "auto"
"""The daemon setting: which kind of ICMP socket to use."""

SocketKind = Literal["raw", "datagram"]

TIMER_SLOT = 0.01
"""Reply deadlines are rounded up to this many seconds and share one timer per slot."""
SEND_BURST = 256
"""Packets sent per event-loop turn before the reader gets a turn, so replies do not overflow
the socket's receive buffer while a large sweep is still being sent."""

READ_BURST = 1024
"""Packets read per wake-up; the reader is called again while more are waiting."""

SOCKET_BUFFER = 4 * 1024 * 1024
"""Requested receive and send buffer (the kernel caps it at net.core.rmem_max / wmem_max)."""

PAYLOAD = b"monitord-ping\x00\x00\x00"

_RESOURCE = "ping.pingers"
_MODE_RESOURCE = "ping.mode"

# Linux socket options the socket module does not name.
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_SOL_RAW = 255
_ICMP_FILTER = 1
_ICMP6_FILTER = 1
_SO_EE_ORIGIN_ICMP = 2
_SO_EE_ORIGIN_ICMP6 = 3
# SO_TIMESTAMPNS (kernel receive time), whose number is 35 on the architectures named here.
_SO_TIMESTAMPNS = 35 if platform.machine() in {
    "x86_64", "i686", "aarch64", "armv7l", "armv6l", "riscv64", "ppc64le", "s390x", "loongarch64"} else None
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)

_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_ID_SEQ = struct.Struct("!HH")
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err

_SOCK_TYPES = {"raw": socket.SOCK_RAW, "datagram": socket.SOCK_DGRAM}


@dataclass(frozen=True, slots=True)
class _Family:
    """What differs between ICMPv4 and ICMPv6."""

    family: int
    proto: int
    version: int
    echo_request: int
    echo_reply: int
    recverr: tuple[int, int]
    offender: slice  # where the offender's address sits in the IP_RECVERR control data


_V4 = _Family(socket.AF_INET, socket.IPPROTO_ICMP, 4, 8, 0, (socket.IPPROTO_IP, _IP_RECVERR), slice(20, 24))
_V6 = _Family(socket.AF_INET6, socket.IPPROTO_ICMPV6, 6, 128, 129, (socket.IPPROTO_IPV6, _IPV6_RECVERR), slice(24, 40))
_FAMILIES = {socket.AF_INET: _V4, socket.AF_INET6: _V6}

_ICMP_ERROR_TEXT = {
    (4, 3, 0): "network unreachable",
    (4, 3, 1): "host unreachable",
    (4, 3, 2): "protocol unreachable",
    (4, 3, 3): "port unreachable",
    (4, 3, 9): "network administratively prohibited",
    (4, 3, 10): "host administratively prohibited",
    (4, 3, 13): "communication administratively prohibited",
    (4, 11, 0): "TTL exceeded in transit",
    (6, 1, 0): "no route to destination",
    (6, 1, 1): "communication administratively prohibited",
    (6, 1, 3): "address unreachable",
    (6, 1, 4): "port unreachable",
    (6, 3, 0): "hop limit exceeded in transit",
}


class PingPermissionError(PermissionError):
    """Neither kind of ICMP socket the configured mode allows may be opened."""


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP error that answered one echo request (destination unreachable, time exceeded)."""

    version: int
    type: int
    code: int
    offender: str

    def __str__(self) -> str:
        text = _ICMP_ERROR_TEXT.get((self.version, self.type, self.code), f"ICMP type {self.type} code {self.code}")
        return f"{text} (from {self.offender})"


PacketResult = Union[float, IcmpError, OSError, None]
"""One packet's fate: the round trip in seconds, an ICMP error, a local send error, or None
when nothing came back within the reply timeout."""


class PingParams(CheckParams):
    """Send ``count`` echo requests ``packet_interval`` apart and wait ``reply_timeout`` for each.

    When every packet is lost the check is critical with reason ``unreachable``, whatever the
    thresholds. Otherwise loss and average round trip are compared with the thresholds (a value
    at or above a threshold trips it, as in check_ping); their status has reason ``threshold``.
    With the defaults, any partial loss of 20 % or more (one of three packets) is a warning and
    only a total loss is critical.
    """

    kind: Literal["ping"] = "ping"
    count: int = Field(default=3, ge=1, le=100)
    packet_interval: Duration = Field(default=0.2, ge=0.01, le=60)
    reply_timeout: Duration = Field(default=2.0, le=60)
    rtt_warning_ms: float | None = Field(default=None, gt=0)
    rtt_critical_ms: float | None = Field(default=None, gt=0)
    loss_warning_percent: float = Field(default=20, gt=0, le=100)
    loss_critical_percent: float = Field(default=100, gt=0, le=100)

    @model_validator(mode="after")
    def _consistent(self) -> "PingParams":
        if self.loss_critical_percent < self.loss_warning_percent:
            raise ValueError("loss_critical_percent must not be less than loss_warning_percent")
        if None not in (self.rtt_warning_ms, self.rtt_critical_ms) and self.rtt_critical_ms < self.rtt_warning_ms:
            raise ValueError("rtt_critical_ms must not be less than rtt_warning_ms")
        return self

    def duration(self) -> float:
        """The longest a run can take: all packets sent, then the last reply timeout."""
        return (self.count - 1) * self.packet_interval + self.reply_timeout

    def min_timeout(self) -> tuple[float, str]:
        """A check's timeout must exceed a whole ping run."""
        return self.duration(), (
            f"a ping run ({self.count} packet{'s' if self.count != 1 else ''} {format_duration(self.packet_interval)} apart, "
            f"then up to {format_duration(self.reply_timeout)} for the last reply)"
        )


# ---------------------------------------------------------------------------------------------
# Permission and mode


def check_permission(mode: PingMode = "auto") -> SocketKind:
    """Return the socket kind ``mode`` resolves to here, or raise :class:`PingPermissionError`.

    Opens (and closes) an ICMPv4 socket of each allowed kind, raw first. The daemon calls it at
    start-up so that a missing privilege is a clear start-up error, not failing checks.
    """
    if mode not in ("auto", "raw", "datagram"):
        raise ValueError(f"ping mode must be auto, raw or datagram, not {mode!r}")
    kinds: tuple[SocketKind, ...] = ("raw", "datagram") if mode == "auto" else (mode,)
    for kind in kinds:
        try:
            socket.socket(socket.AF_INET, _SOCK_TYPES[kind], socket.IPPROTO_ICMP).close()
        except PermissionError:
            continue
        return kind
    raise PingPermissionError(_refusal(kinds))


def _refusal(kinds: tuple[SocketKind, ...]) -> str:
    """Explain which ICMP sockets were refused and what would allow them."""
    needs = []
    if "raw" in kinds:
        needs.append("a raw ICMP socket (root or CAP_NET_RAW)")
    if "datagram" in kinds:
        try:
            with open("/proc/sys/net/ipv4/ping_group_range") as file:
                current = " ".join(file.read().split())
        except OSError:
            current = "unknown"
        needs.append(
            f"unprivileged ICMP (net.ipv4.ping_group_range must include gid {os.getegid()}; it is {current!r})"
        )
    verdict = "both were refused" if len(needs) > 1 else "it was refused"
    return f"ping needs {' or '.join(needs)}: {verdict}"


async def configure(ctx: ProbeContext, mode: PingMode = "auto", *, needed: bool = True) -> SocketKind | None:
    """Set the ICMP socket mode of ``ctx``'s pingers; when ``needed``, check it is permitted now.

    The first call for a context fixes the mode (pingers are opened lazily with it); later calls,
    as on a reload, only check. Returns the socket kind in use, or None when not ``needed``.
    Raises :class:`PingPermissionError` (a :class:`PermissionError`) when the check fails.
    """
    chosen = await ctx.resource(_MODE_RESOURCE, lambda _ctx: _constant(mode))
    return check_permission(chosen) if needed else None


async def setup(ctx: ProbeContext, runtime: Runtime) -> None:
    """Fix the socket mode from ``daemon.ping``, and check it is permitted when pings will be sent."""
    await configure(ctx, runtime.settings.privileged, needed=runtime.in_use)


async def _constant(value: str) -> str:
    """A resource factory for a plain value."""
    return value


async def pingers(ctx: ProbeContext) -> "Pingers":
    """The shared :class:`Pingers` of ``ctx``, opened on first use and closed with the context."""
    return await ctx.resource(_RESOURCE, _open_pingers)


async def _open_pingers(ctx: ProbeContext) -> "Pingers":
    mode = await ctx.resource(_MODE_RESOURCE, lambda _ctx: _constant("auto"))
    pool = Pingers(check_permission(mode))
    await ctx.enter(aclosing(pool))
    return pool


# ---------------------------------------------------------------------------------------------
# The shared pinger


class _Request:
    """One echo request in flight."""

    __slots__ = ("key", "sockaddr", "packet", "timeout", "future", "sent_at")

    def __init__(self, key: tuple[str, int], sockaddr: tuple, packet: bytes, timeout: float, future: asyncio.Future):
        self.key = key
        self.sockaddr = sockaddr
        self.packet = packet
        self.timeout = timeout
        self.future = future
        self.sent_at: float | None = None


class Pinger:
    """One ICMP socket of one address family, shared by every ping of that family.

    Must be created and used inside a running event loop; :meth:`close` releases it.
    """

    def __init__(self, family: int, kind: SocketKind) -> None:
        self._fam = _FAMILIES[family]
        self.kind = kind
        self._raw = kind == "raw"
        self._loop = asyncio.get_running_loop()
        self._sock = socket.socket(family, _SOCK_TYPES[kind], self._fam.proto)
        try:
            self._setup_socket()
        except BaseException:
            self._sock.close()
            raise
        self._ident = random.getrandbits(16)  # in datagram mode the kernel replaces it
        self._seq = random.getrandbits(16)
        self._pending: dict[tuple[str, int], _Request] = {}
        self._outbox: deque[_Request] = deque()
        self._flush_scheduled = False
        self._writer_waiting = False
        self._wheel: dict[int, tuple[asyncio.TimerHandle, list[_Request]]] = {}
        self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def _setup_socket(self) -> None:
        sock = self._sock
        sock.setblocking(False)
        sock.setsockopt(*self._fam.recverr, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        if _SO_TIMESTAMPNS is not None:  # RTTs unaffected by how busy the event loop is
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        if self._raw:  # let only echo replies through; errors still reach the error queue
            with suppress(OSError):
                reply = self._fam.echo_reply
                if self._fam is _V4:  # a mask of ICMP types to block
                    sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", 0xFFFFFFFF & ~(1 << reply)))
                else:  # struct icmp6_filter: 256 bits, set = blocked
                    blocked = [0xFFFFFFFF] * 8
                    blocked[reply >> 5] &= ~(1 << (reply & 31))
                    sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("8I", *blocked))

    @property
    def in_flight(self) -> int:
        """Echo requests waiting for their reply (for tests and metrics)."""
        return len(self._pending)

    async def ping(self, sockaddr: tuple, count: int, interval: float, timeout: float) -> list[PacketResult]:
        """Send ``count`` echo requests to ``sockaddr``, ``interval`` seconds apart.

        Waits up to ``timeout`` seconds after each send for its reply, and returns every packet's
        :data:`PacketResult` in order. Cancelling it forgets the requests still in flight.
        """
        address = canonical(self._fam.family, sockaddr[0])
        requests: list[_Request] = []
        try:
            for number in range(count):
                if number:
                    await asyncio.sleep(interval)
                requests.append(self._submit(address, sockaddr, timeout))
            return [await request.future for request in requests]
        finally:  # on cancellation (Task.cancel also cancels the future it waits on)
            for request in requests:
                self._release(request)
                request.future.cancel()

    def _submit(self, address: str, sockaddr: tuple, timeout: float) -> _Request:
        """Queue one echo request for sending and register it for its reply."""
        seq = self._next_sequence(address)
        request = _Request((address, seq), sockaddr, self._packet(seq), timeout, self._loop.create_future())
        self._pending[request.key] = request
        self._outbox.append(request)
        self._schedule_flush()
        return request

    def _next_sequence(self, address: str) -> int:
        for _ in range(0x10000):
            self._seq = (self._seq + 1) & 0xFFFF
            if (address, self._seq) not in self._pending:
                return self._seq
        raise OSError(f"65536 echo requests to {address} are already in flight")

    def _packet(self, seq: int) -> bytes:
        """An echo request; the kernel fills in the checksum for ICMPv6 and datagram sockets."""
        header = _HEADER.pack(self._fam.echo_request, 0, 0, self._ident, seq)
        if self._fam is _V4 and self._raw:
            header = _HEADER.pack(self._fam.echo_request, 0, _checksum(header + PAYLOAD), self._ident, seq)
        return header + PAYLOAD

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._writer_waiting:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send up to :data:`SEND_BURST` queued packets, then yield to the reader."""
        self._flush_scheduled = False
        for _ in range(SEND_BURST):
            if not self._outbox:
                return
            request = self._outbox[0]
            if not request.future.done():
                try:
                    self._send(request)
                except BlockingIOError:  # send buffer full: resume when writable
                    self._writer_waiting = True
                    self._loop.add_writer(self._sock.fileno(), self._on_writable)
                    return
            self._outbox.popleft()
        if self._outbox:
            self._schedule_flush()

    def _on_writable(self) -> None:
        self._loop.remove_writer(self._sock.fileno())
        self._writer_waiting = False
        self._flush()

    def _send(self, request: _Request) -> None:
        """Send one packet and start its reply timer; a send error settles it at once."""
        for retry in (False, True):
            # Stamped before sending (the clock of kernel receive timestamps): a reply from a
            # local address can be received before sendto returns.
            request.sent_at = time.time()
            try:
                self._sock.sendto(request.packet, request.sockaddr)
                break
            except BlockingIOError:
                raise
            except OSError as exc:
                if retry:
                    self._settle(request, exc)
                    return
                # An ICMP error for another request leaves a pending socket error that fails
                # the next send once (sk_err). Drain the error queue, which clears it, and retry.
                self._drain_errors()
        slot = math.ceil((self._loop.time() + request.timeout) / TIMER_SLOT)
        if (entry := self._wheel.get(slot)) is None:
            entry = self._wheel[slot] = (self._loop.call_at(slot * TIMER_SLOT, self._expire, slot), [])
        entry[1].append(request)

    def _expire(self, slot: int) -> None:
        """The timer of a slot of reply deadlines fired. Read what already arrived first: on a busy
        event loop a timer can run before the reader callback for a reply the kernel received in time."""
        _timer, requests = self._wheel.pop(slot)
        if any(not request.future.done() for request in requests):
            self._on_readable()
            for request in requests:
                if not request.future.done():
                    self._settle(request, None)

    def _on_readable(self) -> None:
        """Dispatch waiting echo replies and ICMP errors to their requests."""
        sock, fam = self._sock, self._fam
        for _ in range(READ_BURST):
            try:
                data, ancdata, _flags, source = sock.recvmsg(2048, _ANCILLARY_SIZE)
            except BlockingIOError:
                break
            except OSError:  # a pending socket error (sk_err); its details are in the error queue
                continue
            received_at = _kernel_time(ancdata) or time.time()
            if self._raw and fam is _V4 and data:  # raw IPv4 sockets get the IP header too
                data = data[(data[0] & 0x0F) * 4:]
            if len(data) < 8 or data[0] != fam.echo_reply:
                continue
            ident, seq = _ID_SEQ.unpack_from(data, 4)
            if self._raw and ident != self._ident:
                continue  # someone else's ping (raw sockets see every echo reply)
            address = source[0] if fam is _V4 else source[0].partition("%")[0]
            request = self._pending.get((address, seq))
            if request is not None and request.sent_at is not None:
                self._settle(request, max(0.0, received_at - request.sent_at))
        self._drain_errors()

    def _drain_errors(self) -> None:
        """Read the error queue: each ICMP error about one of our requests settles it."""
        while True:
            try:
                data, ancdata, _flags, destination = self._sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            except OSError:  # BlockingIOError when the queue is empty
                return
            error = self._icmp_error(ancdata)
            if error is None or len(data) < 8:
                continue
            ident, seq = _ID_SEQ.unpack_from(data, 4)  # from our own echo request, quoted back
            if self._raw and ident != self._ident:
                continue
            request = self._pending.get((canonical(self._fam.family, destination[0]), seq))
            if request is not None:
                self._settle(request, error)

    def _icmp_error(self, ancdata: list[tuple[int, int, bytes]]) -> IcmpError | None:
        for level, kind, data in ancdata:
            if (level, kind) != self._fam.recverr or len(data) < self._fam.offender.stop:
                continue
            _errno, origin, icmp_type, icmp_code, _pad, _info, _data = _EXTENDED_ERR.unpack_from(data)
            if origin not in (_SO_EE_ORIGIN_ICMP, _SO_EE_ORIGIN_ICMP6):
                return None
            offender = socket.inet_ntop(self._fam.family, data[self._fam.offender])
            return IcmpError(self._fam.version, icmp_type, icmp_code, offender)
        return None

    def _settle(self, request: _Request, result: PacketResult) -> None:
        self._release(request)
        if not request.future.done():
            request.future.set_result(result)

    def _release(self, request: _Request) -> None:
        """Forget ``request``: no reply will reach it any more (its slot's timer finds it settled)."""
        if self._pending.get(request.key) is request:
            del self._pending[request.key]

    def close(self) -> None:
        """Close the socket; pings still waiting are cancelled."""
        if self._sock.fileno() < 0:
            return
        self._loop.remove_reader(self._sock.fileno())
        if self._writer_waiting:
            self._loop.remove_writer(self._sock.fileno())
        for request in list(self._pending.values()):
            self._release(request)
            request.future.cancel()
        for timer, _requests in self._wheel.values():
            timer.cancel()
        self._wheel.clear()
        self._outbox.clear()
        self._sock.close()


class Pingers:
    """The pingers of one daemon: one :class:`Pinger` per address family, opened on first use."""

    def __init__(self, kind: SocketKind) -> None:
        self.kind = kind
        self._by_family: dict[int, Pinger] = {}

    def get(self, family: int) -> Pinger:
        """The pinger for ``family`` (``socket.AF_INET`` or ``AF_INET6``)."""
        pinger = self._by_family.get(family)
        if pinger is None:
            pinger = self._by_family[family] = Pinger(family, self.kind)
        return pinger

    @property
    def in_flight(self) -> int:
        """Echo requests of all families waiting for their reply."""
        return sum(pinger.in_flight for pinger in self._by_family.values())

    async def aclose(self) -> None:
        """Close every pinger."""
        for pinger in self._by_family.values():
            pinger.close()
        self._by_family.clear()


def _kernel_time(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive time of a packet (SO_TIMESTAMPNS), if it came with one."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) == _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack(data)
            return seconds + nanoseconds * 1e-9
    return None


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@functools.lru_cache(maxsize=1 << 17)
def canonical(family: int, address: str) -> str:
    """``address`` written the way the kernel reports reply sources (no scope, compressed)."""
    return socket.inet_ntop(family, socket.inet_pton(family, address.partition("%")[0]))


@functools.lru_cache(maxsize=1 << 17)
def literal(address: str) -> tuple[int, tuple] | None:
    """The address family and socket address of an IP literal (parsed once), or None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            text = socket.inet_ntop(family, socket.inet_pton(family, address))
        except OSError:
            continue
        return (family, (text, 0)) if family == socket.AF_INET else (family, (text, 0, 0, 0))
    return None


async def resolve(address: str) -> tuple[int, tuple]:
    """The address family and socket address to ping for an IP address or a host name.

    IP addresses are used as they are; names are looked up on every run (their address may
    move), and the first address wins.
    """
    if (known := literal(address)) is not None:
        return known
    infos = await asyncio.get_running_loop().getaddrinfo(address, None, type=socket.SOCK_DGRAM)
    family, _type, _proto, _canonname, sockaddr = infos[0]
    return family, sockaddr


# ---------------------------------------------------------------------------------------------
# The probe


async def run(ctx: ProbeContext, call: ProbeCall, params: PingParams) -> Outcome:
    """Ping ``call.address`` through the shared pinger and judge loss and round trips."""
    family, sockaddr = await resolve(call.address)
    pinger = (await pingers(ctx)).get(family)
    results = await pinger.ping(sockaddr, params.count, params.packet_interval, params.reply_timeout)
    label = sockaddr[0] if call.address == sockaddr[0] else f"{call.address} ({sockaddr[0]})"
    return assess(label, results, params)


def assess(address: str, results: list[PacketResult], params: PingParams) -> Outcome:
    """Turn per-packet results into an outcome; raise when nothing came back.

    ``address`` names the target in summaries.
    All lost: :class:`ProbeError` ``unreachable`` (naming an ICMP error if one came back), or
    the local send error itself (e.g. no route), for the runner to classify.
    """
    sent = len(results)
    rtts = [result * 1000 for result in results if isinstance(result, float)]
    if not rtts:
        icmp_error = next((r for r in results if isinstance(r, IcmpError)), None)
        if icmp_error is not None:
            raise ProbeError(Reason.UNREACHABLE, f"{address}: {icmp_error}, no reply ({sent} sent)")
        send_error = next((r for r in results if isinstance(r, OSError)), None)
        if send_error is not None:
            raise send_error
        raise ProbeError(Reason.UNREACHABLE, f"no reply from {address} ({sent} sent)")
    received = len(rtts)
    loss = 100.0 * (sent - received) / sent
    rtt_min, rtt_avg, rtt_max = min(rtts), sum(rtts) / received, max(rtts)
    values = {
        "loss_percent": loss, "rtt_min_ms": rtt_min, "rtt_avg_ms": rtt_avg, "rtt_max_ms": rtt_max,
        "sent": float(sent), "received": float(received),
    }
    summary = f"{address}: {received}/{sent} replies, {loss:g}% loss, rtt min/avg/max {rtt_min:.3f}/{rtt_avg:.3f}/{rtt_max:.3f} ms"
    for status, loss_limit, rtt_limit in (
        (Status.CRITICAL, params.loss_critical_percent, params.rtt_critical_ms),
        (Status.WARNING, params.loss_warning_percent, params.rtt_warning_ms),
    ):
        exceeded = []
        if loss >= loss_limit:
            exceeded.append(f"loss {loss:.3g}% >= {loss_limit:g}%")
        if rtt_limit is not None and rtt_avg >= rtt_limit:
            exceeded.append(f"rtt avg {rtt_avg:.3f} ms >= {rtt_limit:g} ms")
        if exceeded:
            return Outcome(status, f"{summary} ({', '.join(exceeded)})", Reason.THRESHOLD, values)
    return Outcome(Status.OK, summary, values=values)


KIND = ProbeKind(
    "ping", PingParams, run, default_interval=600.0, summary="ICMP echo: packet loss and round-trip time", bounded=False,
    host_down=True, daemon_settings=PingSettings, setup=setup,
)
