"""Probe kinds: one module per kind, and this registry, the single list of kinds.

The core reaches the kinds only through this module: :data:`REGISTRY`, and the setting types a
kind adds to the config's cascaded settings (:data:`BackupPlan`).
"""

from __future__ import annotations

from probes import alertmanager, backup, bmc, disk, ftp, heartbeat, http, imap, logs, mysql, ping, plugin, pop, postgres, process, smtp, snmphost, ssh, tcp
from monitord.shared.probe import ProbeKind

BackupPlan = backup.PlanName
"""The preset names a ``backup_plan:`` setting takes (hosts, groups, ``defaults``)."""

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
        alertmanager.KIND,
    )
}
