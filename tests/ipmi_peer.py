"""A real IPMI BMC for integration tests: ``ipmi_sim`` (openipmi) with a chassis_control script.

Recipe: ``/work/shared/peers.md`` §1, mode B (a chassis_control script; the only mode in which
``chassis power reset`` works). Each simulator runs from a fresh directory under the test's
``tmp_path`` (its ``-s`` state dir included, so no users or SEL records persist between tests),
listens for RMCP+ on a free UDP port of 127.0.0.1 with user ``admin``/``secret``, has a
``Temp`` sensor with upper thresholds 112 (nc), 144 (cr), 160 (nr) degrees C that starts at 96,
and an enabled SEL. It is stopped by PID (its whole process group) at teardown.

The chassis script keeps the power state in ``power`` and appends every call, with a timestamp,
to ``calls.log``; :meth:`IpmiSim.commands` turns the ``set`` calls into ``["reset", "off",
"on"]`` so tests can count what reached the "hardware". Per-action hooks (shell snippets in
``hooks/on_on``, ``hooks/on_off``, ``hooks/on_reset``) let a scenario make a reset really
reboot a namespaced fake host; their output goes to ``hooks.log``.

``ipmi_sim -n`` reports no errors in its emu file: a broken line shows up as a missing UDP
listener (caught here, startup fails) or as a missing sensor (``test_ipmi.py`` checks it).

Use from a test module with ``pytest_plugins = ["tests.peers", "tests.ipmi_peer"]`` (or via
``tests/conftest.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import pytest

from tests.peers import Peer, PeerStarter, write_file
from tests.support import Proc, bound, free_port, need_binary

IPMI_USER = "admin"
IPMI_PASSWORD = "secret"
BMC_ADDR = "0x20"
TEMP_SENSOR = 1  # sensor number of "Temp" on LUN 0 (sensor 0 is ipmi_sim's watchdog)
TEMP_START = 0x60  # 96 degrees C; thresholds: unc 0x70 (112), ucr 0x90 (144), unr 0xa0 (160)
HOOK_ACTIONS = ("on", "off", "reset")

CHASSIS_SCRIPT = r"""#!/bin/sh
# chassis_control for ipmi_sim: "$0 MC get power boot ..." prints "power:1" / "boot:default";
# "$0 MC set power 0|1 reset 1 ..." acts. Every call is logged; hooks run per action.
dir=%(dir)s
printf '%%s %%s\n' "$(date +%%s.%%N)" "$*" >> "$dir/calls.log"
shift
op=$1
shift
case $op in
get)
    for item in "$@"; do
        case $item in
            power) echo "power:$(cat "$dir/power")" ;;
            boot) echo "boot:default" ;;
        esac
    done ;;
set)
    while [ $# -ge 2 ]; do
        name=$1 value=$2
        shift 2
        case $name in
            power) echo "$value" > "$dir/power"; [ "$value" = 1 ] && action=on || action=off ;;
            reset) action=reset ;;  # power stays as it is
            *) continue ;;
        esac
        if [ -f "$dir/hooks/on_$action" ]; then
            sh "$dir/hooks/on_$action" < /dev/null >> "$dir/hooks.log" 2>&1
        fi
    done ;;
esac
exit 0
"""

_SET_ACTIONS = {("power", "1"): "on", ("power", "0"): "off", ("reset", "1"): "reset"}


def temp_sensor_sdr(name: str = "Temp") -> list[int]:
    """A Full Sensor Record (SDR type 01) for the threshold temperature sensor ``TEMP_SENSOR``.

    From openipmi's example emu file, with the name changed: entity 3.1 (processor), sensor
    type 01 (temperature), linear, M=1 B=0 (the raw byte is the value in degrees C), upper
    thresholds readable and settable. ipmi_sim wants every byte as 0x.. (``51`` would be
    read as decimal).
    """
    body = [
        0x20, 0x00, TEMP_SENSOR, 0x03, 0x01, 0x67, 0x88, 0x01, 0x01, 0xC0, 0x0F, 0xC0, 0x7F, 0x38, 0x38, 0x00,
        0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x60, 0xB0, 0x00, 0xB0, 0x00, 0xA0,
        0x90, 0x70, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0 | len(name),
    ] + list(name.encode("ascii"))
    return [0x00, 0x00, 0x51, 0x01, len(body)] + body


def _hex(values: list[int]) -> str:
    return " ".join(f"0x{value:02x}" for value in values)


SDR_LINE = f"main_sdr_add {BMC_ADDR} {_hex(temp_sensor_sdr())}\n"

EMU = f"""\
mc_setbmc {BMC_ADDR}
mc_add {BMC_ADDR} 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
sel_enable {BMC_ADDR} 50 0x0a
sensor_add {BMC_ADDR} 0 {TEMP_SENSOR} 0x01 0x01
{SDR_LINE}sensor_set_value {BMC_ADDR} 0 {TEMP_SENSOR} 0x{TEMP_START:02x} 0
sensor_set_threshold {BMC_ADDR} 0 {TEMP_SENSOR} settable 111000 0xa0 0x90 0x70 00 00 00
sensor_set_event_support {BMC_ADDR} 0 {TEMP_SENSOR} enable scanning per-state \\
        000111111000000 000111111000000 \\
        000111111000000 000111111000000
