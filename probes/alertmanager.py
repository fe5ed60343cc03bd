"""``alertmanager``: a passive check. Prometheus Alertmanager posts its alerts; a firing alert
that matches the check is the check's failure.

Alertmanager's webhook receiver (payload version 4) posts to the daemon's HTTP listener::

    POST /api/v1/alertmanager
    Authorization: Bearer TOKEN            (daemon.alertmanager.token)

Alertmanager's side (``alertmanager.yml``)::

    receivers:
      - name: monitord
        webhook_configs:
          - url: http://monitord.example:9925/api/v1/alertmanager
            send_resolved: true
            max_alerts: 100                # keeps a notification under the listener's body limit
            http_config:
              authorization: {credentials_file: /etc/alertmanager/monitord.token}

Answers: 200 ``{"alerts": N, "matched": M, "unmatched": U}``; 403 while no token is configured
(the receiver is off); 401 a missing or wrong token; 400 a body that is not a version 4 payload
(saying what is wrong); 413 a body over the listener's limit; 503 when the alerts could not be
kept (nothing of the notification is taken; Alertmanager retries). Alerts that match no check are counted
(``monitord_alertmanager_alerts_unmatched_total``) and logged at most once a minute; they never
refuse the batch.

A check names the alerts it takes with ``matchers``, in Alertmanager's own matcher syntax
(``label=value``, ``label!=value``, ``label=~regex``, ``label!~regex``; the value may be
double-quoted; regular expressions match the whole value; a label the alert lacks is the empty
string). An alert is the check's when every matcher matches. The check's verdict:

- a firing alert, received within ``stale_after``: its severity label (``severity_label``) mapped
  through ``severities`` (default critical/error/page → critical, warning/info → warning; a
  missing or unmapped label → ``default_severity``, critical). Several: the worst. The verdict
  enters the soft/hard logic, the ladder and its guards like any check's;
- only firing alerts older than ``stale_after`` (Alertmanager re-sends firing alerts every
  ``repeat_interval``, 4h by default; set ``stale_after`` above your route's ``repeat_interval``
  plus its ``group_interval``): UNKNOWN, "stale" — the feed went silent, so nothing is known;
- none (never fired, or resolved): OK.

Firing alerts are kept (``<state dir>/alertmanager/alerts.json``, written before the answer), so
a restart keeps them; as with heartbeats, the age of an alert is counted from the later of its
receipt and this daemon's start, since Alertmanager's repeats are lost while the daemon is down.
A notification that changes a check's verdict runs the check at once, out of schedule.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from aiohttp import web
from pydantic import BeforeValidator, Field, PlainSerializer

from monitord.shared.clock import Clock
from monitord.shared.fields import Duration, SecretRef, StrictModel, format_duration
from monitord.shared.http import Refusal, bearer_token, loads, read_body, read_token, token_matches, unauthorised
from monitord.shared.kept import read_json, write_json
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind, Runtime
from monitord.shared.results import Outcome, Reason, Status

log = logging.getLogger(__name__)

ROUTE = "/api/v1/alertmanager"
MAX_ALERTS = 10_000
"""Firing alerts kept at most (the oldest received are dropped first)."""
UNMATCHED_LOG_EVERY = 60.0
_RESOURCE = "alertmanager.receiver"
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(".*"|[^"]*?)\s*$', re.DOTALL)
_SEVERITY = {"warning": Status.WARNING, "critical": Status.CRITICAL}


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher, as Alertmanager writes it (``name=value``, ``!=``, ``=~``, ``!~``)."""

    name: str
    op: str
    value: str
    regex: re.Pattern | None = field(default=None, compare=False, repr=False)

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether ``labels`` satisfy the matcher (a missing label is the empty string)."""
        given = labels.get(self.name, "")
        if self.op in ("=", "!="):
            return (given == self.value) == (self.op == "=")
        return bool(self.regex and self.regex.match(given)) == (self.op == "=~")

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value, ensure_ascii=False)}"


def parse_matcher(text: Any) -> Matcher:
    """``alertname="DiskFull"``, ``instance=~"web1(:[0-9]+)?"``...; :class:`ValueError` says what is wrong."""
    if isinstance(text, Matcher):
        return text
    if not isinstance(text, str):
        raise ValueError('a matcher is a string like alertname="DiskFull" or instance=~"web1.*"')
    found = _MATCHER.fullmatch(text)
    if found is None:
        raise ValueError(f"bad matcher {text!r}: write it like alertname=\"DiskFull\" (operators =, !=, =~, !~)")
    name, op, value = found.groups()
    if value.startswith('"'):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"bad matcher {text!r}: the quoted value is not a valid string") from None
    try:
        regex = re.compile(f"(?:{value})\\Z", re.DOTALL) if op in ("=~", "!~") else None
    except re.error as exc:
        raise ValueError(f"bad matcher {text!r}: invalid regular expression: {exc}") from None
    return Matcher(name, op, value, regex)


LabelMatcher = Annotated[Matcher, BeforeValidator(parse_matcher), PlainSerializer(str)]


class AlertmanagerSettings(StrictModel):
    """``daemon.alertmanager``: the receiver of Alertmanager's webhook."""

    token: SecretRef | None = Field(
        default=None, description="the bearer token Alertmanager sends (http_config.authorization); unset: receiver off")


