"""The configuration: one pydantic model tree, loaded from YAML with line-numbered errors.

Scheduling settings cascade: a check's own value, else its host's ``defaults``, else its
groups' ``defaults`` (in the order the host lists them), else the top-level ``defaults``,
else the contract values built in here (and each probe kind's default interval).
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import pickle
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, create_model, field_validator, model_validator

from monitord.config import yamlsrc
from monitord.paging.oncall import PagingSection
from monitord.shared.fields import (ClockTime, ConfigPath, Duration, Percent, SecretRef, StrictModel, TimeWindow,
                             TimeZoneName, format_duration)
from monitord.shared.access import BmcConfig, OsName, PduConfig, SnmpConfig, SshConfig, VmConfig
from probes import REGISTRY, BackupPlan
from monitord.shared.probe import CheckParams, ProbeCall, ProbeKind

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=253)]

# The contract values (../shared/SPEC.md §1); probe kinds carry their own default interval.
BUILTIN_RETRY_INTERVAL = 60.0
BUILTIN_MAX_ATTEMPTS = 3
BUILTIN_TIMEOUT = 10.0
BUILTIN_DISK_CRITICAL = 90.0
BUILTIN_INODE_CRITICAL = 50.0
SETTING_DEFAULTS = {"disk_critical_percent": BUILTIN_DISK_CRITICAL, "inode_critical_percent": BUILTIN_INODE_CRITICAL}
"""Built-in values of the :class:`Settings` fields that checks inherit (:meth:`CheckParams.inherit`)."""


class ConfigError(Exception):
    """The config is unusable; ``problems`` lists every ``path: problem (line N)``."""

    def __init__(self, source: str, problems: list[str]):
        super().__init__(f"{source}: {len(problems)} problem(s)")
        self.source = source
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join([f"{self.source}: invalid config:"] + [f"  {p}" for p in self.problems])


ActionName = Literal["power_reset", "power_cycle", "fsck", "service_restart"]


class LadderStep(StrictModel):
    """One step of a configured ladder (``remediation.ladder``): exactly one of the keys."""

    restart: Literal["services", "processes"] | None = Field(
        default=None, description="restart the failing check's service (unit) or process (kill/start), re-probe it")
    power: Literal["reset", "cycle"] | None = Field(
        default=None, description="through the host's power drivers (ipmi, vm, pdu), then verify ping, login, the check")
    vendor: Name | None = Field(default=None, description="escalate to this paging.vendors entry, then take the next step")

    @model_validator(mode="after")
    def _one_action(self) -> "LadderStep":
        given = [k for k in ("restart", "power", "vendor") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a ladder step is exactly one of restart, power or vendor"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    def key(self) -> str:
        """The step as the state machine knows it, e.g. ``restart:services``."""
        return next(f"{k}:{getattr(self, k)}" for k in ("restart", "power", "vendor") if getattr(self, k) is not None)


class RemediationSettings(StrictModel):
    """How the escalation ladders act on a host. Every field cascades like the rest of
    ``defaults`` (host, then its groups, then the top level): a layer sets only what it names;
    the field defaults are the contract's values. :meth:`Config.remediation` resolves a host's."""

    dry_run: bool = Field(default=False, description="decide and journal, never act (this host)")
    power_method: Literal["reset", "onoff"] = Field(
        default="reset", description="reset: IPMI chassis reset / PDU reboot; onoff: off, verify off, on")
    power_wait: Duration = Field(default=2.0, description="after a power command, before polling status")
    power_timeout: Duration = Field(default=60.0, description="poll power status until this deadline")
    power_retries: int = Field(default=1, ge=0, le=5)
    boot_timeout: Duration = Field(default=600.0, description="wait this long for ping and SSH after a reset")
    verify_interval: Duration = Field(default=10.0, description="how often to try ping and SSH while waiting")
    max_resets: int = Field(default=3, ge=1, le=20, description="power actions per reset_window, then level 3")
    reset_window: Duration = 86400.0
    grace: Duration = Field(default=300.0, description="after an action, failures wait this long before counting")
    max_restarts: int = Field(default=3, ge=1, le=20)
    restart_window: Duration = 3600.0
    contact_first: list[ActionName] = Field(
        default_factory=list, description="actions that need the emergency contact's approval outside business hours")
    approval_timeout: Duration = 900.0
    on_no_answer: Literal["hold", "proceed"] = "hold"
    fsck_command: str = Field(default="touch /forcefsck && systemctl reboot",
                              description="forces a filesystem check at next boot, and reboots")
    ladder: list[LadderStep] = Field(
        default_factory=list, min_length=1, description="ordered steps replacing the built-in host and service ladders")

    @classmethod
    def cascade(cls, layers: list["RemediationSettings"]) -> "RemediationSettings":
        """The effective settings of ``layers`` (most specific first): each field from the first
        layer that sets it, else its default."""
        chosen: dict[str, Any] = {}
        for layer in reversed(layers):  # the most specific last: what it sets wins
            chosen.update({name: getattr(layer, name) for name in layer.model_fields_set})
        return cls().model_copy(update=chosen)


class Settings(StrictModel):
    """Overridable defaults: at top level, per group and per host. Unset means inherit."""

    intervals: dict[str, Duration] = Field(
        default_factory=dict, description="check interval per probe kind, e.g. {ping: 10m, http: 5m}"
    )
    retry_interval: Duration | None = Field(default=None, description="interval while a failure is unconfirmed (soft)")
    max_attempts: int | None = Field(default=None, ge=1, le=100, description="failures in a row that confirm a problem")
    timeout: Duration | None = None
    disk_critical_percent: Percent | None = None
    inode_critical_percent: Percent | None = None
    backup_plan: BackupPlan | None = Field(default=None, description="the contract's backup plan for backup checks")
    remediation: RemediationSettings = RemediationSettings()

    @field_validator("intervals")
    @classmethod
    def _known_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        for kind in value:
            if kind not in REGISTRY:
                raise ValueError(f"unknown check kind {kind!r}{_did_you_mean(kind, REGISTRY)}")
        return value


class GroupConfig(StrictModel):
    """A set of hosts sharing defaults (membership is declared on the host)."""

    description: str = ""
    defaults: Settings = Settings()


def _check_union() -> Any:
    members = tuple(kind.params for kind in REGISTRY.values())
    return Annotated[Union[members], Field(discriminator="kind")]  # type: ignore[valid-type]


CheckConfig = _check_union()


class CustomerInstructions(StrictModel):
    """What the level 3 dispatch page tells the engineer about this customer's contract."""

    backup_contract: bool = Field(default=False, description="restore the last backup when rebuilding")
    config_changes: str | None = Field(default=None, description="changes to re-apply since the contract started")
    runbook: str | None = Field(default=None, description="the customer's operation runbook (operation-proxy contract)")


