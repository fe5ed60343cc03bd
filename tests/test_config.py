"""Config loading: every invalid file gives its exact message; defaults and cascade."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from pathlib import Path

import pytest

from monitord.edge import cli

from monitord.config import yamlsrc
from monitord.config import ConfigError, load_config, parse_config
from monitord.shared.fields import format_duration, parse_duration

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent
KINDS = "ping, tcp, http, https, ftp, smtp, pop, imap, ssh, postgres, mysql, plugin, heartbeat, bmc, snmp, logs, disk, backup, process, alertmanager"

INVALID = {
    "unknown-key-typo": ["defaults.intervalls: unknown key (did you mean 'intervals'?) (line 2)"],
    "unknown-check-key": ["hosts.web1.checks.http.prot: unknown key (did you mean 'port'?) (line 6)"],
    "unknown-kind": [f"hosts.web1.checks.web.kind: unknown check kind 'htp' (did you mean 'http'?); known kinds: {KINDS} (line 6)"],
    "check-name-not-a-kind": [f"hosts.web1.checks.frontend.kind: unknown check kind 'frontend'; known kinds: {KINDS} (line 6)"],
    "bad-duration": ["hosts.web1.checks.ping.interval: invalid duration '10 minutes': write it like 10m, 90s or 1h30m (line 6)"],
    "missing-address": ["hosts.web1.address: required key is missing (line 3)"],
    "unknown-group": ["hosts.web1.groups[0]: unknown group 'wbe' (did you mean 'web'?) (line 6)"],
    "unknown-parent": ["hosts.web1.parents[0]: unknown host 'core-sw2' (did you mean 'core-sw1'?) (line 6)"],
    "parent-cycle": ["hosts.a.parents: parents form a cycle through this host (line 4)"],
    "timeout-not-below-interval": ["hosts.web1.checks.ping: timeout 2m must be shorter than the interval 1m (line 7)"],
    "ping-timeout-too-short": ["hosts.web1.checks.ping: timeout 2s must be longer than a ping run (5 packets 200ms apart, then up to 2s for the last reply) (line 7)"],
    "retry-above-interval": ["hosts.web1.checks.ssh: retry_interval 5m must not exceed the interval 30s (line 5)"],
    "duplicate-key": ["hosts.web1.address: duplicate key (first set on line 3) (line 4)"],
    "bad-date": ["invalid YAML: invalid date '2026-02-30': day is out of range for month (line 2)"],
    "yaml-syntax": ["invalid YAML: expected ',' or '}', but got ':' (line 3)"],
    "inline-secret": ["hosts.web1.bmc.password: secrets are never written inline: give {file: PATH}, {env: VAR} or {credential: NAME} (line 7)"],
    "secret-two-sources": ["hosts.web1.ssh.key: give exactly one of file, env or credential (line 5)"],
    "port-out-of-range": ["hosts.web1.checks.tcp.port: input should be less than or equal to 65535 (line 6)"],
    "bad-host-name": ["hosts[\"web 1\"]: invalid name 'web 1': use letters, digits, '.', '_' and '-' (line 2)"],
    "unknown-interval-kind": ["defaults.intervals: unknown check kind 'pnig' (did you mean 'ping'?) (line 2)"],
    "pdu-without-community": ["hosts.web1.pdu: snmp_version 2c needs community (a file, env or credential reference) (line 4)"],
    "not-a-mapping": ["the top level must be a mapping of keys (line 1)"],
    "undecodable-bytes": ["not UTF-8 text: byte 0xe9 cannot be decoded (line 4)"],
    "control-character": ["invalid YAML: character U+0001 is not allowed (line 4)"],
    "control-character-escaped": ["hosts.web1.address: control character U+0000 is not allowed (line 3)"],
    "alias-bomb": ["x-lol.l4[7]: aliases repeat more than 100000 values (a YAML alias bomb?) (line 6)"],
    "alias-self-reference": ["groups.web.defaults: alias *web refers to the node that defines it (line 4)"],
    "alias-nesting-too-deep": ["x-deep.a2[0][0][0][0][0][0]: alias *a1 nests deeper than 64 levels (line 4)"],
    "nesting-too-deep": ["hosts.web1.description: nests deeper than 64 levels (line 4)"],
    "complex-key": ["hosts: a key must be a plain value, not a list or mapping (line 2)"],
    "duration-inf": ["hosts.web1.checks.ping.interval: .inf is not a finite number (quote it if it is text) (line 6)"],
    "duration-nan": ["hosts.web1.checks.ping.timeout: .nan is not a finite number (quote it if it is text) (line 6)"],
    "duration-400-digits": ["defaults.timeout: number too large (400 digits) (line 2)"],
    "duration-too-long": ["defaults.remediation.reset_window: duration must be at most 3650d (line 3)"],
    "duration-sexagesimal": ["hosts.web1.checks.ping.interval: invalid duration '1:30': write it like 10m, 90s or 1h30m (line 6)"],
    "metrics-port-out-of-range": ["daemon.metrics_listen: port 99999 is out of range 0-65535 (line 2)"],
    "maintenance-unknown-tag": ["maintenance.firmware.tags[0]: unknown tag 'glod' (did you mean 'gold'?) (line 5)"],
    "route-unknown-kind": ["paging.routes[0].kinds[1]: input should be 'dispatch', 'blast_radius', 'sla_breach', "
                           "'approval', 'bmc_auth', 'service_failed', 'action_held', 'vendor', 'hardware_ticket', "
                           "'backup_ticket', 'check_warning', 'threshold' or 'auto_fixed' (line 8)"],
    "route-unknown-group-and-tag": [
        "paging.routes[0].groups[0]: unknown group 'wbe' (did you mean 'web'?) (line 9)",
        "paging.routes[1].tags[0]: unknown tag 'platinum' (no host has it) (line 10)",
    ],
    "schedule-unknown-timezone": ["paging.schedules.primary.timezone: unknown time zone 'Asia/Tokio' (line 7)"],
    "schedule-handoff-number": ["paging.schedules.primary.handoff: invalid time 600: write it like 9:00, 17:30 or 23:59:59 (line 7)"],
    "unknown-customer": ["hosts.web1.customer: unknown customer 'acme' (line 4)"],
    "customer-notices-not-by-email": [
        "customers.acme.notify[0]: integration 'slack' is of type slack: notices are e-mails (line 6)",
        "customers.globex.emails: notices need both notify (an e-mail integration) and emails (line 7)",
    ],
    "ladder-steps": [
        "groups.appliances.defaults.remediation.ladder[0]: a ladder step is exactly one of restart, power or vendor (got restart, power) (line 6)",
        "groups.appliances.defaults.remediation.ladder[1].restart: input should be 'services' or 'processes' (line 7)",
        "groups.appliances.defaults.remediation.ladder[2]: a ladder step is exactly one of restart, power or vendor (line 8)",
    ],
    "ladder-cannot-act": [
        "groups.appliances.defaults.remediation.ladder[1].vendor: unknown vendor 'iaaas' (did you mean 'iaas'?) (line 5)",
        "hosts.nopower: its remediation.ladder has a power step but the host has no bmc:, vm: or pdu: block (line 7)",
        "hosts.nopower: its remediation.ladder has a restart step but the host has no ssh: block (line 7)",
        "hosts.nossh: its remediation.ladder has a restart step but the host has no ssh: block (line 15)",
    ],
    "store-postgres-without-dsn": ["daemon.store: kind postgres needs dsn: {file: PATH} (or env, credential) (line 2)"],
    "store-dsn-inline": [  # the password written inline is not repeated
        "daemon.store.dsn: secrets are never written inline: give {file: PATH}, {env: VAR} or {credential: NAME} (line 5)",
        "daemon.store.pool_size: input should be greater than or equal to 2 (line 4)",
    ],
    "several-errors": [
        "daemon.max_concurency: unknown key (did you mean 'max_concurrency'?) (line 2)",
        "hosts.web1.checks.ping.max_attempts: input should be greater than or equal to 1 (line 8)",
        "hosts.web1.checks.http.port: input should be a valid integer, unable to parse string as an integer (line 10)",
    ],
}


def test_every_invalid_file_has_an_expectation():
    assert {p.stem for p in (DATA / "invalid").glob("*.yaml")} == set(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_config_message(name):
    with pytest.raises(ConfigError) as info:
        load_config(DATA / "invalid" / f"{name}.yaml")
    assert info.value.problems == INVALID[name]


@pytest.mark.parametrize("name", ["unknown-key-typo", "several-errors", "undecodable-bytes", "alias-bomb"])
def test_check_config_exit_code_and_output(name, capsys):
    path = DATA / "invalid" / f"{name}.yaml"
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"{path}: invalid config:"] + [f"  {p}" for p in INVALID[name]]
    assert "Traceback" not in err


def test_a_file_over_the_size_cap_is_refused_at_the_line_where_it_crosses_it(tmp_path):
    path = tmp_path / "huge.yaml"
    line = "# " + "x" * 1021 + "\n"  # 1 KiB a line
    path.write_text("hosts: {}\n" + line * (yamlsrc.MAX_BYTES // len(line)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"the file is larger than 8 MiB (line {yamlsrc.MAX_BYTES // len(line) + 1})"]


def test_a_file_of_exactly_the_cap_loads_and_a_byte_order_mark_is_fine(tmp_path, monkeypatch):
    monkeypatch.setattr(yamlsrc, "MAX_BYTES", 4096)  # parsing 8 MiB would take a while
    path = tmp_path / "big.yaml"
    body = "\ufeffhosts:\n  web1: {address: 127.0.0.1}\n"
    path.write_text(body + "#" * (yamlsrc.MAX_BYTES - len(body.encode()) - 1) + "\n")
    assert path.stat().st_size == yamlsrc.MAX_BYTES
    assert list(load_config(path).hosts) == ["web1"]


def test_aliases_within_the_bounds_still_work():
    config = parse_config("""
