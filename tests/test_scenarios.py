"""Escalation end to end: the daemon against a real BMC (ipmi_sim), a real SNMP PDU and real
sshd, with fake hosts on loopback addresses that a power reset really "reboots".

Each scenario counts the power commands that reached the simulated hardware.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon, wait_for
from tests.loophosts import LoopHosts
from tests.support import free_port, need_binary

pytestmark = pytest.mark.integration

FAST_REMEDIATION = {
    "power_wait": "200ms", "power_timeout": "5s", "power_retries": 1, "boot_timeout": "6s",
    "verify_interval": "300ms", "grace": "2s", "max_resets": 3,
}


@pytest.fixture
def loop():
    need_binary("nft")
    with LoopHosts() as hosts:
        yield hosts


@pytest.fixture
def HOST(loop):  # noqa: N802 - reads like the constant it replaces
    """The fake host's address, private to this test."""
    return loop.address(2)


class Fleet:
    """Builds a config for fake hosts and runs the daemon on it."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.hosts: dict[str, dict] = {}
        self.top: dict = {}
        self.port = free_port()
        self.daemon = Daemon(tmp, tmp / "monitord.yaml", self.port)
        self.store: dict = {}  # daemon.store: on PostgreSQL with on_postgres()

    def on_postgres(self, dsn: str) -> None:
        """Keep the daemon's state in PostgreSQL at ``dsn`` (the journal is read there too)."""
        self.store = {"kind": "postgres", "dsn": self.secret("store-dsn", dsn)}
        self.daemon.dsn = dsn

    def secret(self, name: str, value: str) -> dict:
        path = self.tmp / f"{name}.secret"
        path.write_text(value + "\n")
        path.chmod(0o600)
        return {"file": str(path)}

    def add(self, name: str, address: str, *, bmc=None, bmc_password: str = "secret", pdu=None, ssh=None,
            checks: dict | None = None, **extra) -> None:
        host = {"address": address, "checks": checks or {"ping": {"count": 1, "reply_timeout": "1s"}}, **extra}
        if bmc is not None:
            host["bmc"] = {"address": "127.0.0.1", "port": bmc.port, "username": "admin",
                           "password": self.secret(f"{name}-bmc", bmc_password)}
        if pdu is not None:
            host["pdu"] = {"address": "127.0.0.1", "port": pdu.port, "outlet": 1,
                           "community": self.secret(f"{name}-pdu", "private")}
        if ssh is not None:
            cfg = ssh.config()
            host["ssh"] = {"port": cfg.port, "username": cfg.username, "key": {"file": str(cfg.key.file)},
                           "known_hosts": str(cfg.known_hosts)}
        self.hosts[name] = host

    def start(self, *args: str, remediation: dict | None = None) -> Daemon:
        config = {
            "daemon": {"state_path": str(self.tmp / "state.db"), "metrics_listen": f"127.0.0.1:{self.port}",
                       "log_level": "debug", **({"store": self.store} if self.store else {})},
            "defaults": {"intervals": {"ping": "2s", "http": "2s", "tcp": "2s"}, "retry_interval": "500ms",
                         "max_attempts": 2, "timeout": "1500ms", "remediation": FAST_REMEDIATION | (remediation or {})},
            "business_hours": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                               "start": "00:00", "end": "23:59:59"},
            "hosts": self.hosts,
            **self.top,
        }
        self.daemon.config.write_text(json.dumps(config, indent=1))  # JSON is YAML
        return self.daemon.start(*args)

    def stop(self) -> None:
        if self.daemon.proc:
            self.daemon.proc.stop(signal.SIGKILL)


@pytest.fixture
def fleet(tmp_path):
    f = Fleet(tmp_path)
    yield f
    f.stop()


RESET_AND_VERIFIED = [
    "decided bmc_read", "outcome bmc_read ok",
    "decided power_reset", "outcome power_reset ok",
    "decided wait_boot", "outcome wait_boot ok",
    "resolved",
]
"""The journal of a level-1 ladder that worked (:func:`ladder`)."""


def ladder(daemon: Daemon, host: str = "web1") -> list[str]:
    """The escalation part of a host's journal."""
    keep = ("decided", "outcome", "blocked", "page", "sla_started", "resolved", "reconciled")
    return [e for e in daemon.events(host) if e.split()[0] in keep]


def test_host_down_is_reset_once_and_resolved_after_ping_and_login(fleet, loop, HOST, make_ipmi_sim, make_ssh_host):
    bmc = make_ipmi_sim(hooks={"reset": f"(sleep 1; {loop.up_cmd(HOST)}) &"})
    ssh = make_ssh_host(HOST)
    fleet.add("web1", HOST, bmc=bmc, ssh=ssh)
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: "resolved" in ladder(daemon), 40, "the ladder to resolve")
    assert bmc.commands() == ["reset"]
    assert ladder(daemon) == RESET_AND_VERIFIED
    bmc_findings = [r for r in daemon.journal("web1") if r[0] == "outcome" and r[1] == "bmc_read"]
    assert bmc_findings  # the BMC's answer (power state, SEL, sensors) is in the journal
    wait_for(lambda: daemon.value("monitord_incidents_open") == 0, 20, "the incident to close")
    assert daemon.value("monitord_escalation_level", host="web1") == 0
    assert daemon.value("monitord_actions_total", kind="power_reset", outcome="ok") == 1