class HostConfig(StrictModel):
    """A monitored host. Checks are keyed by name; ``kind`` defaults to the name."""

    address: str = Field(min_length=1)
    description: str = ""
    os: OsName = Field(default="linux", description="linux (systemd, ps, df, journal) or windows (OpenSSH + PowerShell)")
    customer: str | None = None
    groups: list[Name] = Field(default_factory=list)
    tags: list[Name] = Field(default_factory=list)
    parents: list[Name] = Field(default_factory=list, description="hosts (switches, routers) this host is reached through")
    defaults: Settings = Settings()
    bmc: BmcConfig | None = None
    pdu: PduConfig | None = None
    vm: VmConfig | None = Field(default=None, description="a virtual machine: power through its hypervisor")
    ssh: SshConfig | None = None
    snmp: SnmpConfig | None = Field(default=None, description="the host's SNMP agent, for SNMP-based checks")
    instructions: CustomerInstructions = CustomerInstructions()
    checks: dict[Name, CheckConfig] = Field(default_factory=dict)

    def power_blocks(self) -> dict[str, BmcConfig | VmConfig | PduConfig]:
        """The power drivers configured for this host and the access block each takes, in fallback order."""
        return {name: block for name, block in (("ipmi", self.bmc), ("vm", self.vm), ("pdu", self.pdu)) if block}

    def power_drivers(self) -> tuple[str, ...]:
        """The power drivers configured for this host, in fallback order."""
        return tuple(self.power_blocks())

    def layers(self, config: "Config") -> list[Settings]:
        """This host's settings layers, most specific first."""
        return [self.defaults] + [config.groups[g].defaults for g in self.groups if g in config.groups] + [config.defaults]

    @model_validator(mode="before")
    @classmethod
    def _os_into_ssh(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("ssh"), dict) and "os" in data:
            data = {**data, "ssh": {**data["ssh"], "os": data["os"]}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _kind_from_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("checks"), dict):
            checks = {}
            for name, check in data["checks"].items():
                if check is None:
                    check = {}
                if isinstance(check, dict) and "kind" not in check:
                    check = {**check, "kind": name}
                checks[name] = check
            data = {**data, "checks": checks}
        return data


