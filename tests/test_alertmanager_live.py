"""The ``alertmanager`` check end to end: a real Prometheus Alertmanager (Debian package
prometheus-alertmanager) notifies the real daemon through its webhook receiver, with a bearer
token from a credentials file; alerts are posted to Alertmanager's API as Prometheus posts them.
Pages reach a real HTTP receiver standing in for PagerDuty's Events API."""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
import urllib.request

import pytest

from tests.daemon_proc import wait_for
from tests.support import Proc, free_port, need_binary, wait_port
from tests.test_scenarios import HOST, fleet, loop, pagerduty  # noqa: F401 - shared fixtures

pytestmark = pytest.mark.integration

TOKEN = "alertmanager-to-monitord"
PING = {"ping": {"count": 1, "reply_timeout": "1s"}}
"""The host's liveness check, which the ladder verifies a recovery with."""


class Alertmanager:
    """``prometheus-alertmanager`` on loopback, whose only receiver is the daemon's webhook."""

    def __init__(self, tmp, daemon_port: int, token_file):
        binary = need_binary("prometheus-alertmanager")
        self.port = free_port()
        config = {
            "route": {"receiver": "monitord", "group_by": ["alertname", "instance"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1m"},
            "receivers": [{"name": "monitord", "webhook_configs": [{
                "url": f"http://127.0.0.1:{daemon_port}/api/v1/alertmanager", "send_resolved": True,
                "max_alerts": 50, "http_config": {"authorization": {"credentials_file": str(token_file)}}}]}],
        }
        (tmp / "alertmanager.yml").write_text(json.dumps(config))
        (tmp / "am-data").mkdir()
        self.proc = Proc([binary, f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'am-data'}",
                          f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                         tmp / "alertmanager.log")
        wait_port(self.port, 20)

    def post(self, labels: dict, *, resolved: bool = False, summary: str = "") -> None:
        """Post one alert as Prometheus does: firing for the next minutes, or ended a minute ago."""
        now = dt.datetime.now(dt.timezone.utc)
        alert = {"labels": labels, "annotations": {"summary": summary or labels["alertname"]},
                 "startsAt": (now - dt.timedelta(minutes=5)).isoformat(),
                 "endsAt": (now + (dt.timedelta(minutes=-1) if resolved else dt.timedelta(minutes=5))).isoformat(),
                 "generatorURL": "http://prometheus.example:9090/graph"}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v2/alerts", data=json.dumps([alert]).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def alertmanager(tmp_path, fleet):
    token = tmp_path / "am.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    am = Alertmanager(tmp_path, fleet.port, token)
    yield am
    am.stop()


def am_check(instance: str) -> dict:
    return {"kind": "alertmanager", "matchers": ['alertname="ServiceDown"', f'instance=~"{instance}(:[0-9]+)?"'],
            "interval": "30s"}


def configure(fleet, pagerduty) -> None:
    fleet.top["daemon"] = {"state_path": str(fleet.tmp / "state.db"), "metrics_listen": f"127.0.0.1:{fleet.port}",
                           "alertmanager": {"token": fleet.secret("am", TOKEN)}}
    fleet.top["paging"] = {
        "integrations": {"pd": {"type": "pagerduty", "url": pagerduty.url, "routing_key": fleet.secret("pd", "r" * 32)}},
        "people": {"aoki": {"notify": ["pd"]}},
        "policies": {"ops": {"tiers": [{"targets": ["aoki"], "ack_timeout": "15m"}]}},
        "routes": [{"policy": "ops"}],
    }


def state(daemon, host: str) -> float | None:
    return daemon.value("monitord_check_state", host=host, check="service")


def test_a_firing_alert_goes_hard_pages_and_its_resolution_clears_it(fleet, pagerduty, alertmanager):
    fleet.add("web1", "127.0.0.1", checks={**PING, "service": am_check("web1")})
    configure(fleet, pagerduty)
    daemon = fleet.start()
    wait_for(lambda: state(daemon, "web1") == 0, 20, "the check's first run")
    alertmanager.post({"alertname": "ServiceDown", "instance": "web1:9100", "severity": "critical"},
                      summary="nginx down on web1")
    alertmanager.post({"alertname": "ServiceDown", "instance": "mail9:9100"})  # no check takes it
    # max_attempts 2, retry_interval 500ms: hard long before the 30 s interval comes round
    wait_for(lambda: state(daemon, "web1") == 2, 30, "the alert to be confirmed")
    wait_for(lambda: pagerduty.actions() == ["trigger"], 30, "the page")
    [page] = pagerduty.bodies
    assert page["payload"]["summary"].startswith("web1: service is down and has no restart method configured")
    assert daemon.value("monitord_alertmanager_alerts_unmatched_total") >= 1
    [(incident_id, host, check, closed_at)] = daemon.incidents()
    assert (host, check, closed_at) == ("web1", "service", None)
    acted = [line for line in daemon.scrape().splitlines() if line.startswith("monitord_actions_total")]
    assert all(float(line.rpartition(" ")[2]) == 0 for line in acted)  # a page; no power, no restart

    # the daemon restarts while the alert fires: it is still firing afterwards, no second incident
    daemon.proc.stop(signal.SIGKILL)
    daemon.start()
    time.sleep(1)
    assert state(daemon, "web1") == 2

    alertmanager.post({"alertname": "ServiceDown", "instance": "web1:9100", "severity": "critical"}, resolved=True)
    wait_for(lambda: state(daemon, "web1") == 0, 30, "the resolution to clear the check")
    wait_for(lambda: daemon.incidents()[0][3] is not None, 20, "the incident to close")
    assert len(daemon.incidents()) == 1
    wait_for(lambda: "resolve" in pagerduty.actions(), 20, "the page to resolve")


def test_an_alert_for_a_host_in_maintenance_takes_no_action(fleet, pagerduty, alertmanager):
    fleet.add("web1", "127.0.0.1", checks={**PING, "service": am_check("web1")})
    configure(fleet, pagerduty)
    daemon = fleet.start()
    daemon.cli("maintenance", "add", "--host", "web1", "--duration", "1h", "--reason", "nginx upgrade")
    alertmanager.post({"alertname": "ServiceDown", "instance": "web1", "severity": "critical"})
    wait_for(lambda: state(daemon, "web1") == 2, 30, "the alert to be confirmed")
    wait_for(lambda: any(e.startswith("blocked maintenance") for e in daemon.events("web1")), 20,
             "the maintenance guard")
    time.sleep(2)
    assert pagerduty.bodies == []


def test_an_alert_for_a_host_in_a_ladder_joins_its_incident(fleet, pagerduty, alertmanager, loop, HOST):  # noqa: N803
    fleet.add("web1", HOST, checks={**PING, "service": am_check("web1")})
    configure(fleet, pagerduty)
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: daemon.value("monitord_check_state", host="web1", check="ping") == 2, 30, "the host down")
    wait_for(lambda: pagerduty.bodies, 30, "the host-down page")
    alertmanager.post({"alertname": "ServiceDown", "instance": "web1", "severity": "critical"})
    wait_for(lambda: state(daemon, "web1") == 2, 30, "the alert to be confirmed")
    time.sleep(2)
    incidents = daemon.incidents()
    assert [(host, check) for _, host, check, _ in incidents] == [("web1", "ping")]
    [(incident_id, *_)] = incidents
    assert ("confirmed", "service") in [(e, c) for e, c, _, _ in daemon.incident_journal(incident_id)]