def test_bmc_unreachable_falls_back_to_the_pdu(fleet, loop, HOST, make_pdu_sim, make_ssh_host):
    pdu = make_pdu_sim(hooks={"on_on": loop.up_cmd(HOST)})
    ssh = make_ssh_host(HOST)

    class DeadBmc:
        port = free_port()  # nothing listens there

    fleet.add("web1", HOST, bmc=DeadBmc, pdu=pdu, ssh=ssh)
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: "resolved" in ladder(daemon), 90, "the ladder to resolve")
    assert pdu.commands(1) == ["off", "on"]
    steps = ladder(daemon)
    assert steps[:6] == ["decided bmc_read", "outcome bmc_read failed", "decided power_reset",
                         "outcome power_reset failed", "decided power_reset", "outcome power_reset ok"]
    reasons = [r[3] for r in daemon.journal("web1") if r[0] == "outcome" and r[2] == "failed"]
    assert reasons == ["timeout", "timeout"]


def test_host_that_never_returns_goes_to_level_2_then_level_3(fleet, loop, HOST, make_ipmi_sim, make_ssh_host):
    bmc = make_ipmi_sim()
    ssh = make_ssh_host(HOST)
    fleet.add("web1", HOST, bmc=bmc, ssh=ssh)
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: "sla_started engineer_on_site" in ladder(daemon), 60, "the dispatch decision")
    assert bmc.commands() == ["reset", "off", "on"]  # L1 reset, L2 power cycle (off, verified off, on)
    assert ladder(daemon)[2:] == [
        "decided power_reset", "outcome power_reset ok", "decided wait_boot", "outcome wait_boot failed",
        "decided power_cycle", "outcome power_cycle ok", "decided wait_boot", "outcome wait_boot failed",
        "page dispatch", "sla_started engineer_on_site",
    ]
    assert daemon.value("monitord_escalation_level", host="web1") == 3


def test_flapping_host_stops_at_the_reset_limit(fleet, loop, HOST, make_ipmi_sim, make_ssh_host):
    # every reset brings the host back for a few seconds only
    bmc = make_ipmi_sim(hooks={"reset": f"(sleep 1; {loop.up_cmd(HOST)}; sleep 5; {loop.down_cmd(HOST)}) &"})
    ssh = make_ssh_host(HOST)
    fleet.add("web1", HOST, bmc=bmc, ssh=ssh)
    daemon = fleet.start(remediation={"max_resets": 2})
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: "page dispatch" in ladder(daemon), 90, "level 3")
    assert bmc.commands() == ["reset", "reset"]
    assert ladder(daemon).count("resolved") == 2
    assert "blocked limit" in ladder(daemon)


def test_thirty_of_thirty_hosts_down_means_the_monitor_is_broken(fleet, loop, HOST, make_ipmi_sim):
    bmc = make_ipmi_sim()
    addresses = [loop.address(i) for i in range(10, 40)]
    for i, address in enumerate(addresses):
        fleet.add(f"h{i}", address, bmc=bmc)
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="h29", check="ping") == 1, 20, "hosts up")
    loop.down(*addresses)
    wait_for(lambda: sum(1 for e in daemon.events() if e == "blocked blast_radius") >= 25, 60, "the hosts to be blocked")
    time.sleep(2)
    assert bmc.commands() == []
    assert daemon.events().count("page blast_radius") == 1
    assert daemon.value("monitord_guard_blocks_total", guard="blast_radius") >= 25


def test_no_action_on_a_host_behind_a_failed_parent(fleet, loop, HOST, make_ipmi_sim):
    bmc = make_ipmi_sim()
    fleet.add("switch1", loop.address(3))
    fleet.add("web1", HOST, bmc=bmc, parents=["switch1"])
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "hosts up")
    loop.down(HOST, loop.address(3))
    wait_for(lambda: "blocked parent_down" in ladder(daemon), 30, "the parent guard")
    time.sleep(2)
    assert bmc.commands() == []
    assert "decided power_reset" not in ladder(daemon)


def test_maintenance_window_blocks_actions_and_silences_people_until_it_ends(
        fleet, loop, HOST, make_ipmi_sim, make_ssh_host, pagerduty, mailbox):
    bmc = make_ipmi_sim(hooks={"reset": f"(sleep 1; {loop.up_cmd(HOST)}) &"})
    fleet.add("web1", HOST, bmc=bmc, ssh=make_ssh_host(HOST), customer="acme")
    paging(fleet, pagerduty, mailbox)
    daemon = fleet.start(remediation={"grace": "1s"})
    daemon.cli("maintenance", "add", "--host", "web1", "--duration", "1h", "--reason", "disk swap")
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: "blocked maintenance" in ladder(daemon), 30, "the maintenance guard")
    wait_for(lambda: "held failure notice" in daemon.events("web1"), 30, "the customer's notice held")
    time.sleep(2)
    assert bmc.commands() == []
    assert "disk swap" in daemon.cli("maintenance", "list")
    assert pagerduty.bodies == [] and mailbox.messages == []  # nobody is told during the window
    assert daemon.events("web1").count("held failure notice") == 1
    daemon.cli("maintenance", "remove", "1")  # the window ends, the host is still down
    wait_for(lambda: "resolved" in ladder(daemon), 90, "the ladder to run after the window")
    assert bmc.commands() == ["reset"]
    wait_for(lambda: [k for _, _, k in pd_events(pagerduty) if k == "auto_fixed"], 30, "on-call told of the reset")
    wait_for(lambda: mailbox.messages, 30, "the customer's failure notice")


def test_kill_9_after_the_reset_never_resets_twice(fleet, loop, HOST, make_ipmi_sim, make_ssh_host):
    kill_9_after_the_reset(fleet, loop, HOST, make_ipmi_sim, make_ssh_host)


def test_on_postgres_a_host_is_reset_once_and_kill_9_after_the_reset_never_resets_twice(
        fleet, loop, HOST, make_ipmi_sim, make_ssh_host, postgres_dsn):
    fleet.on_postgres(postgres_dsn)
    kill_9_after_the_reset(fleet, loop, HOST, make_ipmi_sim, make_ssh_host)
    assert not (fleet.tmp / "state.db").exists()  # the journal read was PostgreSQL's
    wait_for(lambda: [i[3] is not None for i in fleet.daemon.incidents()] == [True], 20, "the incident closed")