class BlastRadius(StrictModel):
    """When many hosts fail at once, the monitor's own side is the likelier fault: no power actions."""

    canaries: list[Name] = Field(default_factory=list, description="reference hosts (gateway, ...) probed before acting")
    max_down_percent: Percent = 20.0
    max_down_hosts: int = Field(default=10, ge=1)
    window: Duration = 300.0


class EscalationConfig(StrictModel):
    """Fleet-wide escalation settings."""

    blast_radius: BlastRadius = BlastRadius()


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]




class BusinessHoursConfig(StrictModel):
    """Business days and hours (SPEC §3; contract default: weekdays 10:00-18:00 Japan time,
    closed on Japanese public holidays and 12/30-1/3). ``end`` is exclusive."""

    timezone: TimeZoneName = "Asia/Tokyo"
    days: list[Weekday] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"])
    start: ClockTime = dt.time(10, 0)
    end: ClockTime = dt.time(18, 0)
    holidays: Literal["jp", "none"] = Field(
        default="jp", description="jp: closed on Japanese public holidays, substitute and citizens' holidays included")
    year_end_break: bool = Field(default=True, description="closed 12/30-1/3 (年末年始)")
    closed_days: list[dt.date] = Field(default_factory=list, description="extra closed days, e.g. [2026-08-14]")

    @field_validator("days")
    @classmethod
    def _some_days(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one business weekday, e.g. [mon, tue, wed, thu, fri]")
        return value

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, value: dt.time, info: ValidationInfo) -> dt.time:
        start = info.data.get("start")
        if start is not None and value <= start:
            raise ValueError(f"end {_clock(value)} must be after start {_clock(start)}")
        return value


def _clock(value: dt.time) -> str:
    return value.isoformat(timespec="seconds" if value.second else "minutes")


class CustomerConfig(StrictModel):
    """A customer: where failure notices go, in which language, who approves night work, and
    the contract's business hours when they differ from the default (e.g. 9:00-17:30)."""

    name: str = ""
    notify: list[str] = Field(default_factory=list, description="e-mail integrations for notices")
    emails: list[str] = Field(default_factory=list, description="addresses the customer chose (004 4.(イ)②)")
    language: Literal["ja", "en"] = "ja"
    emergency_contact: list[str] = Field(
        default_factory=list, description="people, schedules or integrations asked before night/holiday work")
    business_hours: BusinessHoursConfig | None = Field(default=None, description="this contract's hours")


class MaintenanceWindow(TimeWindow):
    """A planned window: no automatic action on the hosts, groups or tags it covers."""

    hosts: list[Name] = Field(default_factory=list)
    groups: list[Name] = Field(default_factory=list)
    tags: list[Name] = Field(default_factory=list)
    reason: str = ""

    def targets(self) -> set[str]:
        """What the window names, as ``host:NAME``, ``group:NAME`` and ``tag:NAME`` (the form of
        windows added by the CLI or API); compare with :meth:`Config.targets_of`."""
        return ({f"host:{h}" for h in self.hosts} | {f"group:{g}" for g in self.groups}
                | {f"tag:{t}" for t in self.tags})

    @model_validator(mode="after")
    def _covers_something(self) -> "MaintenanceWindow":
        if not (self.hosts or self.groups or self.tags):
            raise ValueError("say which hosts, groups or tags the window covers")
        return self


class ApiSettings(StrictModel):
    """The HTTP API's read side (``GET /api/v1/...`` and the status page at ``/``); writes always
    need ``daemon.api_token``."""

    reads: Literal["open", "token", "off"] = Field(
        default="open", description="open: anyone who reaches the listener; token: the bearer token too; off: 403")
    page_refresh: Duration = Field(default=30.0, ge=5, le=3600,
                                   description="how often the status page at / reloads itself in the browser")
    page_lang: Literal["ja", "en"] = Field(
        default="ja", description="the status page's language when the browser's Accept-Language names neither")


