"""The ``alertmanager`` kind: matchers, payloads, and the receiver's verdicts on a fake clock,
served over real HTTP by the daemon's hardened listener (tokens, bad bodies, staleness,
unmatched alerts, restarts)."""

from __future__ import annotations

import json
import logging

import pytest

from monitord.config import ConfigError, parse_config
from monitord.shared.probe import ProbeCall, ProbeContext
from monitord.shared.results import Reason, Status
from probes import alertmanager
from probes.alertmanager import Receiver, parse_matcher, parse_payload
from tests.fakeclock import FakeClock
from tests.support import Served

TOKEN = "am-t0ken"

CONFIG = """
daemon:
  alertmanager: {token: {env: AM_TEST_TOKEN}}
hosts:
  web1:
    address: 127.0.0.1
    checks:
      disk: {kind: alertmanager, matchers: ['alertname="DiskFull"', 'instance=~"web1(:[0-9]+)?"']}
      anything: {kind: alertmanager, matchers: ['instance=~"web1.*"'], stale_after: 1h,
                 severities: {disaster: critical, minor: warning}, default_severity: warning}
  db1:
    address: 127.0.0.1
    checks:
      disk: {kind: alertmanager, matchers: ['alertname="DiskFull"', 'instance="db1"']}
"""

# ---------------------------------------------------------------------------------------
# Matchers


@pytest.mark.parametrize("text,labels,matches", [
    ('alertname="DiskFull"', {"alertname": "DiskFull"}, True),
    ('alertname = "DiskFull"', {"alertname": "DiskFullish"}, False),
    ("alertname=DiskFull", {"alertname": "DiskFull"}, True),
    ('job!="node"', {"job": "node"}, False),
    ('job!="node"', {}, True),
    ('instance=~"web1(:[0-9]+)?"', {"instance": "web1:9100"}, True),
    ('instance=~"web1(:[0-9]+)?"', {"instance": "web10"}, False),  # anchored, as in Alertmanager
    ('instance=~"web1"', {"instance": "xweb1"}, False),
    ('env!~"test|dev"', {"env": "prod"}, True),
    ('env!~"test|dev"', {"env": "dev"}, False),
    ('team=""', {}, True),  # a missing label is the empty string
    ('team!=""', {}, False),
    ('msg="say \\"hi\\""', {"msg": 'say "hi"'}, True),
])
def test_matchers_match_as_alertmanagers_do(text, labels, matches):
    assert parse_matcher(text).matches(labels) is matches


@pytest.mark.parametrize("text,why", [
    ('alertname~"x"', "operators =, !=, =~, !~"),
    ('"alertname"="x"', "operators =, !=, =~, !~"),
    ('instance=~"(("', "invalid regular expression"),
    ('a="unterminated', "operators"),
    (5, "a matcher is a string"),
])
def test_bad_matchers_say_why(text, why):
    with pytest.raises(ValueError, match=why.replace("(", r"\(").replace("|", r"\|")):
        parse_matcher(text)


def test_the_config_names_a_bad_matcher_with_its_line():
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.replace("'instance=\"db1\"'", "'instance=~\"db1(\"'"))
    [problem] = caught.value.problems
    assert problem.startswith("hosts.db1.checks.disk.matchers[1]: bad matcher")
    assert problem.endswith("(line 14)")


def test_a_check_needs_a_matcher():
    with pytest.raises(ConfigError, match="matchers"):
        parse_config("hosts:\n  web1:\n    address: 127.0.0.1\n    checks:\n      a: {kind: alertmanager, matchers: []}\n")


# ---------------------------------------------------------------------------------------
# Payloads


def payload(*alerts: dict, version: str = "4", **extra) -> bytes:
    return json.dumps({"version": version, "status": "firing", "receiver": "monitord", "groupLabels": {},
                       "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
                       "groupKey": "{}:{}", "truncatedAlerts": 0, "alerts": list(alerts), **extra}).encode()