def kill_9_after_the_reset(fleet, loop, HOST, make_ipmi_sim, make_ssh_host):  # noqa: N803
    # a slow BMC: it answers the reset after 2 s, so the daemon dies while the command is out
    bmc = make_ipmi_sim(hooks={"reset": f"sleep 2; (sleep 3; {loop.up_cmd(HOST)}) &"})
    ssh = make_ssh_host(HOST)
    fleet.add("web1", HOST, bmc=bmc, ssh=ssh)
    daemon = fleet.start(remediation={"boot_timeout": "20s"})
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: bmc.commands() == ["reset"], 40, "the reset")
    daemon.proc.stop(signal.SIGKILL)
    assert ladder(daemon)[-1] == "decided power_reset"  # journaled before the command; no outcome yet
    daemon.start()
    wait_for(lambda: "resolved" in ladder(daemon), 40, "the ladder to resolve after the restart")
    assert bmc.commands() == ["reset"]
    assert "reconciled power_reset ok" in ladder(daemon)


def test_dry_run_journals_but_never_acts(fleet, loop, HOST, make_ipmi_sim, pagerduty, mailbox):
    bmc = make_ipmi_sim()
    fleet.add("web1", HOST, bmc=bmc, customer="acme")
    paging(fleet, pagerduty, mailbox)
    daemon = fleet.start("--dry-run")
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: "blocked dry_run" in ladder(daemon), 30, "the dry-run decision")
    time.sleep(2)
    assert bmc.commands() == []
    assert any(r[0] == "note" and "would power_reset" in r[3] for r in daemon.journal("web1"))
    # the customer is not told; the journal says what they would have been told
    assert mailbox.messages == []
    assert any(r[:2] == ("held", "failure notice") and r[3].startswith("dry run: would notify the customer: [Failure] web1")
               for r in daemon.journal("web1"))


def test_wrong_bmc_password_is_a_typed_error_and_a_page(fleet, loop, HOST, make_ipmi_sim):
    bmc = make_ipmi_sim()
    fleet.add("web1", HOST, bmc=bmc, bmc_password="wrong")
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: "page dispatch" in ladder(daemon), 40, "the page")
    assert bmc.commands() == []
    reasons = [r[3] for r in daemon.journal("web1") if r[0] == "outcome" and r[2] == "failed"]
    assert reasons == ["auth", "auth"]
    assert daemon.alive()


def test_dead_service_is_restarted_over_ssh_and_verified(fleet, loop, HOST, make_ssh_host):
    ssh = make_ssh_host(HOST)
    port = free_port()
    ssh.add_unit("web", f"exec python3 -m http.server {port} --bind {HOST}")
    ssh.start_unit("web")
    fleet.add("web1", HOST, ssh=ssh, checks={
        "ping": {"count": 1, "reply_timeout": "1s"},
        "http": {"port": port, "restart": {"unit": "web", "grace": "3s"}},
    })
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="http") == 1, 20, "service up")
    ssh.kill_unit("web")
    wait_for(lambda: "resolved" in ladder(daemon), 30, "the restart to be verified")
    assert [c for c in ssh.calls() if "restart" in c] == ["systemctl restart web"]
    assert ladder(daemon) == ["decided service_restart", "outcome service_restart ok", "resolved"]
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="http") == 1, 10, "http OK again")


@pytest.mark.parametrize("through", ["store", "api"])
def test_off_hours_action_waits_for_the_emergency_contact(fleet, loop, HOST, make_ipmi_sim, make_ssh_host, through):
    bmc = make_ipmi_sim(hooks={"reset": f"(sleep 1; {loop.up_cmd(HOST)}) &"})
    ssh = make_ssh_host(HOST)
    fleet.add("web1", HOST, bmc=bmc, ssh=ssh)
    if through == "api":  # the answer goes through the daemon's API and wakes the waiting ladder
        fleet.top["daemon"] = {"state_path": str(fleet.tmp / "state.db"), "log_level": "debug",
                               "metrics_listen": f"127.0.0.1:{fleet.port}", "api_token": fleet.secret("api", "t0ken")}
    fleet.top["business_hours"] = {"days": ["mon"], "start": "00:00", "end": "00:00:01"}  # never business time
    daemon = fleet.start(remediation={"contact_first": ["power_reset"], "approval_timeout": "2m"})
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: "decided request_approval" in ladder(daemon), 30, "the approval request")
    time.sleep(1)
    assert bmc.commands() == []  # nothing happens before the contact answers
    answered = daemon.cli("approve", "web1", "--by", "customer-night-contact")
    assert answered.endswith("(the running daemon goes on at once)\n") == (through == "api")
    wait_for(lambda: "resolved" in ladder(daemon), 30, "the approved reset to resolve")
    assert bmc.commands() == ["reset"]
    assert ladder(daemon)[2:6] == ["decided request_approval", "outcome request_approval ok",
                                   "decided power_reset", "outcome power_reset ok"]


def test_a_failed_canary_means_the_monitor_is_broken(fleet, loop, HOST, make_ipmi_sim):
    bmc = make_ipmi_sim()
    fleet.add("gateway", loop.address(4))
    fleet.add("web1", HOST, bmc=bmc)
    fleet.top["escalation"] = {"blast_radius": {"canaries": ["gateway"]}}
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST, loop.address(4))
    wait_for(lambda: "blocked blast_radius" in ladder(daemon), 30, "the blast-radius guard")
    assert bmc.commands() == []
    assert any(r[0] == "page" and "reference target gateway" in r[3] for r in daemon.journal())