class StoreSettings(StrictModel):
    """Where the daemon keeps its state: ``sqlite`` (the default, at ``daemon.state_path``) or
    ``postgres`` (one daemon per database for now; several is the next step of issue #13)."""

    kind: Literal["sqlite", "postgres"] = "sqlite"
    dsn: SecretRef | None = Field(
        default=None, description="postgres: the libpq connection URI (postgresql://USER:PASSWORD@HOST:PORT/DB), "
                                  "a secret: {file: ...}, {env: ...} or {credential: ...}")
    pool_size: int = Field(default=4, ge=2, le=100, description="postgres: connections in the pool")
    statement_timeout: Duration = Field(default=5.0, gt=0, le=300,
                                        description="postgres: a statement (or a connection attempt) taking longer "
                                                    "fails, and the store counts as faulty")

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> "StoreSettings":
        if self.kind == "postgres" and self.dsn is None:
            raise ValueError("kind postgres needs dsn: {file: PATH} (or env, credential)")
        if self.kind == "sqlite" and self.dsn is not None:
            raise ValueError("dsn is for kind postgres; kind sqlite keeps its state at daemon.state_path")
        return self


class DaemonSettings(StrictModel):
    """Process-wide settings."""

    state_path: ConfigPath = Path("/var/lib/monitord/state.db")
    store: StoreSettings = StoreSettings()
    metrics_listen: str = Field(default="127.0.0.1:9925", pattern=r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$")
    max_concurrency: int = Field(default=256, ge=1, le=100_000)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    api_token: SecretRef | None = Field(default=None, description="bearer token for the HTTP API's writes (acks, maintenance, quarantine); unset: writes off")
    api: ApiSettings = ApiSettings()

    @model_validator(mode="after")
    def _token_for_reads(self) -> "DaemonSettings":
        if self.api.reads == "token" and self.api_token is None:
            raise ValueError("api.reads is 'token' but daemon.api_token is not set")
        return self

    @field_validator("metrics_listen")
    @classmethod
    def _port_in_range(cls, value: str) -> str:
        port = int(value.rpartition(":")[2])
        if port > 65535:  # 0: any free port (tests)
            raise ValueError(f"port {port} is out of range 0-65535")
        return value

    @property
    def metrics_address(self) -> tuple[str, int]:
        """``metrics_listen`` split into host and port."""
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]"), int(port)


def _daemon_config() -> Any:
    """The ``daemon:`` block: the process-wide settings and a section per probe kind that has some."""
    sections: dict[str, Any] = {kind.name: (kind.daemon_settings, kind.daemon_settings())
                                for kind in REGISTRY.values() if kind.daemon_settings is not None}
    return create_model("DaemonConfig", __base__=DaemonSettings, __doc__=DaemonSettings.__doc__, **sections)


DaemonConfig = _daemon_config()


class Config(StrictModel):
    """The whole configuration file."""

    daemon: DaemonConfig = DaemonConfig()
    defaults: Settings = Settings()
    groups: dict[Name, GroupConfig] = Field(default_factory=dict)
    hosts: dict[Name, HostConfig] = Field(default_factory=dict)
    escalation: EscalationConfig = EscalationConfig()
    paging: PagingSection = PagingSection()
    customers: dict[Name, CustomerConfig] = Field(default_factory=dict)
    business_hours: BusinessHoursConfig = BusinessHoursConfig()
    maintenance: dict[Name, MaintenanceWindow] = Field(default_factory=dict)

    def targets_of(self, host: str) -> set[str]:
        """The maintenance targets that cover ``host``: ``host:NAME``, its groups and its tags."""
        h = self.hosts[host]
        return {f"host:{host}"} | {f"group:{g}" for g in h.groups} | {f"tag:{t}" for t in h.tags}

    def remediation(self, host: str) -> RemediationSettings:
        """The host's effective remediation settings (cascaded, with the contract's defaults)."""
        return RemediationSettings.cascade([layer.remediation for layer in self.hosts[host].layers(self)])

    def checks(self) -> list["CheckSpec"]:
        """Every enabled check with its effective settings, in config order."""
        return [spec for spec in self._all_checks() if spec.params.enabled]

    def disabled_checks(self) -> list["CheckSpec"]:
        """Checks switched off with ``enabled: false``."""
        return [spec for spec in self._all_checks() if not spec.params.enabled]

    def _all_checks(self) -> list["CheckSpec"]:
        specs = []
        for host_name, host in self.hosts.items():
            layers = host.layers(self)
            for check_name, params in host.checks.items():
                specs.append(CheckSpec.build(host_name, host.address, check_name, params, layers,
                                             ssh=host.ssh, bmc=host.bmc, snmp=host.snmp))
        return specs


