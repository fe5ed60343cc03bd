"""A simulated APC switched PDU for integration tests: net-snmp snmpd on a free UDP port on
127.0.0.1, with ``pass_persist`` handing the PowerNet outlet tables to
``tests/pdu_passpersist.py`` (see its docstring for the tables and semantics).

Two kinds: ``spdu`` (an original MasterSwitch: sysObjectID ``.1.3.6.1.4.1.318.1.3.4.2``, only the
sPDUOutletControlTable) and ``rpdu`` (a Switched Rack PDU AP79xx: sysObjectID
``.1.3.6.1.4.1.318.1.3.4.5``, the rPDU tables and the older sPDU table, as the real ones do).

Credentials: v2c communities ``public`` (read-only) and ``private`` (read-write); SNMPv3 users
in :data:`V3_USERS` (all read-write). :meth:`PduSim.v2c` and :meth:`PduSim.v3` build a
:class:`~monitord.config.PduConfig` for the simulator, secrets in files under its directory.

Use from a test module by importing the fixtures (``from tests.pdu_peer import pdu_sim``);
``tests.peers``' ``peers`` fixture stops every simulator by PID when the test ends.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from monitord.shared.access import PduConfig
from tests.peers import Peer, PeerStarter, write_file
from tests.support import Proc, free_port, need_binary

BACKEND = Path(__file__).with_name("pdu_passpersist.py")
APC_SUBTREE = ".1.3.6.1.4.1.318.1.1"
_SPDU_CTL = ".1.3.6.1.4.1.318.1.1.4.4.2.1"  # sPDUOutletControlEntry; .1 = index column

KINDS: dict[str, tuple[str, list[str]]] = {
    "spdu": (".1.3.6.1.4.1.318.1.3.4.2", ["spdu"]),  # masterSwitchV2
    "rpdu": (".1.3.6.1.4.1.318.1.3.4.5", ["spdu", "rpdu"]),  # masterSwitchrPDU
}
"""Simulator kind -> (sysObjectID, tables served)."""

V3_USERS: dict[str, dict[str, Any]] = {
    "opsha": {"auth_protocol": "sha", "priv_protocol": "aes"},
    "opsha256": {"auth_protocol": "sha256", "priv_protocol": "aes256"},
    "opmd5": {"auth_protocol": "md5", "priv_protocol": "des"},
    "opauth": {"auth_protocol": "sha", "priv_protocol": None},  # authNoPriv
}
V3_AUTH_KEY = "auth-secret-1"
V3_PRIV_KEY = "priv-secret-2"
_NETSNMP_AUTH = {"sha": "SHA", "sha256": "SHA-256", "md5": "MD5"}
_NETSNMP_PRIV = {"aes": "AES", "aes256": "AES256", "des": "DES"}


@dataclass
class PduSim:
    """A running simulated PDU: where it listens, its call log, and config builders."""

    kind: str
    port: int
    directory: Path
    peer: Peer
    sys_object_id: str

    @property
    def log(self) -> Path:
        return self.directory / "calls.jsonl"

    def events(self) -> list[dict]:
        """Every logged event, oldest first (commands and power changes)."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def commands(self, outlet: int) -> list[str]:
        """The commands ``outlet`` accepted, oldest first: ``["off", "on"]``, ``["reboot"]``."""
        return [e["command"] for e in self.events() if e["event"] == "command" and e["outlet"] == outlet]

    def power_changes(self, outlet: int) -> list[str]:
        """The power states ``outlet`` went through, oldest first: ``["off", "on"]``."""
        return [e["state"] for e in self.events() if e["event"] == "power" and e["outlet"] == outlet]

    def backend_pid(self) -> int | None:
        """The pass_persist backend's PID (it starts with snmpd)."""
        path = self.directory / "backend.pid"
        return int(path.read_text()) if path.exists() else None

    def stop(self) -> None:
        """Stop snmpd and its backend (idempotent); the port then answers nothing."""
        self.peer.stop()

    def secret(self, name: str, value: str) -> dict[str, str]:
        """Write ``value`` to a secret file; return its SecretRef mapping."""
        (self.directory / "secrets").mkdir(mode=0o700, exist_ok=True)
        path = write_file(self.directory / "secrets" / name, value + "\n", 0o600)
        return {"file": str(path)}

    def v2c(self, outlet: int = 1, community: str = "private", **extra: Any) -> PduConfig:
        """A v2c PduConfig for ``outlet`` (``extra`` overrides keys, e.g. ``model``)."""
        data = {"address": "127.0.0.1", "port": self.port, "outlet": outlet, "snmp_version": "2c",
                "community": self.secret(f"community-{community}", community)} | extra
        return PduConfig.model_validate(data)

    def v3(self, user: str = "opsha", outlet: int = 1, auth_key: str = V3_AUTH_KEY, priv_key: str = V3_PRIV_KEY,
           **extra: Any) -> PduConfig:
        """A v3 PduConfig for ``user`` with the given keys (defaults: the right ones).

        A user not in :data:`V3_USERS` (which the agent does not know) gets sha/aes.
        """
        protocols = V3_USERS.get(user, V3_USERS["opsha"])
        v3 = {"user": user, **protocols, "auth_key": self.secret(f"{user}-auth", auth_key)}
        if protocols["priv_protocol"] is not None:
            v3["priv_key"] = self.secret(f"{user}-priv", priv_key)
        data = {"address": "127.0.0.1", "port": self.port, "outlet": outlet, "snmp_version": "3", "v3": v3} | extra
        return PduConfig.model_validate(data)