mc_enable {BMC_ADDR}
"""


def _write_power(directory: Path, on: bool) -> None:
    """The chassis script's power state file."""
    (directory / "power").write_text("1\n" if on else "0\n")


def _write_hook(directory: Path, action: str, snippet: str) -> None:
    """The chassis script's hook for ``action``."""
    if action not in HOOK_ACTIONS:
        raise ValueError(f"hook action must be one of {HOOK_ACTIONS}")
    write_file(directory / "hooks" / f"on_{action}", snippet + "\n")


def _read_prompt(sock: socket.socket) -> bytes:
    """Read from the ipmi_sim console until its ``> `` prompt."""
    data = b""
    while not data.endswith(b"> "):
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"ipmi_sim console closed; got {data!r}")
        data += chunk
    return data


@dataclass
class IpmiSim:
    """A running ipmi_sim BMC, its power "hardware" and its console."""

    port: int  # RMCP+ (UDP)
    console_port: int  # TCP
    directory: Path
    peer: Peer
    pid: int
    username: str = IPMI_USER
    password: str = IPMI_PASSWORD

    def stop(self) -> None:
        """Stop ipmi_sim and everything in its process group (chassis script, hooks)."""
        self.peer.stop()

    @property
    def stopped(self) -> bool:
        return self.peer.stopped

    # -- the power "hardware"

    def calls(self) -> list[tuple[float, str]]:
        """Every chassis_control call so far: (unix time, arguments after the MC address)."""
        path = self.directory / "calls.log"
        if not path.exists():
            return []
        result = []
        for line in path.read_text().splitlines():
            stamp, _, args = line.partition(" ")
            result.append((float(stamp), args.split(" ", 1)[1]))
        return result

    def commands(self) -> list[str]:
        """The power commands that reached the hardware, in order: "on", "off", "reset"."""
        actions = []
        for _, args in self.calls():
            words = args.split()
            if words[0] == "set":
                actions += [_SET_ACTIONS[pair] for pair in zip(words[1::2], words[2::2]) if pair in _SET_ACTIONS]
        return actions

    def power(self) -> str:
        """The simulated machine's power: "on" or "off"."""
        return "on" if (self.directory / "power").read_text().strip() == "1" else "off"

    def set_power(self, on: bool) -> None:
        """Arrange the power state directly (no IPMI command, nothing logged)."""
        _write_power(self.directory, on)

    def set_hook(self, action: str, snippet: str) -> None:
        """Run shell ``snippet`` whenever ``action`` ("on", "off", "reset") reaches the hardware.

        ipmi_sim waits for the script, so a hook in the foreground (``sleep 2``) delays the
        BMC's answer: a slow BMC. Backgrounded parts (``(sleep 2; ...) &``) do not; they stay in
        ipmi_sim's process group and die with it. Output goes to ``hooks.log``.
        """
        _write_hook(self.directory, action, snippet)

    def hook_log(self) -> str:
        """What the hooks printed."""
        path = self.directory / "hooks.log"
        return path.read_text() if path.exists() else ""

    # -- the console

    def console(self, command: str, timeout: float = 5.0) -> str:
        """Run one ipmi_sim console command (see ``man ipmi_sim_cmd``); return its reply.

        Raises :class:`RuntimeError` when ipmi_sim answers with an error (``**...``).
        """
        with socket.create_connection(("127.0.0.1", self.console_port), timeout=timeout) as sock:
            _read_prompt(sock)
            sock.sendall(command.encode() + b"\n")
            raw = _read_prompt(sock)
        text = raw.decode("ascii", errors="ignore").replace("\r", "")
        lines = [line for line in text.splitlines()[:-1] if line.strip() and line.strip() != command]
        errors = [line for line in lines if line.startswith("**")]
        if errors:
            raise RuntimeError(f"ipmi_sim console {command!r}: {'; '.join(errors)}")
        return "\n".join(lines)

    def set_temperature(self, degrees: int, event: bool = True) -> None:
        """Set the Temp sensor's reading (0–255 °C); crossing a threshold with ``event`` logs SEL records."""
        self.console(f"sensor_set_value {BMC_ADDR} 0 {TEMP_SENSOR} 0x{degrees:02x} {int(event)}")

    def add_sel(self, sensor_type: int, sensor_number: int, offset: int, asserted: bool = True) -> int:
        """Add a system event record (generic sensor-specific event, type 0x6f); return its record id.

        E.g. ``add_sel(0x0C, 5, 0x01)`` is "Memory #0x05 | Uncorrectable ECC | Asserted".
        ipmi_sim stamps the time itself.
        """
        direction = 0x6F if asserted else 0xEF
        record = [0, 0, 0, 0, 0x20, 0x00, 0x04, sensor_type, sensor_number, direction, offset, 0xFF, 0xFF]
        reply = self.console(f"sel_add {BMC_ADDR} 0x02 {_hex(record)}")
        return int(reply.rsplit(" ", 1)[-1])


