"""The SSH remediation layer against a real sshd: login, commands, services, host keys,
failures by reason, timeouts that free their thread, kernel-log scanning and forced fsck."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import hmac
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from monitord.shared.fields import SecretRef
from monitord.shared.results import Reason
from monitord.shared.power import ActionError
from remediation.ssh import CommandInterrupted, SshClient, _socket_reason
from tests.peers import Peer
from tests.ssh_peer import SshHost, openssh_key
from tests.support import wait_port

pytestmark = pytest.mark.integration

KERNEL_LOG = """\
[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org)
[    2.114071] EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.
[    3.501220] EXT4-fs (sda1): re-mounted. Opts: errors=remount-ro. Quota mode: none.
[ 1234.567890] EXT4-fs error (device sda1): ext4_lookup:1855: inode #1311: comm ls: deleted inode referenced: 1312
[ 1300.000001] e1000e 0000:00:1f.6 eno1: NIC Link is Up 1000 Mbps Full Duplex
"""


async def expect_error(coro, reason: Reason) -> ActionError:
    """Await ``coro``; it must raise :class:`ActionError` with ``reason``."""
    with pytest.raises(ActionError) as caught:
        await coro
    assert caught.value.reason is reason, caught.value.summary
    return caught.value


# --- login and commands ---------------------------------------------------------------------


async def test_login_check_ok(ssh_host: SshHost) -> None:
    await ssh_host.client().login_check()


async def test_run_returns_status_and_output(ssh_host: SshHost) -> None:
    result = await ssh_host.client().run("echo out; echo err >&2; whoami >&2; exit 7")
    assert (result.exit_status, result.stdout, result.stderr) == (7, "out\n", "err\npeertest\n")
    assert not result.ok and result.describe() == "exit 7: err"


async def test_command_killed_by_signal(ssh_host: SshHost) -> None:
    result = await ssh_host.client().run("echo before; kill -9 $$")
    assert (result.exit_status, result.stdout) == (-1, "before\n")


async def test_run_reads_large_output(ssh_host: SshHost) -> None:
    """More than the channel window: output is drained while the command runs."""
    result = await ssh_host.client().run("head -c 3000000 /dev/zero | tr '\\0' x")
    assert result.ok and len(result.stdout) == 1 << 20  # capped at MAX_OUTPUT


async def test_key_from_env(ssh_host: SshHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITORD_TEST_SSH_KEY", ssh_host.client_key.read_text())
    await ssh_host.client(key=SecretRef(env="MONITORD_TEST_SSH_KEY")).login_check()


async def test_key_text_that_is_not_a_key(ssh_host: SshHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITORD_TEST_SSH_KEY", "not a key, but secret")
    error = await expect_error(ssh_host.client(key=SecretRef(env="MONITORD_TEST_SSH_KEY")).login_check(), Reason.ERROR)
    assert "secret" not in error.summary


class CountingPool(ThreadPoolExecutor):
    """A thread pool that records how many of its jobs ran at once."""

    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers)
        self.running = self.peak = 0
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        def counted():
            with self._lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.running -= 1

        return super().submit(counted)


async def test_concurrent_runs_are_bounded_by_the_pool(ssh_host: SshHost) -> None:
    with CountingPool(4) as pool:
        client = ssh_host.client(executor=pool)
        results = await asyncio.gather(*(client.run(f"sleep 0.2; echo {n}") for n in range(12)))
    assert [r.stdout for r in results] == [f"{n}\n" for n in range(12)]
    assert pool.peak == 4


async def test_concurrent_runs_on_the_shared_pool(ssh_host: SshHost) -> None:
    client = ssh_host.client()
    started = time.monotonic()
    results = await asyncio.gather(*(client.run(f"sleep 0.5; echo {n}") for n in range(12)))
    assert [r.stdout for r in results] == [f"{n}\n" for n in range(12)]
    assert time.monotonic() - started < 12 * 0.5 / 2  # they ran side by side


# --- services -------------------------------------------------------------------------------


async def test_restart_dead_unit(ssh_host: SshHost) -> None:
    port = ssh_host.add_http_unit("web")
    first = ssh_host.start_unit("web")
    wait_port(port)
    ssh_host.kill_unit("web")  # the service died
    client = ssh_host.client()
    assert await client.service_active("web") is False
    await client.restart_service("web")
    assert await client.service_active("web") is True
    wait_port(port)
    assert ssh_host.unit_pid("web") not in (None, first)
    assert ssh_host.calls().count("systemctl restart web") == 1
    assert ssh_host.calls().count("systemctl is-active --quiet web") == 2


async def test_helpers_on_an_active_unit(ssh_host: SshHost) -> None:
    ssh_host.add_unit("worker", "exec sleep 300")
    first = ssh_host.start_unit("worker")
    client = ssh_host.client()
    assert await client.service_active("worker") is True
    await client.restart_service("worker")
    assert await client.service_active("worker") is True
    assert ssh_host.unit_pid("worker") not in (None, first)
    assert [c for c in ssh_host.calls() if "restart" in c] == ["systemctl restart worker"]


async def test_unknown_unit(ssh_host: SshHost) -> None:
    client = ssh_host.client()
    assert await client.service_active("nosuch") is False
    error = await expect_error(client.restart_service("nosuch"), Reason.ERROR)
    assert "exit 4: Unit nosuch.service could not be found." in error.summary


async def test_custom_status_and_restart_commands(ssh_host: SshHost) -> None:
    ssh_host.add_unit("app", "exec sleep 300")
    marker = ssh_host.state / "app.restarted"
    client = ssh_host.client()
    status = f"test -f {marker}"
    assert await client.service_active("app", status_command=status) is False
    await client.restart_service("app", restart_command=f"touch {marker} && systemctl start app")
    assert await client.service_active("app", status_command=status) is True
    assert ssh_host.unit_pid("app") is not None
    assert not any("is-active" in c or "restart" in c for c in ssh_host.calls())


# --- authentication and host keys -----------------------------------------------------------


async def test_wrong_client_key(ssh_host: SshHost, tmp_path: Path) -> None:
    other, _ = openssh_key(tmp_path, "other_key")
    error = await expect_error(ssh_host.client(key=SecretRef(file=other)).login_check(), Reason.AUTH)
    assert "peertest" in error.summary


async def test_unknown_host_key(ssh_host: SshHost, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    before = known_hosts.stat()
    error = await expect_error(ssh_host.client(known_hosts=known_hosts).login_check(), Reason.AUTH)
    assert f"host key for [127.0.0.1]:{ssh_host.port} is not in {known_hosts}" in error.summary
    after = known_hosts.stat()
    assert known_hosts.read_text() == "" and after.st_mtime_ns == before.st_mtime_ns


async def test_changed_host_key(ssh_host: SshHost, tmp_path: Path) -> None:
    _, impostor = openssh_key(tmp_path, "old_host_key")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{ssh_host.port} {impostor}\n")
    error = await expect_error(ssh_host.client(known_hosts=known_hosts).login_check(), Reason.AUTH)
    assert f"host key for [127.0.0.1]:{ssh_host.port} CHANGED" in error.summary
    assert known_hosts.read_text() == f"[127.0.0.1]:{ssh_host.port} {impostor}\n"


async def test_revoked_and_cert_authority_lines_do_not_break_login(ssh_host: SshHost, tmp_path: Path, caplog) -> None:
    _, other = openssh_key(tmp_path, "other")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        "# comment\n"
        f"@cert-authority *.example.jp {other}\n"
        f"@revoked * {other}\n"
        "@future-marker host ssh-ed25519 AAAA\n"
        "garbage\n"
        "host ssh-ed25519 !!notbase64!!\n"
        f"{ssh_host.host_key_line}\n"
    )
    await ssh_host.client(known_hosts=known_hosts).login_check()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("line 2: @cert-authority line ignored" in w for w in warnings), warnings
    assert any("line 4: unknown marker @future-marker" in w for w in warnings), warnings
    assert any("line 5: not 'hosts keytype key'" in w for w in warnings), warnings
    assert any("line 6: unusable ssh-ed25519 key" in w for w in warnings), warnings
    await ssh_host.client(known_hosts=known_hosts).login_check()  # warned once per line, not per login
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == len(warnings)


async def test_revoked_host_key_is_rejected_even_if_also_trusted(ssh_host: SshHost, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    revoked_key = ssh_host.host_key_line.split(" ", 1)[1]
    known_hosts.write_text(f"{ssh_host.host_key_line}\n@revoked otherhost {revoked_key}\n")
    error = await expect_error(ssh_host.client(known_hosts=known_hosts).login_check(), Reason.AUTH)
    assert f"host key for [127.0.0.1]:{ssh_host.port} is REVOKED in {known_hosts}" in error.summary


@pytest.mark.parametrize("real_first", [True, False])
async def test_every_key_of_one_type_is_trusted(ssh_host: SshHost, tmp_path: Path, real_first: bool) -> None:
    _, rotated = openssh_key(tmp_path, "rotated")
    label = f"[127.0.0.1]:{ssh_host.port}"
    lines = [ssh_host.host_key_line, f"{label} {rotated}"]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("\n".join(lines if real_first else lines[::-1]) + "\n")
    await ssh_host.client(known_hosts=known_hosts).login_check()


async def test_host_keys_of_another_type_hashed_or_by_wildcard(ssh_host: SshHost, tmp_path: Path) -> None:
    """The server prefers its Ed25519 key; known_hosts has only its ECDSA key: that one is asked for."""
    label = f"[127.0.0.1]:{ssh_host.port}"
    salt = os.urandom(20)
    hashed = "|1|{}|{}".format(base64.b64encode(salt).decode(),
                               base64.b64encode(hmac.new(salt, label.encode(), hashlib.sha1).digest()).decode())
    known_hosts = tmp_path / "known_hosts"
    for hosts in (label, hashed, "[127.0.0.*]:*", f"!{label},*"):
        known_hosts.write_text(f"{hosts} {ssh_host.ecdsa_host_key}\n")
        if hosts.startswith("!"):
            error = await expect_error(ssh_host.client(known_hosts=known_hosts).login_check(), Reason.AUTH)
            assert "is not in" in error.summary
        else:
            await ssh_host.client(known_hosts=known_hosts).login_check()


async def test_missing_known_hosts(ssh_host: SshHost, tmp_path: Path) -> None:
    await expect_error(ssh_host.client(known_hosts=tmp_path / "absent").login_check(), Reason.ERROR)


# --- connection failures --------------------------------------------------------------------


async def test_sshd_stopped_is_refused(ssh_host: SshHost) -> None:
    ssh_host.stop()
    await expect_error(ssh_host.client().login_check(), Reason.REFUSED)


async def test_silent_server_times_out(ssh_host: SshHost, silent_peer: Peer) -> None:
    client = SshClient.from_config("127.0.0.1", ssh_host.config(port=silent_peer.port), connect_timeout=0.5)
    started = time.monotonic()
    await expect_error(client.login_check(), Reason.TIMEOUT)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "error, reason",
    [
        (OSError(errno.ENETUNREACH, "Network is unreachable"), Reason.UNREACHABLE),
        (OSError(errno.EHOSTUNREACH, "No route to host"), Reason.UNREACHABLE),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Reason.UNREACHABLE),
        (OSError(errno.ECONNREFUSED, "Connection refused"), Reason.REFUSED),
        (OSError(errno.ECONNRESET, "Connection reset by peer"), Reason.PROTOCOL),
    ],
)
def test_socket_error_reasons(error: OSError, reason: Reason) -> None:
    assert _socket_reason(error) is reason


# --- command timeouts -----------------------------------------------------------------------


async def test_hung_command_times_out_and_frees_its_thread(ssh_host: SshHost) -> None:
    """Two hung commands on a two-thread pool time out without blocking the event loop, and
    leave the pool free for the commands after them."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    with ThreadPoolExecutor(max_workers=2) as pool:
        client = ssh_host.client(executor=pool)
        try:
            started = time.monotonic()
            hung = [client.run(ssh_host.tracked("exec sleep 30"), timeout=0.5) for _ in range(2)]
            errors = await asyncio.gather(*hung, return_exceptions=True)
            elapsed = time.monotonic() - started
        finally:
            ticking.cancel()
        assert all(isinstance(e, CommandInterrupted) and e.reason is Reason.TIMEOUT for e in errors), errors
        assert elapsed < 3
        assert ticks > elapsed / 0.01 / 3  # the event loop kept running meanwhile
        results = await asyncio.gather(*(client.run(f"echo {n}", timeout=5) for n in range(10)))
    assert [r.stdout for r in results] == [f"{n}\n" for n in range(10)]


