"""The metrics manifest (monitord/edge/metrics_manifest.yaml) against the registry, and the
generated docs/metrics.md against the manifest. The live half (a running daemon's /metrics,
both ways) is in tests/test_noc_live.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yaml

import monitord.escalation.ladder
import monitord.edge.metrics
from monitord.edge.metrics import Metrics

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