groups:
  web: &web {description: web servers}
  web-old: *web
hosts:
  web1: &host {address: 127.0.0.1, groups: [web], checks: {ping: {}}}
  web2: {<<: *host, address: 127.0.0.2}
""")
    assert config.groups["web-old"].description == "web servers"
    assert (config.hosts["web2"].address, config.hosts["web2"].groups) == ("127.0.0.2", ["web"])


def test_unquoted_times_are_read_as_written():
    config = parse_config("""
paging:
  integrations: {slack: {type: slack, webhook_url: {env: SLACK_URL}}}
  people: {aoki: {notify: [slack]}, baba: {notify: [slack]}}
  schedules:
    primary: {members: [aoki, baba], start: 2026-11-16, handoff: 10:00, timezone: Asia/Tokyo}
""")
    schedule = config.paging.schedules["primary"]
    assert schedule.handoff == dt.time(10, 0)
    monday = dt.datetime(2026, 11, 23, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert schedule.on_call((monday + dt.timedelta(hours=9, minutes=59)).timestamp()) == "aoki"
    assert schedule.on_call((monday + dt.timedelta(hours=10)).timestamp()) == "baba"


def test_unreadable_file_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.strip().endswith("cannot read file: No such file or directory")


@pytest.mark.parametrize("path", ["config/monitord.example.yaml", "config/local.yaml"])
def test_shipped_configs_validate(path, capsys):
    assert cli.main(["check-config", str(REPO / path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_contract_defaults_apply_when_nothing_is_set():
    config = parse_config("hosts:\n  h:\n    address: 127.0.0.1\n    checks:\n      ping: {}\n      http: {}\n")
    specs = {s.name: s for s in config.checks()}
    assert specs["ping"].interval == 600 and specs["http"].interval == 600
    assert (specs["ping"].retry_interval, specs["ping"].max_attempts, specs["ping"].timeout) == (60, 3, 10)
    assert str(config.daemon.state_path) == "/var/lib/monitord/state.db"
    assert config.daemon.metrics_listen == "127.0.0.1:9925"


def test_settings_cascade_check_host_group_defaults():
    config = parse_config("""