def _first(values: typing.Iterable[Any], default: Any) -> Any:
    return next((v for v in values if v is not None), default)


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """A check as the scheduler runs it: resolved settings, no more inheritance."""

    id: str
    host: str
    name: str
    address: str
    kind: ProbeKind
    params: CheckParams
    interval: float
    retry_interval: float
    max_attempts: int
    timeout: float
    ssh: SshConfig | None = None
    bmc: BmcConfig | None = None
    snmp: SnmpConfig | None = None

    @classmethod
    def build(
        cls, host: str, address: str, name: str, params: CheckParams, layers: list[Settings],
        *, ssh: SshConfig | None = None, bmc: BmcConfig | None = None, snmp: SnmpConfig | None = None,
    ) -> "CheckSpec":
        """Resolve ``params`` against the settings ``layers`` (most specific first); keep the
        host's access blocks (``ssh``, ``bmc``, ``snmp``) only if the kind needs them."""
        kind = REGISTRY[params.kind]
        params = params.inherit(lambda field: _first([getattr(s, field) for s in layers], SETTING_DEFAULTS.get(field)))
        needs = kind.needs | params.needs()
        return cls(
            id=f"{host}/{name}",
            host=host,
            name=name,
            address=address,
            kind=kind,
            params=params,
            interval=_first([params.interval] + [s.intervals.get(kind.name) for s in layers], kind.default_interval),
            retry_interval=_first([params.retry_interval] + [s.retry_interval for s in layers], BUILTIN_RETRY_INTERVAL),
            max_attempts=_first([params.max_attempts] + [s.max_attempts for s in layers], BUILTIN_MAX_ATTEMPTS),
            timeout=_first([params.timeout] + [s.timeout for s in layers], BUILTIN_TIMEOUT),
            ssh=ssh if "ssh" in needs else None,
            bmc=bmc if "bmc" in needs else None,
            snmp=snmp if "snmp" in needs else None,
        )

    def call(self) -> ProbeCall:
        """The :class:`ProbeCall` for one run of this check."""
        return ProbeCall(self.host, self.address, self.timeout, self.name, self.ssh, self.bmc, self.snmp)

    @property
    def fingerprint(self) -> str:
        """Changes whenever anything that affects how the check runs changes."""
        parts = [self.address, self.params.model_dump(mode="json"), self.interval, self.retry_interval,
                 self.max_attempts, self.timeout]
        parts += [block.model_dump(mode="json") for block in (self.ssh, self.bmc, self.snmp) if block is not None]
        blob = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Loading and error reporting


