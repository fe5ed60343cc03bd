"""The NOC assets against the real thing: a daemon whose fleet fails in every way the rules and
the dashboard show (a confirmed failure, a level-3 host, a failed action, maintenance and
blast-radius blocks, a breached SLA timer, an overdue report, pages piling up at a dead
webhook, a refused reload, an idle connection closed), scraped by a real Prometheus (the
Debian package) that loads deploy/prometheus/monitord.rules.yml.

Checked: the daemon's /metrics against the metrics manifest, both ways; every dashboard query,
every variable query and every rule expression through Prometheus's HTTP API (each parses and
returns data, and so does every series selector in it); the rules load and evaluate cleanly,
and the alerts without a ``for`` fire."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import signal
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from monitord.records.state import SQLiteStore
from tests.daemon_proc import Daemon, wait_for
from tests.support import Proc, free_port, need_binary
from tests.test_grafana_dashboard import panel_queries, variable_queries
from tests.test_metrics_manifest import manifest
from tests.test_prometheus_rules import DEPLOY, RULES, rules

pytestmark = pytest.mark.integration

GRAFANA_VARIABLES = {"$instance": ".*", "$host": ".*", "$__rate_interval": "1m"}
SELECTOR = re.compile(r"\b(monitord_[a-z_]+|up)\b(\{[^}]*\})?")
NO_DATA_HERE = {
    "MonitordNotScraped": "absent() has data only while Prometheus has no monitord target; this one has two",
    "MonitordSchedulerLate": "needs checks starting over 30 s late: an overloaded daemon (promtool tests the rule)",
    "MonitordStoreUnhealthy": "needs the store's disk to fill, which holds the outbox and the engine this fleet "
                              "needs; tests/test_store_faults.py drives the gauge to 0 on a real tmpfs",
}
"""Alert expressions that cannot return data in this test, and why (their selectors still must)."""
FIRING = {"MonitordCheckFailing", "MonitordHostAtLevel3", "MonitordSlaBreached", "MonitordBlastRadiusActive"}
"""Rules without a ``for`` that this fleet makes fire."""


class Prometheus:
    """``prometheus`` on a loopback port with its own data directory, scraping every second."""

    def __init__(self, tmp: Path, targets: list[str]):
        example = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
        example["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"}
        example["rule_files"] = [str(RULES)]
        [job] = example["scrape_configs"]
        job.update(scrape_interval="1s", scrape_timeout="900ms", static_configs=[{"targets": targets}])
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(example))
        self.port = free_port()
        self.proc = Proc([need_binary("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                         tmp / "prometheus.log")
        wait_for(self.ready, 30, "prometheus to be ready")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            assert self.proc.popen.poll() is None, self.proc.output()
            return False

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # a query that does not parse: 400 with the reason
            answer = json.loads(exc.read())
        assert answer["status"] == "success", f"{params}: {answer.get('error')}"
        return answer["data"]

    def query(self, expr: str) -> list:
        """The result of an instant query (asserting it parsed and ran)."""
        return self.api("query", query=expr)["result"]


def fleet_config(tmp: Path, port: int, open_port: int, first_port: int, then_port: int) -> str:
    dead = free_port()  # nothing listens: the BMCs and the webhook are unreachable
    secret = tmp / "hook.secret"
    secret.write_text("noc-live-webhook-secret\n")
    secret.chmod(0o600)
    now = dt.datetime.now(dt.timezone.utc)
    def fails(port: int) -> dict:
        return {"closed": {"kind": "tcp", "port": port, "host_critical": True}}

    bmc = {"address": "127.0.0.1", "port": dead, "username": "admin", "password": {"file": str(secret)}}
    config = {
        "daemon": {"state_path": str(tmp / "state.db"), "metrics_listen": f"127.0.0.1:{port}"},
        "defaults": {"intervals": {"tcp": "1s", "ping": "1s"}, "retry_interval": "500ms", "max_attempts": 2,
                     "timeout": "800ms"},
        "hosts": {
            "web": {"address": "127.0.0.1", "checks": {"ping": {"count": 1, "reply_timeout": "500ms"},
                                                       "http": {"kind": "tcp", "port": open_port}}},
            "db": {"address": "127.0.0.1", "checks": fails(first_port)},  # no power control: straight to level 3
            # then, with db still down, three of four hosts are: the BMC read fails, the reset is blocked
            "app": {"address": "127.0.0.1", "bmc": bmc, "checks": fails(then_port)},
            "maint": {"address": "127.0.0.1", "bmc": bmc, "checks": fails(then_port)},  # in maintenance
        },
        "maintenance": {"disk-swap": {"hosts": ["maint"], "reason": "disk swap",
                                      "start": (now - dt.timedelta(hours=1)).isoformat(),
                                      "end": (now + dt.timedelta(days=1)).isoformat()}},
        "paging": {
            "integrations": {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{dead}/page",
                                      "secret": {"file": str(secret)}}},
            "people": {"aoki": {"notify": ["hook"]}},
            "policies": {"ops": {"tiers": [{"targets": ["aoki"], "ack_timeout": "15m"}]}},
            "routes": [{"policy": "ops"}],
            "sla": {"engineer_on_site": "2s"},
        },
    }
    return json.dumps(config, indent=1)  # JSON is YAML


@pytest.fixture(scope="module")
def noc(tmp_path_factory):
    need_binary("prometheus")
    tmp = tmp_path_factory.mktemp("noc")
    listener = socket.create_server(("127.0.0.1", 0))
    first = socket.create_server(("127.0.0.1", 0))  # closed once Prometheus watches: db goes down
    then = socket.create_server(("127.0.0.1", 0))  # closed once db is at level 3: app and maint go down
    port = free_port()
    config = tmp / "monitord.yaml"
    config.write_text(fleet_config(tmp, port, *(s.getsockname()[1] for s in (listener, first, then))))
    store = SQLiteStore(tmp / "state.db")  # an incident recovered ten days ago whose report nobody submitted
    old = time.time() - 10 * 86400
    closed = asyncio.run(store.incidents.open("web", "http", "tcp", old, old, "refused"))
    asyncio.run(store.incidents.close(closed, old + 600))
    asyncio.run(store.close())
    daemon = Daemon(tmp, config, port).start()
    prometheus = None
    idle = socket.create_connection(("127.0.0.1", port))  # closed by the listener after 10 s without a request
    try:
        prometheus = Prometheus(tmp, [f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"])
        # counters start at 0, so Prometheus sees the first block as an increase (the alert's condition)
        wait_for(lambda: prometheus.query('monitord_guard_blocks_total{guard="blast_radius"} == 0'), 30,
                 "prometheus to scrape the daemon")
        first.close()
        wait_for(lambda: daemon.value("monitord_escalation_level", host="db") == 3, 60, "db at level 3")
        then.close()
        for guard in ("blast_radius", "maintenance"):
            wait_for(lambda: daemon.value("monitord_guard_blocks_total", guard=guard) >= 1, 60, f"a {guard} block")
        wait_for(lambda: daemon.value("monitord_actions_total", kind="bmc_read", outcome="failed") >= 1, 60,
                 "the BMC read to fail")
        wait_for(lambda: daemon.value("monitord_sla_timers_breached") >= 1, 30, "the on-site timer to breach")
        wait_for(lambda: daemon.value("monitord_pages_sent_total", integration="hook", outcome="retry"), 30,
                 "pages failing at the dead webhook")
        [incident] = [i for i, host, _, closed in daemon.incidents() if host == "db" and closed is None]
        daemon.cli("ack", str(incident), "--by", "aoki")
        wait_for(lambda: daemon.value("monitord_page_ack_latency_seconds_count") >= 1, 30, "the ack to be counted")
        config.write_text(config.read_text().replace('"hosts"', '"hostz"', 1))
        daemon.proc.popen.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.value("monitord_config_last_reload_successful") == 0, 30, "the reload refused")
        wait_for(lambda: daemon.value("monitord_http_connections_closed_total", reason="idle") >= 1, 30,
                 "the idle connection closed")
        assert daemon.value("monitord_reports_overdue") == 1
        # Prometheus has seen all of it (and has two samples since, for rate() and increase())
        wait_for(lambda: prometheus.query("monitord_config_last_reload_successful == 0")
                 and prometheus.query("monitord_page_ack_latency_seconds_count > 0"), 30, "prometheus to scrape it")
        time.sleep(2.5)
        yield daemon, prometheus
    finally:
        idle.close()
        for sock in (listener, first, then):
            sock.close()
        if prometheus is not None:
            prometheus.proc.stop()
        daemon.proc.stop(signal.SIGKILL)


def families(exposition: str) -> tuple[dict[str, str], dict[str, set[frozenset]]]:
    """(family -> type, family -> the label-name sets of its samples) of a text exposition."""
    types = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
    samples: dict[str, set[frozenset]] = {}
    for line in exposition.splitlines():
        if line.startswith("#") or not line:
            continue
        name, _, rest = line.partition("{")
        name = name.split()[0]
        labels = frozenset(re.findall(r'(\w+)="', rest.rpartition("}")[0])) if rest else frozenset()
        family = next(f for f in (name, re.sub(r"_(bucket|sum|count)$", "", name)) if f in types)
        samples.setdefault(family, set()).add(labels - {"le"})
    return types, samples


def test_daemon_exports_exactly_the_manifest(noc):
    daemon, _ = noc
    listed = manifest()
    fleet = {name: m for name, m in listed.items() if m.get("scope") != "host"}
    per_check = {name: m for name, m in listed.items() if {"host", "check", "kind"} <= set(m["labels"])}
    assert {name for name, m in listed.items() if m.get("scope") == "host"} < set(per_check)
    for scrape, expected in ((daemon.scrape(), fleet), (daemon.scrape(host="web"), per_check)):
        types, samples = families(scrape)
        assert sorted(set(types) - set(expected)) == [], "exported but not in the manifest"
        exported_as_listed(types, samples, expected)


def exported_as_listed(types: dict[str, str], samples: dict[str, set[frozenset]], listed: dict[str, dict]) -> None:
    """Each listed metric is exported with its type, and each of its series has its labels."""
    for name, m in listed.items():
        assert types.get(name) == m["type"], f"{name}: in the manifest, not exported as a {m['type']}"
        assert samples.get(name), f"{name}: no series in this fleet"
        assert samples[name] == {frozenset(m["labels"])}, name


def test_prometheus_loads_the_rules_and_the_alerts_fire(noc):
    _, prometheus = noc
    groups = wait_for(lambda: [g for g in prometheus.api("rules")["groups"]
                               if all(r.get("lastEvaluation", "").startswith("20") for r in g["rules"])],
                      30, "the rules evaluated")
    loaded = [rule for group in groups for rule in group["rules"]]
    assert sorted(r["name"] for r in loaded) == sorted(r["alert"] for r in rules())
    assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError")) for r in loaded]
    firing = {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"}
    assert FIRING <= firing


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def test_every_dashboard_and_rule_query_returns_data(noc):
    _, prometheus = noc
    queries = [(f"panel {title!r}", substitute(expr), False) for title, expr in panel_queries()]
    queries += [(f"rule {r['alert']}", r["expr"], r["alert"] in NO_DATA_HERE) for r in rules()]
    assert set(NO_DATA_HERE) <= {r["alert"] for r in rules()}
    empty = []
    for what, expr, allowed_empty in queries:
        result = prometheus.query(expr)
        if not result and not allowed_empty:
            empty.append(f"{what}: {expr}")
        if result and allowed_empty:
            empty.append(f"{what} returned data: take it off NO_DATA_HERE")
        for match in SELECTOR.finditer(expr):
            if not prometheus.query(match.group(0)):
                empty.append(f"{what}: selector {match.group(0)} has no series")
    assert empty == []


def test_every_dashboard_variable_has_values(noc):
    _, prometheus = noc
    for name, definition in variable_queries().items():
        selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", definition).groups()
        values = {series["metric"].get(label) for series in prometheus.query(substitute(selector))}
        assert values - {None}, name
    hosts = {series["metric"]["host"] for series in prometheus.query("monitord_escalation_level")}
    assert hosts == {"web", "db", "app", "maint"}