def test_quarantine_powers_off_and_keeps_the_host_off(fleet, loop, HOST, make_ipmi_sim):
    bmc = make_ipmi_sim()
    fleet.add("web1", HOST, bmc=bmc)
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    out = daemon.cli("quarantine", "--yes", "web1")
    assert "quarantined and powered off (through ipmi)" in out
    assert bmc.commands() == ["off"]
    loop.down(HOST)  # it is off now: pings fail
    wait_for(lambda: "blocked quarantined" in ladder(daemon), 30, "the quarantine guard")
    time.sleep(2)
    assert bmc.commands() == ["off"]  # never powered back on
    assert "released" in daemon.cli("release", "web1")
    assert bmc.commands() == ["off"]  # release does not power it on either
    events = daemon.events("web1")
    assert events.index("decided quarantine_power_off") < events.index("outcome quarantine_power_off ok")


def test_quarantine_and_release_go_through_the_running_daemon(fleet, loop, HOST, make_ipmi_sim):
    bmc = make_ipmi_sim()
    fleet.add("web1", HOST, bmc=bmc)
    fleet.top["daemon"] = {"state_path": str(fleet.tmp / "state.db"), "metrics_listen": f"127.0.0.1:{fleet.port}",
                           "log_level": "debug", "api_token": fleet.secret("api", "api-t0ken")}
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    out = daemon.cli("quarantine", "--yes", "web1")
    assert "quarantined and powered off (through ipmi)" in out and "done by the running daemon" in out
    assert bmc.commands() == ["off"]
    loop.down(HOST)
    wait_for(lambda: "blocked quarantined" in ladder(daemon), 30, "the quarantine guard")
    out = daemon.cli("release", "web1")
    assert "released" in out and "done by the running daemon" in out
    assert bmc.commands() == ["off"]  # never powered back on, by the ladder or the release
    events = daemon.events("web1")
    assert events.index("decided quarantine_power_off") < events.index("outcome quarantine_power_off ok")
    assert "quarantine released" in events


class HttpCapture:
    """A real HTTP receiver (threaded stdlib server) recording JSON bodies; answers 202."""

    def __init__(self):
        import http.server
        import threading

        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v2/enqueue"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def actions(self) -> list[str]:
        return [b["event_action"] for b in self.bodies]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pagerduty():
    capture = HttpCapture()
    yield capture
    capture.close()


@pytest.fixture
def mailbox():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message as MessageHandler

    messages = []

    class Keep(MessageHandler):
        def handle_message(self, message):
            messages.append(message)

    controller = Controller(Keep(), hostname="127.0.0.1", port=free_port())
    controller.start()
    controller.messages = messages
    yield controller
    controller.stop()


def paging(fleet, pagerduty, mailbox, sender: str = "noc@example.jp", language: str = "en") -> None:
    """Route every page to PagerDuty (one person, one tier) and customer acme's notices to the mailbox."""
    fleet.top["paging"] = {
        "integrations": {
            "pd": {"type": "pagerduty", "url": pagerduty.url, "routing_key": fleet.secret("pd", "R" * 32)},
            "mail": {"type": "email", "host": "127.0.0.1", "port": mailbox.port, "tls": "none", "from": sender},
        },
        "people": {"aoki": {"notify": ["pd"]}},
        "policies": {"ops": {"tiers": [{"targets": ["aoki"], "ack_timeout": "15m"}]}},
        "routes": [{"policy": "ops"}],
    }
    fleet.top["customers"] = {"acme": {"notify": ["mail"], "emails": ["it@acme.example"], "language": language}}


def test_incident_paged_acknowledged_and_resolved_through_real_receivers(
        fleet, loop, HOST, make_ipmi_sim, make_ssh_host, pagerduty, mailbox):
    import email.header

    bmc = make_ipmi_sim()
    ssh = make_ssh_host(HOST)
    fleet.add("web1", HOST, bmc=bmc, ssh=ssh, customer="acme")
    paging(fleet, pagerduty, mailbox, sender="監視センター <noc@example.jp>", language="ja")
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: "trigger" in pagerduty.actions(), 60, "the level 3 page to reach PagerDuty")
    [trigger] = pagerduty.bodies
    assert trigger["routing_key"] == "R" * 32 and trigger["dedup_key"].startswith("monitord-page-")
    assert (trigger["payload"]["source"], trigger["payload"]["severity"]) == ("web1", "critical")
    assert "dispatch an engineer on site" in trigger["payload"]["summary"]
    assert trigger["payload"]["custom_details"]["tried"]  # what was tried travels with the page

    wait_for(lambda: mailbox.messages, 20, "the customer's failure notice")
    notice = mailbox.messages[0]
    subject = str(email.header.make_header(email.header.decode_header(notice["Subject"])))
    assert subject.startswith("【障害発生】web1") and notice["To"] == "it@acme.example"

    [(incident_id, _, check, closed_at)] = daemon.incidents()
    assert (check, closed_at) == ("ping", None)
    assert "1 page(s) acknowledged" in daemon.cli("ack", str(incident_id), "--by", "aoki")
    wait_for(lambda: "acknowledge" in pagerduty.actions(), 30, "the acknowledgement to reach PagerDuty")
    assert "engineer_on_site" in daemon.cli("arrived", str(incident_id))

    loop.up(HOST)  # the engineer fixed it
    wait_for(lambda: "resolve" in pagerduty.actions(), 30, "the resolve to reach PagerDuty")
    assert pagerduty.actions() == ["trigger", "acknowledge", "resolve"]  # each exactly once
    assert {b["dedup_key"] for b in pagerduty.bodies} == {trigger["dedup_key"]}
    wait_for(lambda: len(mailbox.messages) == 2, 20, "the recovery notice")
    wait_for(lambda: daemon.incidents()[0][3] is not None, 20, "the incident to close")
    report = daemon.cli("report", "show", str(incident_id))
    assert "障害報告書" in report and "web1" in report


