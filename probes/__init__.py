"""Probe kinds: one module per kind, and this registry, the single list of kinds."""

from __future__ import annotations

from probes import backup, bmc, disk, ftp, heartbeat, http, imap, logs, mysql, ping, plugin, pop, postgres, process, smtp, snmphost, ssh, tcp
from probes.base import ProbeKind

REGISTRY: dict[str, ProbeKind] = {
    kind.name: kind
    for kind in (
        ping.KIND,
        tcp.KIND,
        http.HTTP,
        http.HTTPS,
        ftp.KIND,
        smtp.KIND,
        pop.KIND,
        imap.KIND,
        ssh.KIND,
        postgres.KIND,
        mysql.KIND,
        plugin.KIND,
        heartbeat.KIND,
        bmc.KIND,
        snmphost.KIND,
        logs.KIND,
        disk.KIND,
        backup.KIND,
        process.KIND,
    )
}