class AlertmanagerParams(CheckParams):
    """Take the firing alerts that match ``matchers`` from Prometheus Alertmanager."""

    kind: Literal["alertmanager"] = "alertmanager"
    matchers: list[LabelMatcher] = Field(min_length=1, description="every one must match an alert's labels")
    severity_label: str = Field(default="severity", description="the label that says how bad an alert is")
    severities: dict[str, Literal["warning", "critical"]] = Field(
        default_factory=lambda: {"critical": "critical", "error": "critical", "page": "critical",
                                 "warning": "warning", "info": "warning"},
        description="severity label value -> the check's status")
    default_severity: Literal["warning", "critical"] = Field(
        default="critical", description="the status of a firing alert whose severity is missing or not in severities")
    stale_after: Duration = Field(
        default=4.5 * 3600, description="a firing alert not repeated for this long is stale (UNKNOWN)")

    def takes(self, labels: dict[str, str]) -> bool:
        """Whether an alert with ``labels`` is this check's."""
        return all(m.matches(labels) for m in self.matchers)

    def status_of(self, labels: dict[str, str]) -> Status:
        """What a firing alert with ``labels`` makes the check."""
        return _SEVERITY[self.severities.get(labels.get(self.severity_label, ""), self.default_severity)]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert of a notification."""

    fingerprint: str
    firing: bool
    labels: dict[str, str]
    summary: str


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{what} must be an object of strings")
    return value


def parse_payload(raw: bytes) -> tuple[list[Alert], int]:
    """The alerts of an Alertmanager webhook notification (version 4), and how many it left out
    (``truncatedAlerts``). :class:`ValueError` says what is wrong with the body."""
    try:
        data = loads(raw)
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object (Alertmanager's webhook payload)")
    if data.get("version") != "4":
        raise ValueError(f"unsupported payload version {data.get('version')!r}: only Alertmanager's version \"4\"")
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("alerts must be a list")
    truncated = data.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise ValueError("truncatedAlerts must be a non-negative integer")
    parsed = []
    for n, alert in enumerate(alerts):
        try:
            if not isinstance(alert, dict):
                raise ValueError("must be an object")
            if alert.get("status") not in ("firing", "resolved"):
                raise ValueError('status must be "firing" or "resolved"')
            labels = _strings(alert.get("labels"), "labels")
            annotations = _strings(alert.get("annotations"), "annotations")
            fingerprint = alert.get("fingerprint")
            if fingerprint is None:  # older Alertmanagers: the labels identify the alert
                fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
            elif not isinstance(fingerprint, str) or not fingerprint:
                raise ValueError("fingerprint must be a non-empty string")
        except ValueError as exc:
            raise ValueError(f"alerts[{n}]: {exc}") from None
        said = annotations.get("summary") or annotations.get("description") or ""
        parsed.append(Alert(fingerprint, alert["status"] == "firing", labels, " ".join(said.split())[:200]))
    return parsed, truncated


def _named(labels: dict[str, str]) -> str:
    """An alert as people name it: its alertname and instance."""
    name = labels.get("alertname", "alert")
    return f"{name} on {labels['instance']}" if labels.get("instance") else name


def _well_formed(kept: Any) -> bool:
    """Whether a kept alert read back from the file is one :class:`Receiver` wrote (else it is dropped)."""
    if not isinstance(kept, dict) or not isinstance(kept.get("labels"), dict):
        return False
    return (isinstance(kept.get("summary"), str) and isinstance(kept.get("received"), (int, float))
            and all(isinstance(k, str) and isinstance(v, str) for k, v in kept["labels"].items()))


class Receiver:
    """Takes Alertmanager's notifications, keeps the firing alerts, and judges them for the checks."""

    def __init__(self, path: Path, clock: Clock, config: Callable[[], Any], *, settings: Callable[[], Any],
                 unmatched: Callable[[int], None] = lambda n: None, run_soon: Callable[[str], None] = lambda c: None):
        """``config()`` is the running config, ``settings()`` its ``daemon.alertmanager``;
        ``unmatched(n)`` counts alerts no check takes; ``run_soon(check_id)`` runs a check now."""
        self.path, self.clock, self._config, self._settings = path, clock, config, settings
        self._unmatched, self._run_soon = unmatched, run_soon
        self.started = clock.time()
        self._firing: dict[str, dict] = {  # fingerprint -> {"labels", "summary", "received"}
            fingerprint: kept for fingerprint, kept in read_json(path).items() if _well_formed(kept)}
        self._unmatched_since_log = 0
        self._unmatched_logged_at: float | None = None

    def checks(self) -> list[tuple[str, AlertmanagerParams]]:
        """The enabled alertmanager checks of the running config, with their ids (host/check)."""
        return [(f"{host}/{name}", params) for host, h in self._config().hosts.items()
                for name, params in h.checks.items() if isinstance(params, AlertmanagerParams) and params.enabled]

    def authenticate(self, request: web.Request) -> None:
        """Refuse the request unless it carries ``daemon.alertmanager.token``."""
        ref = self._settings().token
        if ref is None:
            raise Refusal(403, "the Alertmanager receiver is off: set daemon.alertmanager.token")
        if not token_matches(bearer_token(request), [read_token(ref, "the Alertmanager token")]):
            log.warning("Alertmanager notification from %s refused: missing or wrong token", request.remote)
            raise unauthorised()

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /api/v1/alertmanager``: authenticate, parse, keep, and run the checks whose verdict changed."""
        self.authenticate(request)
        try:
            alerts, truncated = parse_payload(await read_body(request))
        except ValueError as exc:
            raise Refusal(400, str(exc)) from None
        if truncated:
            log.warning("Alertmanager left %d alert(s) out of a notification (webhook max_alerts)", truncated)
        checks = self.checks()
        matched = [(alert, [cid for cid, params in checks if params.takes(alert.labels)]) for alert in alerts]
        touched = {cid for _, ids in matched for cid in ids}
        before = {cid: self.judge(params) for cid, params in checks if cid in touched}
        now = self.clock.time()
        firing = dict(self._firing)
        for alert, ids in matched:
            if alert.firing and ids:
                firing[alert.fingerprint] = {"labels": alert.labels, "summary": alert.summary, "received": now}
            else:
                firing.pop(alert.fingerprint, None)
        for fingerprint in sorted(firing, key=lambda fp: firing[fp]["received"])[:max(0, len(firing) - MAX_ALERTS)]:
            del firing[fingerprint]
        try:
            write_json(self.path, firing)
        except OSError as exc:  # nothing is taken: Alertmanager retries the notification
            log.error("could not keep Alertmanager's alerts in %s: %s", self.path, exc)
            return web.json_response({"error": "the alerts could not be kept; try again later"}, status=503)
        self._firing = firing
        self._count_unmatched([alert for alert, ids in matched if not ids], now)
        for cid, params in checks:
            if cid in before and self.judge(params) != before[cid]:
                self._run_soon(cid)
        unmatched = sum(1 for _, ids in matched if not ids)
        return web.json_response({"alerts": len(alerts), "matched": len(alerts) - unmatched, "unmatched": unmatched})

    def _count_unmatched(self, alerts: list[Alert], now: float) -> None:
        """Count alerts no check takes; say so in the log at most once a minute."""
        if not alerts:
            return
        self._unmatched(len(alerts))
        self._unmatched_since_log += len(alerts)
        if self._unmatched_logged_at is None or now - self._unmatched_logged_at >= UNMATCHED_LOG_EVERY:
            log.warning("%d Alertmanager alert(s) matched no alertmanager check (e.g. %s, labels %s)",
                        self._unmatched_since_log, _named(alerts[0].labels), alerts[0].labels)
            self._unmatched_since_log, self._unmatched_logged_at = 0, now

    def judge(self, params: AlertmanagerParams) -> Outcome:
        """The verdict of one check on the firing alerts it takes, now."""
        now = self.clock.time()
        fresh: list[tuple[Status, str]] = []
        stale: list[tuple[float, str]] = []
        for kept in self._firing.values():
            labels = kept["labels"]
            if not params.takes(labels):
                continue
            age = now - max(kept["received"], self.started)
            if age > params.stale_after:
                stale.append((age, _named(labels)))
            else:
                said = f": {kept['summary']}" if kept["summary"] else ""
                fresh.append((params.status_of(labels), f"{_named(labels)}{said}"))
        if fresh:
            status = max((s for s, _ in fresh), key=int)
            worst = sorted(text for s, text in fresh if s is status)
            more = f" (+{len(fresh) - 1} more)" if len(fresh) > 1 else ""
            return Outcome(status, f"firing: {worst[0]}{more}", values={"alerts_firing": len(fresh)})
        if stale:
            age, name = max(stale)
            return Outcome(Status.UNKNOWN, f"stale: {name} firing but not repeated by Alertmanager for "
                                           f"{format_duration(round(age))} (expected within "
                                           f"{format_duration(params.stale_after)})", Reason.TIMEOUT)
        return Outcome(Status.OK, "no alert firing", values={"alerts_firing": 0})


async def _constant(value: Receiver | None) -> Receiver | None:
    return value


async def receiver_of(ctx: ProbeContext) -> Receiver | None:
    """The receiver the running daemon installed; None outside it."""
    return await ctx.resource(_RESOURCE, lambda _ctx: _constant(None))


async def setup(ctx: ProbeContext, runtime: Runtime) -> None:
    """At the daemon's start: receive Alertmanager's notifications on the listener, for the checks to judge."""
    if runtime.add_route is None:
        return  # a reload (the receiver reads the running config) or a one-off run (nothing is received)
    directory = ctx.state_dir / "alertmanager"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    receiver = Receiver(directory / "alerts.json", runtime.clock, runtime.running,
                        settings=lambda: runtime.running().daemon.alertmanager,
                        unmatched=runtime.metrics.alertmanager_unmatched.inc, run_soon=runtime.run_soon)
    runtime.add_route(ROUTE, receiver.handle)
    await ctx.resource(_RESOURCE, lambda _ctx: _constant(receiver))


async def run(ctx: ProbeContext, call: ProbeCall, params: AlertmanagerParams) -> Outcome:
    """Judge the firing alerts the check takes; only a daemon that receives them can."""
    receiver = await receiver_of(ctx)
    if receiver is None:
        return Outcome(Status.UNKNOWN, "alerts are received only by the running daemon", Reason.ERROR)
    return receiver.judge(params)


KIND = ProbeKind(
    "alertmanager", AlertmanagerParams, run, default_interval=60.0, bounded=False, setup=setup,
    daemon_settings=AlertmanagerSettings,
    summary="passive: Prometheus Alertmanager posts its alerts; a firing alert that matches is a failure",
)