def start_ipmi_sim(peers: PeerStarter, power_on: bool = True, hooks: Mapping[str, str] | None = None,
                   sdr: bool = True) -> IpmiSim:
    """Start an ipmi_sim BMC under ``peers`` (stopped at teardown) and wait until it serves.

    ``sdr=False`` leaves the Temp sensor without its SDR record, as in the bare recipe of
    peers.md: ``ipmitool sensor`` then prints ``Err in cmd get sensor sdr info`` and exits 0.
    """
    binary = need_binary("ipmi_sim")
    need_binary("ipmitool")
    directory = peers.directory(f"ipmi_sim{len(list(peers.root.glob('ipmi_sim*')))}")
    (directory / "state").mkdir()
    (directory / "hooks").mkdir()
    port, console_port = free_port(socket.SOCK_DGRAM), free_port()
    script = write_file(directory / "chassisctl.sh", CHASSIS_SCRIPT % {"dir": directory}, mode=0o755)
    write_file(directory / "peersim.emu", EMU if sdr else EMU.replace(SDR_LINE, ""))
    _write_power(directory, power_on)
    for action, snippet in (hooks or {}).items():
        _write_hook(directory, action, snippet)
    write_file(directory / "lan.conf", f"""\
name "peersim"
set_working_mc {BMC_ADDR}
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{script} {BMC_ADDR}"
  user 2 true  "{IPMI_USER}" "{IPMI_PASSWORD}" admin 10 none md2 md5 straight
  console 127.0.0.1 {console_port}
""")
    argv = [binary, "-c", "lan.conf", "-f", "peersim.emu", "-s", str(directory / "state"), "-n"]
    proc = Proc(argv, directory / "ipmi_sim.out", cwd=directory)

    def stop() -> None:
        proc.stop()
        try:  # leftovers of hooks, should ipmi_sim have died first
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    peer = peers.add(Peer("ipmi_sim", port, directory, stop))
    sim = IpmiSim(port, console_port, directory, peer, proc.pid)
    deadline = time.monotonic() + 10.0
    while not (bound(port, table="udp") and bound(console_port)):  # the console minds connections
        if time.monotonic() > deadline or proc.popen.poll() is not None:
            raise RuntimeError(
                f"ipmi_sim did not serve on udp/{port} and tcp/{console_port} (exit {proc.popen.poll()}):\n{proc.output()}"
            )
        time.sleep(0.02)
    return sim


@pytest.fixture
def make_ipmi_sim(peers: PeerStarter) -> Callable[..., IpmiSim]:
    """``make_ipmi_sim(power_on=True, hooks={"reset": "..."}, sdr=True)`` starts an ipmi_sim BMC."""
    return lambda power_on=True, hooks=None, sdr=True: start_ipmi_sim(peers, power_on, hooks, sdr)


@pytest.fixture
def ipmi_sim(peers: PeerStarter) -> IpmiSim:
    """An ipmi_sim BMC whose machine is on."""
    return start_ipmi_sim(peers)
