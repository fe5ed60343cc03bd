"""The metrics manifest (monitord/edge/metrics_manifest.yaml) against the registry, and the
generated docs/metrics.md against the manifest. The live half (a running daemon's /metrics,
both ways) is in tests/test_noc_live.py."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

import monitord.escalation.ladder
import monitord.edge.metrics
from monitord.edge.metrics import Metrics
from monitord.run.checkstate import CheckState
from monitord.shared.results import Reason, Result, Status

REPO = Path(__file__).resolve().parent.parent
MANIFEST = Path(monitord.edge.metrics.__file__).with_name("metrics_manifest.yaml")


def manifest() -> dict[str, dict]:
    """The manifest's metrics by name."""
    entries = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))["metrics"]
    by_name = {m["name"]: m for m in entries}
    assert len(by_name) == len(entries), "a metric is listed twice"
    return by_name


def exported_name(name: str, kind: str) -> str:
    """The name a family is queried by (prometheus_client drops a counter's ``_total``)."""
    return name + "_total" if kind == "counter" else name


def test_manifest_lists_exactly_the_registry_with_types_labels_and_help():
    metrics = Metrics()
    registered = {}
    for collector in list(metrics.registry._collector_to_names):
        for family in collector.describe():
            registered[exported_name(family.name, family.type)] = {
                "type": family.type, "labels": list(collector._labelnames), "help": family.documentation}
    listed = {name: {k: m[k] for k in ("type", "labels", "help")} for name, m in manifest().items()}
    assert sorted(set(registered) - set(listed)) == [], "exported but not in the manifest"
    assert sorted(set(listed) - set(registered)) == [], "in the manifest but not exported"
    for name in listed:
        assert listed[name] == registered[name], name
    assert all(m["when"] for m in manifest().values())


def test_every_guard_the_state_machine_can_block_with_is_known_and_counted_from_zero():
    tree = ast.parse(Path(monitord.escalation.ladder.__file__).read_text(encoding="utf-8"))
    used = {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Blocked"
            and node.args and isinstance(node.args[0], ast.Constant)}
    dynamic = {"denied", "no_answer"}  # Blocked(guard, ...) after an approval request
    assert used | dynamic == set(monitord.escalation.ladder.GUARDS)
    text = Metrics().exposition().decode()
    for guard in monitord.escalation.ladder.GUARDS:
        assert f'monitord_guard_blocks_total{{guard="{guard}"}} 0.0' in text
    assert 'monitord_actions_total{kind="power_reset",outcome="failed"} 0.0' in text
    assert 'monitord_http_connections_closed_total{reason="idle"} 0.0' in text
    assert "_created" not in text


def test_metrics_doc_is_generated_from_the_manifest(tmp_path):
    script = REPO / "scripts" / "metrics_doc.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    doc = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    for name, m in manifest().items():
        assert f"| `{name}` | {m['type']} |" in doc
    stale = tmp_path / "metrics.md"  # a hand edit is caught
    stale.write_text(doc.replace("monitord_store_healthy", "monitord_store_ok"))
    done = subprocess.run([sys.executable, str(script), "--check", str(stale)], capture_output=True, text=True)
    assert done.returncode == 1 and f"{stale} is out of date" in done.stderr


def series_per_check(exposition: str) -> int:
    """The most series any one check (host, check, kind) has in a text exposition."""
    counts: dict[tuple[str, ...], int] = {}
    for line in exposition.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line.partition("{")[2].rpartition("}")[0]))
        if {"host", "check", "kind"} <= set(labels):
            key = (labels["host"], labels["check"], labels["kind"])
            counts[key] = counts.get(key, 0) + 1
    return max(counts.values(), default=0)


def test_at_most_three_series_per_check_and_the_detail_only_in_a_per_host_scrape():
    metrics = Metrics()
    values = {"rtt_avg_ms": 0.1, "rtt_max_ms": 0.2, "loss_percent": 0.0}
    for host in ("web1", 'we"b2'):
        for check, kind in (("ping", "ping"), ("port", "tcp")):
            metrics.restore(host, check, kind, CheckState())
            result = Result(Status.WARNING, Reason.THRESHOLD, "slow", 0.25, 1_700_000_000.5, values)
            metrics.observe(host, check, kind, result, CheckState(status=Status.WARNING, hard=False))
    fleet = metrics.exposition().decode()
    assert series_per_check(fleet) == 3
    assert 'monitord_check_state{check="ping",host="we\\"b2",kind="ping"} 1.0' in fleet
    assert 'monitord_probe_oldest_run_timestamp_seconds{kind="tcp"} 1.7000000005e+09' in fleet
    assert "monitord_probe_value" not in fleet and "monitord_probe_status" not in fleet
    detail = metrics.exposition(hosts=["web1"]).decode()
    assert 'monitord_probe_status{check="port",host="web1",kind="tcp"} 1.0' in detail
    assert 'monitord_probe_value{check="ping",host="web1",kind="ping",name="loss_percent"} 0.0' in detail
    assert "we\\\"b2" not in detail and "monitord_guard_blocks" not in detail
    assert series_per_check(detail) == 3 + 1 + 1 + len(values)
    metrics.forget("web1", "ping", "ping")
    assert 'check="ping",host="web1"' not in metrics.exposition().decode()
    assert metrics.exposition(hosts=["nobody"]).decode().count("\n") == 2 * 6  # HELP and TYPE of each family