def alert(name: str = "DiskFull", instance: str = "web1:9100", status: str = "firing", fingerprint: str | None = None,
          **labels: str) -> dict:
    return {"status": status, "labels": {"alertname": name, "instance": instance, **labels},
            "annotations": {"summary": f"{name} on {instance}"}, "startsAt": "2026-11-26T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom:9090/graph",
            "fingerprint": fingerprint or f"{name}-{instance}"}


def test_a_version_4_payload_is_read():
    alerts, truncated = parse_payload(payload(alert(), alert("Load", status="resolved"), truncatedAlerts=3))
    assert truncated == 3
    assert [(a.fingerprint, a.firing, a.summary) for a in alerts] == [
        ("DiskFull-web1:9100", True, "DiskFull on web1:9100"), ("Load-web1:9100", False, "Load on web1:9100")]


def test_an_alert_without_a_fingerprint_is_identified_by_its_labels():
    bare = {k: v for k, v in alert().items() if k != "fingerprint"}
    [first], _ = parse_payload(payload(bare))
    [again], _ = parse_payload(payload(dict(bare, annotations={})))
    [other], _ = parse_payload(payload({**bare, "labels": {"alertname": "Other"}}))
    assert first.fingerprint == again.fingerprint != other.fingerprint


@pytest.mark.parametrize("raw,why", [
    (b"not json", "body is not JSON"),
    (b"[]", "body must be a JSON object"),
    (payload(version="3"), "unsupported payload version '3'"),
    (json.dumps({"version": "4"}).encode(), "alerts must be a list"),
    (payload(alert(), truncatedAlerts=-1), "truncatedAlerts must be a non-negative integer"),
    (payload(alert(status="pending")), 'alerts\\[0\\]: status must be "firing" or "resolved"'),
    (payload(alert(), {**alert(), "labels": {"a": 1}}), "alerts\\[1\\]: labels must be an object of strings"),
    (payload({**alert(), "annotations": []}), "alerts\\[0\\]: annotations must be an object of strings"),
    (payload({**alert(), "fingerprint": ""}), "alerts\\[0\\]: fingerprint must be a non-empty string"),
    (payload("x"), "alerts\\[0\\]: must be an object"),
    (b"[" * 5000, "nested too deeply"),
])
def test_bad_payloads_say_why(raw, why):
    with pytest.raises(ValueError, match=why):
        parse_payload(raw)


# ---------------------------------------------------------------------------------------
# The receiver, over HTTP, on a fake clock


class Receiving(Served):
    """A receiver on the daemon's listener, with what it counted and ran."""

    def __init__(self, tmp_path, clock: FakeClock, config_text: str = CONFIG):
        super().__init__()
        self.config = parse_config(config_text)
        self.clock, self.path = clock, tmp_path / "alerts.json"
        self.unmatched: list[int] = []
        self.ran: list[str] = []
        self.receiver = Receiver(self.path, clock, lambda: self.config, settings=lambda: self.config.daemon.alertmanager,
                                 unmatched=self.unmatched.append, run_soon=self.ran.append)
        self.app.router.add_post(alertmanager.ROUTE, self.receiver.handle)

    async def post(self, body: bytes, token: str | None = TOKEN) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.http.post(self.url(alertmanager.ROUTE), data=body, headers=headers) as response:
            return response.status, await response.json()

    def verdict(self, host: str, check: str) -> tuple[Status, str]:
        outcome = self.receiver.judge(self.config.hosts[host].checks[check])
        return outcome.status, outcome.summary


@pytest.fixture(autouse=True)
def token_env(monkeypatch):
    monkeypatch.setenv("AM_TEST_TOKEN", TOKEN)


