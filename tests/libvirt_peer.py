"""A real libvirt for VM power tests: libvirtd serving libvirt's built-in test hypervisor.

libvirtd runs with a private UNIX socket and no hypervisor modules (``LIBVIRT_DRIVER_DIR``
points at an empty directory), so it serves only the test driver, which is built into
libvirt itself. Clients connect with ``test+unix:///default?socket=...``: the driver's
``/default`` hypervisor is shared by every connection while at least one stays open, so
this fixture keeps a *watcher* connection open for the whole test. The watcher receives
libvirt's lifecycle events (domain started, stopped, ...) and records them per domain, which
is how tests count what a power command really did.

The test hypervisor has no guest: nothing answers ping. For end-to-end scenarios the watcher
can map a domain's lifecycle onto a fake loopback host (:mod:`tests.loophosts`): when the
domain stops, the host's address is taken down; when it starts, brought back up, as a VM that
boots would. The test driver's ``reset`` emits no event (a real qemu guest's does), so those
scenarios cycle the VM (``power_method: onoff``).
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import libvirt
import pytest

from tests.peers import Peer, PeerStarter, write_file
from tests.support import Proc, need_binary, wait_unix_socket



_EVENT_LOOP = threading.Lock()
_event_loop_started = False

LIFECYCLE = {0: "defined", 1: "undefined", 2: "started", 3: "suspended", 4: "resumed", 5: "stopped",
             6: "shutdown", 7: "pmsuspended", 8: "crashed"}
STOPPED_HOW = {0: "shutdown", 1: "destroyed", 2: "crashed", 3: "migrated", 4: "saved", 5: "failed"}

DOMAIN_XML = """<domain type='test'><name>{name}</name><uuid>{uuid}</uuid><memory>65536</memory>
<os><type>hvm</type></os></domain>"""


def _start_event_loop() -> None:
    """libvirt delivers events through a process-wide event loop; run it in one thread."""
    global _event_loop_started
    with _EVENT_LOOP:
        if not _event_loop_started:
            libvirt.virEventRegisterDefaultImpl()

            def run() -> None:
                while True:
                    libvirt.virEventRunDefaultImpl()

            threading.Thread(target=run, name="libvirt-events", daemon=True).start()
            _event_loop_started = True


@dataclass
class Hypervisor:
    """A running libvirtd with the test hypervisor, and a watcher connection."""

    uri: str
    conn: object
    events: dict[str, list[str]] = field(default_factory=dict)
    hooks: dict[tuple[str, str], str] = field(default_factory=dict)
    hook_log: list[str] = field(default_factory=list)

    def add_domain(self, name: str, uuid: str, running: bool = True) -> None:
        """Define a persistent domain ``name`` (started if ``running``); its events are forgotten."""
        domain = self.conn.defineXML(DOMAIN_XML.format(name=name, uuid=uuid))
        if running:
            domain.create()
        self._forget(name, 2 if running else 1)

    def stop_domain(self, name: str) -> None:
        """Pull the plug on ``name`` behind monitord's back; the event is forgotten."""
        self.conn.lookupByName(name).destroy()
        self._forget(name, 1)

    def _forget(self, name: str, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.events.get(name, [])) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        self.events.pop(name, None)

    def active(self, name: str) -> bool:
        """Whether domain ``name`` is running, as libvirt reports it."""
        return bool(self.conn.lookupByName(name).isActive())

    def lifecycle(self, name: str) -> list[str]:
        """The lifecycle events seen for ``name``, e.g. ["stopped:destroyed", "started"]."""
        return list(self.events.get(name, []))

    def on(self, name: str, event: str, command: str) -> None:
        """Run shell ``command`` whenever domain ``name`` has lifecycle ``event`` ("started",
        "stopped:destroyed", ...)."""
        self.hooks[(name, event)] = command

    def _event(self, _conn, domain, event: int, detail: int, _opaque) -> None:
        what = LIFECYCLE.get(event, str(event))
        if what == "stopped":
            what = f"stopped:{STOPPED_HOW.get(detail, detail)}"
        self.events.setdefault(domain.name(), []).append(what)
        command = self.hooks.get((domain.name(), what))
        if command:
            self.hook_log.append(f"{domain.name()} {what}")
            subprocess.run(command, shell=True, check=False)


def start_hypervisor(peers: PeerStarter) -> Hypervisor:
    """Start libvirtd (stopped at teardown) and connect the watcher."""
    binary = need_binary("libvirtd")
    directory = peers.directory("libvirtd")
    (directory / "drivers").mkdir()
    sockets = Path(tempfile.mkdtemp(prefix="lv", dir="/tmp"))  # short: UNIX socket paths are limited
    conf = write_file(directory / "libvirtd.conf", f"""\
unix_sock_dir = "{sockets}"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
listen_tls = 0
listen_tcp = 0
log_outputs = "3:file:{directory}/libvirtd.log"
""")
    proc = Proc([binary, "-f", str(conf), "-p", str(directory / "libvirtd.pid")], directory / "libvirtd.out",
                env={"LIBVIRT_DRIVER_DIR": str(directory / "drivers"), "PATH": "/usr/sbin:/usr/bin:/bin"})

    def stop() -> None:
        proc.stop()
        subprocess.run(["rm", "-rf", str(sockets)], check=False)

    peers.add(Peer("libvirtd", 0, directory, stop))
    socket = sockets / "libvirt-sock"
    deadline = time.monotonic() + 15
    while not socket.exists():
        if time.monotonic() > deadline or proc.popen.poll() is not None:
            raise RuntimeError(f"libvirtd did not create {socket} (exit {proc.popen.poll()}):\n{proc.output()}")
        time.sleep(0.02)
    wait_unix_socket(socket)  # the file exists a moment before libvirtd listens on it
    _start_event_loop()
    uri = f"test+unix:///default?socket={socket}"
    conn = libvirt.open(uri)
    hypervisor = Hypervisor(uri, conn)
    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, hypervisor._event, None)
    return hypervisor


@pytest.fixture
def hypervisor(peers: PeerStarter) -> Iterator[Hypervisor]:
    """libvirtd with the test hypervisor; the watcher connection is closed at teardown."""
    hv = start_hypervisor(peers)
    yield hv
    hv.conn.close()

