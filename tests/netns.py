"""Throwaway network namespaces for ICMP tests and benchmarks (needs root and iproute2).

A :class:`NetnsPair` is a *monitor* namespace, where the probing code runs, and a *host*
namespace that answers, joined by a veth link (10.200.0.1 ↔ 10.200.0.2, fd00:200::1 ↔
fd00:200::2). :meth:`NetnsPair.add_hosts` makes a whole range of extra addresses answer in
the host namespace (routed through it, so the monitor needs no neighbour entry per address),
and :meth:`NetnsPair.drop_echo` / :meth:`NetnsPair.reject_echo` make some of them dead.

These addresses exist only inside the namespaces; never send to them from the root namespace.
Namespace names are unique per process and call (``mdt-<pid>-<n>-mon``), and the pair is
deleted on exit. Plain helpers without pytest, so the benchmarks can use them too.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
MON_ADDR, HOST_ADDR = "10.200.0.1", "10.200.0.2"
MON_ADDR6, HOST_ADDR6 = "fd00:200::1", "fd00:200::2"
OPEN_PING_GROUPS = "0 2147483647"
"""A ``net.ipv4.ping_group_range`` that lets every group (root too) use datagram ICMP."""

_counter = itertools.count()


def run(argv: Sequence[str], input: str | None = None) -> str:
    """Run a command, return its stdout; fail with its stderr."""
    done = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


class NetnsPair:
    """A monitor namespace and a host namespace joined by a veth link; a context manager."""

    def __init__(self, tag: str = "mdt") -> None:
        base = f"{tag}-{os.getpid()}-{next(_counter)}"
        self.mon, self.host = f"{base}-mon", f"{base}-host"
        self._made: list[str] = []

    def __enter__(self) -> "NetnsPair":
        try:
            self.create()
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.delete()

    def create(self) -> None:
        """Create both namespaces, the veth link and its addresses."""
        for ns in (self.mon, self.host):
            run(["ip", "netns", "add", ns])
            self._made.append(ns)
            self.sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")  # IPv6 usable at once
            self.ip(ns, "link", "set", "lo", "up")
        run(["ip", "link", "add", "veth-mon", "netns", self.mon, "type", "veth",
             "peer", "name", "veth-host", "netns", self.host])
        for ns, dev, addr, addr6 in ((self.mon, "veth-mon", MON_ADDR, MON_ADDR6),
                                     (self.host, "veth-host", HOST_ADDR, HOST_ADDR6)):
            self.ip(ns, "addr", "add", f"{addr}/24", "dev", dev)
            self.ip(ns, "-6", "addr", "add", f"{addr6}/64", "dev", dev, "nodad")
            self.ip(ns, "link", "set", dev, "up")
        # Static IPv6 neighbours: on a fresh veth, neighbour discovery answers only after ~1 s.
        for ns, dev, peer_ns, peer_dev, peer_addr6 in ((self.mon, "veth-mon", self.host, "veth-host", HOST_ADDR6),
                                                       (self.host, "veth-host", self.mon, "veth-mon", MON_ADDR6)):
            mac = json.loads(self.ip(peer_ns, "-j", "link", "show", "dev", peer_dev))[0]["address"]
            self.ip(ns, "-6", "neigh", "replace", peer_addr6, "lladdr", mac, "dev", dev, "nud", "permanent")

    def delete(self) -> None:
        """Delete the namespaces this pair made (their interfaces go with them)."""
        while self._made:
            ns = self._made.pop()
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=60)

    def ip(self, ns: str, *args: str) -> str:
        """``ip -n NS ARGS...``."""
        return run(["ip", "-n", ns, *args])

    def exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *argv]

    def sysctl(self, ns: str, key: str, value: str) -> None:
        """Set a per-namespace sysctl, e.g. ``net.ipv4.ping_group_range``."""
        run(self.exec_argv(ns, ["sysctl", "-q", "-w", f"{key}={value}"]))

    def link_down(self) -> None:
        """Take the host's end of the link down: the host stops answering."""
        self.ip(self.host, "link", "set", "veth-host", "down")

    def add_hosts(self, network: str, count: int) -> list[str]:
        """Make the first ``count`` addresses of ``network`` answer from the host namespace.

        The host treats the whole network as local (a ``local`` route on lo) and the monitor
        routes it via the host, so this costs two routes whatever the count.
        """
        net = ipaddress.ip_network(network)
        if count > net.num_addresses - 2:
            raise ValueError(f"{network} holds fewer than {count} host addresses")
        self.ip(self.host, "route", "add", "local", network, "dev", "lo")
        self.ip(self.mon, "route", "add", network, "via", HOST_ADDR)
        return [str(addr) for addr in itertools.islice(net.hosts(), count)]

    def drop_echo(self, addresses: Iterable[str] | None = None) -> None:
        """Silently drop echo requests in the host namespace: to ``addresses``, or all."""
        self._filter_echo("drop", addresses)

    def reject_echo(self, addresses: Iterable[str] | None = None) -> None:
        """Answer echo requests with ICMP host-unreachable instead: to ``addresses``, or all."""
        self._filter_echo("reject with icmpx type host-unreachable", addresses)

    def _filter_echo(self, verdict: str, addresses: Iterable[str] | None) -> None:
        if addresses is None:
            rules = [f"icmp type echo-request {verdict}", f"icmpv6 type echo-request {verdict}"]
        else:
            by_version: dict[int, list[str]] = {4: [], 6: []}
            for address in addresses:
                by_version[ipaddress.ip_address(address).version].append(address)
            rules = [
                f"{family} daddr {{ {', '.join(by_version[version])} }} {icmp} type echo-request {verdict}"
                for version, family, icmp in ((4, "ip", "icmp"), (6, "ip6", "icmpv6"))
                if by_version[version]
            ]
        chain = "type filter hook input priority 0; policy accept;\n" + "\n".join(rules)
        run(self.exec_argv(self.host, ["nft", "-f", "-"]), input=f"table inet mdt {{\nchain input {{\n{chain}\n}}\n}}\n")

    def python_argv(self, code: str, *args: str, drop_net_raw: bool = False) -> list[str]:
        """A command line running ``python -c CODE ARGS`` in the monitor namespace.

        ``drop_net_raw`` runs it (still as root) without CAP_NET_RAW, so raw sockets are refused.
        """
        argv = [sys.executable, "-c", code, *args]
        if drop_net_raw:
            argv = ["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw", *argv]
        return self.exec_argv(self.mon, argv)


def repo_env() -> dict[str, str]:
    """The environment for a child Python that imports this checkout."""
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