async def test_firing_alerts_become_verdicts_and_resolving_clears_them(tmp_path):
    clock = FakeClock()
    async with Receiving(tmp_path, clock) as served:
        assert served.verdict("web1", "disk") == (Status.OK, "no alert firing")
        status, body = await served.post(payload(alert(severity="warning"), alert("DiskFull", "db1")))
        assert (status, body) == (200, {"alerts": 2, "matched": 2, "unmatched": 0})
        assert served.verdict("web1", "disk") == (Status.WARNING, "firing: DiskFull on web1:9100: DiskFull on web1:9100")
        assert served.verdict("db1", "disk") == (Status.CRITICAL, "firing: DiskFull on db1: DiskFull on db1")
        # web1's other check takes the same alert; its own mapping knows no "warning": its default
        assert served.verdict("web1", "anything")[0] is Status.WARNING
        assert sorted(served.ran) == ["db1/disk", "web1/anything", "web1/disk"]
        served.ran.clear()
        await served.post(payload(alert(severity="critical"), alert("Load", severity="disaster")))
        assert served.verdict("web1", "disk")[0] is Status.CRITICAL  # the severity changed
        assert served.verdict("web1", "anything") == (Status.CRITICAL, "firing: Load on web1:9100: Load on web1:9100 (+1 more)")
        assert sorted(served.ran) == ["web1/anything", "web1/disk"]
        served.ran.clear()
        await served.post(payload(alert(severity="critical")))  # a repeat changes nothing: nothing runs
        assert served.ran == []
        await served.post(payload(alert(status="resolved"), alert("Load", status="resolved"), alert("DiskFull", "db1")))
        assert served.verdict("web1", "disk") == (Status.OK, "no alert firing")
        assert served.verdict("web1", "anything")[0] is Status.OK
        assert served.verdict("db1", "disk")[0] is Status.CRITICAL
        assert sorted(served.ran) == ["web1/anything", "web1/disk"]


async def test_an_alert_not_repeated_within_stale_after_is_unknown_until_it_comes_again(tmp_path):
    clock = FakeClock()
    async with Receiving(tmp_path, clock) as served:
        await served.post(payload(alert("Load")))
        await clock.advance(3600)
        assert served.verdict("web1", "anything")[0] is Status.WARNING  # exactly stale_after: still fresh
        await clock.advance(1)
        outcome = served.receiver.judge(served.config.hosts["web1"].checks["anything"])
        assert (outcome.status, outcome.reason) == (Status.UNKNOWN, Reason.TIMEOUT)
        assert outcome.summary == ("stale: Load on web1:9100 firing but not repeated by Alertmanager for 1h1s "
                                   "(expected within 1h)")
        served.ran.clear()
        await served.post(payload(alert("Load")))  # Alertmanager's repeat
        assert served.verdict("web1", "anything")[0] is Status.WARNING
        assert served.ran == ["web1/anything"]
        # a fresh alert outweighs a stale one
        await clock.advance(3000)
        await served.post(payload(alert("Other")))
        await clock.advance(1000)
        assert served.verdict("web1", "anything") == (Status.WARNING, "firing: Other on web1:9100: Other on web1:9100")


async def test_alerts_survive_a_restart_and_age_from_the_start(tmp_path):
    clock = FakeClock()
    async with Receiving(tmp_path, clock) as served:
        await served.post(payload(alert(), alert("Load")))
        await served.post(payload(alert("Load", status="resolved")))
    await clock.advance(2 * 3600)  # the daemon was down for two hours: Alertmanager's repeats were lost
    async with Receiving(tmp_path, clock) as restarted:
        assert restarted.verdict("web1", "disk")[0] is Status.CRITICAL
        assert restarted.verdict("web1", "anything")[0] is Status.WARNING  # DiskFull, not the resolved Load
        await clock.advance(3601)
        assert restarted.verdict("web1", "anything")[0] is Status.UNKNOWN


async def test_a_damaged_alerts_file_keeps_what_is_whole(tmp_path):
    good = {"labels": {"alertname": "DiskFull", "instance": "web1"}, "summary": "", "received": 1.0}
    (tmp_path / "alerts.json").write_text(json.dumps({
        "a": good, "b": {"labels": {"alertname": 5}, "summary": "", "received": 1.0}, "c": "x",
        "d": {"labels": {"alertname": "DiskFull", "instance": "web1"}, "received": "yesterday"}}))
    async with Receiving(tmp_path, FakeClock()) as served:
        assert served.verdict("web1", "disk") == (Status.CRITICAL, "firing: DiskFull on web1")
        assert (await served.post(payload(alert("Load"))))[0] == 200
        assert json.loads(served.path.read_text()).keys() == {"a", "Load-web1:9100"}


