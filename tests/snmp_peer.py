"""A real net-snmp agent describing this machine, for SNMP probe tests.

Recipe: ``/work/shared/peers.md`` §2. ``snmpd`` listens on a free UDP port of 127.0.0.1 (no
TCP, no SMUX) with the stock MIB modules: HOST-RESOURCES (processors, storage, running
software, uptime), IF-MIB, UCD-SNMP (``includeAllDisks 10%``). Credentials: v2c community
``public`` (read-only); SNMPv3 user ``opsha`` (SHA/AES, keys :data:`V3_AUTH_KEY` and
:data:`V3_PRIV_KEY`). :meth:`SnmpAgent.config` builds the host's ``snmp:`` block with secrets
in files. The agent is stopped by PID at teardown (``tests.peers``' ``peers`` fixture).

Use with ``tests.snmp_peer`` in ``pytest_plugins`` (``tests/conftest.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from monitord.shared.access import SnmpConfig
from tests.peers import Peer, PeerStarter, write_file
from tests.support import Proc, free_port, need_binary

V3_USER = "opsha"
V3_AUTH_KEY = "auth-secret-1"
V3_PRIV_KEY = "priv-secret-2"
SYS_NAME = "peer-snmpd"


@dataclass
class SnmpAgent:
    """A running snmpd: where it listens and how to build configs for it."""

    port: int
    directory: Path
    peer: Peer
    proc: Proc

    def stop(self) -> None:
        """Stop snmpd (idempotent); the port then answers nothing."""
        self.peer.stop()

    def secret(self, name: str, value: str) -> dict[str, str]:
        """Write ``value`` to a secret file; return its SecretRef mapping."""
        (self.directory / "secrets").mkdir(mode=0o700, exist_ok=True)
        return {"file": str(write_file(self.directory / "secrets" / name, value + "\n", 0o600))}

    def config(self, community: str = "public", version: str = "2c", **extra: Any) -> SnmpConfig:
        """The host's ``snmp:`` block for this agent (v2c ``community``, or v3 user ``opsha``)."""
        data: dict[str, Any] = {"port": self.port, "snmp_version": version}
        if version == "2c":
            data["community"] = self.secret(f"community-{community}", community)
        else:
            data["v3"] = {"user": V3_USER, "auth_protocol": "sha", "priv_protocol": "aes",
                          "auth_key": self.secret("v3-auth", V3_AUTH_KEY), "priv_key": self.secret("v3-priv", V3_PRIV_KEY)}
        return SnmpConfig.model_validate(data | extra)

    def env(self) -> dict[str, str]:
        """Environment for net-snmp client tools (no MIB loading, private persistent dir)."""
        return dict(os.environ, SNMPCONFPATH=str(self.directory / "client"),
                    SNMP_PERSISTENT_DIR=str(self.directory / "client-persist"))


def start_snmp_agent(peers: PeerStarter) -> SnmpAgent:
    """Start snmpd under ``peers`` and wait until it answers a GET of sysName."""
    binary = need_binary("snmpd")
    taken = {path.name for path in peers.root.iterdir()}
    name = next(f"snmpd-{n}" for n in range(1, 1000) if f"snmpd-{n}" not in taken)
    directory, port = peers.directory(name), free_port(socket.SOCK_DGRAM)
    (directory / "persist").mkdir(mode=0o700)
    (directory / "client").mkdir()
    write_file(directory / "snmpd.conf", f"""\
agentAddress udp:127.0.0.1:{port}
rocommunity public 127.0.0.1
createUser {V3_USER} SHA {V3_AUTH_KEY} AES {V3_PRIV_KEY}
rouser {V3_USER} priv
includeAllDisks 10%
sysName {SYS_NAME}
dontLogTCPWrappersConnects yes
""", 0o600)
    write_file(directory / "snmp.conf", "mibs :\n")
    write_file(directory / "client" / "snmp.conf", "mibs :\n")
    env = dict(os.environ, SNMPCONFPATH=str(directory), SNMP_PERSISTENT_DIR=str(directory / "persist"))
    argv = [binary, "-f", "-I", "-smux", "-Lf", str(directory / "snmpd.log"), "-p", str(directory / "snmpd.pid")]
    proc = Proc(argv, directory / "snmpd.out", env=env, cwd=directory)
    peer = peers.add(Peer(name, port, directory, proc.stop))
    agent = SnmpAgent(port, directory, peer, proc)
    _wait_ready(agent)
    return agent


def _wait_ready(agent: SnmpAgent, timeout: float = 10.0) -> None:
    snmpget = need_binary("snmpget")
    argv = [snmpget, "-v2c", "-c", "public", "-t", "0.3", "-r", "0", "-Oqv", f"127.0.0.1:{agent.port}",
            ".1.3.6.1.2.1.1.5.0"]
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(argv, env=agent.env(), capture_output=True, text=True)
        if done.returncode == 0 and SYS_NAME in done.stdout:
            return
        if agent.proc.popen.poll() is not None or time.monotonic() > deadline:
            log = agent.directory / "snmpd.log"
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"snmpd did not answer (exit {agent.proc.popen.poll()}): {done.stderr}\n{text}")
        time.sleep(0.05)


@pytest.fixture
def snmp_agent(peers: PeerStarter) -> SnmpAgent:
    """snmpd describing this machine, on a free UDP port of 127.0.0.1."""
    return start_snmp_agent(peers)


@pytest.fixture
def make_snmp_agent(peers: PeerStarter) -> Callable[[], SnmpAgent]:
    """A factory for more agents (or one started mid-test)."""
    return lambda: start_snmp_agent(peers)
