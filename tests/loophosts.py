"""Fake hosts on loopback addresses (127.0.0.2, 127.0.1.x, ...) that can "go down".

An nftables table in the test's own name holds a set of "down" addresses; packets TO them are
dropped on input, so pings time out and TCP connects hang, exactly as for a dead machine,
while the BMC and PDU simulators on 127.0.0.1 keep answering. A second set holds "booting"
addresses: they answer every second echo request (partial packet loss, deterministically:
a counter in the rule drops the even ones) and nothing else yet, as a machine whose network
is up before its services. The shell snippets returned by
:meth:`LoopHosts.up_cmd` / :meth:`down_cmd` are what a BMC's chassis hook runs: a reset really
"reboots" the host. Only loopback addresses are ever used.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess

_counter = itertools.count()
_BLOCKS = 128 * 256
"""Blocks 127.64.0.x to 127.191.255.x."""
_CLAIM_PORT = 9
"""The UDP port (discard) on a block's .0 address whose socket holds the block."""


def _remove_stale_tables() -> None:
    """Delete tables left by test processes that died (their pid is gone)."""
    listing = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[-1] if line.startswith("table inet mdt_") else ""
        pid = name.split("_")[1] if name.count("_") == 2 else ""
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["nft", "delete", "table", "inet", name], capture_output=True)


def _claim_block(first: int) -> tuple[tuple[int, int], socket.socket]:
    """The first free block from ``first`` on, and the socket that holds it: a UDP socket bound
    to the block's .0 address, which the kernel gives to one socket only (so concurrent test
    processes, e.g. pytest-xdist workers, never share a block) and frees when its process dies."""
    for step in range(_BLOCKS):
        n = (first + step) % _BLOCKS
        block = (64 + n % 128, n // 128)
        claim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            claim.bind((f"127.{block[0]}.{block[1]}.0", _CLAIM_PORT))
        except OSError:
            claim.close()
            continue
        return block, claim
    raise RuntimeError("every block of fake loopback hosts is taken")


class LoopHosts:
    """A context manager owning one nftables table (deleted on exit) and a private block of
    loopback addresses, so concurrent test runs on one machine never take each other's hosts down."""

    def __init__(self) -> None:
        n = next(_counter)
        self.table = f"mdt_{os.getpid()}_{n}"
        self._block, self._claim = _claim_block(os.getpid() + 128 * n)

    def address(self, index: int) -> str:
        """The ``index``-th (1-254) fake host address of this block, e.g. 127.83.17.2."""
        return f"127.{self._block[0]}.{self._block[1]}.{index}"

    def __enter__(self) -> "LoopHosts":
        _remove_stale_tables()
        self._nft(f"""table inet {self.table} {{
  set down {{ type ipv4_addr; }}
  set booting {{ type ipv4_addr; }}
  chain input {{
    type filter hook input priority -10; policy accept;
    ip daddr @down drop
    ip daddr @booting icmp type echo-request numgen inc mod 2 == 0 drop
    ip daddr @booting icmp type echo-request accept
    ip daddr @booting drop
  }}
}}""")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)
        self._claim.close()

    def _nft(self, script: str) -> None:
        subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, capture_output=True)

    def down_cmd(self, *addresses: str) -> str:
        """Shell command taking ``addresses`` down."""
        return f"nft add element inet {self.table} down {{ {', '.join(addresses)} }}"

    def up_cmd(self, *addresses: str) -> str:
        """Shell command bringing ``addresses`` back (no error if they were up)."""
        return "; ".join(f"nft delete element inet {self.table} {s} {{ {a} }} 2>/dev/null"
                         for a in addresses for s in ("down", "booting")) + "; true"

    def booting_cmd(self, *addresses: str) -> str:
        """Shell command making ``addresses`` "boot": half their pings answered, nothing else yet."""
        return f"nft add element inet {self.table} booting {{ {', '.join(addresses)} }}; " + "; ".join(
            f"nft delete element inet {self.table} down {{ {a} }} 2>/dev/null" for a in addresses) + "; true"

    def down(self, *addresses: str) -> None:
        """Take ``addresses`` down now."""
        subprocess.run(self.down_cmd(*addresses), shell=True, check=True)

    def up(self, *addresses: str) -> None:
        """Bring ``addresses`` back now."""
        subprocess.run(self.up_cmd(*addresses), shell=True, check=True)
