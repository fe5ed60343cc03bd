"""``tcp``: a port accepts connections; also the line-protocol helpers the banner probes share."""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import asynccontextmanager, suppress
from typing import AsyncIterator, Literal

from monitord.shared.fields import Port
from monitord.shared.results import Outcome, ProbeError, Reason, Status
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind

MAX_LINE = 4096
_REPLY = re.compile(r"^\d{3}[- ]")


class TcpParams(CheckParams):
    """Connect to ``port``; optionally send a line and match the first line answered."""

    kind: Literal["tcp"] = "tcp"
    port: Port
    send: str | None = None
    expect: str | None = None


class Session:
    """An open connection with the time it took to connect."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connect_seconds: float):
        self.reader, self.writer, self.connect_seconds = reader, writer, connect_seconds
        self._opened = time.monotonic()

    async def read_line(self) -> str:
        """Read one line (without the line ending); EOF before it is a protocol error."""
        try:
            raw = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise ProbeError(Reason.PROTOCOL, "connection closed without a greeting") from None
            raw = exc.partial
        except asyncio.LimitOverrunError:
            raise ProbeError(Reason.PROTOCOL, f"line longer than {MAX_LINE} bytes") from None
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    async def read_reply(self) -> tuple[str, list[str]]:
        """Read an FTP/SMTP style reply (``250-...`` continued until ``250 ...``): code and lines."""
        lines = [await self.read_line()]
        if not _REPLY.match(lines[0]):
            return "", lines  # not a numbered reply: the caller's prefix check says what it was
        code = lines[0][:3]
        while not (lines[-1].startswith(code) and lines[-1][3:4] != "-"):
            lines.append(await self.read_line())
        return code, lines

    async def send_line(self, line: str) -> None:
        """Send ``line`` with CRLF."""
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()

    def values(self) -> dict[str, float]:
        """Connect and answer times, for the result's values."""
        return {"connect_seconds": self.connect_seconds, "response_seconds": time.monotonic() - self._opened}


@asynccontextmanager
async def connect(address: str, port: int) -> AsyncIterator[Session]:
    """Open a TCP connection and always close it, whatever happens inside."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(address, port, limit=MAX_LINE)
    try:
        yield Session(reader, writer, time.monotonic() - start)
    finally:
        writer.close()
        with suppress(Exception):
            await writer.wait_closed()


def expect_prefix(line: str, prefix: str, what: str, port: int) -> None:
    """Raise a protocol error unless ``line`` starts with ``prefix``."""
    if not line.startswith(prefix):
        raise ProbeError(Reason.PROTOCOL, f"{what} on port {port} answered {line[:120]!r}, expected {prefix!r}")


async def greeting(call: ProbeCall, port: int, prefix: str, what: str, farewell: str | None) -> Outcome:
    """Connect, expect a first line starting with ``prefix``, then say ``farewell`` if given."""
    async with connect(call.address, port) as session:
        line = await session.read_line()
        expect_prefix(line, prefix, what, port)
        if farewell is not None:
            await session.send_line(farewell)
        return Outcome(Status.OK, line[:100], values=session.values())


async def run(ctx: ProbeContext, call: ProbeCall, params: TcpParams) -> Outcome:
    """Connect, and when asked, exchange one line."""
    async with connect(call.address, params.port) as session:
        if params.send is not None:
            await session.send_line(params.send)
        if params.expect is not None:
            line = await session.read_line()
            if not re.search(params.expect, line):
                raise ProbeError(Reason.PROTOCOL, f"port {params.port} answered {line[:120]!r}, expected /{params.expect}/")
        return Outcome(Status.OK, f"port {params.port} open", values=session.values())


KIND = ProbeKind("tcp", TcpParams, run, default_interval=600.0, summary="TCP port accepts connections")