async def test_connection_dropped_during_command(ssh_host: SshHost) -> None:
    """``kill -9 $PPID`` kills the session's sshd process: the connection drops, no exit status."""
    command = ssh_host.tracked("kill -9 $PPID; exec sleep 5")
    error = await expect_error(ssh_host.client().run(command), Reason.UNREACHABLE)
    assert isinstance(error, CommandInterrupted)


async def test_no_file_descriptor_leak(ssh_host: SshHost) -> None:
    client = ssh_host.client()
    await client.run("true")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        await client.run("echo hi")
    with pytest.raises(CommandInterrupted):
        await client.run(ssh_host.tracked("exec sleep 30"), timeout=0.3)
    assert len(os.listdir("/proc/self/fd")) <= before


# --- kernel log and fsck --------------------------------------------------------------------


async def test_boot_errors_from_journal(ssh_host: SshHost) -> None:
    ssh_host.set_kernel_log(KERNEL_LOG)
    errors = await ssh_host.client().boot_errors()
    assert errors == [KERNEL_LOG.splitlines()[3]]
    assert ssh_host.calls() == ["journalctl -k -b --no-pager -q"]


async def test_boot_errors_falls_back_to_dmesg(ssh_host: SshHost) -> None:
    ssh_host.set_kernel_log(None)
    ssh_host.set_kernel_log(
        "[    5.0] XFS (dm-0): Metadata corruption detected at xfs_dinode_verify+0x1a/0x2b\n"
        "[    5.1] XFS (dm-0): Mounting V5 Filesystem\n"
        "[    6.0] blk_update_request: I/O error, dev sdb, sector 2048\n",
        source="dmesg",
    )
    errors = await ssh_host.client().boot_errors()
    assert [line.split("] ")[1][:8] for line in errors] == ["XFS (dm-", "blk_upda"]
    assert ssh_host.calls() == ["journalctl -k -b --no-pager -q", "dmesg"]


