"""deploy/prometheus/: the scrape example and the alert rules, checked and unit-tested by
promtool (the live evaluation against a real Prometheus is in tests/test_noc_live.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import need_binary
from tests.test_metrics_manifest import manifest

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = DEPLOY / "monitord.rules.yml"
METRIC = re.compile(r"\b(monitord_[a-z_]+)")


def rules() -> list[dict]:
    """Every rule of the rules file."""
    return [rule for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The manifest names an expression reads (a histogram's ``_bucket`` is its family)."""
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in METRIC.findall(expr)}


def test_promtool_checks_the_rules_and_the_scrape_example(tmp_path):
    promtool = need_binary("promtool")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout
    for name in ("prometheus.yml", "monitord.rules.yml"):  # the config names its rules file relatively
        shutil.copy(DEPLOY / name, tmp_path / name)
    done = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass_and_cover_every_rule_firing_and_silent():
    promtool = need_binary("promtool")
    done = subprocess.run([promtool, "test", "rules", "monitord.rules.test.yml"], cwd=DEPLOY,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    cases = [case for test in yaml.safe_load((DEPLOY / "monitord.rules.test.yml").read_text(encoding="utf-8"))["tests"]
             for case in test.get("alert_rule_test", [])]
    for rule in rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} is never expected to fire"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} is never expected to stay silent"


def test_a_failing_expectation_fails_promtool(tmp_path):
    promtool = need_binary("promtool")
    shutil.copy(RULES, tmp_path / RULES.name)
    broken = (DEPLOY / "monitord.rules.test.yml").read_text(encoding="utf-8").replace(
        "summary: \"db1 is at level 3: on-site dispatch\"", "summary: \"db1 is at level 2\"")
    (tmp_path / "t.yml").write_text(broken, encoding="utf-8")
    done = subprocess.run([promtool, "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1 and "MonitordHostAtLevel3" in done.stdout + done.stderr


def test_rules_read_only_metrics_of_the_manifest_and_say_what_to_do():
    known = set(manifest())
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names <= known, f"{rule['alert']} reads unknown metrics {names - known}"
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
