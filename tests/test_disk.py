"""The ``disk`` probe: parsing and evaluation on captured outputs, then the three transports
against a real nearly-full tmpfs ("fake disk"), a real snmpd and a real sshd."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from monitord.config import CheckSpec, ConfigError, parse_config
from monitord.shared.results import Reason, Result, Status
from monitord.run.runner import run_probe
from probes import disk
from monitord.shared.probe import ProbeContext
from tests.peers import write_file
from tests.snmp_peer import SnmpAgent
from tests.ssh_peer import SshHost
from tests.support import free_port, need_binary, need_root

# ---------------------------------------------------------------------------------------
# Captured outputs

DF_P = """\
Filesystem                                              1024-blocks      Used Available Capacity Mounted on
/dev/mapper/vg_data-lv_customer_archive_2019_primary_volume 103081248  92773124   5064412      95% /srv/customer archive
server.example.com:/exports/home with space   51475068  2617184  46219636       6% /mnt/nfs home
/dev/sda1                                                  1014680    204800    741504      22% /boot
"""

DF_PI = """\
Filesystem                                              Inodes   IUsed   IFree IUse% Mounted on
/dev/mapper/vg_data-lv_customer_archive_2019_primary_volume 6553600 3932160 2621440   60% /srv/customer archive
server.example.com:/exports/home with space         -       -       -     - /mnt/nfs home
/dev/sda1                                                    65536     339   65197    1% /boot
"""

DF_WRAPPED = """\
Filesystem           1K-blocks      Used Available Use% Mounted on
/dev/mapper/vg_data-lv_very_long_logical_volume_name_that_wraps
                      20511312  18432000   1030736  95% /var