async def test_unmatched_alerts_are_counted_and_logged_at_most_once_a_minute(tmp_path, caplog):
    clock = FakeClock()
    caplog.set_level(logging.WARNING, logger="probes.alertmanager")
    async with Receiving(tmp_path, clock) as served:
        status, body = await served.post(payload(alert(), alert("DiskFull", "mail1"), alert("Load", "mail1")))
        assert (status, body) == (200, {"alerts": 3, "matched": 1, "unmatched": 2})
        assert served.verdict("web1", "disk")[0] is Status.CRITICAL  # the batch counts, only the strays do not
        await clock.advance(30)
        await served.post(payload(alert("X", "mail2")))
        await clock.advance(30)
        await served.post(payload(alert("Y", "mail3")))
        assert served.unmatched == [2, 1, 1]
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2
        assert lines[0].startswith("2 Alertmanager alert(s) matched no alertmanager check (e.g. DiskFull on mail1")
        assert lines[1].startswith("2 Alertmanager alert(s) matched no alertmanager check (e.g. Y on mail3")
        assert json.loads(served.path.read_text()).keys() == {"DiskFull-web1:9100"}  # strays are not kept


@pytest.mark.parametrize("token,status,why", [
    (None, 401, "missing or wrong bearer token"),
    ("wrong", 401, "missing or wrong bearer token"),
])
async def test_a_notification_without_the_token_is_refused(tmp_path, token, status, why):
    async with Receiving(tmp_path, FakeClock()) as served:
        assert await served.post(payload(alert()), token=token) == (status, {"error": why})
        assert served.verdict("web1", "disk")[0] is Status.OK and not served.path.exists()


async def test_without_a_configured_token_the_receiver_is_off(tmp_path):
    async with Receiving(tmp_path, FakeClock(), CONFIG.replace("{token: {env: AM_TEST_TOKEN}}", "{}")) as served:
        assert await served.post(payload(alert())) == (
            403, {"error": "the Alertmanager receiver is off: set daemon.alertmanager.token"})


async def test_a_bad_or_oversized_body_is_refused_with_a_reason_and_nothing_is_kept(tmp_path):
    async with Receiving(tmp_path, FakeClock()) as served:
        assert await served.post(payload(alert(status="pending"))) == (
            400, {"error": 'alerts[0]: status must be "firing" or "resolved"'})
        status, body = await served.post(payload(*[alert(f"A{n}") for n in range(300)]))
        assert status == 413 and "larger than" in body["error"]
        assert served.verdict("web1", "anything")[0] is Status.OK


async def test_alerts_that_cannot_be_kept_are_refused_with_503_so_alertmanager_retries(tmp_path):
    async with Receiving(tmp_path, FakeClock()) as served:
        served.path.mkdir()  # not a file: the write fails
        assert await served.post(payload(alert())) == (503, {"error": "the alerts could not be kept; try again later"})
        assert served.verdict("web1", "disk")[0] is Status.OK and served.ran == []  # nothing taken
        served.path.rmdir()
        assert (await served.post(payload(alert())))[0] == 200  # Alertmanager's retry
        assert served.verdict("web1", "disk")[0] is Status.CRITICAL
        assert sorted(served.ran) == ["web1/anything", "web1/disk"]


async def test_without_a_receiver_the_probe_is_unknown():
    ctx = ProbeContext()
    params = parse_config(CONFIG).hosts["web1"].checks["disk"]
    outcome = await alertmanager.run(ctx, ProbeCall("web1", "127.0.0.1", 5.0), params)
    assert (outcome.status, outcome.reason) == (Status.UNKNOWN, Reason.ERROR)
    await ctx.aclose()