async def test_boot_errors_custom_patterns_and_clean_log(ssh_host: SshHost) -> None:
    ssh_host.set_kernel_log(KERNEL_LOG)
    client = ssh_host.client()
    assert await client.boot_errors([r"NIC Link is Up"]) == [KERNEL_LOG.splitlines()[4]]
    ssh_host.set_kernel_log("\n".join(KERNEL_LOG.splitlines()[:3]) + "\n")
    assert await client.boot_errors() == []


async def test_boot_errors_without_any_kernel_log(ssh_host: SshHost) -> None:
    ssh_host.set_kernel_log(None)
    error = await expect_error(ssh_host.client().boot_errors(), Reason.ERROR)
    assert "cannot read the kernel log" in error.summary


async def test_force_fsck(ssh_host: SshHost) -> None:
    marker = ssh_host.state / "forcefsck"
    summary = await ssh_host.client().force_fsck(f"touch {marker} && systemctl reboot")
    assert marker.exists() and summary.endswith("exit 0")
    assert ssh_host.calls() == ["systemctl reboot"]


async def test_force_fsck_tolerates_the_host_going_away(ssh_host: SshHost) -> None:
    client = ssh_host.client()
    dropped = await client.force_fsck(ssh_host.tracked("kill -9 $PPID; exec sleep 5"))
    assert "connection dropped" in dropped
    hung = await client.force_fsck(ssh_host.tracked("exec sleep 30"), timeout=0.5)
    assert "no answer" in hung


async def test_force_fsck_default_command_without_permission(ssh_host: SshHost) -> None:
    """As an unprivileged user ``touch /forcefsck`` fails, so nothing is rebooted."""
    error = await expect_error(ssh_host.client().force_fsck(), Reason.ERROR)
    assert "Permission denied" in error.summary
    assert ssh_host.calls() == []