/dev/sda1              1014680    204800    741504  22% /boot
"""

MOUNTS = """\
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/sda1 /boot ext4 rw,relatime 0 0
/dev/sdb1 /srv/customer\\040archive xfs rw,relatime 0 0
/dev/sr0 /media/cdrom iso9660 ro,relatime 0 0
/dev/sdc1 /backup ext4 ro,relatime 0 0
/dev/sdc1 /backup ext4 rw,relatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev,size=812000k,mode=755 0 0
"""


def params(**fields) -> disk.DiskParams:
    return disk.DiskParams(**fields).inherit({"disk_critical_percent": 90.0, "inode_critical_percent": 50.0}.get)


# ---------------------------------------------------------------------------------------
# Pure functions


def test_df_rows_with_spaces_long_devices_and_dashes():
    rows = disk.parse_df(DF_P)
    assert list(rows) == ["/srv/customer archive", "/mnt/nfs home", "/boot"]
    archive = rows["/srv/customer archive"]
    assert archive.device == "/dev/mapper/vg_data-lv_customer_archive_2019_primary_volume"
    assert (archive.total, archive.used, archive.available) == (103081248, 92773124, 5064412)
    assert rows["/mnt/nfs home"].device == "server.example.com:/exports/home with space"
    inodes = disk.parse_df(DF_PI)
    assert (inodes["/mnt/nfs home"].used, inodes["/mnt/nfs home"].available) == (None, None)
    assert inodes["/boot"].used == 339


def test_df_device_name_wrapped_onto_its_own_line():
    rows = disk.parse_df(DF_WRAPPED)
    assert rows["/var"].device == "/dev/mapper/vg_data-lv_very_long_logical_volume_name_that_wraps"
    assert (rows["/var"].used, rows["/var"].available) == (18432000, 1030736)
    assert rows["/boot"].used == 204800


def test_percent_is_dfs_used_over_used_plus_available_rounded_up():
    # df printed these: 95 % (94.8), 6 % (5.4), 22 % (21.6); reserved blocks count as neither.
    for row, printed in zip(disk.parse_df(DF_P).values(), (95, 6, 22)):
        assert disk.used_percent(row.used, row.available) == printed
    assert disk.used_percent(90, 10) == 90
    assert disk.used_percent(0, 0) is None
    assert disk.used_percent(None, 5) is None


def test_mount_table_escapes_duplicates_and_readonly():
    mounts = disk.parse_mounts(MOUNTS)
    assert mounts["/srv/customer archive"].fstype == "xfs"
    assert mounts["/media/cdrom"].readonly is True
    assert mounts["/backup"].readonly is False  # the later (visible) mount wins


def test_default_selection_skips_pseudo_and_readonly_filesystems():
    chosen = [m.path for m in disk.parse_mounts(MOUNTS).values() if params().selects(m)]
    assert chosen == ["/boot", "/srv/customer archive", "/backup"]
    chosen = [m.path for m in disk.parse_mounts(MOUNTS).values()
              if params(include_readonly=True, exclude_types=["proc"], exclude=["/srv/*"]).selects(m)]
    assert chosen == ["/boot", "/media/cdrom", "/backup", "/run"]
    assert [m.path for m in disk.parse_mounts(MOUNTS).values() if params(include=["/b*"]).selects(m)] == \
        ["/boot", "/backup"]


def test_ssh_output_joins_df_with_the_mount_table():
    section = "--monitord-disk-section--\n"
    mounts, usages = disk.parse_ssh_output(MOUNTS + section + DF_P + section + DF_PI)
    by_path = {m.path: m for m in mounts}
    assert by_path["/srv/customer archive"].fstype == "xfs"
    assert by_path["/mnt/nfs home"].fstype is None  # not in the table: type unknown, not excluded
    assert {u.mount: (u.disk, u.inodes) for u in usages} == {
        "/srv/customer archive": (95, 60), "/mnt/nfs home": (6, None), "/boot": (22, 1)}
    with pytest.raises(disk.ProbeError) as cut:
        disk.parse_ssh_output(MOUNTS + section + DF_P)
    assert cut.value.reason is Reason.PROTOCOL


def test_ssh_command_forces_the_c_locale_and_skips_excluded_types():
    command = disk.ssh_command(["tmpfs", "fuse.*", "nfs"])
    assert command.startswith("LC_ALL=C; export LC_ALL;")
    assert "df -Pk -x tmpfs -x nfs;" in command and "df -Pi -x tmpfs -x nfs" in command


def test_evaluation_names_the_worst_breaches_first():
    usages = [disk.Usage("/", 50, 10), disk.Usage("/var", 97, 20), disk.Usage("/home", 91, 70),
              disk.Usage("/srv", 85, None)]
    outcome = disk.evaluate(params(warning_percent=80), usages, {})
    assert (outcome.status, outcome.reason) == (Status.CRITICAL, Reason.THRESHOLD)
    assert outcome.summary == ("/home inodes 70% (>= 50%), /var disk 97% (>= 90%), /home disk 91% (>= 90%) "
                               "and 1 more")
    assert outcome.values["disk_used_percent:/var"] == 97
    assert outcome.values["inode_used_percent:/home"] == 70
    assert "inode_used_percent:/srv" not in outcome.values
    assert outcome.values["filesystems"] == 4


def test_evaluation_warning_ok_unknown():
    warn = disk.evaluate(params(warning_percent=80), [disk.Usage("/", 85, 1)], {})
    assert (warn.status, warn.reason, warn.summary) == (Status.WARNING, Reason.THRESHOLD, "/ disk 85% (>= 80%)")
    ok = disk.evaluate(params(), [disk.Usage("/", 85, 1), disk.Usage("/var", 12, 30)], {})
    assert (ok.status, ok.summary) == (Status.OK, "2 filesystems below thresholds, fullest / 85%, most inodes /var 30%")
    hung = {"/mnt/nfs": (Reason.TIMEOUT, "statvfs hung for 2s")}
    unknown = disk.evaluate(params(), [disk.Usage("/", 10, 1)], hung)
    assert (unknown.status, unknown.reason) == (Status.UNKNOWN, Reason.TIMEOUT)
    assert unknown.summary == "not read: /mnt/nfs: statvfs hung for 2s"
    both = disk.evaluate(params(), [disk.Usage("/", 95, 1)], hung)
    assert (both.status, both.reason) == (Status.CRITICAL, Reason.THRESHOLD)
    assert both.summary.endswith("; not read: /mnt/nfs: statvfs hung for 2s")
    nothing = disk.evaluate(params(), [], {})
    assert (nothing.status, nothing.reason) == (Status.UNKNOWN, Reason.ERROR)


def test_snmp_rows_from_64_bit_sizes_and_host_resources():
    from pysnmp.proto.rfc1902 import Gauge32, Integer32, ObjectIdentifier, OctetString

    dsk = {(1,): {"path": OctetString("/data"), "device": OctetString("/dev/sdb1"), "percent": Integer32(12),
                  "percent_node": Integer32(3), "used_low": Gauge32(1), "used_high": Gauge32(1),
                  "avail_low": Gauge32(0), "avail_high": Gauge32(1)},
           (2,): {"path": OctetString("/dev/shm"), "device": OctetString("tmpfs"), "percent": Integer32(0)}}
    mounts, usages = disk.dsk_usages(dsk)
    assert usages == [disk.Usage("/data", 51, 3), disk.Usage("/dev/shm", 0, None)]  # 2^32+1 of 2^33+1
    assert [m.fstype for m in mounts] == [None, "tmpfs"]
    fixed = ObjectIdentifier("1.3.6.1.2.1.25.2.1.4")
    ram = ObjectIdentifier("1.3.6.1.2.1.25.2.1.2")
    hr = {(1,): {"type": ram, "descr": OctetString("Physical memory"), "size": Integer32(100), "used": Integer32(99)},
          (31,): {"type": fixed, "descr": OctetString("/"), "size": Integer32(1000),
                  "used": Integer32(901)}}
    _mounts, usages = disk.hr_storage_usages(hr)
    assert usages == [disk.Usage("/", 91, None)]


# ---------------------------------------------------------------------------------------
# Config: thresholds cascade, transports need the host's access blocks


def spec_for(check: dict, host: dict | None = None, defaults: dict | None = None) -> CheckSpec:
    """The one check of a config holding ``check`` on host ``h1``."""
    data = {"defaults": defaults or {}, "hosts": {"h1": {"address": "127.0.0.1", **(host or {}),
                                                          "checks": {"disk": check}}}}
    [spec] = parse_config(json.dumps(data)).checks()
    return spec


def test_thresholds_cascade_from_settings():
    spec = spec_for({"include": ["/"]})
    assert (spec.params.critical_percent, spec.params.inode_critical_percent) == (90, 50)
    spec = spec_for({}, host={"defaults": {"disk_critical_percent": 85}}, defaults={"inode_critical_percent": 40})
    assert (spec.params.critical_percent, spec.params.inode_critical_percent) == (85, 40)
    spec = spec_for({"critical_percent": 95}, host={"defaults": {"disk_critical_percent": 85}})
    assert spec.params.critical_percent == 95


def test_transport_needs_the_hosts_block():
    with pytest.raises(ConfigError) as error:
        spec_for({"transport": "ssh"})
    assert error.value.problems == ["hosts.h1.checks.disk.kind: kind disk needs a ssh: block on the host (line 1)"]
    with pytest.raises(ConfigError) as error:
        spec_for({"warning_percent": 95, "critical_percent": 90})
    assert "warning_percent 95 must be below critical_percent 90" in str(error.value)
    assert spec_for({}).call().ssh is None


# ---------------------------------------------------------------------------------------
# Local transport: a hung mount


async def test_a_hung_statvfs_leaves_the_probe_and_its_thread_count_bounded(tmp_path, monkeypatch, caplog):
    mounts = write_file(tmp_path / "mounts", "/dev/sda1 / ext4 rw 0 0\nsrv:/x /mnt/dead nfs4 rw 0 0\n")
    release, calls = threading.Event(), []
    real = os.statvfs

    def statvfs(path):
        calls.append(path)
        if path == "/mnt/dead":
            release.wait(30)
            raise OSError(5, "Input/output error")
        return real("/")

    monkeypatch.setattr(disk.os, "statvfs", statvfs)
    try:
        p = params(statvfs_timeout=0.2)
        for _ in range(3):
            start = time.monotonic()
            usages, unreadable = await disk.read_local(p, str(mounts))
            assert time.monotonic() - start < 1.0
            assert [u.mount for u in usages] == ["/"]
            assert unreadable == {"/mnt/dead": (Reason.TIMEOUT, "statvfs hung for 0.2s")}
        assert calls.count("/mnt/dead") == 1  # later runs wait on the same blocked call
    finally:
        release.set()
    await asyncio.sleep(0.1)
    _usages, unreadable = await disk.read_local(params(statvfs_timeout=1), str(mounts))
    assert unreadable == {"/mnt/dead": (Reason.ERROR, "Input/output error")}
    gc.collect()  # the runs that gave up on the hung call leave no unretrieved error to be logged
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# ---------------------------------------------------------------------------------------
# Real peers: a nearly full tmpfs, snmpd, sshd

FILL_KIB = 9500  # of 10240: 92.8 %, df says 93 %
FILES = 120  # of 200 inodes


@pytest.fixture
def fake_disk() -> Iterator[Path]:
    """A 10 MiB tmpfs with 200 inodes, 93 % full and 61 % of its inodes used, readable by all."""
    need_root()
    mount = need_binary("mount")
    directory = Path(tempfile.mkdtemp(prefix="monitord-fakedisk-"))
    directory.chmod(0o755)
    subprocess.run([mount, "-t", "tmpfs", "-o", "size=10m,nr_inodes=200,mode=755", "fakedisk", str(directory)],
                   check=True)
    try:
        (directory / "fill").write_bytes(b"\0" * FILL_KIB * 1024)
        for n in range(FILES):
            (directory / f"f{n}").touch()
        yield directory
    finally:
        subprocess.run([need_binary("umount"), "-l", str(directory)], check=False)
        directory.rmdir()


def snmp_block(agent: SnmpAgent, **options) -> dict:
    return agent.config(**options).model_dump(mode="json", exclude_none=True)


def ssh_block(host: SshHost, **changes) -> dict:
    return {"port": host.port, "username": host.user, "key": {"file": str(host.client_key)},
            "known_hosts": str(host.known_hosts)} | changes


async def run_check(check: dict, host: dict | None = None) -> Result:
    spec = spec_for({"timeout": "5s", **check}, host)
    ctx = ProbeContext()
    try:
        return await run_probe(spec.kind, ctx, spec.call(), spec.params, 0.0)
    finally:
        await ctx.aclose()


def watch(path: Path, **extra) -> dict:
    """A check of just the fake disk (a tmpfs, so tmpfs is not excluded)."""
    return {"include": [str(path)], "exclude_types": ["proc", "sysfs"], **extra}


def assert_fake_disk_critical(result: Result, path: Path) -> None:
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.THRESHOLD), result.summary
    assert result.summary.startswith(f"{path} inodes 61% (>= 50%), {path} disk 93% (>= 90%)"), result.summary


@pytest.mark.integration
async def test_local_fake_disk_is_critical(fake_disk: Path):
    result = await run_check(watch(fake_disk))
    assert_fake_disk_critical(result, fake_disk)
    assert result.values == {"filesystems": 1.0, f"disk_used_percent:{fake_disk}": 93.0,
                             f"inode_used_percent:{fake_disk}": 61.0}
    assert_matches_df(result, fake_disk)


def assert_matches_df(result: Result, path: Path) -> None:
    """The percentages are the ones the real ``df`` prints."""
    for option, name in (("-Pk", "disk_used_percent"), ("-Pi", "inode_used_percent")):
        line = subprocess.run(["df", option, str(path)], capture_output=True, text=True, check=True,
                              env=dict(os.environ, LC_ALL="C")).stdout.splitlines()[1]
        assert result.values[f"{name}:{path}"] == float(line.split()[4].rstrip("%"))


@pytest.mark.integration
async def test_local_exclusions(fake_disk: Path):
    excluded_type = await run_check({"include": [str(fake_disk)]})  # tmpfs is a pseudo type by default
    assert (excluded_type.status, excluded_type.reason) == (Status.UNKNOWN, Reason.ERROR)
    assert excluded_type.summary.startswith("no filesystem to watch")
    excluded_path = await run_check(watch(fake_disk, exclude=["/tmp/monitord-fakedisk-*"]))
    assert excluded_path.status is Status.UNKNOWN
    root_only = await run_check({"include": ["/"], "critical_percent": 99.9, "inode_critical_percent": 99.9})
    assert list(root_only.values) == ["filesystems", "disk_used_percent:/", "inode_used_percent:/"]
    subprocess.run([need_binary("mount"), "-o", "remount,ro", str(fake_disk)], check=True)
    assert (await run_check(watch(fake_disk))).status is Status.UNKNOWN  # read-only: not watched
    assert_fake_disk_critical(await run_check(watch(fake_disk, include_readonly=True)), fake_disk)


@pytest.mark.integration
async def test_local_warning_levels(fake_disk: Path):
    result = await run_check(watch(fake_disk, warning_percent=80, critical_percent=95,
                                   inode_warning_percent=60, inode_critical_percent=70))
    assert (result.status, result.reason) == (Status.WARNING, Reason.THRESHOLD)
    ok = await run_check(watch(fake_disk, critical_percent=95, inode_critical_percent=70))
    assert (ok.status, ok.summary) == (Status.OK, f"1 filesystem below thresholds, fullest {fake_disk} 93%, "
                                                  f"most inodes {fake_disk} 61%")


@pytest.mark.integration
async def test_snmp_agrees_with_local(fake_disk: Path, snmp_agent: SnmpAgent):
    local = await run_check(watch(fake_disk))
    snmp = await run_check(watch(fake_disk, transport="snmp"), {"snmp": snmp_block(snmp_agent)})
    assert_fake_disk_critical(snmp, fake_disk)
    for name, value in local.values.items():
        assert abs(snmp.values[name] - value) <= 1, (name, snmp.values, local.values)
    v3 = await run_check(watch(fake_disk, transport="snmp"), {"snmp": snmp_block(snmp_agent, version="3")})
    assert v3.values == snmp.values
    hr = await run_check(watch(fake_disk, transport="snmp", snmp_table="host-resources"),
                         {"snmp": snmp_block(snmp_agent)})
    assert (hr.status, hr.reason) == (Status.CRITICAL, Reason.THRESHOLD), hr.summary
    assert abs(hr.values[f"disk_used_percent:{fake_disk}"] - local.values[f"disk_used_percent:{fake_disk}"]) <= 1
    assert f"inode_used_percent:{fake_disk}" not in hr.values  # hrStorageTable has no inodes


@pytest.mark.integration
async def test_snmp_sees_readonly_and_default_types(fake_disk: Path, snmp_agent: SnmpAgent):
    subprocess.run([need_binary("mount"), "-o", "remount,ro", str(fake_disk)], check=True)  # before snmpd caches it
    block = {"snmp": snmp_block(snmp_agent)}
    everything = await run_check({"transport": "snmp", "critical_percent": 99.9, "inode_critical_percent": 99.9}, block)
    assert "disk_used_percent:/" in everything.values
    assert "disk_used_percent:/dev/shm" not in everything.values  # source "tmpfs": a pseudo type
    assert f"disk_used_percent:{fake_disk}" not in everything.values  # hrFSAccess says read-only
    readonly = await run_check(watch(fake_disk, transport="snmp", include_readonly=True), block)
    assert_fake_disk_critical(readonly, fake_disk)  # and its source "fakedisk" says nothing of its type


@pytest.mark.integration
async def test_snmp_agent_down_is_a_timeout(snmp_agent: SnmpAgent):
    snmp_agent.stop()
    result = await run_check({"transport": "snmp", "timeout": "2s"}, {"snmp": snmp_block(snmp_agent)})
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.TIMEOUT), result.summary


@pytest.mark.integration
async def test_ssh_real_df_agrees_with_local(fake_disk: Path, ssh_host: SshHost):
    local = await run_check(watch(fake_disk))
    remote = await run_check(watch(fake_disk, transport="ssh"), {"ssh": ssh_block(ssh_host)})
    assert_fake_disk_critical(remote, fake_disk)
    assert remote.values == local.values


@pytest.mark.integration
async def test_ssh_tricky_df_output(ssh_host: SshHost):
    write_file(ssh_host.state / "df.txt", DF_P)
    write_file(ssh_host.state / "df-i.txt", DF_PI)
    write_file(ssh_host.directory / "fakebin" / "df", f"""#!/bin/sh
# df stand-in: prints captured output (-Pi: the inode table)
for arg in "$@"; do [ "$arg" = -Pi ] && exec cat {ssh_host.state}/df-i.txt; done
exec cat {ssh_host.state}/df.txt
""", 0o755)
    result = await run_check({"transport": "ssh"}, {"ssh": ssh_block(ssh_host)})
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.THRESHOLD), result.summary
    assert result.summary == ("/srv/customer archive inodes 60% (>= 50%), /srv/customer archive disk 95% (>= 90%)")
    assert result.values == {"filesystems": 3.0, "disk_used_percent:/srv/customer archive": 95.0,
                             "inode_used_percent:/srv/customer archive": 60.0,
                             "disk_used_percent:/mnt/nfs home": 6.0, "disk_used_percent:/boot": 22.0,
                             "inode_used_percent:/boot": 1.0}


@pytest.mark.integration
async def test_ssh_refused(ssh_host: SshHost):
    closed = free_port()
    result = await run_check({"transport": "ssh"}, {"ssh": ssh_block(ssh_host, port=closed)})
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.REFUSED), result.summary