# -- the incident lifecycle at its edges (issue #8) ------------------------------------------------


def pd_events(pagerduty) -> list[tuple[str, str, str]]:
    """(action, dedup_key, kind) of every PagerDuty event, in arrival order."""
    return [(b["event_action"], b["dedup_key"], (b.get("payload") or {}).get("custom_details", {}).get("kind", ""))
            for b in pagerduty.bodies]


def subjects(mailbox) -> list[str]:
    import email.header

    return [str(email.header.make_header(email.header.decode_header(m["Subject"]))) for m in mailbox.messages]


def crash_a_customer_host(fleet, loop, HOST, bmc, ssh, pagerduty, mailbox):  # noqa: N803
    """web1 of customer acme, whose BMC reset brings it back on the network a second later; crash it."""
    bmc.set_hook("reset", f"(sleep 1; {loop.up_cmd(HOST)}) &")
    fleet.add("web1", HOST, bmc=bmc, ssh=ssh, customer="acme")
    paging(fleet, pagerduty, mailbox)
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    return daemon, bmc


def test_ping_back_but_no_login_is_not_a_recovery(fleet, loop, HOST, make_ipmi_sim, make_ssh_host, pagerduty,
                                                   mailbox):
    ssh = make_ssh_host(HOST)
    ssh.stop()  # the host comes back on ping, but every SSH login is refused
    daemon, bmc = crash_a_customer_host(fleet, loop, HOST, make_ipmi_sim(), ssh, pagerduty, mailbox)
    wait_for(lambda: "page dispatch" in ladder(daemon), 60, "the dispatch")
    # the ping check recovered long ago; its recovery is verified (login refused), retried, then given up
    wait_for(lambda: any(r[0] == "note" and "gave up verifying" in (r[3] or "") for r in daemon.journal("web1")),
             60, "the recovery's verification to give up")
    assert bmc.commands() == ["reset", "off", "on"]
    assert "resolved" not in ladder(daemon)
    [(incident_id, _, check, closed_at)] = daemon.incidents()  # one incident for the whole episode
    assert (check, closed_at) == ("ping", None)
    assert "decided verify" in ladder(daemon) and "outcome verify failed" in ladder(daemon)
    wait_for(lambda: [e[0] for e in pd_events(pagerduty)] == ["trigger"], 20, "the dispatch page")
    time.sleep(2)  # nothing else follows: no resolve, no recovery notice
    assert [(a, k) for a, _, k in pd_events(pagerduty)] == [("trigger", "dispatch")]
    [failure] = subjects(mailbox)  # the failure notice, and no "[Recovered]"
    assert failure.startswith("[Failure] web1")


def test_host_reset_at_level_1_is_resolved_everywhere_and_on_call_informed(
        fleet, loop, HOST, make_ipmi_sim, make_ssh_host, pagerduty, mailbox):
    daemon, bmc = crash_a_customer_host(fleet, loop, HOST, make_ipmi_sim(), make_ssh_host(HOST), pagerduty, mailbox)
    wait_for(lambda: "resolved" in ladder(daemon), 40, "the ladder to resolve")
    wait_for(lambda: len(pagerduty.bodies) == 2 and len(mailbox.messages) == 2, 30, "the info page and the notices")
    time.sleep(2)
    assert bmc.commands() == ["reset"]
    events = pd_events(pagerduty)
    assert [(a, k) for a, _, k in events] == [("trigger", "auto_fixed"), ("resolve", "")]
    assert events[0][1] == events[1][1]  # resolved under the key it was triggered with
    assert pagerduty.bodies[0]["payload"]["severity"] == "info"
    failure, recovery = mailbox.messages
    assert subjects(mailbox)[0].startswith("[Failure] web1") and subjects(mailbox)[1] == "[Recovered] web1"
    assert failure["X-Monitord-Dedup-Key"] == recovery["X-Monitord-Dedup-Key"]
    assert (failure["X-Monitord-Action"], recovery["X-Monitord-Action"]) == ("trigger", "resolve")
    [(_, _, _, closed_at)] = daemon.incidents()
    assert closed_at is not None
    assert "paramiko" not in (fleet.tmp / "daemon.log").read_text()  # its INFO chatter is off, even at debug


def test_bmc_rejecting_the_credentials_pages_at_once_and_the_dispatch_says_why(
        fleet, loop, HOST, make_ipmi_sim, make_ssh_host, pagerduty, mailbox):
    bmc = make_ipmi_sim()
    fleet.add("web1", HOST, bmc=bmc, bmc_password="wrong", ssh=make_ssh_host(HOST), customer="acme")
    paging(fleet, pagerduty, mailbox)
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: len(pagerduty.bodies) == 2, 60, "the BMC page and the dispatch page")
    cause = "BMC authentication failed for web1 — fix the credentials or reset it by hand"
    (_, auth_key, auth_kind), (_, dispatch_key, dispatch_kind) = pd_events(pagerduty)
    assert (auth_kind, dispatch_kind) == ("bmc_auth", "dispatch")
    assert pagerduty.bodies[0]["payload"]["summary"] == f"web1: {cause}"
    assert cause in pagerduty.bodies[1]["payload"]["summary"]
    assert pagerduty.bodies[1]["payload"]["custom_details"]["causes"] == [cause]
    steps = ladder(daemon)
    assert steps[:3] == ["decided bmc_read", "outcome bmc_read failed", "page bmc_auth"]  # journaled, then paged
    assert steps.count("page bmc_auth") == 1 and bmc.commands() == []
    loop.up(HOST)  # someone reset it by hand
    wait_for(lambda: "resolved" in ladder(daemon), 40, "the recovery to be verified")
    wait_for(lambda: len(pagerduty.bodies) == 4, 20, "both pages to resolve")
    assert sorted((a, k) for a, k, _ in pd_events(pagerduty)[2:]) == sorted(
        [("resolve", auth_key), ("resolve", dispatch_key)])
    wait_for(lambda: len(mailbox.messages) == 2, 20, "the recovery notice")
    assert [s.split(":")[0] for s in subjects(mailbox)] == ["[Failure] web1", "[Recovered] web1"]