def load_config(path: str | Path) -> Config:
    """Read, parse and validate ``path``; raise :class:`ConfigError` listing every problem.

    The config the daemon keeps is a fresh copy made once parsing's garbage is gone: parsing
    interleaves the config's objects with ten times as much YAML bookkeeping in the allocator's
    arenas, and the config alone would keep those arenas (about 300 MiB at 50,000 checks) from
    being returned to the system.
    """
    source = str(path)
    try:
        text = yamlsrc.read(path)
    except OSError as exc:
        raise ConfigError(source, [f"cannot read file: {exc.strerror or exc}"]) from None
    except yamlsrc.YamlError as exc:
        raise ConfigError(source, [_format(loc, msg, line) for loc, msg, line in exc.problems]) from None
    parsed = pickle.dumps(parse_config(text, source, base_dir=Path(path).resolve().parent))
    return pickle.loads(parsed)


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate YAML ``text``; raise :class:`ConfigError` listing every problem.

    Relative paths in the config are taken relative to ``base_dir`` (the file's directory).
    """
    try:
        data = yamlsrc.load(text)
    except yamlsrc.YamlError as exc:
        raise ConfigError(source, [_format(loc, msg, line) for loc, msg, line in exc.problems]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [_format((), "the top level must be a mapping of keys", getattr(data, "line", 1))])
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = [_format(yamlsrc.in_data(data, loc), msg, yamlsrc.line_at(data, loc)) for loc, msg in _explain(exc)]
        raise ConfigError(source, problems) from None
    problems = [_format(loc, msg, yamlsrc.line_at(data, loc)) for loc, msg in _semantic_problems(config)]
    if problems:
        raise ConfigError(source, problems)
    return config


def _semantic_problems(config: Config) -> list[tuple[tuple, str]]:
    """Cross-references and invariants the per-field models cannot see."""
    problems: list[tuple[tuple, str]] = []
    for host_name, host in config.hosts.items():
        for i, group in enumerate(host.groups):
            if group not in config.groups:
                problems.append((("hosts", host_name, "groups", i), f"unknown group {group!r}{_did_you_mean(group, config.groups)}"))
        for i, parent in enumerate(host.parents):
            if parent == host_name:
                problems.append((("hosts", host_name, "parents", i), "a host cannot be its own parent"))
            elif parent not in config.hosts:
                problems.append((("hosts", host_name, "parents", i), f"unknown host {parent!r}{_did_you_mean(parent, config.hosts)}"))
    problems += config.paging.problems()
    targets = set(config.paging.people) | set(config.paging.schedules) | set(config.paging.integrations)
    for name, customer in config.customers.items():
        problems += [(("customers", name, "notify", i), f"unknown integration {n!r}")
                     for i, n in enumerate(customer.notify) if n not in config.paging.integrations]
        problems += [(("customers", name, "emergency_contact", i), f"unknown target {t!r}")
                     for i, t in enumerate(customer.emergency_contact) if t not in targets]
        integrations = [config.paging.integrations.get(n) for n in customer.notify]
        problems += [(("customers", name, "notify", i), f"integration {n!r} is of type {item.type}: notices are e-mails")
                     for i, (n, item) in enumerate(zip(customer.notify, integrations)) if item and item.type != "email"]
        if bool(customer.notify) != bool(customer.emails):
            missing = "emails" if customer.notify else "notify"
            problems.append((("customers", name, missing), "notices need both notify (an e-mail integration) and emails"))
    for host_name, host in config.hosts.items():
        if host.customer is not None and host.customer not in config.customers:
            problems.append((("hosts", host_name, "customer"),
                             f"unknown customer {host.customer!r}{_did_you_mean(host.customer, config.customers)}"))
    for i, canary in enumerate(config.escalation.blast_radius.canaries):
        if canary not in config.hosts:
            problems.append((("escalation", "blast_radius", "canaries", i), f"unknown host {canary!r}{_did_you_mean(canary, config.hosts)}"))
    tags = {tag for host in config.hosts.values() for tag in host.tags}
    selectors = [(("maintenance", name), window, ("hosts", "groups", "tags")) for name, window in config.maintenance.items()]
    selectors += [(("paging", "routes", i), r, ("groups", "tags")) for i, r in enumerate(config.paging.routes)]
    for loc, selector, fields in selectors:
        for field in fields:
            known = {"hosts": config.hosts, "groups": config.groups, "tags": tags}[field]
            for i, target in enumerate(getattr(selector, field)):
                if target not in known:
                    hint = _did_you_mean(target, known) or (" (no host has it)" if field == "tags" else "")
                    problems.append((loc + (field, i), f"unknown {field[:-1]} {target!r}{hint}"))
    problems += _ladder_problems(config)
    for cycle_host in _parent_cycles(config):
        problems.append((("hosts", cycle_host, "parents"), "parents form a cycle through this host"))
    for spec in config._all_checks():
        loc = ("hosts", spec.host, "checks", spec.name)
        if spec.timeout >= spec.interval:
            problems.append((loc, f"timeout {format_duration(spec.timeout)} must be shorter than the interval {format_duration(spec.interval)}"))
        for block in sorted(spec.kind.needs | spec.params.needs()):
            if getattr(config.hosts[spec.host], block) is None:
                problems.append((loc + ("kind",), f"kind {spec.kind.name} needs a {block}: block on the host"))
        problems += [(loc + where, problem) for where, problem in spec.params.problems()]
        unsupported = spec.params.unsupported_on(config.hosts[spec.host].os)
        if unsupported:
            problems.append((loc, unsupported))
        needed, what = spec.params.min_timeout()
        if spec.timeout <= needed:
            problems.append((loc, f"timeout {format_duration(spec.timeout)} must be longer than {what}"))
        if spec.retry_interval > spec.interval:
            problems.append((loc, f"retry_interval {format_duration(spec.retry_interval)} must not exceed the interval {format_duration(spec.interval)}"))
    return problems


def _ladder_problems(config: Config) -> list[tuple[tuple, str]]:
    """Every configured ladder's vendors exist; each host can take its ladder's steps."""
    problems: list[tuple[tuple, str]] = []
    places = [(("defaults",), config.defaults)]
    places += [(("groups", name, "defaults"), group.defaults) for name, group in config.groups.items()]
    places += [(("hosts", name, "defaults"), host.defaults) for name, host in config.hosts.items()]
    for loc, settings in places:
        for i, rung in enumerate(settings.remediation.ladder or ()):
            if rung.vendor is not None and rung.vendor not in config.paging.vendors:
                problems.append((loc + ("remediation", "ladder", i, "vendor"),
                                 f"unknown vendor {rung.vendor!r}{_did_you_mean(rung.vendor, config.paging.vendors)}"))
    for name, host in config.hosts.items():
        keys = {rung.key().split(":")[0] for rung in config.remediation(name).ladder}
        if "power" in keys and not host.power_drivers():
            problems.append((("hosts", name), "its remediation.ladder has a power step but the host has no bmc:, vm: or pdu: block"))
        if "restart" in keys and host.ssh is None:
            problems.append((("hosts", name), "its remediation.ladder has a restart step but the host has no ssh: block"))
    return problems


def _parent_cycles(config: Config) -> list[str]:
    """Hosts that sit on a cycle of ``parents`` links (each cycle reported once)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    on_cycle: list[str] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for parent in config.hosts[name].parents:
            if parent not in config.hosts or parent == name:
                continue
            if state.get(parent) == 1:
                on_cycle.append(path[path.index(parent)] if parent in path else parent)
            elif parent not in state:
                visit(parent, path + [parent])
        state[name] = 2

    for name in config.hosts:
        if name not in state:
            visit(name, [name])
    return on_cycle


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    matches = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _explain(exc: ValidationError) -> list[tuple[tuple, str]]:
    """Turn pydantic errors into (location, plain message) pairs."""
    out = []
    for error in exc.errors(include_url=False):
        loc, kind, msg = tuple(error["loc"]), error["type"], error["msg"]
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
        if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NAME_PATTERN:
            msg = f"invalid name {error['input']!r}: use letters, digits, '.', '_' and '-'"
        elif kind == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            msg = f"unknown key{_did_you_mean(loc[-1], allowed)}"
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "union_tag_invalid":
            tag = error.get("ctx", {}).get("tag")
            msg = f"unknown check kind {tag!r}{_did_you_mean(tag, REGISTRY)}; known kinds: {', '.join(REGISTRY)}"
            loc = loc + ("kind",)
        elif kind == "union_tag_not_found":
            msg = "check needs a kind"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        else:
            msg = msg[:1].lower() + msg[1:]
        out.append((loc, msg))
    return out


def _allowed_keys(loc: tuple) -> list[str]:
    """Field names of the model found by following ``loc`` from :class:`Config`."""
    tp: Any = Config
    for step in loc:
        tp = _strip(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(step)
            if field is None:
                return []
            tp = field.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (Union, types.UnionType):
            tp = next((m for m in typing.get_args(tp) if _kind_tag(m) == step), None)
            if tp is None:
                return []
    tp = _strip(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _strip(tp: Any) -> Any:
    """Remove Annotated and Optional wrappers."""
    while True:
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (Union, types.UnionType):
            members = [m for m in typing.get_args(tp) if m is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _kind_tag(model: Any) -> str | None:
    """The literal of a union member's discriminator (``kind`` for checks, ``type`` for pagers)."""
    fields = getattr(model, "model_fields", {})
    field = fields.get("kind") or fields.get("type")
    args = typing.get_args(field.annotation) if field is not None else ()
    return args[0] if args else None


def _format(loc: tuple, message: str, line: int) -> str:
    path = "".join(
        f"[{step}]" if isinstance(step, int) else (f".{step}" if re.fullmatch(r"[A-Za-z0-9_\-]+", str(step)) else f'["{step}"]')
        for step in loc
    ).lstrip(".")
    where = f" (line {line})" if line else ""
    return f"{path}: {message}{where}" if path else f"{message}{where}"


def json_schema() -> dict:
    """The JSON Schema of the config file, for editor completion."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "monitord configuration"
    return schema
