"""No configured secret leaves the daemon: a real daemon with a secret in every place the config
takes one, failing pagers (one of them echoing what it was sent) and failing drivers and probes;
then its log, /metrics, every table of the state store and the rendered reports are searched for
every secret value."""

from __future__ import annotations

import json
import secrets
import signal
import sqlite3
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.daemon_proc import Daemon, wait_for
from tests.support import free_port

pytestmark = pytest.mark.integration


class Echo(BaseHTTPRequestHandler):
    """A receiver that refuses every request and quotes it back, as real APIs do with bad keys."""

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode(errors="replace")
        answer = json.dumps({"message": "invalid key", "headers": dict(self.headers), "request": body}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def secret(name: str) -> str:
    return f"{name}-{secrets.token_urlsafe(8)}"  # ipmitool takes at most 20 bytes


def post(url: str, body: dict, token: str) -> int:
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_no_secret_in_logs_metrics_store_or_reports(tmp_path, echo):
    values = {name: secret(name) for name in (
        "pagerduty", "opsgenie", "hmac", "smtp", "bmc", "community", "postgres", "heartbeat", "api")}
    # a malformed Slack URL (no scheme), as an operator pastes it: the whole URL is the secret
    values["slack"] = f"hooks.slack.com/services/T0/B0/{secret('slack')}"
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name, value in values.items():
        (creds if name == "opsgenie" else tmp_path / "secrets").mkdir(exist_ok=True)
        (tmp_path / "secrets" / name).write_text(value + "\n")
    (creds / "opsgenie").write_text(values["opsgenie"])
    port, closed, closed_udp = free_port(), free_port(), free_port()
    config = tmp_path / "monitord.yaml"
    s = tmp_path / "secrets"
    config.write_text(f"""
daemon:
  state_path: {tmp_path / 'state.db'}
  metrics_listen: 127.0.0.1:{port}
  api_token: {{file: {s / 'api'}}}
defaults:
  intervals: {{tcp: 1s, bmc: 3s, snmp: 3s, postgres: 3s}}
  retry_interval: 500ms
  max_attempts: 2
  timeout: 800ms
paging:
  retry: {{initial: 200ms, max_delay: 500ms}}
  integrations:
    pd: {{type: pagerduty, routing_key: {{env: MONITORD_TEST_PD_KEY}}, url: "http://127.0.0.1:{echo}/v2/enqueue"}}
    og: {{type: opsgenie, api_key: {{credential: opsgenie}}, url: "http://127.0.0.1:{echo}"}}
    slack: {{type: slack, webhook_url: {{file: {s / 'slack'}}}}}
    hook: {{type: webhook, url: "http://127.0.0.1:{echo}/hook", secret: {{file: {s / 'hmac'}}}}}
    mail:
      type: email
      host: 127.0.0.1
      port: {closed}
      tls: starttls
      username: monitord
      password: {{file: {s / 'smtp'}}}
      from: noc@example.jp
      to: [noc@example.jp]
  policies: {{ops: {{tiers: [{{targets: [pd, og, slack, hook, mail]}}]}}}}
  routes: [{{policy: ops}}]
hosts:
  local:
    address: 127.0.0.1
    bmc: {{address: 127.0.0.1, port: {closed_udp}, username: admin, password: {{env: MONITORD_TEST_BMC}}}}
    snmp: {{port: {closed_udp}, community: {{file: {s / 'community'}}}}}
    checks:
      closed: {{kind: tcp, port: {closed}}}
      bmc: {{timeout: 2s}}
      resources: {{kind: snmp, timeout: 2s, snmp_timeout: 500ms, snmp_retries: 1}}
      db: {{kind: postgres, port: {closed}, user: monitord, password: {{file: {s / 'postgres'}}}}}
      beat: {{kind: heartbeat, token: {{file: {s / 'heartbeat'}}}, expect_every: 1h}}
""")
    daemon = Daemon(tmp_path, config, port)
    daemon.start(env={"MONITORD_TEST_PD_KEY": values["pagerduty"], "MONITORD_TEST_BMC": values["bmc"],
                      "CREDENTIALS_DIRECTORY": str(creds)})
    try:
        wait_for(lambda: daemon.incidents(), 30, "the closed port's incident")
        incident = daemon.incidents()[0][0]

        def retried() -> bool:
            db = sqlite3.connect(f"file:{daemon.state}?mode=ro", uri=True)
            try:
                rows = db.execute("SELECT integration, attempts FROM outbox").fetchall()
            finally:
                db.close()
            tried = dict(rows)
            return set(tried) == {"pd", "og", "slack", "hook", "mail"} and min(tried.values()) >= 1 \
                and tried["slack"] >= 2 and tried["mail"] >= 2

        wait_for(retried, 60, "every integration failing (and retrying)")
        for check in ("bmc", "resources", "db"):
            wait_for(lambda: daemon.value("monitord_probe_success", check=check) == 0, 60, f"{check} failing")
        base = f"http://127.0.0.1:{port}"
        # careless clients quote the secrets back in what the daemon stores
        assert post(f"{base}/api/v1/heartbeat/local", {"message": f"token {values['heartbeat']}"},
                    values["heartbeat"]) == 204
        assert post(f"{base}/api/v1/heartbeat/local", {}, "wrong") >= 400
        assert post(f"{base}/api/v1/incidents/{incident}/ack", {"by": f"script {values['api']}"}, values["api"]) == 200
        metrics = daemon.scrape()
        daemon.proc.popen.send_signal(signal.SIGTERM)
        assert daemon.proc.popen.wait(timeout=20) == 0
    finally:
        daemon.proc.stop(signal.SIGKILL)

    places = {"log": daemon.proc.output(), "metrics": metrics}
    db = sqlite3.connect(daemon.state)
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
        places[f"table {table}"] = "\n".join(map(repr, db.execute(f"SELECT * FROM {table}").fetchall()))
    db.close()
    for fmt in ("md", "html"):
        for lang in ("ja", "en"):
            places[f"report {fmt} {lang}"] = daemon.cli("report", "render", "--format", fmt, "--lang", lang,
                                                        str(incident))
    assert "[REDACTED]" in places["table outbox"]  # the echoing receivers did quote the keys
    assert "[REDACTED]" in places["table heartbeats"]
    leaks = [f"{name} in {where}" for name, value in values.items() for where, text in places.items()
             if value in text]
    assert leaks == []