def test_a_restart_deferred_past_a_reboot_is_cancelled_when_the_service_recovered(
        fleet, loop, HOST, make_ipmi_sim, make_ssh_host):
    bmc = make_ipmi_sim(hooks={"reset": f"(sleep 1; {loop.up_cmd(HOST)}) &"})
    ssh = make_ssh_host(HOST)
    port = free_port()
    ssh.add_unit("web", f"exec python3 -m http.server {port} --bind {HOST}")
    ssh.start_unit("web")
    fleet.add("web1", HOST, bmc=bmc, ssh=ssh, checks={
        "ping": {"count": 1, "reply_timeout": "1s"},
        "http": {"port": port, "restart": {"unit": "web", "grace": "1s"}},
    })
    daemon = fleet.start(remediation={"grace": "8s"})
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="http") == 1, 20, "service up")
    loop.down(HOST)  # the whole host: ping and http fail; ping starts the host ladder, http joins it
    # http's confirmation waited behind the host's ladder (queued, or deferred to the end of the grace period)
    wait_for(lambda: "cancelled confirmed" in daemon.events("web1"), 60, "the stale restart to be cancelled")
    time.sleep(1)
    assert bmc.commands() == ["reset"]
    assert [c for c in ssh.calls() if "restart" in c] == []  # http answered again: never restarted
    assert "decided service_restart" not in ladder(daemon)
    assert [check for _, _, check, _ in daemon.incidents()] == ["ping"]  # http joined the host's incident


def settling_web(fleet, HOST, bmc, ssh, ping_attempts: int) -> Daemon:
    """web1 whose ping fails at once but is confirmed late (many attempts), and whose http is
    confirmed at its first failure: http is confirmed while ping is soft."""
    port = free_port()
    ssh.add_unit("web", f"exec python3 -m http.server {port} --bind {HOST}")
    ssh.start_unit("web")
    fleet.add("web1", HOST, bmc=bmc, ssh=ssh, checks={
        "ping": {"count": 1, "reply_timeout": "1s", "interval": "2s", "retry_interval": "1s",
                 "max_attempts": ping_attempts},
        "http": {"port": port, "interval": "5s", "max_attempts": 1, "restart": {"unit": "web", "grace": "1s"}},
    })
    daemon = fleet.start(remediation={"grace": "1s"})
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="http") == 1, 20, "service up")
    return daemon


def test_a_service_confirmed_while_ping_is_soft_joins_the_host_reset_not_restarted(
        fleet, loop, HOST, make_ipmi_sim, make_ssh_host):
    bmc = make_ipmi_sim(hooks={"reset": f"(sleep 1; {loop.up_cmd(HOST)}) &"})
    ssh = make_ssh_host(HOST)
    daemon = settling_web(fleet, HOST, bmc, ssh, 12)
    loop.down(HOST)
    wait_for(lambda: "deferred host_down_settling" in daemon.events("web1"), 60, "http's confirmation to wait for ping")
    wait_for(lambda: "resolved" in ladder(daemon), 90, "the host to be reset and verified")
    assert bmc.commands() == ["reset"]
    assert [c for c in ssh.calls() if "restart" in c] == []
    assert "decided service_restart" not in ladder(daemon)
    assert len(daemon.incidents()) == 1  # ping joined the incident http's confirmation opened


def test_a_ping_blip_lets_the_service_restart_once_ping_answers(fleet, loop, HOST, make_ipmi_sim, make_ssh_host):
    bmc = make_ipmi_sim()
    ssh = make_ssh_host(HOST)
    daemon = settling_web(fleet, HOST, bmc, ssh, 30)
    ssh.kill_unit("web")
    loop.down(HOST)  # a blip: ping fails (soft) while http is confirmed down
    wait_for(lambda: "deferred host_down_settling" in daemon.events("web1"), 60, "http's confirmation to wait for ping")
    assert [c for c in ssh.calls() if "restart" in c] == []
    loop.up(HOST)  # ping answers again before it is confirmed; http stays down
    wait_for(lambda: [c for c in ssh.calls() if "restart" in c], 90, "the service restart")
    wait_for(lambda: "resolved" in ladder(daemon), 60, "the restart to be verified")
    assert len([c for c in ssh.calls() if "restart" in c]) == 1 and bmc.commands() == []


def test_blast_radius_counts_hosts_down_now(fleet, loop, make_ipmi_sim, make_ssh_host):
    a, b, c = loop.address(20), loop.address(21), loop.address(22)
    bmc_a = make_ipmi_sim(hooks={"reset": f"(sleep 1; {loop.up_cmd(a)}) &"})
    bmc_b = make_ipmi_sim(hooks={"reset": f"(sleep 1; {loop.up_cmd(b)}) &"})
    fleet.add("a", a, bmc=bmc_a, ssh=make_ssh_host(a))
    fleet.add("b", b, bmc=bmc_b, ssh=make_ssh_host(b))
    fleet.add("c", c)
    daemon = fleet.start(remediation={"grace": "1s"})
    wait_for(lambda: all(daemon.value("monitord_probe_success", host=h, check="ping") == 1 for h in "abc"), 20,
             "hosts up")
    loop.down(a)
    wait_for(lambda: "resolved" in ladder(daemon, "a"), 40, "a to be reset and verified")
    wait_for(lambda: daemon.value("monitord_probe_success", host="a", check="ping") == 1, 20, "a's ping to recover")
    loop.down(b)  # one host down now, a second within the window: a host problem, not the monitor's
    wait_for(lambda: "resolved" in ladder(daemon, "b"), 40, "b to be reset and verified")
    assert (bmc_a.commands(), bmc_b.commands()) == (["reset"], ["reset"])
    assert "blocked blast_radius" not in daemon.events()
    assert not [r for r in daemon.journal() if r[1] == "blast_radius"]