def start_pdu_sim(
    peers: PeerStarter,
    kind: str = "rpdu",
    outlets: int = 8,
    initial: dict[int, str] | None = None,
    reboot_seconds: float = 2.0,
    hooks: dict[str, str] | None = None,
    sys_object_id: str | None = None,
) -> PduSim:
    """Start snmpd + the PDU backend; return when the agent is ready.

    ``initial`` maps outlets to ``"off"`` (others start on); ``hooks`` maps ``on_off``,
    ``on_on`` and ``on_reboot`` to shell snippets, run one at a time in event order
    (``$OUTLET``, ``$STATE`` and ``$HOOK`` are set);
    ``sys_object_id`` overrides the kind's.
    """
    binary = need_binary("snmpd")
    default_sys_object_id, tables = KINDS[kind]
    sys_object_id = sys_object_id or default_sys_object_id
    taken = {path.name for path in peers.root.iterdir()}
    name = next(f"pdu-{kind}-{n}" for n in range(1, 1000) if f"pdu-{kind}-{n}" not in taken)
    directory, port = peers.directory(name), free_port(socket.SOCK_DGRAM)
    (directory / "persist").mkdir(mode=0o700)
    backend_config = write_file(directory / "backend.json", json.dumps({
        "outlets": outlets,
        "initial": {str(k): v for k, v in (initial or {}).items()},
        "tables": tables,
        "reboot_seconds": reboot_seconds,
        "log": str(directory / "calls.jsonl"),
        "stderr": str(directory / "backend.err"),
        "pid": str(directory / "backend.pid"),
        "hooks": hooks or {},
    }))
    users = "\n".join(
        f"createUser {user} {_NETSNMP_AUTH[p['auth_protocol']]} {V3_AUTH_KEY}"
        + (f" {_NETSNMP_PRIV[p['priv_protocol']]} {V3_PRIV_KEY}\nrwuser {user} priv" if p["priv_protocol"]
           else f"\nrwuser {user} auth")
        for user, p in V3_USERS.items()
    )
    write_file(directory / "snmpd.conf", f"""\
agentAddress udp:127.0.0.1:{port}
rocommunity public 127.0.0.1
rwcommunity private 127.0.0.1
sysObjectID {sys_object_id}
sysName pdu-sim-{kind}
dontLogTCPWrappersConnects yes
{users}
pass_persist {APC_SUBTREE} {sys.executable} {BACKEND} {backend_config}
""", 0o600)
    write_file(directory / "snmp.conf", "mibs :\n")
    env = dict(os.environ, SNMPCONFPATH=str(directory), SNMP_PERSISTENT_DIR=str(directory / "persist"))
    argv = [binary, "-f", "-I", "-smux", "-Lf", str(directory / "snmpd.log"), "-p", str(directory / "snmpd.pid")]
    proc = Proc(argv, directory / "snmpd.out", env=env, cwd=directory)
    peer = peers.add(Peer(name, port, directory, proc.stop))
    _wait_ready(proc, port, directory, env)
    return PduSim(kind, port, directory, peer, sys_object_id)


def _wait_ready(proc: Proc, port: int, directory: Path, env: dict, timeout: float = 10.0) -> None:
    """Wait until snmpd answers a GET of outlet 1's sPDU row, which also starts the backend
    (snmpd starts pass_persist programs on first use)."""
    snmpget = need_binary("snmpget")
    env = dict(env, SNMP_PERSISTENT_DIR=str(directory / "client-persist"))  # not the agent's
    argv = [snmpget, "-v2c", "-c", "public", "-t", "0.3", "-r", "0", "-On", "-Oe", f"127.0.0.1:{port}",
            f"{_SPDU_CTL}.1.1"]
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode == 0 and "INTEGER: 1" in done.stdout:
            return
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            log = directory / "snmpd.log"
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"snmpd did not answer (exit code {proc.popen.poll()}): {done.stderr}\n{text}{proc.output()}")
        time.sleep(0.05)


@pytest.fixture
def make_pdu_sim(peers: PeerStarter) -> Callable[..., PduSim]:
    """A factory: ``make_pdu_sim(kind="spdu", initial={2: "off"}, hooks={...})``."""
    return lambda **kwargs: start_pdu_sim(peers, **kwargs)


@pytest.fixture
def pdu_sim(peers: PeerStarter) -> PduSim:
    """A Switched Rack PDU (AP79xx, sysObjectID masterSwitchrPDU), 8 outlets, all on,
    reboots taking 2 s."""
    return start_pdu_sim(peers)
