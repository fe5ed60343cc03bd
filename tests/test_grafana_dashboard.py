"""deploy/grafana/: the dashboard JSON is the generator's output and covers what the NOC needs
(its queries are evaluated against a real Prometheus in tests/test_noc_live.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_metrics_manifest import manifest
from tests.test_prometheus_rules import metric_names, rules

GRAFANA = Path(__file__).resolve().parent.parent / "deploy" / "grafana"


def dashboard() -> dict:
    return json.loads((GRAFANA / "monitord.json").read_text(encoding="utf-8"))


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    return [(panel["title"], target["expr"]) for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def variable_queries() -> dict[str, str]:
    """Query variables: name -> Grafana's ``label_values(...)`` query."""
    return {v["name"]: v["query"] for v in dashboard()["templating"]["list"] if v["type"] == "query"}


def test_committed_json_is_the_generators_output():
    done = subprocess.run([sys.executable, str(GRAFANA / "dashboard.py")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (GRAFANA / "monitord.json").read_text(encoding="utf-8"), \
        "deploy/grafana/monitord.json is stale: run deploy/grafana/dashboard.py > deploy/grafana/monitord.json"


def test_dashboard_has_the_noc_sections_and_a_host_variable():
    d = dashboard()
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert rows == ["Fleet overview", "Host detail ($host)", "Remediation", "Paging and SLA timers", "monitord itself"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["host"]["multi"] and variables["host"]["includeAll"] and variables["host"]["allValue"] == ".*"
    assert 'host=~"$host"' in " ".join(expr for title, expr in panel_queries())
    for panel in d["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs) and all(refs), panel["title"]


def test_panels_do_not_overlap():
    taken = set()
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells


def test_every_metric_is_on_the_dashboard_or_in_an_alert_rule_and_nothing_else_is():
    read = set()
    for _, expr in panel_queries() + list(variable_queries().items()):
        read |= metric_names(expr)
    for rule in rules():
        read |= metric_names(rule["expr"])
    fleet = {name for name, m in manifest().items() if m.get("scope") != "host"}  # a per-host scrape's detail
    assert read <= fleet, read - fleet                                               # is not in the fleet job
    assert sorted(fleet - read) == []
