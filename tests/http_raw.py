"""HTTP/1.1 over a raw socket, for tests that send what no HTTP client library would."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field


@dataclass
class Answer:
    """One HTTP answer; ``status`` None: the connection closed without one."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> object:
        return json.loads(self.body)


async def read_answer(reader: asyncio.StreamReader, head_only: bool = False) -> Answer:
    """Read one answer: the head, then ``Content-Length`` bytes of body (none if ``head_only``: HEAD)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines[1:] if line)}
        body = b"" if head_only else await reader.readexactly(int(headers.get("content-length", 0)))
    except (asyncio.IncompleteReadError, ConnectionError):
        return Answer(None)
    return Answer(int(lines[0].split()[1]), headers, body)


async def exchange(port: int, data: bytes, timeout: float = 10.0, head_only: bool = False) -> Answer:
    """Send ``data`` on a new connection to 127.0.0.1:``port`` and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            writer.write(data)
            await writer.drain()
        except ConnectionError:
            pass  # the server may answer and close before taking everything
        return await asyncio.wait_for(read_answer(reader, head_only), timeout)
    finally:
        writer.close()


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 30.0) -> bool:
    """Whether the server closes the connection (without answering) within ``timeout``."""
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionError:
        return True
