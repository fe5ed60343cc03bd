"""The configuration: one pydantic model tree, loaded from YAML with line-numbered errors.

Scheduling settings cascade: a check's own value, else its host's ``defaults``, else its
groups' ``defaults`` (in the order the host lists them), else the top-level ``defaults``,
else the contract values built in here (and each probe kind's default interval).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from monitord import yamlsrc
from monitord.fields import ConfigPath, Duration, Percent, Port, SecretRef, StrictModel, format_duration
from probes import REGISTRY
from probes.base import CheckParams, ProbeKind

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=253)]

# The contract values (../shared/SPEC.md §1); probe kinds carry their own default interval.
BUILTIN_RETRY_INTERVAL = 60.0
BUILTIN_MAX_ATTEMPTS = 3
BUILTIN_TIMEOUT = 10.0
BUILTIN_DISK_CRITICAL = 90.0
BUILTIN_INODE_CRITICAL = 50.0


class ConfigError(Exception):
    """The config is unusable; ``problems`` lists every ``path: problem (line N)``."""

    def __init__(self, source: str, problems: list[str]):
        super().__init__(f"{source}: {len(problems)} problem(s)")
        self.source = source
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join([f"{self.source}: invalid config:"] + [f"  {p}" for p in self.problems])


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

    @field_validator("intervals")
    @classmethod
    def _known_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        for kind in value:
            if kind not in REGISTRY:
                raise ValueError(f"unknown check kind {kind!r}{_did_you_mean(kind, REGISTRY)}")
        return value


class BmcConfig(StrictModel):
    """How to reach the host's BMC (IPMI 2.0 lanplus)."""

    driver: Literal["ipmi"] = "ipmi"
    address: str
    port: Port = 623
    username: str
    password: SecretRef
    cipher_suite: int = Field(default=3, ge=0, le=17)
    privilege: Literal["administrator", "operator"] = "administrator"


class SnmpV3(StrictModel):
    """SNMPv3 user-based security."""

    user: str
    auth_protocol: Literal["sha", "sha256", "md5"] = "sha"
    auth_key: SecretRef
    priv_protocol: Literal["aes", "aes256", "des"] | None = "aes"
    priv_key: SecretRef | None = None


class PduConfig(StrictModel):
    """A switched PDU outlet that powers the host."""

    address: str
    port: Port = 161
    outlet: int = Field(ge=1)
    model: str = Field(default="auto", description="OID table: auto (by sysObjectID), apc-spdu, apc-rpdu, ...")
    snmp_version: Literal["2c", "3"] = "2c"
    community: SecretRef | None = None
    v3: SnmpV3 | None = None

    @model_validator(mode="after")
    def _credentials(self) -> "PduConfig":
        if self.snmp_version == "2c" and self.community is None:
            raise ValueError("snmp_version 2c needs community (a file, env or credential reference)")
        if self.snmp_version == "3" and self.v3 is None:
            raise ValueError("snmp_version 3 needs a v3 block")
        return self


class SshConfig(StrictModel):
    """SSH access for remediation and SSH-based probes. Host keys are always verified."""

    port: Port = 22
    username: str = "root"
    key: SecretRef = Field(description="private key (file, env or credential)")
    known_hosts: ConfigPath = Path("/etc/monitord/known_hosts")


class GroupConfig(StrictModel):
    """A set of hosts sharing defaults (membership is declared on the host)."""

    description: str = ""
    defaults: Settings = Settings()


def _check_union() -> Any:
    members = tuple(kind.params for kind in REGISTRY.values())
    return Annotated[Union[members], Field(discriminator="kind")]  # type: ignore[valid-type]


CheckConfig = _check_union()


class HostConfig(StrictModel):
    """A monitored host. Checks are keyed by name; ``kind`` defaults to the name."""

    address: str = Field(min_length=1)
    description: str = ""
    customer: str | None = None
    groups: list[Name] = Field(default_factory=list)
    tags: list[Name] = Field(default_factory=list)
    parents: list[Name] = Field(default_factory=list, description="hosts (switches, routers) this host is reached through")
    defaults: Settings = Settings()
    bmc: BmcConfig | None = None
    pdu: PduConfig | None = None
    ssh: SshConfig | None = None
    checks: dict[Name, CheckConfig] = Field(default_factory=dict)

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


class PingSettings(StrictModel):
    """How ICMP is sent: raw socket (root/CAP_NET_RAW), datagram (ping_group_range) or auto."""

    privileged: Literal["auto", "raw", "datagram"] = "auto"


class DaemonConfig(StrictModel):
    """Process-wide settings."""

    state_path: ConfigPath = Path("/var/lib/monitord/state.db")
    metrics_listen: str = Field(default="127.0.0.1:9925", pattern=r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$")
    max_concurrency: int = Field(default=256, ge=1, le=100_000)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    ping: PingSettings = PingSettings()

    @property
    def metrics_address(self) -> tuple[str, int]:
        """``metrics_listen`` split into host and port."""
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]"), int(port)


class Config(StrictModel):
    """The whole configuration file."""

    daemon: DaemonConfig = DaemonConfig()
    defaults: Settings = Settings()
    groups: dict[Name, GroupConfig] = Field(default_factory=dict)
    hosts: dict[Name, HostConfig] = Field(default_factory=dict)

    def checks(self) -> list["CheckSpec"]:
        """Every enabled check with its effective settings, in config order."""
        return [spec for spec in self._all_checks() if spec.params.enabled]

    def disabled_checks(self) -> list["CheckSpec"]:
        """Checks switched off with ``enabled: false``."""
        return [spec for spec in self._all_checks() if not spec.params.enabled]

    def _all_checks(self) -> list["CheckSpec"]:
        specs = []
        for host_name, host in self.hosts.items():
            layers = [host.defaults] + [self.groups[g].defaults for g in host.groups if g in self.groups] + [self.defaults]
            for check_name, params in host.checks.items():
                specs.append(CheckSpec.build(host_name, host.address, check_name, params, layers))
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

    @classmethod
    def build(cls, host: str, address: str, name: str, params: CheckParams, layers: list[Settings]) -> "CheckSpec":
        """Resolve ``params`` against the settings ``layers`` (most specific first)."""
        kind = REGISTRY[params.kind]
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
        )

    @property
    def fingerprint(self) -> str:
        """Changes whenever anything that affects how the check runs changes."""
        blob = json.dumps(
            [self.address, self.params.model_dump(mode="json"), self.interval, self.retry_interval,
             self.max_attempts, self.timeout],
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Loading and error reporting


def load_config(path: str | Path) -> Config:
    """Read, parse and validate ``path``; raise :class:`ConfigError` listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"cannot read file: {getattr(exc, 'strerror', None) or exc}"]) from None
    return parse_config(text, source, base_dir=Path(path).resolve().parent)


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
    for cycle_host in _parent_cycles(config):
        problems.append((("hosts", cycle_host, "parents"), "parents form a cycle through this host"))
    for spec in config._all_checks():
        loc = ("hosts", spec.host, "checks", spec.name)
        if spec.timeout >= spec.interval:
            problems.append((loc, f"timeout {format_duration(spec.timeout)} must be shorter than the interval {format_duration(spec.interval)}"))
        needed, what = spec.params.min_timeout()
        if spec.timeout <= needed:
            problems.append((loc, f"timeout {format_duration(spec.timeout)} must be longer than {what}"))
        if spec.retry_interval > spec.interval:
            problems.append((loc, f"retry_interval {format_duration(spec.retry_interval)} must not exceed the interval {format_duration(spec.interval)}"))
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
    field = getattr(model, "model_fields", {}).get("kind")
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