defaults: {intervals: {ping: 5m, tcp: 7m}, max_attempts: 4, timeout: 20s}
groups:
  first: {defaults: {intervals: {ping: 3m}, retry_interval: 30s}}
  second: {defaults: {intervals: {ping: 1m, tcp: 2m}, timeout: 5s}}
hosts:
  h:
    address: 127.0.0.1
    groups: [first, second]
    defaults: {max_attempts: 2}
    checks:
      ping: {}
      tcp: {port: 22}
      fast: {kind: ping, interval: 90s, max_attempts: 5}
""")
    specs = {s.name: s for s in config.checks()}
    assert specs["ping"].interval == 180  # first group wins over second and over defaults
    assert specs["tcp"].interval == 120  # first group has no tcp interval; second does
    assert specs["ping"].retry_interval == 30
    assert specs["ping"].max_attempts == 2  # host beats defaults
    assert specs["ping"].timeout == 5  # second group beats defaults
    assert (specs["fast"].interval, specs["fast"].max_attempts) == (90, 5)  # the check beats all


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    path = tmp_path / "sub" / "m.yaml"
    path.parent.mkdir()
    path.write_text("daemon: {state_path: state/db.sqlite}\n")
    assert load_config(path).daemon.state_path == tmp_path / "sub" / "state" / "db.sqlite"


def test_disabled_checks_are_not_scheduled():
    config = parse_config("hosts:\n  h:\n    address: x\n    checks:\n      ping: {enabled: false}\n      ssh: {}\n")
    assert [s.name for s in config.checks()] == ["ssh"]
    assert [s.name for s in config.disabled_checks()] == ["ping"]


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("10m", 600), ("1h30m", 5400), ("500ms", 0.5), (42, 42), ("2d", 172800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "10", "m", "10 m", "-5s", 0, True, "1h-1m"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("bad,message", [
    (float("inf"), "duration must be at most 3650d"),
    (10**400, "duration must be at most 3650d"),
    ("9" * 400 + "s", "duration must be at most 3650d"),
    ("3651d", "duration must be at most 3650d"),
    (float("nan"), "expected a duration like 10m or 90s, not NaN"),
])
def test_durations_are_finite_and_at_most_ten_years(bad, message):
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    assert str(info.value) == message
    assert parse_duration("3650d") == 3650 * 86400


@pytest.mark.parametrize("seconds,text", [(600, "10m"), (90, "1m30s"), (0.5, "500ms"), (5400, "1h30m"), (10, "10s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_schema_command_prints_json_schema(capsys):
    assert cli.main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "monitord configuration"
    assert schema["additionalProperties"] is False
    assert {"daemon", "defaults", "groups", "hosts"} <= set(schema["properties"])
    kinds = {v["properties"]["kind"]["const"] for k, v in schema["$defs"].items() if k.endswith("Params")}
    assert kinds == set(KINDS.split(", "))


def test_secret_reference_reads_file_env_and_credential(tmp_path, monkeypatch):
    from monitord.shared.fields import SecretRef

    (tmp_path / "pw").write_text("s3cret\n")
    monkeypatch.setenv("MD_TEST_SECRET", "from-env")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert SecretRef(file=tmp_path / "pw").read() == "s3cret"
    assert SecretRef(env="MD_TEST_SECRET").read() == "from-env"
    assert SecretRef(credential="pw").read() == "s3cret"
    with pytest.raises(LookupError, match="MD_MISSING is not set"):
        SecretRef(env="MD_MISSING").read()


@pytest.mark.parametrize("block, problem", [
    ("daemon:\n  api:\n    reads: token\n", "daemon: api.reads is 'token' but daemon.api_token is not set (line 1)"),
    ("daemon:\n  api:\n    reads: everyone\n", "daemon.api.reads: input should be 'open', 'token' or 'off' (line 3)"),
])
def test_api_reads_block_is_checked(tmp_path, block, problem):
    path = tmp_path / "monitord.yaml"
    path.write_text(block)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [problem]