def test_monitor_side_outages_are_incidents_paged_once_and_resolved(fleet, loop, make_ipmi_sim, make_ssh_host,
                                                                      pagerduty, mailbox):
    addresses = [loop.address(i) for i in (30, 31, 32)]
    bmcs = [make_ipmi_sim(hooks={"reset": f"(sleep 1; {loop.up_cmd(a)}) &"}) for a in addresses]
    for i, (address, bmc) in enumerate(zip(addresses, bmcs)):
        fleet.add(f"h{i}", address, bmc=bmc, ssh=make_ssh_host(address), customer="acme",
                  checks={"ping": {"count": 1, "reply_timeout": "1s", "max_attempts": 3}})
    paging(fleet, pagerduty, mailbox)
    daemon = fleet.start(remediation={"grace": "1s"})
    wait_for(lambda: all(daemon.value("monitord_probe_success", host=f"h{i}", check="ping") == 1 for i in range(3)),
             20, "hosts up")

    def blast_events():
        return [(a, k) for a, key, k in pd_events(pagerduty) if key in blast_keys()]

    def blast_keys():
        return {key for a, key, k in pd_events(pagerduty) if k == "blast_radius"}

    loop.down(*addresses)  # the bridge to every host is cut
    wait_for(lambda: sum(1 for e in daemon.events() if e == "blocked blast_radius") == 3, 60, "3 hosts held")
    wait_for(lambda: blast_events() == [("trigger", "blast_radius")], 20, "the monitor-side page")
    loop.up(*addresses[:2])  # two come back; h2 is really down: after the guard clears, its ladder resets it
    wait_for(lambda: "resolved" in ladder(daemon, "h2"), 60, "h2's ladder after the guard cleared")
    wait_for(lambda: ("resolve", "") in blast_events(), 20, "the monitor-side page to resolve")
    assert [b.commands() for b in bmcs] == [[], [], ["reset"]]
    wait_for(lambda: all(daemon.value("monitord_probe_success", host=f"h{i}", check="ping") == 1 for i in range(3)),
             20, "hosts up again")
    loop.down(*addresses)  # a second outage of the monitor's side: paged again
    wait_for(lambda: len([e for e in blast_events() if e[0] == "trigger"]) == 2, 60, "the second episode's page")
    wait_for(lambda: sum(1 for e in daemon.events() if e == "blocked blast_radius") == 6, 60, "3 hosts held again")
    loop.up(*addresses)
    wait_for(lambda: len([e for e in blast_events() if e[0] == "resolve"]) == 2, 60, "the second episode to clear")
    time.sleep(2)
    assert [b.commands() for b in bmcs] == [[], [], ["reset"]]
    assert len(blast_keys()) == 2 and sorted(blast_events()) == sorted(
        [("trigger", "blast_radius"), ("resolve", "")] * 2)
    monitor = [i for i in daemon.incidents() if i[1] == "(monitor)"]
    assert len(monitor) == 2 and all(closed for *_, closed in monitor)
    # customers heard only of h2, which was really down: one failure notice, one recovery
    assert [s.split(":")[0] for s in subjects(mailbox)] == ["[Failure] h2", "[Recovered] h2"]
    # on-call heard only of the episodes and of h2's automatic reset (info, resolved)
    others = [(a, k) for a, key, k in pd_events(pagerduty) if key not in blast_keys()]
    assert others == [("trigger", "auto_fixed"), ("resolve", "")]
    assert daemon.events().count("page blast_radius") == 2


def crash_a_host_with_a_second_check(fleet, loop, HOST, bmc, ssh, pagerduty, mailbox, ping: dict,  # noqa: N803
                                     **remediation):
    """web1 of customer acme, with ping and a tcp check of its SSH port; crash it. tcp needs 8 failed
    attempts to be confirmed, long after ping: it is confirmed while the host's ladder runs."""
    fleet.add("web1", HOST, bmc=bmc, ssh=ssh, customer="acme", checks={
        "ping": ping, "tcp": {"port": ssh.config().port, "max_attempts": 8},  # no restart method: alone, it pages
    })
    paging(fleet, pagerduty, mailbox)
    daemon = fleet.start(remediation=remediation)
    wait_for(lambda: both_checks_ok(daemon), 20, "host up")
    loop.down(HOST)
    return daemon


def both_checks_ok(daemon) -> bool:
    return all(daemon.value("monitord_probe_success", host="web1", check=c) == 1 for c in ("ping", "tcp"))


def tcp_joined(daemon, incident_id: int) -> bool:
    return ("confirmed", "tcp") in [row[:2] for row in daemon.incident_journal(incident_id)]


def assert_one_incident_paged_and_told_once(daemon, pagerduty, mailbox, kind: str) -> None:
    """One incident, closed; one page of ``kind`` resolved under its key; one failure notice and
    one recovery under theirs."""
    [(_, _, _, closed_at)] = daemon.incidents()
    assert closed_at is not None
    events = pd_events(pagerduty)
    assert [(a, k) for a, _, k in events] == [("trigger", kind), ("resolve", "")]
    assert events[0][1] == events[1][1]
    assert [s.split(":")[0] for s in subjects(mailbox)] == ["[Failure] web1", "[Recovered] web1"]
    assert mailbox.messages[0]["X-Monitord-Dedup-Key"] == mailbox.messages[1]["X-Monitord-Dedup-Key"]
    assert daemon.value("monitord_incidents_open") == 0


def test_partial_loss_while_a_host_boots_folds_into_its_incident(fleet, loop, HOST, make_ipmi_sim, make_ssh_host,
                                                                  pagerduty, mailbox):
    # the reset "boots" the host: every second ping answered, sshd (and tcp) not yet, until the test lets the
    # boot finish (boot_timeout is long)
    bmc = make_ipmi_sim(hooks={"reset": f"(sleep 1; {loop.booting_cmd(HOST)}) &"})
    daemon = crash_a_host_with_a_second_check(fleet, loop, HOST, bmc, make_ssh_host(HOST), pagerduty, mailbox,
                                              {"count": 4, "packet_interval": "100ms", "reply_timeout": "1s"},
                                              boot_timeout="3m")
    wait_for(lambda: "decided wait_boot" in ladder(daemon), 60, "the reset")
    [(incident_id, _, check, _)] = daemon.incidents()
    assert check == "ping"

    def folded():
        return [reason for event, check, _, reason in daemon.incident_journal(incident_id)
                if event == "note" and check == "ping" and reason.startswith("warning folded into the ladder")]

    wait_for(folded, 60, "the partial loss while booting to fold into the incident")
    wait_for(lambda: tcp_joined(daemon, incident_id), 60, "the tcp check to join the incident")
    assert "% loss" in folded()[0] and ladder(daemon)[-1] == "decided wait_boot"  # still booting
    loop.up(HOST)  # booted: every ping answered, sshd reachable
    wait_for(lambda: "resolved" in ladder(daemon), 60, "the ladder to verify the boot")
    wait_for(lambda: both_checks_ok(daemon), 20, "both checks OK again")
    wait_for(lambda: len(pagerduty.bodies) == 2 and len(mailbox.messages) == 2, 30, "the info page and the notices")
    time.sleep(2)  # nothing else follows
    assert bmc.commands() == ["reset"]
    assert ladder(daemon) == RESET_AND_VERIFIED
    # one incident (tcp joined it); on-call got no check_warning and no page for tcp, only the level-1
    # reset's info page; the customer one failure notice (none for tcp) and one recovery
    assert_one_incident_paged_and_told_once(daemon, pagerduty, mailbox, "auto_fixed")
    assert "check_warning" not in [decision for _, decision, _, _ in daemon.journal()]  # not even one held


def test_bmc_sensors_without_sdr_are_incomplete_never_ok(fleet, loop, HOST, make_ipmi_sim, make_ssh_host, pagerduty,
                                                         mailbox):
    bmc = make_ipmi_sim(sdr=False)  # ipmitool sensor: "Err in cmd get sensor sdr info", exit 0
    fleet.add("web1", HOST, bmc=bmc, ssh=make_ssh_host(HOST), customer="acme")
    paging(fleet, pagerduty, mailbox)
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="ping") == 1, 20, "host up")
    loop.down(HOST)  # and it never comes back
    wait_for(lambda: "sla_started engineer_on_site" in ladder(daemon), 60, "the dispatch decision")
    wait_for(lambda: [a for a, _, _ in pd_events(pagerduty)] == ["trigger"], 20, "the dispatch page")
    assert bmc.commands() == ["reset", "off", "on"]
    [findings] = [d["findings"] for d in daemon.details("outcome", "bmc_read")]
    assert "sensors incomplete (ipmitool: Err in cmd get sensor sdr info" in findings
    assert "sensors ok" not in findings and findings.startswith("power on")
    [page] = pagerduty.bodies
    assert page["payload"]["custom_details"]["kind"] == "dispatch"
    assert page["payload"]["custom_details"]["bmc"] == findings  # the engineer reads the same findings
    assert "sensors ok" not in json.dumps(page)


def test_a_second_check_failing_during_a_dispatch_joins_the_incident(fleet, loop, HOST, make_ipmi_sim, make_ssh_host,
                                                                     pagerduty, mailbox):
    bmc = make_ipmi_sim()  # resets do not bring the host back: level 3
    daemon = crash_a_host_with_a_second_check(fleet, loop, HOST, bmc, make_ssh_host(HOST), pagerduty, mailbox,
                                              {"count": 1, "reply_timeout": "1s"})
    wait_for(lambda: "sla_started engineer_on_site" in ladder(daemon), 60, "the dispatch")
    [(incident_id, _, check, _)] = daemon.incidents()
    assert check == "ping"
    wait_for(lambda: tcp_joined(daemon, incident_id), 60, "tcp to join the incident")
    wait_for(lambda: len(pagerduty.bodies) == 1 and len(mailbox.messages) == 1, 20, "the dispatch page and the notice")
    loop.up(HOST)  # the engineer brought it back
    wait_for(lambda: "resolved" in ladder(daemon), 60, "the recovery to be verified")
    wait_for(lambda: both_checks_ok(daemon), 20, "both checks OK again")
    wait_for(lambda: len(pagerduty.bodies) == 2 and len(mailbox.messages) == 2, 30, "the resolve and the recovery notice")
    time.sleep(2)  # nothing else follows
    assert bmc.commands() == ["reset", "off", "on"]
    assert_one_incident_paged_and_told_once(daemon, pagerduty, mailbox, "dispatch")  # no service_failed for tcp
    assert ladder(daemon).count("resolved") == 1 and ladder(daemon).count("page dispatch") == 1
